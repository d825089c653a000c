//! Garbage collection on a running node: on request (the admin API's `gc`) and periodically
//! (`gc.interval_secs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::admin::{GcRequest, GcStatus};
use crate::config::GcConfig;
use crate::registry::{GcOptions, GcReport, Registry, RegistryError};

/// Runs the node's garbage collections and remembers how the last periodic one went.
pub struct GarbageCollector {
    registry: Arc<Registry>,
    config: GcConfig,
    last_error: Mutex<Option<String>>,
}

impl GarbageCollector {
    /// Collects in `registry` as `config` says.
    pub fn new(registry: Arc<Registry>, config: GcConfig) -> Self {
        GarbageCollector {
            registry,
            config,
            last_error: Mutex::new(None),
        }
    }

    /// Runs one collection now (waiting for one that runs to end first).
    pub async fn collect(&self, request: &GcRequest) -> Result<GcReport, RegistryError> {
        let options = GcOptions {
            dry_run: request.dry_run,
            layer_grace: Duration::from_secs(
                request
                    .layer_grace_secs
                    .unwrap_or(self.config.layer_grace_secs),
            ),
        };
        let result = self.registry.collect_garbage(&options).await;
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            result.as_ref().err().map(ToString::to_string);
        result
    }

    /// Collects every `gc.interval_secs` (the first time one interval after the start, so a
    /// node restarted in a loop does not collect in a loop); returns at once when that is 0.
    pub async fn run_periodically(self: Arc<Self>) {
        if self.config.interval_secs == 0 {
            return;
        }
        let every = Duration::from_secs(self.config.interval_secs);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.collect(&GcRequest::default()).await {
                Ok(report) => tracing::info!(
                    blocks_freed = report.sweep.blocks_freed,
                    bytes_freed = report.sweep.bytes_freed,
                    blobs_removed = report.tree.blobs_removed,
                    layer_links_removed = report.tree.layer_links_removed,
                    uploads_expired = report.uploads.sessions_expired,
                    duration_ms = report.duration_ms,
                    "periodic garbage collection done"
                ),
                Err(e) => tracing::error!(error = %e, "periodic garbage collection failed"),
            }
        }
    }

    /// What `status` says about garbage collection.
    pub fn status(&self) -> GcStatus {
        GcStatus {
            interval_secs: self.config.interval_secs,
            layer_grace_secs: self.config.layer_grace_secs,
            last: self.registry.last_gc(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
