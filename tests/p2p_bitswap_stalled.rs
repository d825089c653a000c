//! A peer that wants every block and never reads what it is sent must not make the node hold
//! blocks for it: the node fetches 256 MiB from an honest peer while such a peer is connected,
//! and its peak RSS stays far below what it fetched.
//!
//! Alone in its test binary, so the RSS measured is this test's own.

mod p2p_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use ipns_registry::p2p::bitswap::{write_message, Entry, Message, Version, WantType};
use ipns_registry::tree::{cid_of, RAW};
use libp2p::futures::StreamExt as _;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use p2p_support::{block_data, wait_until, TestNode};

const BLOCKS: u64 = 256;
const BLOCK_SIZE: usize = 1 << 20;
/// Peak RSS growth allowed while fetching 256 MiB. Normal use (the honest peer, the fetching
/// node and the blocks in flight all live in this process) measured about 95 MiB here, with or
/// without the stalled peer; a node that queues the fetched blocks for the stalled peer grew by
/// about 300 MiB.
const MAX_GROWTH: u64 = 192 << 20;
const BITSWAP: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");

/// A bare libp2p peer (TCP, noise, yamux, libp2p-stream) that accepts Bitswap streams and
/// never reads them, and can send the node a wantlist on a stream of its own.
struct StalledPeer {
    peer_id: PeerId,
    addr: Multiaddr,
    control: libp2p_stream::Control,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// How many streams the node opened to us (and we never read).
    accepted: Arc<AtomicU64>,
}

impl Drop for StalledPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl StalledPeer {
    async fn start() -> StalledPeer {
        let swarm = p2p_support::tcp_swarm(Duration::from_secs(600), |_| {
            libp2p_stream::Behaviour::new()
        });
        let peer_id = *swarm.local_peer_id();
        let mut control = swarm.behaviour().new_control();
        let mut incoming = control.accept(BITSWAP).unwrap();
        let (addr, driver) = p2p_support::listen_and_drive(swarm).await;
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let acceptor = tokio::spawn(async move {
            // Held, never read: the node's writes fill the stream window and then stall.
            let mut held = Vec::new();
            while let Some((_, stream)) = incoming.next().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        StalledPeer {
            peer_id,
            addr,
            control,
            tasks: vec![driver, acceptor],
            accepted,
        }
    }

    /// Sends `node` one wantlist asking for every CID in `cids` (want-block, send-dont-have).
    async fn want(&mut self, node: PeerId, cids: &[Cid]) {
        // The node's dial may not have reached our swarm yet: retry until the connection is up.
        let mut stream = None;
        for _ in 0..100 {
            match self.control.open_stream(node, BITSWAP).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let mut stream = stream.expect("a stream to the node");
        let message = Message {
            entries: cids
                .iter()
                .map(|cid| Entry {
                    want_type: WantType::Block,
                    ..Entry::want_block(*cid, 1)
                })
                .collect(),
            ..Message::default()
        };
        write_message(&mut stream, &message, Version::V120)
            .await
            .unwrap();
        // Kept open (and never read from), like the streams the node opens to us.
        let task = tokio::spawn(async move {
            let _stream = stream;
            std::future::pending::<()>().await;
        });
        self.tasks.push(task);
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_never_reads_does_not_make_memory_grow() {
    let timeout = Duration::from_secs(300);
    let honest = TestNode::start(vec![], timeout).await;
    let node = TestNode::start(vec![], timeout).await;
    let mut stalled = StalledPeer::start().await;

    // 256 distinct 1 MiB blocks on the honest peer, generated and stored one at a time.
    let store = honest.blocks.clone();
    let cids: Vec<Cid> = tokio::task::spawn_blocking(move || {
        (0..BLOCKS)
            .map(|i| {
                let data = block_data(7_000 + i, BLOCK_SIZE);
                let cid = cid_of(RAW, &data);
                store.put_blocking(&cid, &data).unwrap();
                cid
            })
            .collect()
    })
    .await
    .unwrap();

    node.connect(&honest).await;
    node.p2p.dial(stalled.addr.clone()).await.unwrap();
    // The stalled peer wants every block the node is about to fetch: the node says DONT_HAVE
    // now, and owes it each block once it has it.
    stalled.want(node.p2p.peer_id(), &cids).await;
    // The node opens its own stream to the stalled peer (to answer) before the fetch starts.
    wait_until(Duration::from_secs(10), || async {
        stalled.accepted.load(Ordering::SeqCst) > 0
    })
    .await
    .expect("the node opened a Bitswap stream to the stalled peer");

    let before = rss_bytes();
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Fetch everything, 32 at a time, dropping each block once it is here.
    let fetched = libp2p::futures::stream::iter(cids.clone())
        .map(|cid| {
            let p2p = node.p2p.clone();
            async move { p2p.fetch_block(&cid).await.map(|data| data.len()) }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    // Let whatever the node queued for the stalled peer pile up a moment longer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    peak.fetch_max(rss_bytes(), Ordering::SeqCst);
    sampling.abort();

    let total: usize = fetched
        .into_iter()
        .map(|r| r.expect("every block arrives from the honest peer"))
        .sum();
    assert_eq!(total as u64, BLOCKS * BLOCK_SIZE as u64);
    let growth = peak.load(Ordering::SeqCst).saturating_sub(before);
    println!(
        "fetched {} MiB; RSS before {} MiB, peak growth {} MiB (bound {} MiB)",
        total >> 20,
        before >> 20,
        growth >> 20,
        MAX_GROWTH >> 20
    );
    assert!(
        growth < MAX_GROWTH,
        "RSS grew by {} MiB while fetching {} MiB next to a peer that never reads",
        growth >> 20,
        total >> 20
    );

    // The node's writes to the stalled peer time out (42 s for a message of 4 MiB): the
    // session gives up and the peer is disconnected.
    let gone = wait_until(Duration::from_secs(120), || async {
        !node.p2p.connected_peers().await.contains(&stalled.peer_id)
    })
    .await;
    println!("stalled peer disconnected after {gone:?}");
    assert!(gone.is_some(), "the stalled peer is disconnected");
    assert!(node
        .p2p
        .connected_peers()
        .await
        .contains(&honest.p2p.peer_id()));
}
