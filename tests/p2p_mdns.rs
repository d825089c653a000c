//! LAN discovery: two nodes with mDNS on find and connect to each other. mDNS only announces
//! addresses of the interface it runs on (never loopback), so these nodes listen on 0.0.0.0.
//! Skipped, with the reason printed, where the sandbox has no working multicast.

mod p2p_support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use libp2p::identity::Keypair;
use p2p_support::{wait_until, TestNode};

/// Whether IPv4 multicast works here: a datagram sent to an mDNS-range group comes back to a
/// socket that joined it. `Err` says why not.
fn multicast_works() -> Result<(), String> {
    let group = Ipv4Addr::new(224, 0, 0, 251);
    // Which interface multicast leaves by (fails without a multicast route).
    let probe = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("binding a UDP socket: {e}"))?;
    probe
        .connect(SocketAddr::from((group, 5353)))
        .map_err(|e| format!("no multicast route: {e}"))?;
    let iface = match probe.local_addr().map_err(|e| e.to_string())? {
        SocketAddr::V4(addr) if !addr.ip().is_loopback() && !addr.ip().is_unspecified() => {
            *addr.ip()
        }
        other => {
            return Err(format!(
                "multicast would leave by {other}, not a LAN interface"
            ))
        }
    };
    let receiver = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let port = receiver.local_addr().map_err(|e| e.to_string())?.port();
    receiver
        .join_multicast_v4(&group, &iface)
        .map_err(|e| format!("joining {group} on {iface}: {e}"))?;
    receiver
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let sender = UdpSocket::bind(SocketAddr::from((iface, 0))).map_err(|e| e.to_string())?;
    sender
        .send_to(
            b"ipns-registry multicast probe",
            SocketAddr::from((group, port)),
        )
        .map_err(|e| format!("sending to {group}: {e}"))?;
    let mut buf = [0u8; 64];
    match receiver.recv_from(&mut buf) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "multicast datagram did not come back on {iface}: {e}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_on_the_lan_find_each_other() {
    if let Err(reason) = multicast_works() {
        println!("skipping the mDNS test: {reason}");
        return;
    }
    let config = |keypair| ipns_registry::p2p::P2pConfig {
        listen: vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()],
        mdns: true,
        fetch_timeout: Duration::from_secs(5),
        ..ipns_registry::p2p::P2pConfig::new(keypair)
    };
    let a = TestNode::start_with(config(Keypair::generate_ed25519())).await;
    let b = TestNode::start_with(config(Keypair::generate_ed25519())).await;
    let b_id = b.p2p.peer_id();
    let Some(took) = wait_until(Duration::from_secs(20), || async {
        a.p2p.connected_peers().await.contains(&b_id)
    })
    .await
    else {
        panic!("multicast works here, yet the nodes did not find each other within 20 s");
    };
    println!("mDNS discovery and connection took {took:?}");
    let cid = b.put_block(b"found on the LAN");
    assert_eq!(
        a.p2p.fetch_block(&cid).await.unwrap().as_ref(),
        b"found on the LAN"
    );
}
