//! A running node: opens the stores, the key, the embedded IPFS node and the registry from a
//! data directory, starts replication, and serves HTTP.

mod airgap;
mod allocator;
mod blocks;
mod gateway;
mod gc;
mod metrics;
mod replication;
mod status;
mod systemd;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use tokio::net::TcpListener;

use crate::admin::{AdminError, AdminServer};
use crate::config::{
    Config, DhtModeConfig, HttpConfig, MemoryConfig, P2pConfig as P2pSection, Role,
};
use crate::http::auth::{Auth, AuthError};
use crate::http::gateway::Gateway;
use crate::http::{serve_with, tls, HttpApi, MetricsAccess, ServeOptions};
use crate::metrics::Metrics;
use crate::names::{keys, FollowError, FollowedName, Follower, IpnsName, PublishError, Publisher};
use crate::p2p::{
    parse_swarm_key, DhtMode, P2p, P2pConfig, PreSharedKey, RelayLimits, PUBLIC_BOOTSTRAP,
};
use crate::registry::{Registry, RegistryError, RegistryOptions, Stores, UploadLimits};

use self::metrics::NodeGauges;
pub use allocator::{limit_malloc_arenas, DEFAULT_MALLOC_ARENAS};

pub use blocks::NetworkBlocks;
pub use gateway::GatewayClient;
pub use gc::GarbageCollector;
pub use replication::{
    second_writer_refusal, GatewayPolling, HeldRecords, MirrorState, Replication,
};
pub use status::NodeReport;
pub use systemd::{SystemdNotifier, WatchdogCheckError, WatchdogTarget};

/// Errors starting or running a node. A variant wrapping another error names the step that
/// failed and chains the cause as its `source` without repeating it: printed with the whole
/// chain (`{:#}` in the command line), each message appears once.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The registry could not be opened.
    #[error("opening the registry")]
    Registry(#[from] RegistryError),
    /// The node's key could not be loaded or created.
    #[error("node key")]
    Key(#[from] keys::KeyError),
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// Access control cannot be set up (a bad access rule or htpasswd file).
    #[error("authentication")]
    Auth(#[from] AuthError),
    /// The records of followed names could not be loaded.
    #[error("followed names")]
    Follow(#[from] FollowError),
    /// The own published record could not be loaded.
    #[error("publishing state")]
    Publish(#[from] PublishError),
    /// The embedded IPFS node failed to start.
    #[error("p2p")]
    P2p(#[from] crate::p2p::P2pError),
    /// The admin API's listener could not be set up.
    #[error("starting the admin API")]
    Admin(#[from] AdminError),
    /// The HTTP listener failed.
    #[error("HTTP listener on {addr}")]
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

/// The bootstrap peers: `p2p.bootstrap`, and the public network's list when
/// `p2p.public_network` is set, except in a private network (whose nodes could not connect to
/// public ones anyway).
fn bootstrap_peers(p2p: &P2pSection, private_network: bool) -> Result<Vec<Multiaddr>, NodeError> {
    let mut peers = multiaddrs(&p2p.bootstrap, "bootstrap peer")?;
    let public: Vec<Multiaddr> = PUBLIC_BOOTSTRAP
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    if private_network && peers.iter().any(|p| public.contains(p)) {
        tracing::warn!("the public bootstrap peers in p2p.bootstrap are skipped: this node is in a private network (swarm key), which public peers cannot join");
        peers.retain(|p| !public.contains(p));
    }
    if p2p.public_network {
        if private_network {
            tracing::warn!("p2p.public_network is ignored: this node is in a private network (swarm key), which public peers cannot join");
        } else {
            for addr in public {
                if !peers.contains(&addr) {
                    peers.push(addr);
                }
            }
        }
    }
    Ok(peers)
}

/// How the HTTP server of `config` treats connections, with its TLS credentials loaded
/// (relative paths taken from `data_dir`).
pub fn serve_options(config: &HttpConfig, data_dir: &Path) -> Result<ServeOptions, NodeError> {
    let secs = |value: u64, key: &str| {
        if value == 0 {
            Err(NodeError::Config(format!("http.{key} must be at least 1")))
        } else {
            Ok(Duration::from_secs(value))
        }
    };
    let tls = match &config.tls {
        None => None,
        Some(files) => Some(
            tls::server_config(&data_dir.join(&files.cert), &data_dir.join(&files.key))
                .map_err(|e| NodeError::Config(format!("http.tls: {e}")))?,
        ),
    };
    if config.max_connections == 0 {
        return Err(NodeError::Config(
            "http.max_connections must be at least 1".into(),
        ));
    }
    Ok(ServeOptions {
        header_read_timeout: secs(config.header_read_timeout_secs, "header_read_timeout_secs")?,
        idle_timeout: secs(config.idle_timeout_secs, "idle_timeout_secs")?,
        body_stall_timeout: secs(config.body_stall_timeout_secs, "body_stall_timeout_secs")?,
        max_connections: config.max_connections,
        tls,
    })
}

/// The `[memory]` settings, checked (zero would stall fetches or disable the cache).
struct MemorySettings {
    meta_cache_bytes: u64,
    fetch_concurrency: usize,
    bitswap_receive_concurrency: usize,
    read_cache_bytes: usize,
}

fn memory_settings(config: &MemoryConfig) -> Result<MemorySettings, NodeError> {
    let at_least_one = |value: usize, key: &str| {
        if value == 0 {
            Err(NodeError::Config(format!(
                "memory.{key} must be at least 1"
            )))
        } else {
            Ok(value)
        }
    };
    Ok(MemorySettings {
        meta_cache_bytes: match config.meta_cache_mib {
            0 => {
                return Err(NodeError::Config(
                    "memory.meta_cache_mib must be at least 1".into(),
                ))
            }
            mib => mib
                .checked_mul(1024 * 1024)
                .ok_or_else(|| NodeError::Config("memory.meta_cache_mib is too large".into()))?,
        },
        fetch_concurrency: at_least_one(config.fetch_concurrency, "fetch_concurrency")?,
        bitswap_receive_concurrency: at_least_one(
            config.bitswap_receive_concurrency,
            "bitswap_receive_concurrency",
        )?,
        read_cache_bytes: config
            .read_cache_kib
            .checked_mul(1024)
            .and_then(|bytes| usize::try_from(bytes).ok())
            .ok_or_else(|| NodeError::Config("memory.read_cache_kib is too large".into()))?,
    })
}

/// What one start of a node does beyond its configuration (flags that are not settings).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Forget a second writer of the own name seen before and publish again, going above the
    /// newest record peers hold (`serve --take-over-name`). If the other writer still runs, it
    /// then sees this node's record and stops in turn; what it published since is no longer
    /// in the tree the name points to.
    pub take_over_name: bool,
}

/// Name of the private network key picked up from a data directory, as kubo does.
pub const SWARM_KEY_FILE: &str = "swarm.key";

/// The private network key: the configured file, else `<data-dir>/swarm.key` if it exists.
async fn swarm_key(data_dir: &Path, config: &Config) -> Result<Option<PreSharedKey>, NodeError> {
    let (path, configured) = match &config.p2p.swarm_key {
        Some(path) => (path.clone(), true),
        None => (data_dir.join(SWARM_KEY_FILE), false),
    };
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !configured => return Ok(None),
        Err(e) => {
            return Err(NodeError::Config(format!(
                "p2p.swarm_key {}: {e}",
                path.display()
            )))
        }
    };
    let key = parse_swarm_key(&text)
        .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
    tracing::warn!(
        path = %path.display(),
        fingerprint = %key.fingerprint(),
        "private network: using the swarm key at {}{}",
        path.display(),
        if configured { "" } else { " (found in the data directory)" }
    );
    Ok(Some(key))
}

/// Counts what the block store holds, once, in the background (a large store takes a while to
/// list); the count is kept current from then on and `/metrics` reports it once done.
fn count_held_blocks(blocks: Arc<crate::store::BlockStore>) {
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        match blocks.count_held_blocking() {
            Ok(held) => tracing::debug!(
                blocks = held.blocks,
                bytes = held.bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "counted the blocks held"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "counting the blocks held failed: /metrics leaves them out")
            }
        }
    });
}

/// One running node.
pub struct Node {
    registry: Arc<Registry>,
    config: Config,
    serve_options: ServeOptions,
    p2p: P2p,
    replication: Arc<Replication>,
    auth: Arc<Auth>,
    gateway: Option<Arc<Gateway>>,
    metrics: Arc<Metrics>,
    data_dir: PathBuf,
    admin: AdminServer,
}

impl Node {
    /// Opens the node stored in `data_dir` and starts its IPFS node and replication.
    pub async fn open(data_dir: &Path, config: Config) -> Result<Self, NodeError> {
        Self::open_with(data_dir, config, StartOptions::default()).await
    }

    /// Like [`Node::open`], with options for this start.
    pub async fn open_with(
        data_dir: &Path,
        config: Config,
        options: StartOptions,
    ) -> Result<Self, NodeError> {
        // Access control first: a bad rule or htpasswd file stops the start before anything
        // listens.
        let auth = Arc::new(Auth::open(&config.auth, data_dir).await?);
        // Bad TLS files or timeouts fail the start, before anything listens.
        let serve_options = serve_options(&config.http, data_dir)?;
        let memory = memory_settings(&config.memory)?;
        let stores = Stores::open_with_cache(data_dir, memory.meta_cache_bytes)?;
        let metrics = Arc::new(Metrics::new());
        count_held_blocks(stores.blocks.clone());
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
        match &publisher {
            Some(publisher) if options.take_over_name => match publisher.take_over().await? {
                Some(forgotten) => {
                    tracing::warn!(name = %publisher.name(), %forgotten, "taking the name over: a second writer seen before is forgotten; publishing above the newest record peers hold")
                }
                None => tracing::info!("--take-over-name: no second writer was recorded"),
            },
            None if options.take_over_name => {
                return Err(NodeError::Config(
                    "--take-over-name applies to writers: a replica publishes no name".into(),
                ))
            }
            _ => {}
        }
        let records = Arc::new(HeldRecords {
            publisher: publisher.clone(),
            follower: follower.clone(),
        });
        let private_network = swarm_key(data_dir, &config).await?;
        let (p2p, events) = P2p::start(
            P2pConfig {
                bootstrap: bootstrap_peers(&config.p2p, private_network.is_some())?,
                dht_mode: match config.p2p.dht_mode {
                    DhtModeConfig::Auto => DhtMode::Auto,
                    DhtModeConfig::Server => DhtMode::Server,
                    DhtModeConfig::Client => DhtMode::Client,
                },
                relay_service: config.p2p.relay_service.then(|| RelayLimits {
                    max_reservations: config.p2p.relay.max_reservations,
                    max_circuits: config.p2p.relay.max_circuits,
                    max_circuits_per_peer: config.p2p.relay.max_circuits_per_peer,
                    max_circuit_duration: Duration::from_secs(config.p2p.relay.max_circuit_secs),
                    max_circuit_bytes: config.p2p.relay.max_circuit_bytes,
                }),
                upnp: config.p2p.upnp,
                blocks_over_relay: config.p2p.blocks_over_relay,
                keypair,
                listen: multiaddrs(&config.p2p.listen, "p2p listen address")?,
                peers: multiaddrs(&config.p2p.peers, "peer")?,
                mdns: config.p2p.mdns,
                fetch_timeout: Duration::from_secs(config.p2p.fetch_timeout_secs),
                private_network,
                max_connections: config.p2p.max_connections,
                max_connections_per_peer: config.p2p.max_connections_per_peer,
                bitswap_receive_concurrency: memory.bitswap_receive_concurrency,
                metrics: metrics.p2p(),
            },
            stores.blocks.clone(),
            records.clone(),
            records.clone(),
        )
        .await?;
        let fetch_timeout = Duration::from_secs(config.p2p.fetch_timeout_secs);
        let gateways = Arc::new(GatewayClient::new(&config.gateway.urls, fetch_timeout)?);
        let source = Arc::new(
            NetworkBlocks::new(stores.blocks.clone(), p2p.clone()).with_gateways(gateways.clone()),
        );
        let gateway = config.gateway.enabled.then(|| {
            Arc::new(Gateway::new(stores.blocks.clone(), records).fetching_through(source.clone()))
        });
        let options = RegistryOptions {
            max_manifest_bytes: config.registry.max_manifest_bytes,
            writable,
            uploads: UploadLimits {
                expiry: Duration::from_secs(config.registry.upload_expiry_secs.max(1)),
                max_sessions: config.registry.max_upload_sessions,
                max_sessions_per_client: config.registry.max_upload_sessions_per_client,
                ..UploadLimits::default()
            },
            fetch_concurrency: memory.fetch_concurrency,
            commits: metrics.commits(),
            read_cache_bytes: memory.read_cache_bytes,
        };
        let registry = Arc::new(Registry::new(&stores, data_dir, options, source).await?);
        if let Some(publisher) = &publisher {
            if let Some(detail) = publisher.conflict() {
                tracing::error!(name = %publisher.name(), %detail, "a second writer was seen before: writes stay refused until a restart with --take-over-name");
                registry.refuse_writes(second_writer_refusal(publisher.name(), &detail));
            }
        }
        let gateway_polling = (!gateways.is_empty()).then(|| GatewayPolling {
            client: gateways,
            interval: Duration::from_secs(config.gateway.poll_interval_secs.max(1)),
        });
        let replication = Replication::start(
            p2p.clone(),
            registry.clone(),
            follower,
            publisher,
            &config.ipns,
            metrics.publish(),
            gateway_polling,
            events,
        );
        metrics.sample_with(Arc::new(NodeGauges {
            blocks: stores.blocks.clone(),
            registry: registry.clone(),
            replication: replication.clone(),
        }));
        // Bound here, before anything is reported as listening: a socket that cannot be made
        // fails the start.
        let admin = AdminServer::bind(
            config.admin.socket_path(data_dir).as_deref(),
            config.admin.listen,
        )
        .await?;
        tracing::info!(endpoints = ?admin.endpoints(), "admin API bound");
        Ok(Node {
            registry,
            config,
            serve_options,
            p2p,
            replication,
            auth,
            gateway,
            metrics,
            data_dir: data_dir.to_owned(),
            admin,
        })
    }

    /// The node's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The node's registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The node's embedded IPFS node.
    pub fn p2p(&self) -> &P2p {
        &self.p2p
    }

    /// Where the admin API is reachable (`unix:PATH`, `http://ADDR`).
    pub fn admin_endpoints(&self) -> Vec<String> {
        self.admin.endpoints()
    }

    /// Whether the node serves HTTPS (`https://` rather than `http://`).
    pub fn uses_tls(&self) -> bool {
        self.serve_options.tls.is_some()
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

    /// Serves the OCI API (and `/healthz`, `/readyz`, `/metrics`) on `listener` and the admin
    /// API on its listeners until `shutdown` completes, collecting garbage periodically, telling
    /// `systemd` when it is ready, that it still works (watchdog) and when it stops.
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
        let gc = Arc::new(GarbageCollector::new(
            self.registry.clone(),
            self.config.gc.clone(),
        ));
        let report = Arc::new(NodeReport::new(
            self.config.role,
            self.p2p.clone(),
            self.replication.clone(),
            self.registry.clone(),
            self.data_dir.clone(),
            self.config.health.clone(),
            gc.clone(),
        ));
        let metrics_access = match &self.config.metrics {
            m if !m.enabled => None,
            m if m.anonymous => Some(MetricsAccess::Anonymous),
            _ => Some(MetricsAccess::Users),
        };
        let admin = tokio::spawn(self.admin.serve(report.clone()));
        let periodic_gc = tokio::spawn(gc.run_periodically());
        let trimming = tokio::spawn(allocator::return_freed_memory_periodically());
        let mut api = HttpApi::new(self.registry.clone())
            .with_health(report)
            .with_auth(self.auth.clone())
            .with_metrics(self.metrics.clone(), metrics_access);
        if let Some(gateway) = self.gateway.clone() {
            api = api.with_gateway(gateway);
        }
        let api = Arc::new(api);
        let served = serve_with(listener, api, self.serve_options.clone(), shutdown).await;
        // Dropping the admin server removes its socket.
        admin.abort();
        let _ = admin.await;
        periodic_gc.abort();
        let _ = periodic_gc.await;
        trimming.abort();
        // Nothing publishes, follows or mirrors once `serve` returns.
        self.replication.shutdown().await;
        served.map_err(|source| NodeError::Listen { addr, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FollowConfig, Mirror};

    #[tokio::test]
    async fn after_a_shutdown_no_replication_task_runs() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let followed = IpnsName::from_peer_id(libp2p::PeerId::random());
        let mut config = Config::default();
        config.http.listen = "127.0.0.1:0".parse().expect("an address");
        config.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        config.p2p.mdns = false;
        config.follow = vec![FollowConfig {
            name: followed.to_string(),
            mirror: Mirror::All,
        }];
        let node = Node::open(dir.path(), config)
            .await
            .expect("the node opens");
        let replication = node.replication.clone();
        // A writer that follows a name: publish, follow and mirror tasks.
        assert!(replication.running_tasks() >= 3);
        let listener = node.bind().await.expect("the HTTP port binds");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(node.serve(
            listener,
            async move {
                let _ = stopped.await;
            },
            SystemdNotifier::from_env(),
        ));
        let _ = stop.send(());
        serving
            .await
            .expect("serve ends")
            .expect("serve ends cleanly");
        assert_eq!(replication.running_tasks(), 0);
    }

    #[test]
    fn memory_settings_take_the_defaults_and_refuse_zero() {
        let settings = memory_settings(&MemoryConfig::default()).expect("defaults are valid");
        assert_eq!(
            settings.meta_cache_bytes,
            crate::store::DEFAULT_META_CACHE_BYTES
        );
        assert_eq!(
            settings.fetch_concurrency,
            crate::registry::DEFAULT_FETCH_CONCURRENCY
        );
        assert_eq!(
            settings.read_cache_bytes,
            crate::registry::DEFAULT_READ_CACHE_BYTES
        );
        let no_cache = MemoryConfig {
            read_cache_kib: 0,
            ..MemoryConfig::default()
        };
        assert_eq!(
            memory_settings(&no_cache).map(|s| s.read_cache_bytes).ok(),
            Some(0),
            "a zero read cache is allowed: it turns the cache off"
        );
        for (config, key) in [
            (
                MemoryConfig {
                    meta_cache_mib: 0,
                    ..MemoryConfig::default()
                },
                "memory.meta_cache_mib",
            ),
            (
                MemoryConfig {
                    fetch_concurrency: 0,
                    ..MemoryConfig::default()
                },
                "memory.fetch_concurrency",
            ),
            (
                MemoryConfig {
                    bitswap_receive_concurrency: 0,
                    ..MemoryConfig::default()
                },
                "memory.bitswap_receive_concurrency",
            ),
        ] {
            let err = memory_settings(&config).err().expect("zero is refused");
            assert!(err.to_string().contains(key), "{err}");
        }
        let huge = MemoryConfig {
            meta_cache_mib: u64::MAX,
            ..MemoryConfig::default()
        };
        assert!(memory_settings(&huge).is_err());
    }
}

#[cfg(test)]
mod bootstrap_tests {
    use super::*;

    fn public() -> Vec<Multiaddr> {
        PUBLIC_BOOTSTRAP
            .iter()
            .map(|a| a.parse().unwrap())
            .collect()
    }

    #[test]
    fn no_bootstrap_peer_unless_configured() {
        assert!(bootstrap_peers(&P2pSection::default(), false)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_public_network_adds_kubos_list_after_the_own_peers_once() {
        let own =
            "/ip4/198.51.100.11/tcp/4011/p2p/12D3KooWLnjDPzUYaDSJeSwmm2nhzxwdgm1RpoxD4NW3V8fpdi6z";
        let p2p = P2pSection {
            bootstrap: vec![own.into(), PUBLIC_BOOTSTRAP[0].into()],
            public_network: true,
            ..P2pSection::default()
        };
        let peers = bootstrap_peers(&p2p, false).unwrap();
        let mut expected: Vec<Multiaddr> = vec![own.parse().unwrap()];
        expected.extend(public());
        assert_eq!(peers, expected);
    }

    #[test]
    fn a_private_network_never_uses_the_public_list() {
        let own = "/ip4/10.1.2.3/tcp/4011/p2p/12D3KooWLnjDPzUYaDSJeSwmm2nhzxwdgm1RpoxD4NW3V8fpdi6z";
        let mut bootstrap = vec![own.to_string()];
        bootstrap.extend(PUBLIC_BOOTSTRAP.iter().map(|a| a.to_string()));
        let p2p = P2pSection {
            bootstrap,
            public_network: true,
            ..P2pSection::default()
        };
        let peers = bootstrap_peers(&p2p, true).unwrap();
        assert_eq!(peers, vec![own.parse::<Multiaddr>().unwrap()]);
    }

    #[test]
    fn a_bootstrap_entry_that_is_no_multiaddr_is_a_config_error() {
        let p2p = P2pSection {
            bootstrap: vec!["bootstrap.example:4001".into()],
            ..P2pSection::default()
        };
        let err = bootstrap_peers(&p2p, false).unwrap_err().to_string();
        assert!(err.contains("bootstrap peer"), "{err}");
    }
}
