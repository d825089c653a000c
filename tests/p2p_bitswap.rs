//! Bitswap between in-process nodes on loopback: small and 1 MiB blocks, hundreds at once,
//! timeouts, peers two hops away, unsupported hashes.

mod p2p_support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::multihash::Multihash;
use cid::Cid;
use ipns_registry::p2p::bitswap::NO_PEER_GRACE;
use ipns_registry::p2p::P2pError;
use ipns_registry::tree::RAW;
use p2p_support::{block_data, wait_until, RawBitswapPeer, TestNode};

const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetches_small_and_large_blocks_from_a_peer() {
    let server = TestNode::start(vec![], TIMEOUT).await;
    let client = TestNode::start(vec![], TIMEOUT).await;
    client.connect(&server).await;

    let small = server.put_block(b"a small block");
    let large_data = block_data(1, 1 << 20);
    let large = server.put_block(&large_data);

    let got = client.p2p.fetch_block(&small).await.unwrap();
    assert_eq!(got, Bytes::from_static(b"a small block"));
    let got = client.p2p.fetch_block(&large).await.unwrap();
    assert_eq!(got.as_ref(), large_data.as_slice());

    // Stored durably on the client: readable from its own store.
    assert_eq!(
        client
            .blocks
            .get_blocking(&large)
            .unwrap()
            .unwrap()
            .as_ref(),
        large_data.as_slice()
    );
    // And served locally from then on, even with the server gone.
    server.p2p.shutdown().await;
    let again = client.p2p.fetch_block(&large).await.unwrap();
    assert_eq!(again.as_ref(), large_data.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetches_300_one_mib_blocks_concurrently() {
    let server = TestNode::start(vec![], Duration::from_secs(120)).await;
    let client = TestNode::start(vec![], Duration::from_secs(120)).await;
    client.connect(&server).await;

    const BLOCKS: u64 = 300;
    const SIZE: usize = 1 << 20;
    let server_blocks = server.blocks.clone();
    let cids: Vec<Cid> = tokio::task::spawn_blocking(move || {
        (0..BLOCKS)
            .map(|i| {
                let data = block_data(1000 + i, SIZE);
                let cid = ipns_registry::tree::cid_of(RAW, &data);
                server_blocks.put_blocking(&cid, &data).unwrap();
                cid
            })
            .collect()
    })
    .await
    .unwrap();

    let start = Instant::now();
    let fetches = cids.iter().map(|cid| {
        let p2p = client.p2p.clone();
        let cid = *cid;
        tokio::spawn(async move { p2p.fetch_block(&cid).await })
    });
    let results = libp2p::futures::future::join_all(fetches).await;
    let elapsed = start.elapsed();
    for (i, result) in results.into_iter().enumerate() {
        let data = result.unwrap().unwrap();
        assert_eq!(data.len(), SIZE);
        assert_eq!(ipns_registry::tree::cid_of(RAW, &data), cids[i]);
    }
    let mib = (BLOCKS as usize * SIZE) as f64 / f64::from(1 << 20);
    println!(
        "bitswap loopback throughput: {mib:.0} MiB in {:.2} s = {:.1} MiB/s ({BLOCKS} concurrent fetches of 1 MiB blocks, TCP, {} build)",
        elapsed.as_secs_f64(),
        mib / elapsed.as_secs_f64(),
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    let (bytes, count) = client.blocks.usage_blocking().unwrap();
    assert_eq!(count, BLOCKS);
    assert_eq!(bytes, BLOCKS * SIZE as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fetches_of_one_block_share_the_want() {
    let data = block_data(7, 300_000);
    let cid = ipns_registry::tree::cid_of(RAW, &data);
    let server = RawBitswapPeer::start(HashMap::from([(cid, data.clone())])).await;
    let client = TestNode::start(vec![], TIMEOUT).await;
    client.p2p.dial(server.addr.clone()).await.unwrap();
    let fetches = (0..20).map(|_| {
        let p2p = client.p2p.clone();
        tokio::spawn(async move { p2p.fetch_block(&cid).await })
    });
    for result in libp2p::futures::future::join_all(fetches).await {
        assert_eq!(result.unwrap().unwrap().as_ref(), data.as_slice());
    }
    assert_eq!(
        server.wants_seen.load(Ordering::SeqCst),
        1,
        "one want for 20 callers"
    );
}

/// A want can vanish in transit without an error on our side (a peer dropping a stream it had
/// no time to take): pending wants are sent again, so the fetch still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_wants_are_sent_again() {
    let data = block_data(8, 4096);
    let cid = ipns_registry::tree::cid_of(RAW, &data);
    let server = RawBitswapPeer::start_losing(HashMap::from([(cid, data.clone())]), 2).await;
    let client = TestNode::start(vec![], Duration::from_secs(20)).await;
    client.p2p.dial(server.addr.clone()).await.unwrap();
    let block = client
        .p2p
        .fetch_block(&cid)
        .await
        .expect("fetched after resends");
    assert_eq!(block.as_ref(), data.as_slice());
    // Two lost, then the one answered (more only if a tick came before the block did).
    assert!(server.wants_seen.load(Ordering::SeqCst) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_block_times_out() {
    let server = TestNode::start(vec![], TIMEOUT).await;
    let client = TestNode::start(vec![], Duration::from_millis(800)).await;
    client.connect(&server).await;
    let cid = ipns_registry::tree::cid_of(RAW, b"nobody has this");
    let start = Instant::now();
    let err = client.p2p.fetch_block(&cid).await.unwrap_err();
    assert!(
        matches!(err, P2pError::FetchTimeout { cid: c, .. } if c == cid),
        "{err}"
    );
    // A timeout cannot fire early; how late it fires on a busy machine is not asserted.
    assert!(start.elapsed() >= Duration::from_millis(800));
}

/// With nobody connected there is nobody to ask: the fetch fails once no peer turned up within
/// the grace period, well before its 60 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetch_without_any_peer_gives_up_early() {
    let lonely = TestNode::start(vec![], Duration::from_secs(60)).await;
    let cid = ipns_registry::tree::cid_of(RAW, b"nobody to ask");
    let err = lonely.p2p.fetch_block(&cid).await.unwrap_err();
    assert!(
        matches!(err, P2pError::NoPeers { cid: c, waited } if c == cid && waited == NO_PEER_GRACE),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waits_for_a_peer_that_connects_during_the_fetch() {
    let server = TestNode::start(vec![], TIMEOUT).await;
    let client = TestNode::start(vec![], Duration::from_secs(10)).await;
    let cid = server.put_block(b"late peer");
    let p2p = client.p2p.clone();
    let fetch = tokio::spawn(async move { p2p.fetch_block(&cid).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.connect(&server).await;
    assert_eq!(fetch.await.unwrap().unwrap().as_ref(), b"late peer");
}

/// Bitswap only asks connected peers and relays nothing: with A - B - C where only C has the
/// block and A cannot learn of C (C is a bare Bitswap peer without identify or DHT), A's fetch
/// times out, and succeeds once A connects to C directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn block_two_hops_away_needs_a_direct_connection() {
    let a = TestNode::start(vec![], Duration::from_secs(1)).await;
    let b = TestNode::start(vec![], TIMEOUT).await;
    let data = b"far away".to_vec();
    let cid = ipns_registry::tree::cid_of(RAW, &data);
    let c = RawBitswapPeer::start(HashMap::from([(cid, data.clone())])).await;
    a.connect(&b).await;
    b.p2p.dial(c.addr.clone()).await.unwrap();

    let err = a.p2p.fetch_block(&cid).await.unwrap_err();
    assert!(matches!(err, P2pError::FetchTimeout { .. }), "{err}");
    assert!(!a.p2p.connected_peers().await.contains(&c.peer_id));
    assert!(
        !b.blocks.has_blocking(&cid),
        "B does not fetch on A's behalf"
    );

    a.p2p.dial(c.addr.clone()).await.unwrap();
    // A's fetches give up after 1 s (for the timeout above); now one of them gets the block.
    let fetched = wait_until(TIMEOUT, || async {
        a.p2p
            .fetch_block(&cid)
            .await
            .is_ok_and(|block| block.as_ref() == data.as_slice())
    })
    .await;
    assert!(fetched.is_some(), "fetched once connected to C");
}

/// With full nodes, "two hops away" does not last: A's Kademlia bootstrap walks B's routing
/// table, connects A to C, and the block is then one hop away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_nodes_two_hops_apart_meet_through_the_dht() {
    let a = TestNode::start(vec![], TIMEOUT).await;
    let b = TestNode::start(vec![], TIMEOUT).await;
    let c = TestNode::start(vec![], TIMEOUT).await;
    b.connect(&c).await;
    a.connect(&b).await;
    let c_id = c.p2p.peer_id();
    let took = wait_until(Duration::from_secs(10), || async {
        a.p2p.connected_peers().await.contains(&c_id)
    })
    .await
    .expect("A connects to C through the DHT");
    println!("A found C through the DHT in {took:?}");
    let cid = c.put_block(b"found through the DHT");
    assert_eq!(
        a.p2p.fetch_block(&cid).await.unwrap().as_ref(),
        b"found through the DHT"
    );
}

/// A peer sending data that does not hash to the wanted CID gets nothing stored; with an honest
/// peer also connected, the honest block wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_blocks_are_rejected() {
    let real = block_data(42, 100_000);
    let cid = ipns_registry::tree::cid_of(RAW, &real);
    let forger = RawBitswapPeer::start(HashMap::from([(cid, b"forged data".to_vec())])).await;

    let client = TestNode::start(vec![], Duration::from_secs(2)).await;
    client.p2p.dial(forger.addr.clone()).await.unwrap();
    let err = client.p2p.fetch_block(&cid).await.unwrap_err();
    assert!(matches!(err, P2pError::FetchTimeout { .. }), "{err}");
    assert!(
        forger.wants_seen.load(Ordering::SeqCst) >= 1,
        "the forger was asked"
    );
    assert!(!client.blocks.has_blocking(&cid), "nothing stored");
    assert_eq!(client.blocks.usage_blocking().unwrap().1, 0);

    let honest = TestNode::start(vec![], TIMEOUT).await;
    honest.put_block(&real);
    client.connect(&honest).await;
    assert_eq!(
        client.p2p.fetch_block(&cid).await.unwrap().as_ref(),
        real.as_slice()
    );
    assert_eq!(
        client.blocks.get_blocking(&cid).unwrap().unwrap().as_ref(),
        real.as_slice()
    );
}

/// A peer that wanted a block we lacked gets it once we fetch it ourselves: its want stands
/// after our DONT_HAVE, as in kubo.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standing_want_is_served_when_the_block_arrives() {
    let a = TestNode::start(vec![], Duration::from_secs(10)).await;
    let b = TestNode::start(vec![], TIMEOUT).await;
    let data = b"served once B has it".to_vec();
    let cid = ipns_registry::tree::cid_of(RAW, &data);
    let c = RawBitswapPeer::start(HashMap::from([(cid, data.clone())])).await;
    a.connect(&b).await;
    b.p2p.dial(c.addr.clone()).await.unwrap();
    let p2p = a.p2p.clone();
    let fetch = tokio::spawn(async move { p2p.fetch_block(&cid).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.p2p.fetch_block(&cid).await.unwrap();
    assert_eq!(fetch.await.unwrap().unwrap().as_ref(), data.as_slice());
    assert!(!a.p2p.connected_peers().await.contains(&c.peer_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_hash_is_an_error() {
    let node = TestNode::start(vec![], TIMEOUT).await;
    let identity = Cid::new_v1(RAW, Multihash::<64>::wrap(0x00, b"inline").unwrap());
    let err = node.p2p.fetch_block(&identity).await.unwrap_err();
    assert!(
        matches!(err, P2pError::UnsupportedHash { code: 0, .. }),
        "{err}"
    );
    let blake3 = Cid::new_v1(RAW, Multihash::<64>::wrap(0x1e, &[0; 32]).unwrap());
    assert!(matches!(
        node.p2p.fetch_block(&blake3).await,
        Err(P2pError::UnsupportedHash { code: 0x1e, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetches_over_quic() {
    let server = TestNode::start(vec![], TIMEOUT).await;
    let client = TestNode::start(vec![], TIMEOUT).await;
    client.p2p.dial(server.quic_addr().await).await.unwrap();
    let data = block_data(3, 1 << 20);
    let cid = server.put_block(&data);
    assert_eq!(
        client.p2p.fetch_block(&cid).await.unwrap().as_ref(),
        data.as_slice()
    );
}
