//! Connection limits: a node takes at most its configured number of connections, in total and
//! from one peer; connections over the limit are closed at once while those within it work on.

mod p2p_support;

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use p2p_support::{loopback_config, wait_until, TestNode};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The address without its `/p2p/<id>`, so a dial opens a new connection even to a peer
/// already connected.
fn without_peer_id(addr: Multiaddr) -> Multiaddr {
    addr.into_iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_limits_are_refused() {
    let mut config = loopback_config(Keypair::generate_ed25519(), vec![], TIMEOUT);
    config.max_connections = 2;
    config.max_connections_per_peer = 1;
    let node = TestNode::start_with(config).await;

    // One connection per peer: a second one, over QUIC, does not last; the first does.
    let first = TestNode::start(vec![], TIMEOUT).await;
    first.connect(&node).await;
    // Refused during the handshake, or closed right after it: either way it does not last.
    let _ = first
        .p2p
        .dial(without_peer_id(node.quic_addr().await))
        .await;
    let one = wait_until(TIMEOUT, || async {
        first.p2p.connection_count().await == 1
    })
    .await;
    assert!(one.is_some(), "a second connection from one peer lasted");
    assert!(node
        .p2p
        .connected_peers()
        .await
        .contains(&first.p2p.peer_id()));
    assert_eq!(node.p2p.connection_count().await, 1);

    // Two connections in all: a third peer's does not last.
    let second = TestNode::start(vec![], TIMEOUT).await;
    second.connect(&node).await;
    let third = TestNode::start(vec![], TIMEOUT).await;
    let _ = third.p2p.dial(node.tcp_addr().await).await;
    let gone = wait_until(TIMEOUT, || async {
        third.p2p.connection_count().await == 0
    })
    .await;
    assert!(gone.is_some(), "a connection over the total limit lasted");
    let peers = node.p2p.connected_peers().await;
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert!(!peers.contains(&third.p2p.peer_id()));

    // Those within the limits work: a block comes over from the first peer.
    let cid = first.put_block(b"within the limits");
    assert_eq!(
        node.p2p.fetch_block(&cid).await.unwrap().as_ref(),
        b"within the limits"
    );
}
