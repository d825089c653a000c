//! The embedded IPFS node on rust-libp2p: Bitswap, Kademlia, gossipsub, mDNS, record exchange.
//!
//! One task owns the libp2p swarm (TCP and QUIC with DNS names, noise, yamux, identify, ping,
//! two Kademlia DHTs as kubo runs them: the WAN one on `/ipfs/kad/1.0.0` for peers with public
//! addresses, serving once AutoNAT confirms a public address, and the LAN one on
//! `/ipfs/lan/kad/1.0.0` for peers with private, loopback or link-local ones, always serving;
//! gossipsub, optional mDNS, libp2p fetch (`/libp2p/fetch/0.0.1`) for records, libp2p-stream for
//! Bitswap, and for crossing NATs AutoNAT v2, Circuit Relay v2 (client, and optionally relay),
//! DCUtR hole punching and optional UPnP); [`P2p`] is a cheap handle that talks to it over a
//! channel. Bitswap runs beside the swarm task on its own streams, so block transfers never
//! queue behind swarm events, and only with peers connected directly: a relay carries no blocks
//! unless both ends allow it.
//!
//! This module moves bytes only: records are opaque here (a [`RecordValidator`] from the owner,
//! backed by the `names` module, decides which to store, relay or deliver), and it knows
//! nothing of registries. Everything a peer sends is untrusted: records are validated before
//! they are stored or relayed, gossipsub scores peers that send invalid ones, Bitswap bounds
//! what it queues per peer, and connections are capped per peer and in total.
//!
//! Content on the network is public: anyone who can connect can fetch any block. An optional
//! private network (a pre-shared key in kubo's `swarm.key` format) keeps out nodes without the
//! key; it runs over TCP only.

mod behaviour;
pub mod bitswap;
mod frame;
mod interfaces;
mod private;
mod record_codec;
mod swarm;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

pub use behaviour::{KAD_PROTOCOL, LAN_KAD_PROTOCOL};
pub use libp2p::pnet::PreSharedKey;
pub use record_codec::{FETCH_PROTOCOL, MAX_RECORD_SIZE};

use crate::metrics::P2pMetrics;
use crate::store::{BlockStore, StoreError};
use bitswap::Bitswap;
use swarm::Command;

/// How long `dial` waits for the connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// [`P2pConfig::fetch_timeout`] of [`P2pConfig::new`].
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on established connections in total.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
/// Default cap on established connections with one peer: TCP and QUIC, each possibly dialled
/// from both sides at once, fit.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: u32 = 8;

/// Settings of the embedded node.
#[derive(Clone)]
pub struct P2pConfig {
    /// The node's identity.
    pub keypair: Keypair,
    /// Addresses to listen on, e.g. `/ip4/127.0.0.1/tcp/0` and `/ip4/127.0.0.1/udp/0/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Configured peers (with or without `/p2p/<id>`): dialled at start and re-dialled every few
    /// seconds while disconnected.
    pub peers: Vec<Multiaddr>,
    /// LAN discovery with mDNS; discovered peers are dialled.
    pub mdns: bool,
    /// How long `fetch_block` waits for any peer to deliver.
    pub fetch_timeout: Duration,
    /// The pre-shared key of a private network (kubo's `swarm.key`): only nodes holding it can
    /// connect. Private networks run over TCP only; QUIC listen and peer addresses are skipped.
    pub private_network: Option<PreSharedKey>,
    /// Established connections in total.
    pub max_connections: u32,
    /// Established connections with one peer.
    pub max_connections_per_peer: u32,
    /// Received Bitswap blocks hashed and stored at once per peer stream (each holds up to
    /// 1 MiB in memory).
    pub bitswap_receive_concurrency: usize,
    /// Where peers and Bitswap traffic are counted.
    pub metrics: P2pMetrics,
    /// Peers dialled to join a network, and again whenever fewer than a few peers are
    /// connected.
    pub bootstrap: Vec<Multiaddr>,
    /// The WAN DHT's mode.
    pub dht_mode: DhtMode,
    /// Serve as a Circuit Relay v2 relay for others, within these limits.
    pub relay_service: Option<RelayLimits>,
    /// Ask the router for port mappings with UPnP.
    pub upnp: bool,
    /// Exchange Bitswap blocks over relayed connections too (otherwise direct ones only).
    pub blocks_over_relay: bool,
}

/// The bootstrap peers of the public IPFS network (Amino), as kubo ships them.
pub const PUBLIC_BOOTSTRAP: &[&str] = &[
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
    "/ip4/104.131.131.82/udp/4001/quic-v1/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
];

/// A connected peer and how it is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConnection {
    /// The peer.
    pub peer: PeerId,
    /// Whether at least one connection is direct (not through a relay).
    pub direct: bool,
    /// The remote addresses of its connections.
    pub addresses: Vec<Multiaddr>,
    /// Whether blocks move with it (direct, or relayed with `blocks_over_relay`).
    pub exchanges_blocks: bool,
}

/// How the node can be reached from other networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reachability {
    /// Public addresses confirmed reachable (by AutoNAT or UPnP).
    pub public: Vec<Multiaddr>,
    /// Addresses through relays holding a reservation for us.
    pub relayed: Vec<Multiaddr>,
    /// Whether the public DHT answers queries here (server mode).
    pub dht_server: bool,
}

/// The mode of the WAN DHT (the LAN DHT always serves: every LAN peer is reachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhtMode {
    /// Server once AutoNAT (or UPnP) confirms a public address, client until then; server
    /// throughout when no bootstrap peer is configured (a LAN or hand-wired network).
    Auto,
    /// Always serve.
    Server,
    /// Never serve.
    Client,
}

/// What the relay service grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations at once.
    pub max_reservations: usize,
    /// Relayed connections at once.
    pub max_circuits: usize,
    /// Relayed connections at once per peer.
    pub max_circuits_per_peer: usize,
    /// How long a relayed connection may last.
    pub max_circuit_duration: Duration,
    /// Bytes a relayed connection may carry each way.
    pub max_circuit_bytes: u64,
}

impl P2pConfig {
    /// A node with `keypair` and the default limits, listening nowhere, with no peers, no mDNS,
    /// and no private network.
    pub fn new(keypair: Keypair) -> Self {
        P2pConfig {
            keypair,
            listen: Vec::new(),
            peers: Vec::new(),
            mdns: false,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            private_network: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            bitswap_receive_concurrency: bitswap::DEFAULT_RECEIVE_CONCURRENCY,
            metrics: P2pMetrics::default(),
            bootstrap: Vec::new(),
            dht_mode: DhtMode::Auto,
            relay_service: None,
            upnp: false,
            blocks_over_relay: false,
        }
    }
}

/// Reads a private network's key in kubo's `swarm.key` format:
/// `/key/swarm/psk/1.0.0/`, `/base16/` and 64 hex digits, one per line.
pub fn parse_swarm_key(text: &str) -> Result<PreSharedKey, P2pError> {
    let invalid = |why: &str| {
        P2pError::SwarmKey(format!(
            "{why}; expected kubo's format: /key/swarm/psk/1.0.0/, /base16/ and 64 hex digits, one per line"
        ))
    };
    // The parser slices the key line by bytes: anything but ASCII could split a character.
    if !text.is_ascii() {
        return Err(invalid("not ASCII text"));
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() != 3 {
        return Err(invalid(&format!("{} non-empty lines", lines.len())));
    }
    lines
        .join("\n")
        .parse()
        .map_err(|e: libp2p::pnet::KeyParseError| invalid(&format!("{e:?}")))
}

impl std::fmt::Debug for P2pConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2pConfig")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("mdns", &self.mdns)
            .field("fetch_timeout", &self.fetch_timeout)
            .field(
                "private_network",
                &self.private_network.map(|k| k.fingerprint().to_string()),
            )
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
            .field(
                "bitswap_receive_concurrency",
                &self.bitswap_receive_concurrency,
            )
            .field("bootstrap", &self.bootstrap)
            .field("dht_mode", &self.dht_mode)
            .field("relay_service", &self.relay_service)
            .field("upnp", &self.upnp)
            .field("blocks_over_relay", &self.blocks_over_relay)
            .finish()
    }
}

/// The records the node holds (its own and followed ones), which it serves to peers over fetch,
/// the DHT and pubsub from the moment it starts.
pub trait RecordSource: Send + Sync + 'static {
    /// The newest record held for `routing_key`, if any (called on a blocking thread).
    fn newest(&self, routing_key: &[u8]) -> Option<Vec<u8>>;

    /// Every record held, as `(routing key, record)` (called on a blocking thread at start,
    /// to put them into the DHT stores).
    fn all(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        Vec::new()
    }
}

/// What a record received under a routing key is worth, as a [`RecordValidator`] judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordVerdict {
    /// Valid and news: stored, relayed and delivered.
    Accept,
    /// Genuine but not news (older than held, expired): neither stored nor relayed, and no
    /// fault of the sender.
    Ignore(String),
    /// Invalid: refused, and the sender is penalised where the protocol allows it.
    Reject(String),
}

/// Decides whether records are true; this module only carries them. Every record a peer puts
/// in the DHT store, every record relayed over gossipsub, and the node's own DHT puts pass it;
/// records answering the node's own queries are delivered unless rejected.
pub trait RecordValidator: Send + Sync + 'static {
    /// Judges `record`, received under `routing_key`, given the record the node's DHT store
    /// holds for that key, if any. Runs on the swarm task: it must be quick and never block.
    fn validate(&self, routing_key: &[u8], record: &[u8], held: Option<&[u8]>) -> RecordVerdict;

    /// Whether `routing_key` is a key records can exist under at all; a peer asking over fetch
    /// for any other key gets `ERROR` with the reason, rather than `NOT_FOUND`.
    fn check_key(&self, routing_key: &[u8]) -> Result<(), String> {
        let _ = routing_key;
        Ok(())
    }
}

/// What the node reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum P2pEvent {
    /// A record arrived (pubsub, a direct answer or the DHT) that the [`RecordValidator`] did
    /// not reject: over pubsub only accepted ones, as answers also stale ones.
    Record {
        /// The key it was published or asked under.
        routing_key: Vec<u8>,
        /// The record bytes, as received.
        record: Vec<u8>,
        /// The peer it came from (for pubsub, its original publisher); `None` for our own DHT
        /// store.
        from: Option<PeerId>,
    },
    /// The first connection to a peer opened.
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
}

/// What the node provides, and the provider records its two DHT stores hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecords {
    /// The CIDs the node provides (and announces again every 22 hours).
    pub provided: Vec<Cid>,
    /// The node's own provider records, counted in both DHT stores (one per CID and DHT).
    pub own_records: usize,
    /// Peers' provider records held, counted in both DHT stores.
    pub peer_records: usize,
}

/// Errors of the p2p layer.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// The swarm could not be built.
    #[error("setting up the p2p node: {0}")]
    Setup(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A dial failed.
    #[error("dialling {addr} failed: {reason}")]
    Dial {
        /// The address dialled.
        addr: Multiaddr,
        /// Why it failed.
        reason: String,
    },
    /// No connected peer delivered the block in time.
    #[error("block {cid} not received from any connected peer within {timeout:?}")]
    FetchTimeout {
        /// The block.
        cid: Cid,
        /// How long we waited.
        timeout: Duration,
    },
    /// No peer was connected to ask, for [`bitswap::NO_PEER_GRACE`]: the fetch gave up before its
    /// timeout.
    #[error("block {cid}: no peer connected to ask (waited {waited:?} for one)")]
    NoPeers {
        /// The block.
        cid: Cid,
        /// How long we waited for a peer.
        waited: Duration,
    },
    /// The CID's hash function cannot be verified here.
    #[error("block {cid}: unsupported multihash function 0x{code:x} (only sha2-256 and sha2-512)")]
    UnsupportedHash {
        /// The block.
        cid: Cid,
        /// Its multihash code.
        code: u64,
    },
    /// A record exceeds [`MAX_RECORD_SIZE`].
    #[error("record of {size} bytes exceeds the {limit}-byte limit")]
    RecordTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A provider record could not be stored (the DHT store is full of them).
    #[error("cannot provide {cid}: {reason}")]
    Provide {
        /// The CID.
        cid: Cid,
        /// Why.
        reason: String,
    },
    /// A private network key is not in kubo's `swarm.key` format.
    #[error("invalid swarm key: {0}")]
    SwarmKey(String),
    /// Gossipsub refused an operation.
    #[error("pubsub: {0}")]
    Pubsub(String),
    /// The local block store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node has been shut down.
    #[error("the p2p node has shut down")]
    Shutdown,
}

/// Handle to the running node; clones share it. The node stops when [`P2p::shutdown`] is called
/// or the last handle is dropped.
#[derive(Clone)]
pub struct P2p {
    inner: Arc<Inner>,
}

struct Inner {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    bitswap: Arc<Bitswap>,
    fetch_timeout: Duration,
}

impl std::fmt::Debug for P2p {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2p")
            .field("peer_id", &self.inner.peer_id)
            .finish_non_exhaustive()
    }
}

impl P2p {
    /// Builds the swarm, binds every listen address (waiting until each has reported its real
    /// address), dials the configured peers and starts the node.
    pub async fn start(
        config: P2pConfig,
        blocks: Arc<BlockStore>,
        records: Arc<dyn RecordSource>,
        validator: Arc<dyn RecordValidator>,
    ) -> Result<(P2p, mpsc::Receiver<P2pEvent>), P2pError> {
        let peer_id = config.keypair.public().to_peer_id();
        let fetch_timeout = config.fetch_timeout;
        let (commands, events, bitswap) = swarm::spawn(config, blocks, records, validator).await?;
        bitswap.set_local_peer(peer_id);
        let p2p = P2p {
            inner: Arc::new(Inner {
                peer_id,
                commands,
                bitswap,
                fetch_timeout,
            }),
        };
        Ok((p2p, events))
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(command(tx))
            .await
            .map_err(|_| P2pError::Shutdown)?;
        rx.await.map_err(|_| P2pError::Shutdown)
    }

    /// The addresses actually bound (port 0 resolved), each ending in `/p2p/<id>`.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ask(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Every connected peer, with how it is connected.
    pub async fn peer_connections(&self) -> Vec<PeerConnection> {
        self.ask(Command::PeerConnections).await.unwrap_or_default()
    }

    /// Peers reachable only through a relay (so no blocks move with them): connected so now,
    /// or until their relayed connection closed within the last ten minutes.
    pub async fn relayed_only_peers(&self) -> Vec<PeerId> {
        self.ask(Command::RelayedOnlyPeers)
            .await
            .unwrap_or_default()
    }

    /// How the node can be reached from other networks.
    pub async fn reachability(&self) -> Reachability {
        self.ask(Command::Reachability).await.unwrap_or_default()
    }

    /// Peers with at least one open connection.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        self.ask(Command::ConnectedPeers).await.unwrap_or_default()
    }

    /// Established connections, to all peers (a peer may have several).
    pub async fn connection_count(&self) -> usize {
        self.ask(Command::ConnectionCount).await.unwrap_or_default()
    }

    /// Connected peers that told us they subscribe to the gossipsub `topic`: those a publish
    /// on it reaches directly.
    pub async fn topic_peers(&self, topic: &str) -> Vec<PeerId> {
        self.ask(|tx| Command::TopicPeers(topic.to_owned(), tx))
            .await
            .unwrap_or_default()
    }

    /// Gossipsub's score of a connected peer: it drops below zero when the peer relays invalid
    /// records, and below -80 the peer's messages are ignored. `None` for an unknown peer.
    pub async fn gossip_score(&self, peer: PeerId) -> Option<f64> {
        self.ask(|tx| Command::GossipScore(peer, tx))
            .await
            .ok()
            .flatten()
    }

    /// Connects to `addr` (with or without `/p2p/<id>`); returns once connected, at once if the
    /// peer named in the address already is.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), P2pError> {
        let dialled = addr.clone();
        match tokio::time::timeout(DIAL_TIMEOUT, self.ask(|tx| Command::Dial(dialled, tx))).await {
            Ok(result) => result?,
            Err(_) => Err(P2pError::Dial {
                addr,
                reason: format!("no connection within {DIAL_TIMEOUT:?}"),
            }),
        }
    }

    /// Bitswap: the block from any connected peer, verified against the CID (sha2-256 or
    /// sha2-512; other hash functions are an error), stored in the block store and returned.
    /// A block already stored locally is returned at once. Concurrent calls for the same CID
    /// share one want. When no connected peer delivers (none is connected, all answer
    /// DONT_HAVE, or none within [`bitswap::PROVIDER_SEARCH_DELAY`]), the CID's providers are
    /// looked up on both DHTs and up to eight are dialled, and asked too. Fails with [`P2pError::FetchTimeout`] after `fetch_timeout` if no peer
    /// delivers; peers connecting meanwhile are asked too. With no peer connected at all for
    /// [`bitswap::NO_PEER_GRACE`], fails early with [`P2pError::NoPeers`].
    pub async fn fetch_block(&self, cid: &Cid) -> Result<Bytes, P2pError> {
        self.inner
            .bitswap
            .fetch(*cid, self.inner.fetch_timeout)
            .await
    }

    /// Joins the gossipsub topic so records published there arrive as [`P2pEvent::Record`] for
    /// `routing_key`; also asks every connected peer (and each peer that connects later) over
    /// fetch for its newest record, so a new subscriber does not wait for the next publish.
    /// While subscribed, a peer that joins the topic is sent the record held for the key.
    pub async fn subscribe(&self, topic: String, routing_key: Vec<u8>) -> Result<(), P2pError> {
        self.ask(|tx| Command::Subscribe {
            topic,
            routing_key,
            reply: tx,
        })
        .await?
    }

    /// Leaves the gossipsub topic.
    pub async fn unsubscribe(&self, topic: String) -> Result<(), P2pError> {
        self.ask(|tx| Command::Unsubscribe { topic, reply: tx })
            .await?
    }

    /// Publishes a record on the gossipsub topic (IPNS over pubsub: the message data is the raw
    /// record) and puts it in both DHTs under `routing_key` if the validator accepts it there.
    /// Both are best effort: having no subscribed or DHT peers is not an error.
    pub async fn publish(
        &self,
        topic: String,
        routing_key: Vec<u8>,
        record: Vec<u8>,
    ) -> Result<(), P2pError> {
        if record.len() > MAX_RECORD_SIZE {
            return Err(P2pError::RecordTooLarge {
                size: record.len(),
                limit: MAX_RECORD_SIZE,
            });
        }
        self.ask(|tx| Command::Publish {
            topic,
            routing_key,
            record,
            reply: tx,
        })
        .await?
    }

    /// Asks every connected peer directly (`/libp2p/fetch/0.0.1`) and both DHTs for records
    /// under `routing_key`. Each answer is also delivered as [`P2pEvent::Record`].
    /// Returns the distinct records received within `timeout`, earlier once every peer and the
    /// DHT query have answered.
    pub async fn query_records(&self, routing_key: Vec<u8>, timeout: Duration) -> Vec<Vec<u8>> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        if self
            .inner
            .commands
            .send(Command::Query {
                routing_key,
                answers: tx,
            })
            .await
            .is_err()
        {
            return Vec::new();
        }
        let mut records: Vec<Vec<u8>> = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(Some(record)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if !records.contains(&record) {
                records.push(record);
            }
        }
        records
    }

    /// Provides `cid` on both DHTs until [`P2p::stop_providing`]: our provider record is kept
    /// in both DHT stores (peers that ask us get it with our addresses), announced to the peers
    /// closest to it now, again when a DHT that had no peers gains one, and every 22 hours; it
    /// lives 48 hours at the peers that hold it. Having no DHT peers is not an error.
    pub async fn provide(&self, cid: Cid) -> Result<(), P2pError> {
        self.ask(|tx| Command::Provide(cid, tx)).await?
    }

    /// Provides `root` as the current root of `slot` (say, an IPNS name's routing key): like
    /// [`P2p::provide`], and the root provided for `slot` before is withdrawn (unless provided
    /// for another reason), so a tree that changes keeps one provider record. Providing the same
    /// root again does nothing.
    pub async fn provide_root(&self, slot: &[u8], root: Cid) -> Result<(), P2pError> {
        self.ask(|tx| Command::ProvideRoot {
            slot: slot.to_vec(),
            root,
            reply: tx,
        })
        .await?
    }

    /// Stops providing `cid`: no longer announced or handed out by this node. Peers that hold
    /// the record keep it until it expires (Kademlia has no withdrawal).
    pub async fn stop_providing(&self, cid: Cid) {
        let _ = self.ask(|tx| Command::StopProviding(cid, tx)).await;
    }

    /// Looks up providers of `cid` (by its multihash, as kubo and Helia do) on both DHTs: the
    /// distinct peers found within `timeout`, earlier once both lookups are done. This node is
    /// never among them. Nobody is dialled; fetches dial providers on their own
    /// (see [`P2p::fetch_block`]).
    pub async fn find_providers(&self, cid: Cid, timeout: Duration) -> Vec<PeerId> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        if self
            .inner
            .commands
            .send(Command::FindProviders { cid, found: tx })
            .await
            .is_err()
        {
            return Vec::new();
        }
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(Some(peer)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if !found.contains(&peer) {
                found.push(peer);
            }
        }
        found
    }

    /// Looks up providers of `cid` on both DHTs and dials those not connected, at most eight
    /// per call: how replicas of one name meet (see the follow task). Returns at once.
    pub async fn meet_providers(&self, cid: Cid) {
        let _ = self.inner.commands.send(Command::MeetProviders(cid)).await;
    }

    /// What the node provides and the provider records it holds.
    pub async fn provider_records(&self) -> Result<ProviderRecords, P2pError> {
        self.ask(Command::ProviderRecords).await
    }

    /// Stops the node: closes every connection and listener and fails pending fetches. Returns
    /// once the swarm is gone (its ports are free again).
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
        self.inner.bitswap.shutdown();
    }
}
