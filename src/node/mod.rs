//! A running node: opens the stores, the key, the embedded IPFS node and the registry from a
//! data directory, starts replication, and serves HTTP.

mod blocks;
mod replication;
mod status;
mod systemd;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use tokio::net::TcpListener;

use crate::config::{Config, Role};
use crate::http::{serve, HttpApi};
use crate::names::{keys, FollowError, FollowedName, Follower, IpnsName, PublishError, Publisher};
use crate::p2p::{P2p, P2pConfig};
use crate::registry::{Registry, RegistryError, RegistryOptions, Stores};

pub use blocks::NetworkBlocks;
pub use replication::{HeldRecords, MirrorState, Replication};
pub use status::NodeReport;
pub use systemd::{SystemdNotifier, WatchdogCheckError, WatchdogTarget};

/// Errors starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The registry could not be opened.
    #[error("opening the registry: {0}")]
    Registry(#[from] RegistryError),
    /// The node's key could not be loaded or created.
    #[error("node key: {0}")]
    Key(#[from] keys::KeyError),
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// The records of followed names could not be loaded.
    #[error("followed names: {0}")]
    Follow(#[from] FollowError),
    /// The own published record could not be loaded.
    #[error("publishing state: {0}")]
    Publish(#[from] PublishError),
    /// The embedded IPFS node failed to start.
    #[error("p2p: {0}")]
    P2p(#[from] crate::p2p::P2pError),
    /// The HTTP listener failed.
    #[error("HTTP listener on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Path of the node's key inside a data directory.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("self.key")
}

/// The followed names of a configuration, validated.
pub fn followed_names(config: &Config) -> Result<Vec<FollowedName>, NodeError> {
    config
        .follow
        .iter()
        .map(|f| {
            IpnsName::parse(&f.name)
                .map(|name| FollowedName {
                    name,
                    mirror: f.mirror.clone(),
                })
                .map_err(|e| NodeError::Config(format!("followed name {:?}: {e}", f.name)))
        })
        .collect()
}

fn multiaddrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>, NodeError> {
    list.iter()
        .map(|a| {
            a.parse()
                .map_err(|e| NodeError::Config(format!("{what} {a:?} is not a multiaddr: {e}")))
        })
        .collect()
}

/// One running node.
pub struct Node {
    registry: Arc<Registry>,
    config: Config,
    p2p: P2p,
    replication: Arc<Replication>,
}

impl Node {
    /// Opens the node stored in `data_dir` and starts its IPFS node and replication.
    pub async fn open(data_dir: &Path, config: Config) -> Result<Self, NodeError> {
        let stores = Stores::open(data_dir)?;
        let keypair = keys::load_or_create(&key_path(data_dir))?;
        let follower = Arc::new(Follower::load(
            followed_names(&config)?,
            stores.meta.clone(),
        )?);
        let writable = config.role == Role::Writer;
        let publisher = if writable {
            Some(Arc::new(Publisher::load(
                keypair.clone(),
                stores.meta.clone(),
                Duration::from_secs(config.ipns.record_lifetime_secs),
                Duration::from_secs(config.ipns.record_ttl_secs),
            )?))
        } else {
            None
        };
        let records = Arc::new(HeldRecords {
            publisher: publisher.clone(),
            follower: follower.clone(),
        });
        let (p2p, events) = P2p::start(
            P2pConfig {
                keypair,
                listen: multiaddrs(&config.p2p.listen, "p2p listen address")?,
                peers: multiaddrs(&config.p2p.peers, "peer")?,
                mdns: config.p2p.mdns,
                fetch_timeout: Duration::from_secs(config.p2p.fetch_timeout_secs),
            },
            stores.blocks.clone(),
            records,
        )
        .await?;
        let source = Arc::new(NetworkBlocks::new(stores.blocks.clone(), p2p.clone()));
        let options = RegistryOptions {
            max_manifest_bytes: config.registry.max_manifest_bytes,
            writable,
        };
        let registry = Arc::new(Registry::new(&stores, data_dir, options, source).await?);
        let replication = Replication::new(
            p2p.clone(),
            registry.clone(),
            follower,
            publisher,
            config.ipns.clone(),
        );
        replication.spawn(events);
        Ok(Node {
            registry,
            config,
            p2p,
            replication,
        })
    }

    /// The node's registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The node's embedded IPFS node.
    pub fn p2p(&self) -> &P2p {
        &self.p2p
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

    /// Serves the OCI API (and `/_status`, `/_health`) on `listener` until `shutdown` completes,
    /// telling `systemd` when it is ready, that it still works (watchdog) and when it stops.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        systemd: SystemdNotifier,
    ) -> Result<(), NodeError> {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // The root is loaded (open) and the listener bound: connections queue from now on, so
        // a client that connects once systemd reports the unit started gets its answer.
        let name = IpnsName::from_peer_id(self.p2p.peer_id());
        systemd
            .ready(&format!("serving http://{addr} as {name}"))
            .await;
        let watchdog = systemd.watchdog_interval().map(|every| {
            let target = WatchdogTarget {
                p2p: self.p2p.clone(),
                registry: self.registry.clone(),
                p2p_listens: !self.config.p2p.listen.is_empty(),
                http_addr: addr.clone(),
            };
            tokio::spawn(target.run(systemd, every))
        });
        let shutdown = async move {
            shutdown.await;
            if let Some(task) = &watchdog {
                task.abort();
            }
            systemd.stopping().await;
        };
        let report = Arc::new(NodeReport::new(
            self.config.role,
            self.p2p.clone(),
            self.replication.clone(),
            self.registry.clone(),
        ));
        let api = Arc::new(HttpApi::new(self.registry.clone()).with_status(report));
        serve(listener, api, shutdown)
            .await
            .map_err(|source| NodeError::Listen { addr, source })
    }
}
