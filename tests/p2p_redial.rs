//! Configured peers: dialled at start, and re-dialled after they go away and come back on the
//! same address.

mod p2p_support;

use std::time::{Duration, Instant};

use ipns_registry::p2p::P2pEvent;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use p2p_support::{loopback_config, wait_until, TestNode};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The TCP address without its `/p2p` suffix, with the port fixed.
fn with_port(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

fn tcp_port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configured_peer_is_redialled_after_it_restarts() {
    let key = Keypair::generate_ed25519();
    let server = TestNode::start_with(loopback_config(key.clone(), vec![], TIMEOUT)).await;
    let server_addr = server.tcp_addr().await;
    let port = tcp_port(&server_addr);
    let server_id = server.p2p.peer_id();

    // Configured with its /p2p id; dialled at start.
    let mut client = TestNode::start(vec![server_addr.clone()], Duration::from_secs(5)).await;
    wait_until(TIMEOUT, || async {
        client.p2p.connected_peers().await.contains(&server_id)
    })
    .await
    .expect("connected at start");

    server.p2p.shutdown().await;
    drop(server);
    let gone = Instant::now();
    loop {
        match tokio::time::timeout(TIMEOUT, client.events.recv()).await {
            Ok(Some(P2pEvent::PeerDisconnected(peer))) if peer == server_id => break,
            Ok(Some(_)) => continue,
            other => panic!("no disconnect event: {other:?}"),
        }
    }
    println!("disconnect noticed after {:?}", gone.elapsed());

    // Same identity, same TCP port.
    let mut config = loopback_config(key, vec![], TIMEOUT);
    config.listen[0] = with_port(port);
    let restarted = TestNode::start_with(config).await;
    assert_eq!(tcp_port(&restarted.tcp_addr().await), port);
    let took = wait_until(TIMEOUT, || async {
        client.p2p.connected_peers().await.contains(&server_id)
    })
    .await
    .expect("re-dialled within 10 s");
    println!("re-dialled {took:?} after the restart (redial interval 3 s)");

    // Bitswap works over the new connection.
    let cid = restarted.put_block(b"after the restart");
    assert_eq!(
        client.p2p.fetch_block(&cid).await.unwrap().as_ref(),
        b"after the restart"
    );
}

/// An address without `/p2p/<id>` is dialled too, and whoever answers there is kept connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configured_address_without_peer_id() {
    let server = TestNode::start(vec![], TIMEOUT).await;
    let port = tcp_port(&server.tcp_addr().await);
    let client = TestNode::start(vec![with_port(port)], TIMEOUT).await;
    let server_id = server.p2p.peer_id();
    wait_until(TIMEOUT, || async {
        client.p2p.connected_peers().await.contains(&server_id)
    })
    .await
    .expect("connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_errors_are_reported() {
    let node = TestNode::start(vec![], TIMEOUT).await;
    // A port nobody listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = node.p2p.dial(with_port(port)).await.unwrap_err();
    println!("dial error: {err}");
    assert!(matches!(err, ipns_registry::p2p::P2pError::Dial { .. }));
}
