//! The composed libp2p behaviour and the swarm built around it (transports and protocol settings).

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns, noise, ping, relay,
    request_response, tcp, upnp, yamux, PeerId, StreamProtocol, Swarm, SwarmBuilder,
};
use sha2::{Digest as _, Sha256};

use super::private;
use super::record_codec::{FetchCodec, FETCH_PROTOCOL, MAX_RECORD_SIZE};
use super::{P2pError, RelayLimits};

/// The Kademlia protocol of the public IPFS DHT (the WAN DHT: peers with public addresses).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");
/// The Kademlia protocol of kubo's LAN DHT (peers with private, loopback or link-local
/// addresses), which kubo runs in server mode beside the WAN one.
pub const LAN_KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/lan/kad/1.0.0");

/// Records the DHT store keeps (peers' and the node's own together).
pub(super) const MAX_DHT_RECORDS: usize = 1024;
/// Keys with provider records the DHT store keeps, and providers per key (kad's replication
/// factor). Peers' records are held to fewer keys (`MAX_INBOUND_PROVIDER_RECORDS` in the swarm
/// task), so the node's own always fit.
const MAX_PROVIDER_KEYS: usize = 1024;
const MAX_PROVIDERS_PER_KEY: usize = 20;
/// How long a provider record lives at the peers that hold it: the IPFS (Amino) DHT's
/// provide validity, which kubo and Helia use, so they keep ours as long as their own.
pub(super) const PROVIDER_RECORD_TTL: Duration = Duration::from_secs(48 * 60 * 60);
/// How often the node announces what it provides again: kubo's default reprovide interval.
/// Under half the TTL, so one missed round (a restart, a network outage) still leaves the
/// records alive; kad's own default (12 h) would double the announce traffic for no gain.
pub(super) const PROVIDER_REPUBLISH_INTERVAL: Duration = Duration::from_secs(22 * 60 * 60);
/// Incoming connections being set up at once.
const MAX_PENDING_INCOMING: u32 = 128;

/// Connections without open streams stay up this long. Long, because a replica needs its peers
/// connected when a pull arrives; configured peers are re-dialled anyway if they drop.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// Every protocol the node speaks.
#[derive(NetworkBehaviour)]
pub(super) struct NodeBehaviour {
    /// Connection limits, per peer and in total.
    pub(super) limits: connection_limits::Behaviour,
    /// `/ipfs/id/1.0.0`: tells peers our addresses and protocols, and us theirs.
    pub(super) identify: identify::Behaviour,
    /// Liveness of connections.
    pub(super) ping: ping::Behaviour,
    /// The WAN DHT, `/ipfs/kad/1.0.0`, in server mode; its routing table holds peers with
    /// public addresses.
    pub(super) kad: kad::Behaviour<kad::store::MemoryStore>,
    /// The LAN DHT, `/ipfs/lan/kad/1.0.0`, in server mode; its routing table holds peers with
    /// private, loopback or link-local addresses.
    pub(super) lan_kad: kad::Behaviour<kad::store::MemoryStore>,
    /// IPNS over pubsub.
    pub(super) gossipsub: gossipsub::Behaviour,
    /// LAN discovery, when enabled.
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    /// Record exchange, `/libp2p/fetch/0.0.1`.
    pub(super) fetch: request_response::Behaviour<FetchCodec>,
    /// Raw streams, for Bitswap.
    pub(super) stream: libp2p_stream::Behaviour,
    /// AutoNAT v2, asking: peers dial our address candidates back to confirm them as
    /// reachable external addresses.
    pub(super) autonat: autonat::v2::client::Behaviour,
    /// AutoNAT v2, answering: we dial back the candidates peers ask us to test.
    pub(super) autonat_server: autonat::v2::server::Behaviour,
    /// Circuit Relay v2 client: reachable through a relay when behind a NAT (off in a private
    /// network, where a circuit would bypass the network's key).
    pub(super) relay_client: Toggle<relay::client::Behaviour>,
    /// Circuit Relay v2 relay for others, when enabled.
    pub(super) relay: Toggle<relay::Behaviour>,
    /// Hole punching: a relayed connection upgraded to a direct one.
    pub(super) dcutr: Toggle<dcutr::Behaviour>,
    /// UPnP port mapping, when enabled.
    pub(super) upnp: Toggle<upnp::tokio::Behaviour>,
}

/// How the swarm is built.
pub(super) struct SwarmSettings {
    /// LAN discovery.
    pub(super) mdns: bool,
    /// The pre-shared key of a private network: TCP only, every connection encrypted with it.
    pub(super) private_network: Option<PreSharedKey>,
    /// Established connections in total.
    pub(super) max_connections: u32,
    /// Established connections per peer.
    pub(super) max_connections_per_peer: u32,
    /// Serve as a relay for others, within these limits.
    pub(super) relay_service: Option<RelayLimits>,
    /// UPnP port mapping.
    pub(super) upnp: bool,
}

/// Builds the swarm: TCP and QUIC with DNS names and relayed circuits (or TCP behind the
/// pre-shared key of a private network), noise, yamux, and the protocols of [`NodeBehaviour`].
pub(super) fn build_swarm(
    keypair: Keypair,
    settings: &SwarmSettings,
) -> Result<Swarm<NodeBehaviour>, P2pError> {
    let (dns_config, dns_options) = resolver_config();
    let builder = SwarmBuilder::with_existing_identity(keypair).with_tokio();
    let swarm = match settings.private_network {
        None => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| P2pError::Setup(format!("tcp transport: {e}")))?
            .with_quic()
            .with_dns_config(dns_config, dns_options)
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| P2pError::Setup(format!("relay client transport: {e}")))?
            .with_behaviour(|key, relay_client| build_behaviour(key, settings, Some(relay_client)))
            .map_err(|e| P2pError::Setup(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build(),
        Some(psk) => builder
            .with_other_transport(|key| private::transport(key, psk))
            .map_err(|e| P2pError::Setup(format!("private network transport: {e}")))?
            .with_dns_config(dns_config, dns_options)
            .with_behaviour(|key| build_behaviour(key, settings, None))
            .map_err(|e| P2pError::Setup(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build(),
    };
    Ok(swarm)
}

/// The system's DNS resolver settings, for `/dns*` and `/dnsaddr` addresses. Without any (a
/// container with no `/etc/resolv.conf`), a resolver that asks only the loopback interface: DNS
/// addresses then fail to dial, with the lookup's error, and no query leaves the machine.
fn resolver_config() -> (libp2p::dns::ResolverConfig, libp2p::dns::ResolverOpts) {
    match hickory_resolver::system_conf::read_system_conf() {
        Ok(system) => system,
        Err(e) => {
            tracing::warn!("no system DNS configuration ({e}): /dns and /dnsaddr peer addresses cannot be dialled");
            let loopback = hickory_resolver::config::NameServerConfig::udp_and_tcp(
                std::net::Ipv4Addr::LOCALHOST.into(),
            );
            (
                libp2p::dns::ResolverConfig::from_name_servers(vec![loopback]),
                libp2p::dns::ResolverOpts::default(),
            )
        }
    }
}

fn build_behaviour(
    key: &Keypair,
    settings: &SwarmSettings,
    relay_client: Option<relay::client::Behaviour>,
) -> Result<NodeBehaviour, Box<dyn std::error::Error + Send + Sync>> {
    let peer_id = key.public().to_peer_id();

    // The stream protocol is always /ipfs/id/1.0.0; this is the "protocolVersion" field.
    let identify = identify::Behaviour::new(
        identify::Config::new("ipfs/0.1.0".to_string(), key.public())
            .with_agent_version(format!("ipns-registry/{}", env!("CARGO_PKG_VERSION"))),
    );

    let kad = build_kad(peer_id, KAD_PROTOCOL);
    let lan_kad = build_kad(peer_id, LAN_KAD_PROTOCOL);

    let gossipsub_config = gossipsub::ConfigBuilder::default()
        // Mesh sizes that form a mesh with two or three peers (defaults want six).
        .mesh_n_low(1)
        .mesh_n(2)
        .mesh_n_high(4)
        .mesh_outbound_min(1)
        .gossip_lazy(3)
        .heartbeat_interval(Duration::from_secs(1))
        .heartbeat_initial_delay(Duration::from_millis(100))
        .validation_mode(gossipsub::ValidationMode::Strict)
        // Messages are relayed only once the record validator has accepted them.
        .validate_messages()
        // Content addressing: the same record published twice is one message.
        .message_id_fn(|message: &gossipsub::Message| {
            gossipsub::MessageId::from(Sha256::digest(&message.data).to_vec())
        })
        // Records are capped at 10 KiB; leave room for the signed envelope.
        .max_transmit_size(MAX_RECORD_SIZE + 4096)
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))?;
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossipsub_config,
    )
    .map_err(|e| format!("gossipsub: {e}"))?;
    gossipsub
        .with_peer_score(peer_score_params(), peer_score_thresholds())
        .map_err(|e| format!("gossipsub peer scores: {e}"))?;

    // mDNS is discovery only: a node that cannot run it still serves and reaches its
    // configured peers, so a failure (netlink refused in a way the start-up probe did not
    // catch, say) turns it off rather than stopping the node.
    let mdns = if settings.mdns {
        match mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id) {
            Ok(mdns) => Some(mdns),
            Err(e) => {
                tracing::warn!(
                    "mDNS is off: watching the network interfaces failed ({e}); LAN peers are not discovered: name them with --peer or p2p.peers"
                );
                None
            }
        }
    } else {
        None
    };

    let fetch = request_response::Behaviour::new(
        [(FETCH_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
    );

    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(settings.max_connections))
        .with_max_established_per_peer(Some(settings.max_connections_per_peer))
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING));

    let relay = settings.relay_service.as_ref().map(|limits| {
        let config = relay::Config {
            max_reservations: limits.max_reservations,
            max_circuits: limits.max_circuits,
            max_circuits_per_peer: limits.max_circuits_per_peer,
            max_circuit_duration: limits.max_circuit_duration,
            max_circuit_bytes: limits.max_circuit_bytes,
            ..relay::Config::default()
        };
        relay::Behaviour::new(peer_id, config)
    });
    // Hole punching needs a relayed connection to start from.
    let dcutr = relay_client
        .is_some()
        .then(|| dcutr::Behaviour::new(peer_id));

    Ok(NodeBehaviour {
        limits: connection_limits::Behaviour::new(limits),
        identify,
        ping: ping::Behaviour::default(),
        kad,
        lan_kad,
        gossipsub,
        mdns: Toggle::from(mdns),
        fetch,
        stream: libp2p_stream::Behaviour::new(),
        autonat: autonat::v2::client::Behaviour::new(
            rand::make_rng::<rand::rngs::StdRng>(),
            autonat::v2::client::Config::default(),
        ),
        autonat_server: autonat::v2::server::Behaviour::new(rand::make_rng::<rand::rngs::StdRng>()),
        relay_client: Toggle::from(relay_client),
        relay: Toggle::from(relay),
        dcutr: Toggle::from(dcutr),
        upnp: Toggle::from(settings.upnp.then(upnp::tokio::Behaviour::default)),
    })
}

/// One of the two DHTs, on `protocol`, in server mode.
fn build_kad(peer_id: PeerId, protocol: StreamProtocol) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut kad_config = kad::Config::new(protocol);
    kad_config.set_query_timeout(Duration::from_secs(30));
    // Peers' PUT_VALUE and ADD_PROVIDER arrive as events; the swarm task stores what the
    // record validator accepts.
    kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
    // Kademlia would put a record our lookups found at a peer lacking it, unvalidated: the
    // node passes on only records the validator accepted.
    kad_config.set_caching(kad::Caching::Disabled);
    // The swarm task adds peers itself, each to the DHT its addresses belong to (kubo's
    // routing table filters): left to itself, Kademlia would add every peer that speaks the
    // protocol, whatever its address.
    kad_config.set_kbucket_inserts(kad::BucketInserts::Manual);
    kad_config.set_provider_record_ttl(Some(PROVIDER_RECORD_TTL));
    kad_config.set_provider_publication_interval(Some(PROVIDER_REPUBLISH_INTERVAL));
    let store = kad::store::MemoryStore::with_config(
        peer_id,
        kad::store::MemoryStoreConfig {
            max_records: MAX_DHT_RECORDS,
            // The store refuses values of this size and up.
            max_value_bytes: MAX_RECORD_SIZE + 1,
            max_provided_keys: MAX_PROVIDER_KEYS,
            max_providers_per_key: MAX_PROVIDERS_PER_KEY,
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
    // Server mode from the start: loopback and LAN nodes never get a confirmed external
    // address, and in client mode they would not answer each other's DHT queries.
    kad.set_mode(Some(kad::Mode::Server));
    kad
}

/// Peer scoring: what counts against a peer is delivering invalid records (P4). The other
/// penalties of the defaults assume busy topics (P3 expects 20 messages per mesh peer in a
/// window; ours carry one record every few minutes) or distinct hosts (IP colocation; replicas
/// behind one NAT or on one machine are normal here), so they are off.
fn peer_score_params() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..gossipsub::PeerScoreParams::default()
    }
}

/// Scores of a record topic, set when it is subscribed to.
pub(super) fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        // P1: a little credit for time in the mesh, capped low so it never outweighs P4.
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 600.0,
        // P2: a little credit for first deliveries of valid records.
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 10.0,
        // P3 / P3b: off, see `peer_score_params`.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        // P4: squared, so two invalid records in a short time reach the graylist and a steady
        // trickle stays there; the count halves in about half a minute.
        invalid_message_deliveries_weight: -25.0,
        invalid_message_deliveries_decay: 0.98,
        ..gossipsub::TopicScoreParams::default()
    }
}

/// Below `graylist_threshold` a peer's messages are ignored altogether.
fn peer_score_thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        ..gossipsub::PeerScoreThresholds::default()
    }
}
