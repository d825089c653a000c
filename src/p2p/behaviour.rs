//! The composed libp2p behaviour and the swarm built around it (transports and protocol settings).

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    gossipsub, identify, kad, mdns, noise, ping, request_response, tcp, yamux, StreamProtocol,
    Swarm, SwarmBuilder,
};
use sha2::{Digest as _, Sha256};

use super::record_codec::{RecordCodec, MAX_RECORD_SIZE, RECORD_PROTOCOL};
use super::P2pError;

/// The Kademlia protocol of the public IPFS DHT.
pub(super) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");

/// Connections without open streams stay up this long. Long, because a replica needs its peers
/// connected when a pull arrives; configured peers are re-dialled anyway if they drop.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// Every protocol the node speaks.
#[derive(NetworkBehaviour)]
pub(super) struct NodeBehaviour {
    /// `/ipfs/id/1.0.0`: tells peers our addresses and protocols, and us theirs.
    pub(super) identify: identify::Behaviour,
    /// Liveness of connections.
    pub(super) ping: ping::Behaviour,
    /// The DHT, `/ipfs/kad/1.0.0`, in server mode.
    pub(super) kad: kad::Behaviour<kad::store::MemoryStore>,
    /// IPNS over pubsub.
    pub(super) gossipsub: gossipsub::Behaviour,
    /// LAN discovery, when enabled.
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    /// Direct record queries, `/ipns-registry/record/1.0.0`.
    pub(super) records: request_response::Behaviour<RecordCodec>,
    /// Raw streams, for Bitswap.
    pub(super) stream: libp2p_stream::Behaviour,
}

/// Builds the swarm: TCP and QUIC, noise, yamux, and the protocols of [`NodeBehaviour`].
pub(super) fn build_swarm(keypair: Keypair, mdns: bool) -> Result<Swarm<NodeBehaviour>, P2pError> {
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| P2pError::Setup(format!("tcp transport: {e}")))?
        .with_quic()
        .with_behaviour(|key| build_behaviour(key, mdns))
        .map_err(|e| P2pError::Setup(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

fn build_behaviour(
    key: &Keypair,
    mdns: bool,
) -> Result<NodeBehaviour, Box<dyn std::error::Error + Send + Sync>> {
    let peer_id = key.public().to_peer_id();

    // The stream protocol is always /ipfs/id/1.0.0; this is the "protocolVersion" field.
    let identify = identify::Behaviour::new(
        identify::Config::new("ipfs/0.1.0".to_string(), key.public())
            .with_agent_version(format!("ipns-registry/{}", env!("CARGO_PKG_VERSION"))),
    );

    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config.set_query_timeout(Duration::from_secs(30));
    let mut kad =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
    // Server mode from the start: loopback and LAN nodes never get a confirmed external
    // address, and in client mode they would not answer each other's DHT queries.
    kad.set_mode(Some(kad::Mode::Server));

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
        // Content addressing: the same record published twice is one message.
        .message_id_fn(|message: &gossipsub::Message| {
            gossipsub::MessageId::from(Sha256::digest(&message.data).to_vec())
        })
        // Records are capped at 10 KiB; leave room for the signed envelope.
        .max_transmit_size(MAX_RECORD_SIZE + 4096)
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))?;
    let gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossipsub_config,
    )
    .map_err(|e| format!("gossipsub: {e}"))?;

    let mdns = if mdns {
        Some(mdns::tokio::Behaviour::new(
            mdns::Config::default(),
            peer_id,
        )?)
    } else {
        None
    };

    let records = request_response::Behaviour::new(
        [(RECORD_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
    );

    Ok(NodeBehaviour {
        identify,
        ping: ping::Behaviour::default(),
        kad,
        gossipsub,
        mdns: Toggle::from(mdns),
        records,
        stream: libp2p_stream::Behaviour::new(),
    })
}
