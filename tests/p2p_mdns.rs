//! LAN discovery: two nodes with mDNS on find and connect to each other. Each node runs in a
//! network namespace of its own, the two joined by a veth pair, so that no multicast ever leaves
//! by the machine's own interfaces. Needs root and iproute2's `ip`; skipped with the reason
//! printed otherwise (CI runs as root).

mod p2p_support;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use ipns_registry::p2p::P2p;
use ipns_registry::store::BlockStore;
use ipns_registry::tree::{cid_of, RAW};
use libp2p::identity::Keypair;
use p2p_support::{wait_until, TestNode};
use tokio::sync::oneshot;

/// Runs `ip ARGS`; `Err` with its output when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two network namespaces joined by a veth pair (10.213.42.1 and .2); removed on drop, also
/// when the test fails.
struct LinkedNamespaces {
    names: [String; 2],
}

impl LinkedNamespaces {
    fn create() -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("creating network namespaces needs root".into());
        }
        let tag = std::process::id() % 100_000;
        let namespaces = LinkedNamespaces {
            names: [format!("iprmdns-a{tag}"), format!("iprmdns-b{tag}")],
        };
        let [a, b] = &namespaces.names;
        ip(&["netns", "add", a])?;
        ip(&["netns", "add", b])?;
        let (va, vb) = (format!("vma{tag}"), format!("vmb{tag}"));
        ip(&[
            "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
        ])?;
        for (ns, dev, addr) in [(a, &va, "10.213.42.1/24"), (b, &vb, "10.213.42.2/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(namespaces)
    }
}

impl Drop for LinkedNamespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A node started inside a network namespace: its own thread entered the namespace before
/// building the node's runtime, so every socket the node opens (and every thread its runtime
/// starts) lives there.
struct NamespacedNode {
    p2p: P2p,
    blocks: Arc<BlockStore>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NamespacedNode {
    fn start(namespace: &str) -> Self {
        let path = format!("/run/netns/{namespace}");
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let ns = File::open(&path).expect("open the namespace");
            // SAFETY: a valid namespace file descriptor; setns only affects this thread.
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let config = ipns_registry::p2p::P2pConfig {
                    listen: vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()],
                    mdns: true,
                    fetch_timeout: Duration::from_secs(5),
                    ..ipns_registry::p2p::P2pConfig::new(Keypair::generate_ed25519())
                };
                let node = TestNode::start_with(config).await;
                ready_tx
                    .send((node.p2p.clone(), node.blocks.clone()))
                    .expect("send the node");
                let _ = stopped.await;
                drop(node);
            });
        });
        let (p2p, blocks) = ready_rx.recv().expect("the node started");
        NamespacedNode {
            p2p,
            blocks,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for NamespacedNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_the_lan_find_each_other() {
    let namespaces = match LinkedNamespaces::create() {
        Ok(namespaces) => namespaces,
        Err(reason) => {
            println!("skipping the mDNS test: {reason}");
            return;
        }
    };
    let a = NamespacedNode::start(&namespaces.names[0]);
    let b = NamespacedNode::start(&namespaces.names[1]);
    let b_id = b.p2p.peer_id();
    let Some(took) = wait_until(Duration::from_secs(20), || async {
        a.p2p.connected_peers().await.contains(&b_id)
    })
    .await
    else {
        panic!("the nodes did not find each other by mDNS within 20 s");
    };
    println!("mDNS discovery and connection took {took:?}");
    let data = b"found on the LAN";
    let cid = cid_of(RAW, data);
    b.blocks.put_blocking(&cid, data).unwrap();
    assert_eq!(a.p2p.fetch_block(&cid).await.unwrap().as_ref(), data);
    drop((a, b));
    drop(namespaces);
}
