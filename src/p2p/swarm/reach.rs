//! Reaching and being reached across networks: bootstrap peers, the WAN DHT's mode from
//! AutoNAT's verdicts, relay reservations while the node is not reachable, hole punching
//! results, and which connections are direct or relayed (blocks move over direct ones only,
//! unless `blocks_over_relay`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::ConnectionId;
use libp2p::{autonat, dcutr, identify, kad, relay, Multiaddr, PeerId, StreamProtocol};

use super::{dht_of, peer_of, Dht, SwarmTask};
use crate::p2p::{DhtMode, PeerConnection, Reachability};

/// Below this many connected peers, bootstrap peers are dialled again (kubo's threshold).
const MIN_PEERS: usize = 4;
/// How often the bootstrap peers are checked.
pub(super) const BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(30);
/// How often a peer connected only through a relay is dialled again for another hole punching
/// attempt, when a want needs it.
const HOLE_PUNCH_RETRY: Duration = Duration::from_secs(30);
/// How long a peer reached only through a relay is remembered as such after its relayed
/// connection closed.
const RELAYED_ONLY_MEMORY: Duration = Duration::from_secs(600);
/// Such peers remembered at most.
const MAX_RELAYED_ONLY_REMEMBERED: usize = 1024;
/// Relays a node that is not reachable keeps a reservation with.
const MAX_RELAYS: usize = 2;
/// The Circuit Relay v2 protocol a relay speaks.
const RELAY_HOP_PROTOCOL: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");

/// What the swarm task knows about reaching and being reached.
pub(super) struct Reach {
    bootstrap: Vec<Multiaddr>,
    dht_mode: DhtMode,
    /// Exchange blocks over relayed connections too.
    blocks_over_relay: bool,
    /// Whether this node can use relays at all (not in a private network).
    relay_client: bool,
    /// Confirmed external addresses with a public IP (AutoNAT, UPnP).
    public: HashSet<Multiaddr>,
    /// Relays with a reservation (or one being made), and the listener for it.
    relays: HashMap<PeerId, ListenerId>,
    /// Open connections per peer: whether each is relayed, and its remote address.
    connections: HashMap<PeerId, HashMap<ConnectionId, (bool, Multiaddr)>>,
    /// Peers already reported as reachable only through a relay.
    relayed_only_noted: HashSet<PeerId>,
    /// Peers last reached only through a relay, and when: a relayed connection closes at the
    /// relay's limits, but a fetch that failed because of it should still say why.
    relayed_only_seen: HashMap<PeerId, Instant>,
    /// The WAN DHT's mode as last set.
    wan_server: Option<bool>,
    /// When a relayed-only peer was last dialled again for a new hole punching attempt.
    punch_retried: HashMap<PeerId, Instant>,
}

impl Reach {
    pub(super) fn new(
        bootstrap: Vec<Multiaddr>,
        dht_mode: DhtMode,
        blocks_over_relay: bool,
        relay_client: bool,
    ) -> Self {
        Reach {
            bootstrap,
            dht_mode,
            blocks_over_relay,
            relay_client,
            public: HashSet::new(),
            relays: HashMap::new(),
            connections: HashMap::new(),
            relayed_only_noted: HashSet::new(),
            relayed_only_seen: HashMap::new(),
            wan_server: None,
            punch_retried: HashMap::new(),
        }
    }

    /// Whether the WAN DHT should serve now.
    fn wan_server(&self) -> bool {
        match self.dht_mode {
            DhtMode::Server => true,
            DhtMode::Client => false,
            // Without bootstrap peers the node is on a LAN or a hand-wired network, where every
            // peer is reachable and a DHT of clients could store nothing.
            DhtMode::Auto => self.bootstrap.is_empty() || !self.public.is_empty(),
        }
    }

    /// Whether blocks may move to and from `peer` now.
    fn exchanges_blocks(&self, peer: &PeerId) -> bool {
        self.connections.get(peer).is_some_and(|conns| {
            conns
                .values()
                .any(|(relayed, _)| !relayed || self.blocks_over_relay)
        })
    }
}

/// Whether an address is a loopback one.
fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Whether an address goes through a relay.
pub(super) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

impl SwarmTask {
    /// Sets the WAN DHT's mode from what is known now; logs changes.
    pub(super) fn update_dht_mode(&mut self) {
        let server = self.reach.wan_server();
        if self.reach.wan_server == Some(server) {
            return;
        }
        self.reach.wan_server = Some(server);
        let mode = if server {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        };
        self.swarm.behaviour_mut().kad.set_mode(Some(mode));
        tracing::info!(?mode, "public DHT mode");
    }

    /// Dials the bootstrap peers not connected, when fewer than a few peers are.
    pub(super) fn bootstrap(&mut self) {
        if self.swarm.connected_peers().count() >= MIN_PEERS {
            return;
        }
        for addr in self.reach.bootstrap.clone() {
            let opts = match peer_of(&addr) {
                Some(peer) if self.swarm.is_connected(&peer) => continue,
                Some(peer) => DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
            };
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%addr, error = %e, "not dialling bootstrap peer");
            }
        }
    }

    /// A new connection: counts it, and starts Bitswap with the peer if blocks may move
    /// over it.
    pub(super) fn on_connection_opened(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        let remote = endpoint.get_remote_address().clone();
        let relayed = endpoint.is_relayed() || is_relayed(&remote);
        self.reach
            .connections
            .entry(peer)
            .or_default()
            .insert(connection, (relayed, remote.clone()));
        if self.reach.exchanges_blocks(&peer) {
            self.reach.relayed_only_seen.remove(&peer);
            if self.reach.relayed_only_noted.remove(&peer) {
                tracing::info!(%peer, address = %remote, "direct connection: blocks move from now on");
            }
            self.bitswap.peer_connected(peer);
        } else {
            let now = Instant::now();
            let seen = &mut self.reach.relayed_only_seen;
            seen.retain(|_, at| now.duration_since(*at) < RELAYED_ONLY_MEMORY);
            if seen.len() < MAX_RELAYED_ONLY_REMEMBERED || seen.contains_key(&peer) {
                seen.insert(peer, now);
            }
        }
        if !self.reach.exchanges_blocks(&peer) && self.reach.relayed_only_noted.insert(peer) {
            tracing::warn!(%peer, address = %remote, "connected only through a relay: no blocks are exchanged with this peer until a direct connection (hole punching) succeeds; between your own nodes and relays, p2p.blocks_over_relay on both ends allows it");
        }
    }

    /// A closed connection: ends Bitswap with the peer when no connection it may use is left.
    pub(super) fn on_connection_gone(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(conns) = self.reach.connections.get_mut(&peer) {
            conns.remove(&connection);
            if conns.is_empty() {
                self.reach.connections.remove(&peer);
                self.reach.relayed_only_noted.remove(&peer);
            }
        }
        if !self.reach.exchanges_blocks(&peer) {
            self.bitswap.peer_disconnected(&peer);
        }
    }

    /// Whether `addr`, one of `peer`'s own addresses of the LAN kind, means anything here: a
    /// loopback address only when we reach the peer over loopback (then it is on this
    /// machine), another private or link-local one only when we reach it directly over such an
    /// address (then it is on our LAN). Otherwise a peer across the internet would put its
    /// `127.0.0.1` or its home network's addresses into our LAN DHT, and dials would reach
    /// ourselves or nothing.
    pub(super) fn lan_address_usable(&self, peer: &PeerId, addr: &Multiaddr) -> bool {
        let loopback = is_loopback(addr);
        self.reach.connections.get(peer).is_some_and(|conns| {
            conns.values().any(|(relayed, remote)| {
                !relayed
                    && if loopback {
                        is_loopback(remote)
                    } else {
                        dht_of(remote) == Some(Dht::Lan)
                    }
            })
        })
    }

    /// Whether `peer`, connected but only through a relay, should be dialled again now (for a
    /// new relayed connection and with it a new hole punching attempt); notes the attempt.
    pub(super) fn hole_punch_again(&mut self, peer: PeerId) -> bool {
        if !self.reach.relay_client || self.reach.exchanges_blocks(&peer) {
            return false;
        }
        let now = Instant::now();
        if self
            .reach
            .punch_retried
            .get(&peer)
            .is_some_and(|last| now.duration_since(*last) < HOLE_PUNCH_RETRY)
        {
            return false;
        }
        self.reach
            .punch_retried
            .retain(|_, last| now.duration_since(*last) < HOLE_PUNCH_RETRY);
        self.reach.punch_retried.insert(peer, now);
        tracing::debug!(%peer, "connected only through a relay: dialling again to punch a hole");
        true
    }

    /// Peers reachable only through a relay: connected so now, or until their relayed
    /// connection closed a short while ago with no direct one since.
    pub(super) fn relayed_only_peers(&self) -> Vec<PeerId> {
        let now = Instant::now();
        let mut peers: Vec<PeerId> = self
            .reach
            .relayed_only_seen
            .iter()
            .filter(|(peer, at)| {
                now.duration_since(**at) < RELAYED_ONLY_MEMORY && !self.reach.exchanges_blocks(peer)
            })
            .map(|(peer, _)| *peer)
            .collect();
        peers.sort_by_key(|p| p.to_bytes());
        peers
    }

    /// Every connected peer, with how it is connected.
    pub(super) fn peer_connections(&self) -> Vec<PeerConnection> {
        let mut peers: Vec<PeerConnection> = self
            .reach
            .connections
            .iter()
            .map(|(peer, conns)| PeerConnection {
                peer: *peer,
                direct: conns.values().any(|(relayed, _)| !relayed),
                addresses: conns.values().map(|(_, addr)| addr.clone()).collect(),
                exchanges_blocks: self.reach.exchanges_blocks(peer),
            })
            .collect();
        peers.sort_by_key(|p| p.peer.to_bytes());
        peers
    }

    /// How the node can be reached.
    pub(super) fn reachability(&self) -> Reachability {
        let mut public: Vec<Multiaddr> = self.reach.public.iter().cloned().collect();
        public.sort();
        let mut relayed: Vec<Multiaddr> = self
            .swarm
            .external_addresses()
            .filter(|a| is_relayed(a))
            .cloned()
            .collect();
        relayed.sort();
        Reachability {
            public,
            relayed,
            dht_server: self.reach.wan_server(),
        }
    }

    /// An external address confirmed (by AutoNAT, UPnP, or as a LAN listen address).
    pub(super) fn on_external_confirmed(&mut self, address: Multiaddr) {
        if dht_of(&address) == Some(Dht::Wan) && !is_relayed(&address) {
            if self.reach.public.insert(address.clone()) {
                tracing::info!(%address, "reachable from the internet at this address");
            }
            // Reachable directly: relays are no longer needed.
            for (relay, listener) in self.reach.relays.drain() {
                tracing::info!(%relay, "releasing the relay reservation: reachable directly");
                self.swarm.remove_listener(listener);
            }
            self.update_dht_mode();
        }
    }

    /// An external address that no longer holds.
    pub(super) fn on_external_expired(&mut self, address: &Multiaddr) {
        if self.reach.public.remove(address) {
            tracing::info!(%address, "no longer confirmed as reachable");
            self.update_dht_mode();
        }
    }

    /// A relayed listen address (a reservation made): peers reach us through it.
    pub(super) fn on_relayed_listen_addr(&mut self, address: Multiaddr) {
        // The relay client listens at every address the relay announced, its loopback and
        // private ones too: only those we reach the relay at mean anything to others.
        let relay = address.iter().find_map(|p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        });
        let base: Multiaddr = address
            .iter()
            .take_while(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        if let Some(relay) = relay {
            if dht_of(&base) == Some(Dht::Lan) && !self.lan_address_usable(&relay, &base) {
                tracing::debug!(%address, "not announcing a relayed address behind the relay's own local address");
                return;
            }
        }
        tracing::info!(%address, "reachable through a relay");
        self.swarm.add_external_address(address);
    }

    /// A peer identified itself: if it is a relay and we are not reachable, reserve a slot.
    pub(super) fn consider_relay(&mut self, peer: PeerId, info: &identify::Info) {
        if !self.reach.relay_client
            || !self.reach.public.is_empty()
            || self.reach.relays.len() >= MAX_RELAYS
            || self.reach.relays.contains_key(&peer)
            || !info.protocols.contains(&RELAY_HOP_PROTOCOL)
        {
            return;
        }
        // Through the address we reach it at directly.
        let Some(addr) = self.reach.connections.get(&peer).and_then(|conns| {
            conns
                .values()
                .find(|(relayed, _)| !relayed)
                .map(|(_, addr)| addr.clone())
        }) else {
            return;
        };
        let base: Multiaddr = addr
            .iter()
            .take_while(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        let circuit = base.with(Protocol::P2p(peer)).with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(listener) => {
                tracing::info!(relay = %peer, address = %circuit, "not reachable directly: reserving a slot at a relay");
                self.reach.relays.insert(peer, listener);
            }
            Err(e) => tracing::debug!(relay = %peer, error = %e, "relay reservation not started"),
        }
    }

    /// A relay listener closed (reservation refused, expired, or the relay went away).
    pub(super) fn on_listener_closed(&mut self, listener: ListenerId) {
        self.reach.relays.retain(|relay, id| {
            if *id == listener {
                tracing::info!(%relay, "relay reservation ended");
                false
            } else {
                true
            }
        });
    }

    pub(super) fn on_autonat_event(&mut self, event: autonat::v2::client::Event) {
        match &event.result {
            Ok(()) => {
                tracing::debug!(address = %event.tested_addr, server = %event.server, "AutoNAT: reachable")
            }
            Err(e) => {
                tracing::debug!(address = %event.tested_addr, server = %event.server, error = %e, "AutoNAT: not reachable")
            }
        }
    }

    pub(super) fn on_relay_client_event(&mut self, event: relay::client::Event) {
        tracing::debug!(?event, "relay client");
    }

    pub(super) fn on_relay_event(&mut self, event: relay::Event) {
        match event {
            relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                tracing::info!(peer = %src_peer_id, "relaying for a peer (reservation accepted)")
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, "relaying a connection"),
            other => tracing::debug!(event = ?other, "relay service"),
        }
    }

    pub(super) fn on_upnp_event(&mut self, event: libp2p::upnp::Event) {
        match event {
            libp2p::upnp::Event::NewExternalAddr { external_addr, .. } => {
                tracing::info!(address = %external_addr, "UPnP: the router forwards this address to us");
            }
            libp2p::upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                tracing::info!(address = %external_addr, "UPnP: port mapping expired");
            }
            libp2p::upnp::Event::GatewayNotFound => {
                tracing::warn!("UPnP: no gateway (router) found on the network");
            }
            libp2p::upnp::Event::NonRoutableGateway => {
                tracing::warn!(
                    "UPnP: the gateway has no public address (a NAT behind a NAT): no mapping"
                );
            }
        }
    }

    pub(super) fn on_dcutr_event(&mut self, event: dcutr::Event) {
        match event.result {
            Ok(connection) => {
                tracing::info!(peer = %event.remote_peer_id, %connection, "hole punching succeeded: direct connection")
            }
            Err(e) => {
                tracing::warn!(peer = %event.remote_peer_id, error = %e, "hole punching failed: the peer stays reachable only through a relay")
            }
        }
    }
}
