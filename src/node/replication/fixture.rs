//! The parts the replication tasks run over, for their tests: an in-process node on loopback
//! with its own temporary data directory, store, follower, publisher (writers) and p2p node.

use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::sync::mpsc;

use super::HeldRecords;
use crate::names::{FollowedName, Follower, Publisher};
use crate::node::NetworkBlocks;
use crate::p2p::{P2p, P2pConfig, P2pEvent};
use crate::registry::{Registry, RegistryOptions, Stores};
use crate::store::BlockStore;
use crate::tree::BlockSource;

/// One in-process node's replication parts.
pub(super) struct PartsNode {
    pub p2p: P2p,
    /// Kept open: the p2p node reports into it (the tasks under test get their own).
    _events: mpsc::Receiver<P2pEvent>,
    pub registry: Arc<Registry>,
    pub follower: Arc<Follower>,
    pub publisher: Option<Arc<Publisher>>,
    pub blocks: Arc<BlockStore>,
    pub keypair: Keypair,
    _dir: tempfile::TempDir,
}

/// Polls `done` until it holds; panics if it never does (a hang, not a slow machine: the bound
/// is a minute).
pub(super) async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl PartsNode {
    /// A writer (with a publisher) or a replica following `follow`, dialling `peers`, whose
    /// registry reads blocks from the store, then peers.
    pub async fn start(writer: bool, follow: Vec<FollowedName>, peers: Vec<Multiaddr>) -> Self {
        Self::start_reading(writer, follow, peers, |blocks, p2p| {
            Arc::new(NetworkBlocks::new(blocks, p2p))
        })
        .await
    }

    /// Like [`PartsNode::start`], the registry reading blocks through what `source` makes of
    /// the local store and the p2p node.
    pub async fn start_reading(
        writer: bool,
        follow: Vec<FollowedName>,
        peers: Vec<Multiaddr>,
        source: impl FnOnce(Arc<BlockStore>, P2p) -> Arc<dyn BlockSource>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let stores = Stores::open(dir.path()).expect("stores open");
        let keypair = Keypair::generate_ed25519();
        let follower = Arc::new(Follower::load(follow, stores.meta.clone()).expect("follower"));
        let publisher = writer.then(|| {
            Arc::new(
                Publisher::load(
                    keypair.clone(),
                    stores.meta.clone(),
                    Duration::from_secs(3600),
                    Duration::from_secs(60),
                )
                .expect("publisher"),
            )
        });
        let records = Arc::new(HeldRecords {
            publisher: publisher.clone(),
            follower: follower.clone(),
        });
        let config = P2pConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")],
            peers,
            mdns: false,
            fetch_timeout: Duration::from_secs(20),
            ..P2pConfig::new(keypair.clone())
        };
        let (p2p, events) = P2p::start(config, stores.blocks.clone(), records.clone(), records)
            .await
            .expect("p2p starts");
        let options = RegistryOptions {
            writable: writer,
            ..RegistryOptions::default()
        };
        let source = source(stores.blocks.clone(), p2p.clone());
        let registry = Arc::new(
            Registry::new(&stores, dir.path(), options, source)
                .await
                .expect("registry opens"),
        );
        PartsNode {
            p2p,
            _events: events,
            registry,
            follower,
            publisher,
            blocks: stores.blocks.clone(),
            keypair,
            _dir: dir,
        }
    }

    /// Its TCP listen address, with `/p2p/<id>`.
    pub async fn tcp_addr(&self) -> Multiaddr {
        self.p2p
            .listen_addrs()
            .await
            .into_iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
            .expect("a TCP listen address")
    }
}
