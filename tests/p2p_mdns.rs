//! LAN discovery: two nodes with mDNS on find and connect to each other. Each node runs in a
//! host of its own on a lab LAN (`scripts/netlab.sh up LAB lan 2`: two namespaces on a bridge
//! that lives in a third), so that no multicast ever leaves by the machine's own interfaces.
//! Needs root and iproute2's `ip`; skipped with the reason printed otherwise (CI runs as root).

mod p2p_support;

use std::time::Duration;

use ipns_registry::p2p::P2pConfig;
use ipns_registry::tree::{cid_of, RAW};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use p2p_support::netlab::NetLab;
use p2p_support::wait_until;

/// A node listening on every address of its host (TCP), with mDNS on.
fn lan_config() -> P2pConfig {
    P2pConfig {
        listen: vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()],
        mdns: true,
        fetch_timeout: Duration::from_secs(5),
        ..P2pConfig::new(Keypair::generate_ed25519())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_the_lan_find_each_other() {
    let lab = match NetLab::up("mdns", &["lan", "2"]) {
        Ok(lab) => lab,
        Err(reason) => {
            println!("skipping the mDNS test: {reason}");
            return;
        }
    };
    let a = lab.start_node("h1", lan_config());
    let b = lab.start_node("h2", lan_config());
    let b_id = b.p2p.peer_id();
    let Some(took) = wait_until(Duration::from_secs(20), || async {
        a.p2p.connected_peers().await.contains(&b_id)
    })
    .await
    else {
        panic!("the nodes did not find each other by mDNS within 20 s");
    };
    println!("mDNS discovery and connection took {took:?}");
    // b listens in h2 (whose only other interface is its own loopback), so the connection
    // runs over the lab's LAN.
    let h2 = lab.addr("h2");
    let b_addrs = b.p2p.listen_addrs().await;
    assert!(
        b_addrs
            .iter()
            .any(|a| a.iter().any(|p| p == Protocol::Ip4(h2))),
        "b listens on {b_addrs:?}, not on h2's {h2}"
    );
    let data = b"found on the LAN";
    let cid = cid_of(RAW, data);
    b.blocks.put_blocking(&cid, data).unwrap();
    assert_eq!(a.p2p.fetch_block(&cid).await.unwrap().as_ref(), data);
    // Nodes first (they hold sockets in the lab's namespaces), then the lab.
    drop((a, b));
    drop(lab);
}
