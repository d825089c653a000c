//! A running node: opens the stores and the registry from a data directory and serves HTTP.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{serve, HttpApi};
use crate::registry::{Registry, RegistryError, RegistryOptions};

/// Errors starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The registry could not be opened.
    #[error("opening the registry: {0}")]
    Registry(#[from] RegistryError),
    /// The HTTP listener failed.
    #[error("HTTP listener on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// One node: its registry and configuration.
pub struct Node {
    registry: Arc<Registry>,
    config: Config,
}

impl Node {
    /// Opens the node stored in `data_dir`.
    pub async fn open(data_dir: &Path, config: Config) -> Result<Self, NodeError> {
        let options = RegistryOptions {
            max_manifest_bytes: config.registry.max_manifest_bytes,
            writable: true,
        };
        let registry = Arc::new(Registry::open(data_dir, options).await?);
        Ok(Node { registry, config })
    }

    /// The node's registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Binds the configured HTTP address.
    pub async fn bind(&self) -> Result<TcpListener, NodeError> {
        let addr = self.config.http.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Listen {
                addr: addr.to_string(),
                source,
            })
    }

    /// Serves the OCI API on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NodeError> {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let api = Arc::new(HttpApi::new(self.registry.clone()));
        serve(listener, api, shutdown)
            .await
            .map_err(|source| NodeError::Listen { addr, source })
    }
}
