//! Nodes in the lab's internet (`scripts/netlab.sh up LAB internet`), as the NAT traversal
//! tests will use it: a node at home behind a NAT router dials a node on the public network
//! and fetches a block from it, while the public node cannot open a connection to the home
//! node, neither at its private address nor at its router's public one. Needs root, `ip` and
//! `iptables`; skipped with the reason printed otherwise (CI runs as root).

mod p2p_support;

use std::time::Duration;

use ipns_registry::p2p::P2pConfig;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use p2p_support::netlab::NetLab;

/// A node listening on every address of its host (TCP), mDNS off.
fn wide_config() -> P2pConfig {
    P2pConfig {
        listen: vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()],
        mdns: false,
        fetch_timeout: Duration::from_secs(5),
        ..P2pConfig::new(Keypair::generate_ed25519())
    }
}

/// The TCP port in `addrs`.
fn tcp_port(addrs: &[Multiaddr]) -> u16 {
    addrs
        .iter()
        .flat_map(|a| a.iter())
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP listen address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_nat_dials_out_and_is_not_reachable_unsolicited() {
    let lab = match NetLab::up("inet", &["internet", "--nat", "eim"]) {
        Ok(lab) => lab,
        Err(reason) => {
            println!("skipping the lab internet test: {reason}");
            return;
        }
    };
    let public = lab.start_node("pub1", wide_config());
    let home = lab.start_node("home1", wide_config());
    let home_id = home.p2p.peer_id();
    let home_port = tcp_port(&home.p2p.listen_addrs().await);

    for ip in [lab.addr("home1"), lab.addr("nat1")] {
        let addr: Multiaddr = format!("/ip4/{ip}/tcp/{home_port}/p2p/{home_id}")
            .parse()
            .unwrap();
        let dialled = public.p2p.dial(addr.clone()).await;
        assert!(
            dialled.is_err(),
            "the public node reached the home node at {addr}"
        );
    }
    assert!(!public.p2p.connected_peers().await.contains(&home_id));

    let public_port = tcp_port(&public.p2p.listen_addrs().await);
    let public_addr: Multiaddr = format!(
        "/ip4/{}/tcp/{public_port}/p2p/{}",
        lab.addr("pub1"),
        public.p2p.peer_id()
    )
    .parse()
    .unwrap();
    home.p2p.dial(public_addr).await.unwrap();
    let cid = public.put_block(b"fetched from behind a NAT");
    assert_eq!(
        home.p2p.fetch_block(&cid).await.unwrap().as_ref(),
        b"fetched from behind a NAT"
    );
    drop((public, home));
    drop(lab);
}
