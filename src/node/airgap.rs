//! `export` and `import` on a running node, for the admin API: the CAR streams through the
//! admin connection while the node plans, writes, receives and verifies it.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use tokio::sync::{mpsc, oneshot};

use crate::admin::{CarStream, CommandFailure, ExportRequest, ImportRequest};
use crate::registry::{
    AirGapError, ExportReport, ImageSelector, ImportReport, Registry, RegistryError,
};

/// Chunks of the CAR buffered between the writer and the connection (a chunk is at most a
/// block, 1 MiB).
const CHUNKS_IN_FLIGHT: usize = 16;

fn failure(e: AirGapError) -> CommandFailure {
    let status = match &e {
        AirGapError::Image {
            error: RegistryError::NameUnknown(_) | RegistryError::ManifestUnknown(_),
            ..
        } => 404,
        AirGapError::Registry(RegistryError::Unsupported(_) | RegistryError::WritesRefused(_)) => {
            409
        }
        e if e.is_client_error() => 422,
        _ => 500,
    };
    CommandFailure {
        status,
        error: e.to_string(),
    }
}

/// Plans the export and starts writing it; the CAR's bytes come out of the returned stream,
/// which ends with an error if writing fails part way.
pub async fn export(
    registry: Arc<Registry>,
    request: ExportRequest,
) -> Result<(ExportReport, CarStream), CommandFailure> {
    let selectors = request
        .images
        .iter()
        .map(|image| image.parse::<ImageSelector>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CommandFailure { status: 400, error })?;
    if selectors.is_empty() {
        return Err(CommandFailure {
            status: 400,
            error: "name at least one image to export".into(),
        });
    }
    let plan = registry.plan_export(&selectors).await.map_err(failure)?;
    let report = plan.report();
    let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let result = plan.write(&registry, tx).await;
        match &result {
            Ok(written) => tracing::info!(
                root = %written.root,
                blocks = written.blocks,
                bytes = written.bytes,
                "exported a CAR"
            ),
            Err(e) => tracing::warn!(error = %e, "export failed"),
        }
        let _ = done_tx.send(result.err().map(|e| e.to_string()));
    });
    let chunks = stream::unfold(Some((rx, done_rx)), |state| async move {
        let (mut rx, done_rx) = state?;
        match rx.recv().await {
            Some(chunk) => Some((Ok(chunk), Some((rx, done_rx)))),
            // The writer is done: it tells whether the CAR is whole.
            None => match done_rx.await {
                Ok(None) => None,
                Ok(Some(error)) => Some((Err(std::io::Error::other(error)), None)),
                Err(_) => Some((
                    Err(std::io::Error::other("the export's writer stopped")),
                    None,
                )),
            },
        }
    });
    Ok((report, Box::pin(chunks)))
}

/// Imports the CAR streaming in as `car`.
pub async fn import(
    registry: &Registry,
    _request: ImportRequest,
    car: CarStream,
) -> Result<ImportReport, CommandFailure> {
    registry.import_car_stream(car).await.map_err(failure)
}
