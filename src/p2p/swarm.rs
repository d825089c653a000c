//! The task that owns the swarm: runs commands from [`super::P2p`] handles, reacts to swarm
//! events (connections, identify, both DHTs, pubsub, mDNS, fetch requests) and re-dials
//! configured peers.

mod providers;
mod reach;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use libp2p::core::transport::TransportError;
use libp2p::futures::StreamExt as _;
use libp2p::gossipsub::{self, IdentTopic, TopicHash};
use libp2p::kad::store::RecordStore as _;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::swarm::{DialError, ListenError};
use libp2p::{identify, kad, mdns, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use super::behaviour::{
    build_swarm, topic_score_params, NodeBehaviour, NodeBehaviourEvent, SwarmSettings,
    KAD_PROTOCOL, LAN_KAD_PROTOCOL,
};
use super::bitswap::Bitswap;
use super::interfaces;
use super::private::HANDSHAKE_FAILED as PRIVATE_HANDSHAKE_FAILED;
use super::record_codec::{FetchAnswer, MAX_RECORD_SIZE};
use super::{
    P2pConfig, P2pError, P2pEvent, ProviderRecords, RecordSource, RecordValidator, RecordVerdict,
};
use crate::metrics::P2pMetrics;
use crate::store::BlockStore;
use providers::Providers;
use reach::{is_relayed, Reach, BOOTSTRAP_INTERVAL};

/// How often configured peers that are not connected are dialled again.
const REDIAL_INTERVAL: Duration = Duration::from_secs(3);
/// How long start-up waits for the listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Events buffered for the owner before new ones are dropped.
const EVENT_QUEUE: usize = 1024;
/// Commands buffered from handles.
const COMMAND_QUEUE: usize = 256;
/// Records that peers may have the DHT store keep. The store holds more
/// ([`super::behaviour::MAX_DHT_RECORDS`]): the rest is room for the node's own and followed
/// records, which strangers' records can never crowd out.
const MAX_INBOUND_DHT_RECORDS: usize = 768;
/// Record lookups kept waiting for a first DHT peer; the oldest is dropped when more arrive.
const MAX_DEFERRED_RECORD_LOOKUPS: usize = 64;
/// Hosts remembered as having failed the private-network handshake (for logging once each).
const MAX_REFUSED_HOSTS: usize = 1024;

type Reply<T> = oneshot::Sender<T>;

/// Requests from [`super::P2p`] handles.
pub(super) enum Command {
    /// The bound listen addresses.
    ListenAddrs(Reply<Vec<Multiaddr>>),
    /// Peers with an open connection.
    ConnectedPeers(Reply<Vec<PeerId>>),
    /// Established connections, to all peers.
    ConnectionCount(Reply<usize>),
    /// Connected peers, with how each is connected.
    PeerConnections(Reply<Vec<super::PeerConnection>>),
    /// How the node can be reached.
    Reachability(Reply<super::Reachability>),
    /// Peers reachable only through a relay, now or a short while ago.
    RelayedOnlyPeers(Reply<Vec<PeerId>>),
    /// Peers known to subscribe to a gossipsub topic.
    TopicPeers(String, Reply<Vec<PeerId>>),
    /// Gossipsub's score of a peer.
    GossipScore(PeerId, Reply<Option<f64>>),
    /// Connect; the reply comes once connected or failed.
    Dial(Multiaddr, Reply<Result<(), P2pError>>),
    /// Join a gossipsub topic carrying records for a routing key.
    Subscribe {
        topic: String,
        routing_key: Vec<u8>,
        reply: Reply<Result<(), P2pError>>,
    },
    /// Leave a gossipsub topic.
    Unsubscribe {
        topic: String,
        reply: Reply<Result<(), P2pError>>,
    },
    /// Gossip a record and put it in the DHT.
    Publish {
        topic: String,
        routing_key: Vec<u8>,
        record: Vec<u8>,
        reply: Reply<Result<(), P2pError>>,
    },
    /// Ask peers and both DHTs; answers stream into `answers`, which closes when all are in.
    Query {
        routing_key: Vec<u8>,
        answers: mpsc::UnboundedSender<Vec<u8>>,
    },
    /// Provide a CID on both DHTs until told to stop.
    Provide(cid::Cid, Reply<Result<(), P2pError>>),
    /// Provide a root in the name of a slot, in place of the slot's previous root.
    ProvideRoot {
        slot: Vec<u8>,
        root: cid::Cid,
        reply: Reply<Result<(), P2pError>>,
    },
    /// Stop providing a CID.
    StopProviding(cid::Cid, Reply<()>),
    /// Look up providers on both DHTs; they stream into `found`, which closes when done.
    FindProviders {
        cid: cid::Cid,
        found: mpsc::UnboundedSender<PeerId>,
    },
    /// Look up providers of a CID and dial those not connected (a bounded number).
    MeetProviders(cid::Cid),
    /// What the node provides and the provider records it holds.
    ProviderRecords(Reply<ProviderRecords>),
    /// Stop; the reply comes once the swarm is dropped.
    Shutdown(Reply<()>),
}

/// Work finished off the swarm task that needs the swarm to complete.
enum Internal {
    /// Answer a fetch request.
    Respond(ResponseChannel<FetchAnswer>, FetchAnswer),
    /// Send the record held for a topic's key to a peer that joined the topic.
    Republish(TopicHash, Vec<u8>),
}

/// Which of the two DHTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dht {
    /// `/ipfs/kad/1.0.0`, peers with public addresses.
    Wan,
    /// `/ipfs/lan/kad/1.0.0`, peers with private, loopback or link-local addresses.
    Lan,
}

/// Which DHT an address belongs in, as kubo's routing table filters sort peers: private,
/// loopback, shared (CGNAT) and link-local IPs to the LAN one, other IPs and DNS names to the
/// WAN one. `None` for addresses no DHT should hold (unspecified, or no host at all).
fn dht_of(addr: &Multiaddr) -> Option<Dht> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) if ip.is_unspecified() || ip.is_broadcast() => None,
        Protocol::Ip4(ip) => Some(if is_lan_v4(ip) { Dht::Lan } else { Dht::Wan }),
        Protocol::Ip6(ip) if ip.is_unspecified() || ip.is_multicast() => None,
        Protocol::Ip6(ip) => Some(match ip.to_ipv4_mapped() {
            Some(v4) if is_lan_v4(v4) => Dht::Lan,
            Some(_) => Dht::Wan,
            None if is_lan_v6(ip) => Dht::Lan,
            None => Dht::Wan,
        }),
        Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_) => {
            Some(Dht::Wan)
        }
        _ => None,
    }
}

fn is_lan_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    // 100.64.0.0/10: carrier-grade NAT, shared address space (kubo counts it as private).
    ip.is_private() || ip.is_loopback() || ip.is_link_local() || (a == 100 && (b & 0xc0) == 64)
}

fn is_lan_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    // fc00::/7 unique local, fe80::/10 link-local.
    ip.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
}

/// A peer from the configuration, kept connected.
struct ConfiguredPeer {
    addr: Multiaddr,
    /// The id named in the address, if any.
    named: Option<PeerId>,
    /// The id of whoever answered at the address last.
    learned: Option<PeerId>,
    dialing: Option<ConnectionId>,
    failures: u32,
}

/// A running `query_records`.
struct Query {
    answers: mpsc::UnboundedSender<Vec<u8>>,
    /// Fetch requests and DHT queries not finished yet.
    outstanding: usize,
    /// Its DHT queries still running.
    kad: Vec<(Dht, kad::QueryId)>,
}

/// Why we sent a record request.
struct RecordRequest {
    routing_key: Vec<u8>,
    query: Option<u64>,
}

struct SwarmTask {
    swarm: Swarm<NodeBehaviour>,
    bitswap: Arc<Bitswap>,
    metrics: P2pMetrics,
    records: Arc<dyn RecordSource>,
    validator: Arc<dyn RecordValidator>,
    /// Connections go through a private network's key.
    private: bool,
    /// Hosts whose private-network handshake failed, each logged loudly once.
    refused: HashSet<Multiaddr>,
    events: mpsc::Sender<P2pEvent>,
    internal: mpsc::UnboundedSender<Internal>,
    configured: Vec<ConfiguredPeer>,
    dials: HashMap<ConnectionId, (Multiaddr, Reply<Result<(), P2pError>>)>,
    subscriptions: HashMap<TopicHash, Vec<u8>>,
    requests: HashMap<OutboundRequestId, RecordRequest>,
    queries: HashMap<u64, Query>,
    /// DHT queries of `queries`; each DHT numbers its queries on its own.
    kad_queries: HashMap<(Dht, kad::QueryId), (u64, Vec<u8>)>,
    next_query: u64,
    /// Provider records: ours, peers', and lookups.
    providers: Providers,
    /// Record lookups (query id, DHT, routing key) waiting for a first peer in that DHT's
    /// routing table.
    deferred_record_lookups: VecDeque<(u64, Dht, Vec<u8>)>,
    /// Connected peers that have not identified themselves yet (so may still join a DHT).
    unidentified: HashSet<PeerId>,
    /// Bootstrap peers, reachability, relays, direct or relayed connections.
    reach: Reach,
}

/// Builds the swarm, binds the listeners and spawns the task.
pub(super) async fn spawn(
    config: P2pConfig,
    blocks: Arc<BlockStore>,
    records: Arc<dyn RecordSource>,
    validator: Arc<dyn RecordValidator>,
) -> Result<
    (
        mpsc::Sender<Command>,
        mpsc::Receiver<P2pEvent>,
        Arc<Bitswap>,
    ),
    P2pError,
> {
    let local = config.keypair.public().to_peer_id();
    let private = config.private_network.is_some();
    let (listen, peers) = if private {
        (tcp_only(&config.listen), tcp_only(&config.peers))
    } else {
        (config.listen.clone(), config.peers.clone())
    };
    if let Some(key) = &config.private_network {
        tracing::warn!(
            fingerprint = %key.fingerprint(),
            "private network: only peers holding the same swarm key can connect; QUIC is off (a private network runs over TCP only)"
        );
    }
    // Sandboxes and containers may refuse netlink sockets, which libp2p needs to watch
    // interfaces (for mDNS and for wildcard listeners): the node then does without, and says
    // so once, rather than fail to start.
    let netlink_refusal = interfaces::netlink_refusal();
    let mdns = match (&netlink_refusal, config.mdns) {
        (Some(why), true) => {
            tracing::warn!(
                "mDNS is off: netlink sockets are not allowed here ({why}), so network interfaces cannot be watched; LAN peers are not discovered: name them with --peer or p2p.peers"
            );
            false
        }
        (_, mdns) => mdns,
    };
    let listen = match &netlink_refusal {
        Some(why) => {
            let expanded = interfaces::expand_wildcards(&listen).map_err(|e| P2pError::Listen {
                addr: listen.first().cloned().unwrap_or_else(Multiaddr::empty),
                reason: format!(
                    "netlink sockets are not allowed here ({why}) and the interfaces cannot be listed either: {e}"
                ),
            })?;
            if expanded != listen {
                let list: Vec<String> = expanded.iter().map(|a| a.to_string()).collect();
                tracing::warn!(
                    "netlink sockets are not allowed here ({why}): instead of wildcard addresses, listening on the addresses the interfaces have now ({}); an address added later needs a restart",
                    list.join(", ")
                );
            }
            expanded
        }
        None => listen,
    };
    let settings = SwarmSettings {
        mdns,
        private_network: config.private_network,
        max_connections: config.max_connections,
        max_connections_per_peer: config.max_connections_per_peer,
        relay_service: config.relay_service.clone(),
        upnp: config.upnp,
    };
    let mut swarm = build_swarm(config.keypair.clone(), &settings)?;
    // Registered before any connection exists, so every connection offers Bitswap.
    let (stalled_tx, stalled_rx) = mpsc::unbounded_channel();
    let (seek_tx, seek_rx) = mpsc::unbounded_channel();
    let bitswap = Bitswap::start(
        blocks,
        swarm.behaviour().stream.new_control(),
        stalled_tx,
        seek_tx,
        config.bitswap_receive_concurrency,
        config.metrics.clone(),
    )?;

    let mut listening = HashMap::new();
    for addr in &listen {
        match swarm.listen_on(addr.clone()) {
            Ok(id) => {
                listening.insert(id, addr.clone());
            }
            Err(e) => {
                bitswap.shutdown();
                return Err(P2pError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                });
            }
        }
    }

    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    let mut task = SwarmTask {
        swarm,
        bitswap: bitswap.clone(),
        metrics: config.metrics.clone(),
        records,
        validator,
        events: events_tx,
        internal: internal_tx,
        private,
        refused: HashSet::new(),
        configured: peers
            .iter()
            .map(|addr| ConfiguredPeer {
                addr: addr.clone(),
                named: peer_of(addr),
                learned: None,
                dialing: None,
                failures: 0,
            })
            .collect(),
        dials: HashMap::new(),
        subscriptions: HashMap::new(),
        requests: HashMap::new(),
        queries: HashMap::new(),
        kad_queries: HashMap::new(),
        next_query: 0,
        providers: Providers::default(),
        deferred_record_lookups: VecDeque::new(),
        unidentified: HashSet::new(),
        reach: Reach::new(
            if private {
                tcp_only(&config.bootstrap)
            } else {
                config.bootstrap.clone()
            },
            config.dht_mode,
            config.blocks_over_relay,
            !private,
        ),
    };
    task.update_dht_mode();

    // Records held from earlier runs (the own one, followed ones) are in the DHT stores before
    // the first peer can ask, not only after the next publish.
    let records = task.records.clone();
    match tokio::task::spawn_blocking(move || records.all()).await {
        Ok(held) => task.keep_held(held),
        Err(e) => tracing::warn!(error = %e, "reading the held records failed"),
    }

    // Wait for the real addresses (port 0 resolved), so `listen_addrs` is right from the start.
    let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
    while !listening.is_empty() {
        let event = match tokio::time::timeout_at(deadline, task.swarm.select_next_some()).await {
            Ok(event) => event,
            Err(_) => {
                bitswap.shutdown();
                let addr = listening
                    .into_values()
                    .next()
                    .unwrap_or_else(Multiaddr::empty);
                return Err(P2pError::Listen {
                    addr,
                    reason: "no address reported in time".into(),
                });
            }
        };
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!(%address, "listening");
                task.on_listen_addr(address);
                listening.remove(&listener_id);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } if listening.contains_key(&listener_id) => {
                bitswap.shutdown();
                return Err(P2pError::Listen {
                    addr: listening
                        .remove(&listener_id)
                        .unwrap_or_else(Multiaddr::empty),
                    reason: format!("{reason:?}"),
                });
            }
            SwarmEvent::ListenerError { listener_id, error }
                if listening.contains_key(&listener_id) =>
            {
                bitswap.shutdown();
                return Err(P2pError::Listen {
                    addr: listening
                        .remove(&listener_id)
                        .unwrap_or_else(Multiaddr::empty),
                    reason: error.to_string(),
                });
            }
            other => task.on_swarm_event(other),
        }
    }

    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    tokio::spawn(
        task.run(commands_rx, internal_rx, stalled_rx, seek_rx)
            .instrument(tracing::info_span!("p2p", peer = %local)),
    );
    Ok((commands_tx, events_rx, bitswap))
}

/// The addresses of `addrs` a private network can use (not QUIC), saying which are skipped.
fn tcp_only(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    addrs
        .iter()
        .filter(|addr| {
            let quic = addr
                .iter()
                .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic));
            if quic {
                tracing::warn!(%addr, "private network: skipping a QUIC address (a private network runs over TCP only)");
            }
            !quic
        })
        .cloned()
        .collect()
}

/// Whether a connection error is a private network's handshake failing (see
/// [`super::private::PrivateTransportError`]); the transport boxes errors, so its message is
/// what is left to tell.
fn is_private_handshake_failure(error: &TransportError<std::io::Error>) -> bool {
    match error {
        TransportError::Other(e) => e.to_string().contains(PRIVATE_HANDSHAKE_FAILED),
        TransportError::MultiaddrNotSupported(_) => false,
    }
}

/// The address up to its IP (or DNS name): where a connection came from, whatever its port.
fn host_of(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .take_while(|p| {
            matches!(
                p,
                Protocol::Ip4(_)
                    | Protocol::Ip6(_)
                    | Protocol::Dns(_)
                    | Protocol::Dns4(_)
                    | Protocol::Dns6(_)
            )
        })
        .collect()
}

/// The peer id an address ends with, if any.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

impl SwarmTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
        mut stalled: mpsc::UnboundedReceiver<PeerId>,
        mut seek: mpsc::UnboundedReceiver<cid::Cid>,
    ) {
        let mut redial = tokio::time::interval(REDIAL_INTERVAL);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bootstrap = tokio::time::interval(BOOTSTRAP_INTERVAL);
        bootstrap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown(ack)) => {
                        self.bitswap.shutdown();
                        // Dropping the swarm closes every listener and connection.
                        drop(self);
                        tracing::info!("p2p node stopped");
                        let _ = ack.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    // Every handle is gone.
                    None => break,
                },
                Some(work) = internal.recv() => self.on_internal(work),
                Some(peer) = stalled.recv() => {
                    // Its Bitswap session gave up on it; whatever else it has open goes too.
                    if self.swarm.disconnect_peer_id(peer).is_ok() {
                        tracing::info!(%peer, "disconnected a peer that stopped reading");
                    }
                }
                // A Bitswap want no connected peer delivers: dial its providers.
                Some(cid) = seek.recv() => self.find_providers(cid, None, true),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = bootstrap.tick() => self.bootstrap(),
                _ = redial.tick() => {
                    self.redial();
                    self.drop_abandoned_queries();
                }
            }
        }
        self.bitswap.shutdown();
        tracing::info!("p2p node stopped");
    }

    /// Remembers a host that failed the private-network handshake; whether it is new.
    fn note_refused(&mut self, host: Multiaddr) -> bool {
        if self.refused.len() >= MAX_REFUSED_HOSTS {
            self.refused.clear();
        }
        self.refused.insert(host)
    }

    fn emit(&self, event: P2pEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                tracing::warn!(?event, "event queue full, dropping event");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                let local = *self.swarm.local_peer_id();
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|addr| addr.clone().with(Protocol::P2p(local)))
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::PeerConnections(reply) => {
                let _ = reply.send(self.peer_connections());
            }
            Command::Reachability(reply) => {
                let _ = reply.send(self.reachability());
            }
            Command::RelayedOnlyPeers(reply) => {
                let _ = reply.send(self.relayed_only_peers());
            }
            Command::ConnectionCount(reply) => {
                let count = self
                    .swarm
                    .network_info()
                    .connection_counters()
                    .num_established();
                let _ = reply.send(count as usize);
            }
            Command::TopicPeers(topic, reply) => {
                let hash = IdentTopic::new(topic).hash();
                let peers = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .filter(|(_, topics)| topics.contains(&&hash))
                    .map(|(peer, _)| *peer)
                    .collect();
                let _ = reply.send(peers);
            }
            Command::GossipScore(peer, reply) => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
            Command::Dial(addr, reply) => self.dial(addr, reply),
            Command::Subscribe {
                topic,
                routing_key,
                reply,
            } => {
                let topic = IdentTopic::new(topic);
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&topic)
                    .map(|_| ())
                    .map_err(|e| P2pError::Pubsub(format!("subscribing to {topic}: {e}")));
                if result.is_ok() {
                    tracing::debug!(%topic, "subscribed");
                    if let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .set_topic_params(topic.clone(), topic_score_params())
                    {
                        tracing::warn!(%topic, error = e, "peer scores for the topic not set");
                    }
                    self.subscriptions.insert(topic.hash(), routing_key.clone());
                    // Ask the peers we already have for the newest record.
                    let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                    for peer in peers {
                        self.request_record(peer, routing_key.clone(), None);
                    }
                }
                let _ = reply.send(result);
            }
            Command::Unsubscribe { topic, reply } => {
                let topic = IdentTopic::new(topic);
                self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
                self.subscriptions.remove(&topic.hash());
                let _ = reply.send(Ok(()));
            }
            Command::Publish {
                topic,
                routing_key,
                record,
                reply,
            } => {
                let _ = reply.send(self.publish(topic, routing_key, record));
            }
            Command::Query {
                routing_key,
                answers,
            } => self.query(routing_key, answers),
            Command::Provide(cid, reply) => {
                let _ = reply.send(self.provide(cid));
            }
            Command::ProvideRoot { slot, root, reply } => {
                let _ = reply.send(self.provide_root(slot, root));
            }
            Command::StopProviding(cid, reply) => {
                self.stop_providing(&cid);
                let _ = reply.send(());
            }
            Command::FindProviders { cid, found } => self.find_providers(cid, Some(found), false),
            Command::MeetProviders(cid) => self.find_providers(cid, None, true),
            Command::ProviderRecords(reply) => {
                let _ = reply.send(self.provider_records());
            }
            // Handled by the loop itself.
            Command::Shutdown(ack) => {
                let _ = ack.send(());
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: Reply<Result<(), P2pError>>) {
        let opts = match peer_of(&addr) {
            Some(peer) if self.swarm.is_connected(&peer) => {
                let _ = reply.send(Ok(()));
                return;
            }
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, (addr, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(P2pError::Dial {
                    addr,
                    reason: e.to_string(),
                }));
            }
        }
    }

    fn publish(
        &mut self,
        topic: String,
        routing_key: Vec<u8>,
        record: Vec<u8>,
    ) -> Result<(), P2pError> {
        let topic = IdentTopic::new(topic);
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        match gossipsub.publish(topic.clone(), record.clone()) {
            Ok(_) => tracing::debug!(%topic, size = record.len(), "published on pubsub"),
            // Best effort: nobody listening yet, or the very same record went out moments ago.
            Err(
                e @ (gossipsub::PublishError::NoPeersSubscribedToTopic
                | gossipsub::PublishError::Duplicate
                | gossipsub::PublishError::AllQueuesFull(_)),
            ) => tracing::debug!(%topic, error = %e, "record not sent on pubsub"),
            Err(e) => return Err(P2pError::Pubsub(format!("publishing on {topic}: {e}"))),
        }
        // The DHT store holds only what the validator accepts, the node's own records included.
        match self.judge(&routing_key, &record) {
            RecordVerdict::Accept => {
                for dht in [Dht::Wan, Dht::Lan] {
                    let record =
                        kad::Record::new(kad::RecordKey::new(&routing_key), record.clone());
                    if let Err(e) = self.kad_mut(dht).put_record(record, kad::Quorum::One) {
                        tracing::warn!(?dht, error = ?e, "storing the record in the DHT failed");
                    }
                }
            }
            RecordVerdict::Ignore(why) => {
                tracing::debug!(%why, "not putting a record in the DHT")
            }
            RecordVerdict::Reject(why) => {
                tracing::warn!(%why, "not putting an invalid record in the DHT")
            }
        }
        Ok(())
    }

    fn kad_mut(&mut self, dht: Dht) -> &mut kad::Behaviour<kad::store::MemoryStore> {
        match dht {
            Dht::Wan => &mut self.swarm.behaviour_mut().kad,
            Dht::Lan => &mut self.swarm.behaviour_mut().lan_kad,
        }
    }

    /// The validator's verdict on `record` for `routing_key`, against what the DHT stores hold
    /// (both hold the same records: everything stored goes into both).
    fn judge(&mut self, routing_key: &[u8], record: &[u8]) -> RecordVerdict {
        let key = kad::RecordKey::new(&routing_key);
        let held = [Dht::Lan, Dht::Wan].into_iter().find_map(|dht| {
            self.kad_mut(dht)
                .store_mut()
                .get(&key)
                .map(|r| r.value.clone())
        });
        self.validator
            .validate(routing_key, record, held.as_deref())
    }

    /// Keeps a record the validator accepted in both DHT stores, so that peers asking either
    /// DHT get it from this node; no peer is told (publishing does that).
    fn keep(&mut self, routing_key: &[u8], record: Vec<u8>) {
        let key = kad::RecordKey::new(&routing_key);
        for dht in [Dht::Wan, Dht::Lan] {
            let record = kad::Record::new(key.clone(), record.clone());
            if let Err(e) = self.kad_mut(dht).store_mut().put(record) {
                tracing::debug!(?dht, error = ?e, "record not kept in the DHT store");
            }
        }
    }

    /// The records held at start, each kept in the DHT stores if the validator accepts it
    /// (an own record that expired while the node was down is not served).
    fn keep_held(&mut self, held: Vec<(Vec<u8>, Vec<u8>)>) {
        for (routing_key, record) in held {
            if record.is_empty() || record.len() > MAX_RECORD_SIZE {
                continue;
            }
            match self.judge(&routing_key, &record) {
                RecordVerdict::Accept => {
                    tracing::debug!(
                        key = %String::from_utf8_lossy(&routing_key),
                        "serving a held record from the start"
                    );
                    self.keep(&routing_key, record);
                }
                RecordVerdict::Ignore(why) | RecordVerdict::Reject(why) => {
                    tracing::info!(%why, "not serving a held record")
                }
            }
        }
    }

    /// A peer's PUT_VALUE to either DHT: stored (in both) only if the validator accepts it,
    /// and only while strangers' records leave room for the node's own.
    fn on_dht_put(&mut self, source: PeerId, record: kad::Record) {
        match self.judge(record.key.as_ref(), &record.value) {
            RecordVerdict::Accept => {}
            RecordVerdict::Ignore(why) => {
                tracing::debug!(peer = %source, %why, "DHT record not stored");
                return;
            }
            RecordVerdict::Reject(why) => {
                tracing::info!(peer = %source, %why, "refused an invalid DHT record");
                return;
            }
        }
        for dht in [Dht::Wan, Dht::Lan] {
            let store = self.kad_mut(dht).store_mut();
            let new_key = store.get(&record.key).is_none();
            if new_key && store.records().count() >= MAX_INBOUND_DHT_RECORDS {
                tracing::debug!(peer = %source, ?dht, "DHT store full, record not stored");
                continue;
            }
            match store.put(record.clone()) {
                Ok(()) => tracing::debug!(peer = %source, ?dht, "stored a DHT record"),
                Err(e) => {
                    tracing::debug!(peer = %source, ?dht, error = ?e, "DHT record not stored")
                }
            }
        }
    }

    /// A bound listen address. Private and loopback ones count as the node's addresses for
    /// its LAN peers (kubo's LAN DHT announces them the same way): kad sends only external
    /// addresses in ADD_PROVIDER, and kubo drops a provider record without addresses, so
    /// without this a LAN could never find our providers. Public ones wait for a peer or
    /// AutoNAT to confirm them.
    fn on_listen_addr(&mut self, address: Multiaddr) {
        if is_relayed(&address) {
            self.on_relayed_listen_addr(address);
        } else if dht_of(&address) == Some(Dht::Lan) {
            self.swarm.add_external_address(address);
        }
    }

    /// A gossipsub message, held back by gossipsub until judged: relayed only if accepted,
    /// and its sender penalised if it is invalid.
    fn on_gossip(
        &mut self,
        propagation_source: PeerId,
        message_id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let verdict = match self.subscriptions.get(&message.topic).cloned() {
            Some(routing_key) => {
                let verdict = self.judge(&routing_key, &message.data);
                if verdict == RecordVerdict::Accept {
                    let from = message.source.or(Some(propagation_source));
                    self.keep(&routing_key, message.data.clone());
                    self.hand_over(routing_key, message.data, from, None);
                }
                verdict
            }
            None => RecordVerdict::Ignore("not subscribed to the topic".into()),
        };
        let acceptance = match verdict {
            RecordVerdict::Accept => gossipsub::MessageAcceptance::Accept,
            RecordVerdict::Ignore(why) => {
                tracing::debug!(peer = %propagation_source, %why, "not relaying a gossiped record");
                gossipsub::MessageAcceptance::Ignore
            }
            RecordVerdict::Reject(why) => {
                tracing::info!(peer = %propagation_source, %why, "rejected an invalid gossiped record");
                gossipsub::MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
    }

    /// Asks `peer` over fetch for its record under `routing_key`.
    fn request_record(&mut self, peer: PeerId, routing_key: Vec<u8>, query: Option<u64>) {
        let id = self
            .swarm
            .behaviour_mut()
            .fetch
            .send_request(&peer, routing_key.clone());
        self.requests
            .insert(id, RecordRequest { routing_key, query });
    }

    fn query(&mut self, routing_key: Vec<u8>, answers: mpsc::UnboundedSender<Vec<u8>>) {
        let id = self.next_query;
        self.next_query += 1;
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in &peers {
            self.request_record(*peer, routing_key.clone(), Some(id));
        }
        let mut kad = Vec::new();
        let mut deferred = 0;
        for dht in [Dht::Wan, Dht::Lan] {
            if self.routing_table_size(dht) == 0 && !self.unidentified.is_empty() {
                // A node that just started has connections before its routing tables fill
                // (identify tells which peers serve a DHT): the lookup starts when a first
                // peer joins, within the caller's wait, rather than answer nothing at once.
                if self.deferred_record_lookups.len() >= MAX_DEFERRED_RECORD_LOOKUPS {
                    self.deferred_record_lookups.pop_front();
                }
                self.deferred_record_lookups
                    .push_back((id, dht, routing_key.clone()));
                deferred += 1;
                continue;
            }
            let kad_id = self
                .kad_mut(dht)
                .get_record(kad::RecordKey::new(&routing_key));
            self.kad_queries
                .insert((dht, kad_id), (id, routing_key.clone()));
            kad.push((dht, kad_id));
        }
        self.queries.insert(
            id,
            Query {
                answers,
                outstanding: peers.len() + kad.len() + deferred,
                kad,
            },
        );
    }

    /// Starts the record lookups on `dht` that waited for a peer in its routing table.
    fn start_deferred_record_lookups(&mut self, dht: Dht) {
        let (ready, waiting): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.deferred_record_lookups)
                .into_iter()
                .partition(|(_, d, _)| *d == dht);
        self.deferred_record_lookups = waiting;
        self.start_record_lookups(ready);
    }

    /// Once every connected peer has identified itself, the deferred lookups of a DHT still
    /// without peers end (nobody is going to join it soon); the others start.
    fn settle_deferred_record_lookups(&mut self) {
        if !self.unidentified.is_empty() || self.deferred_record_lookups.is_empty() {
            return;
        }
        let deferred = std::mem::take(&mut self.deferred_record_lookups);
        let (ready, hopeless): (VecDeque<_>, VecDeque<_>) = deferred
            .into_iter()
            .partition(|(_, dht, _)| self.routing_table_size(*dht) > 0);
        self.start_record_lookups(ready);
        for (id, _, _) in hopeless {
            self.query_part_done(id);
        }
    }

    fn start_record_lookups(&mut self, lookups: VecDeque<(u64, Dht, Vec<u8>)>) {
        for (id, dht, routing_key) in lookups {
            // A caller that stopped waiting needs no lookup.
            if !self.queries.contains_key(&id) {
                continue;
            }
            let kad_id = self
                .kad_mut(dht)
                .get_record(kad::RecordKey::new(&routing_key));
            self.kad_queries.insert((dht, kad_id), (id, routing_key));
            if let Some(query) = self.queries.get_mut(&id) {
                query.kad.push((dht, kad_id));
            }
        }
    }

    /// One source of a query is done; the query ends (its caller returns) when all are.
    fn query_part_done(&mut self, id: u64) {
        if let Some(query) = self.queries.get_mut(&id) {
            query.outstanding = query.outstanding.saturating_sub(1);
            if query.outstanding == 0 {
                self.queries.remove(&id);
            }
        }
    }

    /// Queries whose caller stopped waiting: stop their DHT lookups too.
    fn drop_abandoned_queries(&mut self) {
        let abandoned: Vec<u64> = self
            .queries
            .iter()
            .filter(|(_, q)| q.answers.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            let Some(query) = self.queries.remove(&id) else {
                continue;
            };
            for (dht, kad_id) in query.kad {
                self.kad_queries.remove(&(dht, kad_id));
                if let Some(mut query) = self.kad_mut(dht).query_mut(&kad_id) {
                    query.finish();
                }
            }
        }
    }

    /// Delivers a record answering a query or a direct request, unless the validator rejects
    /// it (stale ones still go out: the owner tells a second writer by them).
    fn deliver(
        &mut self,
        routing_key: Vec<u8>,
        record: Vec<u8>,
        from: Option<PeerId>,
        query: Option<u64>,
    ) {
        if record.is_empty() || record.len() > MAX_RECORD_SIZE {
            return;
        }
        match self.judge(&routing_key, &record) {
            RecordVerdict::Reject(why) => {
                tracing::debug!(peer = ?from, %why, "dropping an invalid record");
                return;
            }
            // News: served through the DHTs from now on.
            RecordVerdict::Accept if from.is_some() => self.keep(&routing_key, record.clone()),
            RecordVerdict::Accept | RecordVerdict::Ignore(_) => {}
        }
        self.hand_over(routing_key, record, from, query);
    }

    /// Gives a judged record to the query that asked for it, if any, and to the owner.
    fn hand_over(
        &mut self,
        routing_key: Vec<u8>,
        record: Vec<u8>,
        from: Option<PeerId>,
        query: Option<u64>,
    ) {
        if let Some(query) = query.and_then(|id| self.queries.get(&id)) {
            let _ = query.answers.send(record.clone());
        }
        self.emit(P2pEvent::Record {
            routing_key,
            record,
            from,
        });
    }

    fn on_internal(&mut self, work: Internal) {
        match work {
            Internal::Respond(channel, answer) => {
                if self
                    .swarm
                    .behaviour_mut()
                    .fetch
                    .send_response(channel, answer)
                    .is_err()
                {
                    tracing::debug!("fetch request went away before the answer");
                }
            }
            Internal::Republish(topic, record) => {
                match self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic.clone(), record)
                {
                    Ok(_) => tracing::debug!(%topic, "sent the held record to a peer that joined"),
                    // Content-addressed messages: the same record sent within the duplicate
                    // window is not sent again. Joining peers still fetch it.
                    Err(e) => tracing::debug!(%topic, error = %e, "held record not re-sent"),
                }
            }
        }
    }

    /// A peer joined a topic this node carries records on: it is sent the record held for
    /// the topic's key at once (as IPNS over pubsub nodes do), not at the next publish.
    fn on_topic_joined(&mut self, peer: PeerId, topic: TopicHash) {
        let Some(routing_key) = self.subscriptions.get(&topic).cloned() else {
            return;
        };
        tracing::debug!(%peer, %topic, "peer joined a record topic");
        let records = self.records.clone();
        let internal = self.internal.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(record) = records
                .newest(&routing_key)
                .filter(|r| !r.is_empty() && r.len() <= MAX_RECORD_SIZE)
            {
                let _ = internal.send(Internal::Republish(topic, record));
            }
        });
    }

    fn redial(&mut self) {
        for i in 0..self.configured.len() {
            let configured = &self.configured[i];
            if configured.dialing.is_some() {
                continue;
            }
            if let Some(peer) = configured.named.or(configured.learned) {
                if self.swarm.is_connected(&peer) {
                    continue;
                }
            }
            let opts = match configured.named {
                Some(peer) => DialOpts::peer_id(peer)
                    .addresses(vec![configured.addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id()
                    .address(configured.addr.clone())
                    .build(),
            };
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => self.configured[i].dialing = Some(id),
                Err(e) => {
                    tracing::debug!(addr = %self.configured[i].addr, error = %e, "not dialling configured peer")
                }
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<NodeBehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                tracing::debug!(peer = %peer_id, %connection_id, num_established, endpoint = ?endpoint, "connection established");
                if let Some((_, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(()));
                }
                for configured in &mut self.configured {
                    if configured.dialing == Some(connection_id) {
                        configured.dialing = None;
                        configured.learned = Some(peer_id);
                        configured.failures = 0;
                    }
                }
                self.on_connection_opened(peer_id, connection_id, &endpoint);
                if num_established.get() == 1 {
                    self.unidentified.insert(peer_id);
                    tracing::info!(peer = %peer_id, address = %endpoint.get_remote_address(), "peer connected");
                    self.metrics.peer_connected();
                    self.emit(P2pEvent::PeerConnected(peer_id));
                    // A peer new to us may hold newer records for what we follow.
                    let keys: HashSet<Vec<u8>> = self.subscriptions.values().cloned().collect();
                    for key in keys {
                        self.request_record(peer_id, key, None);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } if num_established > 0 => {
                tracing::debug!(peer = %peer_id, %connection_id, num_established, cause = ?cause, "connection closed, others remain");
                self.on_connection_gone(peer_id, connection_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::info!(peer = %peer_id, cause = ?cause, "peer disconnected");
                self.unidentified.remove(&peer_id);
                self.settle_deferred_record_lookups();
                self.on_connection_gone(peer_id, connection_id);
                self.metrics.peer_disconnected();
                self.emit(P2pEvent::PeerDisconnected(peer_id));
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                if self.private {
                    if let ListenError::Transport(e) = &error {
                        if is_private_handshake_failure(e) {
                            // Loud once per host: the port changes with every attempt.
                            let host = host_of(&send_back_addr);
                            if self.note_refused(host) {
                                tracing::warn!(address = %send_back_addr, "{PRIVATE_HANDSHAKE_FAILED} with an incoming connection from {send_back_addr}: does the peer hold the same swarm.key?");
                            } else {
                                tracing::debug!(address = %send_back_addr, "{PRIVATE_HANDSHAKE_FAILED} again");
                            }
                            return;
                        }
                    }
                }
                tracing::debug!(address = %send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                tracing::debug!(%error, "outgoing connection failed");
                if self.private {
                    if let DialError::Transport(errors) = &error {
                        for (addr, e) in errors {
                            if !is_private_handshake_failure(e) {
                                continue;
                            }
                            if self.note_refused(addr.clone()) {
                                tracing::warn!(address = %addr, "{PRIVATE_HANDSHAKE_FAILED} with {addr}: does the peer hold the same swarm.key?");
                            } else {
                                tracing::debug!(address = %addr, "{PRIVATE_HANDSHAKE_FAILED} again");
                            }
                        }
                    }
                }
                if let Some((addr, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(P2pError::Dial {
                        addr,
                        reason: error.to_string(),
                    }));
                }
                for configured in &mut self.configured {
                    if configured.dialing == Some(connection_id) {
                        configured.dialing = None;
                        configured.failures += 1;
                        // Loud once, then quiet while the peer stays away.
                        if configured.failures == 1 && self.private {
                            // With another key, the peer reads noise and often just waits:
                            // the dial times out rather than failing the handshake.
                            tracing::warn!(addr = %configured.addr, error = %error, "configured peer unreachable, retrying (private network: if it is up, does it hold the same swarm.key?)");
                        } else if configured.failures == 1 {
                            tracing::warn!(addr = %configured.addr, error = %error, "configured peer unreachable, retrying");
                        } else {
                            tracing::debug!(addr = %configured.addr, error = %error, "configured peer still unreachable");
                        }
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.on_listen_addr(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.swarm.remove_external_address(&address);
            }
            SwarmEvent::ExternalAddrConfirmed { address } => self.on_external_confirmed(address),
            SwarmEvent::ExternalAddrExpired { address } => self.on_external_expired(&address),
            SwarmEvent::ListenerClosed { listener_id, .. } => self.on_listener_closed(listener_id),
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: NodeBehaviourEvent) {
        match event {
            NodeBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                tracing::debug!(peer = %peer_id, agent = %info.agent_version, "identified");
                self.unidentified.remove(&peer_id);
                self.consider_relay(peer_id, &info);
                // Each DHT's routing table takes the peer's addresses of its kind, if the peer
                // speaks that DHT's protocol (kubo's routing table filters).
                let wan = info.protocols.contains(&KAD_PROTOCOL);
                let lan = info.protocols.contains(&LAN_KAD_PROTOCOL);
                for addr in info.listen_addrs {
                    match dht_of(&addr) {
                        Some(dht @ Dht::Wan) if wan => {
                            self.kad_mut(dht).add_address(&peer_id, addr);
                        }
                        Some(dht @ Dht::Lan) if lan && self.lan_address_usable(&peer_id, &addr) => {
                            self.kad_mut(dht).add_address(&peer_id, addr);
                        }
                        _ => {}
                    }
                }
                self.settle_deferred_record_lookups();
            }
            NodeBehaviourEvent::Kad(event) => self.on_kad_event(Dht::Wan, event),
            NodeBehaviourEvent::LanKad(event) => self.on_kad_event(Dht::Lan, event),
            NodeBehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic }) => {
                self.on_topic_joined(peer_id, topic)
            }
            NodeBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            NodeBehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    if dht_of(&addr) == Some(Dht::Lan) {
                        self.kad_mut(Dht::Lan).add_address(&peer, addr.clone());
                    }
                    by_peer.entry(peer).or_default().push(addr);
                }
                for (peer, addrs) in by_peer {
                    if self.swarm.is_connected(&peer) {
                        continue;
                    }
                    tracing::debug!(%peer, "discovered on the LAN, dialling");
                    // mDNS answers reach both nodes at once, so both dial at once. From their
                    // listening ports (libp2p's default) the two dials are one TCP 4-tuple: a
                    // simultaneous open that both sides treat as their outbound connection, so
                    // the Noise handshake fails on both and mDNS does not announce again for
                    // minutes. A fresh source port keeps the two dials apart; on a LAN the port
                    // a peer observes is of no use for NAT traversal anyway.
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .allocate_new_port()
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, error = %e, "not dialling discovered peer");
                    }
                }
            }
            NodeBehaviourEvent::Fetch(event) => self.on_fetch_event(event),
            NodeBehaviourEvent::Autonat(event) => self.on_autonat_event(event),
            NodeBehaviourEvent::RelayClient(event) => self.on_relay_client_event(event),
            NodeBehaviourEvent::Relay(event) => self.on_relay_event(event),
            NodeBehaviourEvent::Dcutr(event) => self.on_dcutr_event(event),
            NodeBehaviourEvent::Upnp(event) => self.on_upnp_event(event),
            _ => {}
        }
    }

    fn on_kad_event(&mut self, dht: Dht, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::StartProviding(result),
                stats,
                ..
            } => self.on_provide_done(dht, id, result, &stats),
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            } => self.on_providers_found(dht, id, result, step.last),
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => self.on_kad_progress(dht, id, result, step.last),
            kad::Event::RoutingUpdated {
                is_new_peer: true, ..
            } => self.on_dht_peer_joined(dht),
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => self.on_dht_put(source, record),
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(record),
                    },
            } => self.on_add_provider(dht, record),
            _ => {}
        }
    }

    fn on_kad_progress(
        &mut self,
        dht: Dht,
        id: kad::QueryId,
        result: kad::QueryResult,
        last: bool,
    ) {
        match result {
            kad::QueryResult::GetRecord(result) => {
                let Some((query, routing_key)) = self.kad_queries.get(&(dht, id)).cloned() else {
                    return;
                };
                if let Ok(kad::GetRecordOk::FoundRecord(found)) = result {
                    self.deliver(routing_key, found.record.value, found.peer, Some(query));
                }
                if last {
                    self.kad_queries.remove(&(dht, id));
                    if let Some(q) = self.queries.get_mut(&query) {
                        q.kad.retain(|running| *running != (dht, id));
                    }
                    self.query_part_done(query);
                }
            }
            kad::QueryResult::PutRecord(result) => match result {
                Ok(_) => tracing::debug!(?dht, "record stored in the DHT"),
                Err(e) => tracing::debug!(?dht, error = %e, "DHT put reached no peers"),
            },
            _ => {}
        }
    }

    fn on_fetch_event(&mut self, event: request_response::Event<Vec<u8>, FetchAnswer>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    tracing::trace!(%peer, "fetch request");
                    // Keys no record can exist under get ERROR, as the spec asks.
                    if let Err(why) = self.validator.check_key(&request) {
                        tracing::debug!(%peer, %why, "fetch request for an unsupported key");
                        self.on_internal(Internal::Respond(channel, FetchAnswer::Error(why)));
                        return;
                    }
                    // The record source may read the metadata store: off the swarm task.
                    let records = self.records.clone();
                    let internal = self.internal.clone();
                    tokio::task::spawn_blocking(move || {
                        let answer = match records
                            .newest(&request)
                            .filter(|r| !r.is_empty() && r.len() <= MAX_RECORD_SIZE)
                        {
                            Some(record) => FetchAnswer::Found(record),
                            None => FetchAnswer::NotFound,
                        };
                        let _ = internal.send(Internal::Respond(channel, answer));
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let Some(request) = self.requests.remove(&request_id) else {
                        return;
                    };
                    match response {
                        FetchAnswer::Found(record) => {
                            self.deliver(request.routing_key, record, Some(peer), request.query)
                        }
                        FetchAnswer::NotFound => tracing::trace!(%peer, "fetch: not found"),
                        FetchAnswer::Error(why) => {
                            tracing::debug!(%peer, %why, "fetch answered with an error")
                        }
                    }
                    if let Some(query) = request.query {
                        self.query_part_done(query);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "fetch request failed");
                if let Some(query) = self.requests.remove(&request_id).and_then(|r| r.query) {
                    self.query_part_done(query);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "answering a fetch request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
