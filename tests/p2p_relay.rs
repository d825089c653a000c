//! Circuit Relay v2 on loopback: a node that is not reachable directly reserves a slot at a
//! relay (one of its bootstrap peers), other nodes reach it through the relay's circuit address
//! alone, and blocks cross the relay only for a node configured to allow it.

mod p2p_support;

use std::time::Duration;

use ipns_registry::p2p::{P2pConfig, RelayLimits};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use p2p_support::{wait_until, TestNode};

fn tcp_only(keypair: Keypair) -> P2pConfig {
    P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        fetch_timeout: Duration::from_secs(10),
        ..P2pConfig::new(keypair)
    }
}

/// A relay, and a writer holding one block that reserved a slot at it: (relay, writer, the
/// writer's address through the relay, the block).
async fn relay_and_writer() -> (TestNode, TestNode, Multiaddr, cid::Cid) {
    let relay = TestNode::start_with(P2pConfig {
        relay_service: Some(RelayLimits {
            max_reservations: 8,
            max_circuits: 4,
            max_circuits_per_peer: 2,
            max_circuit_duration: Duration::from_secs(120),
            max_circuit_bytes: 128 * 1024,
        }),
        ..tcp_only(Keypair::generate_ed25519())
    })
    .await;
    let relay_addr = relay.tcp_addr().await;
    // Loopback addresses are never confirmed as public: the writer looks for a relay among its
    // bootstrap peers and reserves a slot.
    // It serves blocks over relayed connections (both ends must allow it for blocks to move).
    let writer = TestNode::start_with(P2pConfig {
        bootstrap: vec![relay_addr.clone()],
        blocks_over_relay: true,
        ..tcp_only(Keypair::generate_ed25519())
    })
    .await;
    let Some(_) = wait_until(Duration::from_secs(20), || async {
        !writer.p2p.reachability().await.relayed.is_empty()
    })
    .await
    else {
        panic!(
            "no relay reservation: {:?}",
            writer.p2p.reachability().await
        );
    };
    let relayed = writer.p2p.reachability().await.relayed;
    assert!(
        relayed[0].iter().any(|p| matches!(p, Protocol::P2pCircuit)),
        "{relayed:?}"
    );
    let cid = writer.put_block(BLOCK);
    let circuit = relay_addr
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(writer.p2p.peer_id()));
    (relay, writer, circuit, cid)
}

const BLOCK: &[u8] = b"a block that crosses a relay only when allowed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_do_not_cross_a_relay_unless_allowed() {
    let (_relay, writer, circuit, cid) = relay_and_writer().await;
    let writer_id = writer.p2p.peer_id();

    // A reader that knows only the writer's address through the relay, with the default
    // policy: the connection comes up, but blocks move over direct connections only.
    let reader = TestNode::start_with(tcp_only(Keypair::generate_ed25519())).await;
    reader
        .p2p
        .dial(circuit.clone())
        .await
        .expect("dial through the relay");
    let connections = reader.p2p.peer_connections().await;
    let to_writer = connections
        .iter()
        .find(|c| c.peer == writer_id)
        .expect("connected to the writer");
    assert!(
        to_writer
            .addresses
            .iter()
            .any(|a| a.iter().any(|p| matches!(p, Protocol::P2pCircuit))),
        "{to_writer:?}"
    );
    match reader.p2p.fetch_block(&cid).await {
        // Hole punching (DCUtR) may have made a direct connection meanwhile (on loopback it
        // has no address candidates to punch with): then the block came over it.
        Ok(data) => {
            assert_eq!(data.as_ref(), BLOCK);
            let now = reader.p2p.peer_connections().await;
            assert!(
                now.iter().any(|c| c.peer == writer_id && c.direct),
                "a block arrived with no direct connection: {now:?}"
            );
        }
        Err(_) => {
            let now = reader.p2p.peer_connections().await;
            let to_writer = now.iter().find(|c| c.peer == writer_id);
            assert!(
                to_writer.is_some_and(|c| !c.direct && !c.exchanges_blocks),
                "{now:?}"
            );
        }
    }

    // A reader that allows blocks over relays too (the relay is its own) gets the block
    // through the circuit, within the relay's byte limit.
    let trusting = TestNode::start_with(P2pConfig {
        blocks_over_relay: true,
        ..tcp_only(Keypair::generate_ed25519())
    })
    .await;
    trusting
        .p2p
        .dial(circuit)
        .await
        .expect("dial through the relay");
    assert_eq!(
        trusting.p2p.fetch_block(&cid).await.unwrap().as_ref(),
        BLOCK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_relay_in_reach_reports_no_relayed_address() {
    // A bootstrap peer that is no relay: no reservation, and the WAN DHT stays a client
    // (a bootstrap peer is configured, and no public address is confirmed on loopback).
    let plain = TestNode::start_with(tcp_only(Keypair::generate_ed25519())).await;
    let node = TestNode::start_with(P2pConfig {
        bootstrap: vec![plain.tcp_addr().await],
        ..tcp_only(Keypair::generate_ed25519())
    })
    .await;
    let plain_id = plain.p2p.peer_id();
    wait_until(Duration::from_secs(10), || async {
        node.p2p.connected_peers().await.contains(&plain_id)
    })
    .await
    .expect("the bootstrap peer is dialled");
    let reach = node.p2p.reachability().await;
    assert!(reach.relayed.is_empty(), "{reach:?}");
    assert!(reach.public.is_empty(), "{reach:?}");
    assert!(!reach.dht_server, "{reach:?}");
    // Without bootstrap peers (a LAN), the WAN DHT serves as before.
    assert!(plain.p2p.reachability().await.dht_server);
}
