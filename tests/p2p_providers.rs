//! Provider records on the DHTs: a writer provides its root, a replica that knows neither the
//! writer nor its address finds it through a third node's DHT and fetches from it; a mirroring
//! replica stands in for a stopped writer; a changing root keeps one provider record.

mod common;
mod p2p_support;

use std::time::Duration;

use ipns_registry::p2p::LAN_KAD_PROTOCOL;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use p2p_support::{block_data, wait_until, TestNode};

const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(20);
const LOOKUP: Duration = Duration::from_secs(10);

/// The slot a writer provides its root under (an IPNS routing key, in the node).
const SLOT: &[u8] = b"/ipns/test-slot";

/// Waits until `node` holds `count` provider records from peers.
async fn wait_for_peer_records(node: &TestNode, count: usize) {
    wait_until(WAIT, || async {
        node.p2p.provider_records().await.unwrap().peer_records == count
    })
    .await
    .unwrap_or_else(|| {
        panic!("the node never held {count} provider records from peers");
    });
}

/// W holds a root and is connected to B; R knows only B.
async fn writer_middle_replica(provide: bool) -> (TestNode, TestNode, TestNode, cid::Cid) {
    let w = TestNode::start(vec![], FETCH_TIMEOUT).await;
    let root = w.put_block(&block_data(1, 4096));
    let b = TestNode::start(vec![w.tcp_addr().await], FETCH_TIMEOUT).await;
    if provide {
        w.p2p.provide_root(SLOT, root).await.unwrap();
        // Announced once identify has put B into W's LAN DHT (at once or when it joins).
        wait_for_peer_records(&b, 1).await;
    } else {
        // Both DHT routing tables are set up as in the providing case.
        wait_until(WAIT, || async {
            b.p2p.find_providers(root, LOOKUP).await.is_empty()
                && w.p2p.connected_peers().await.contains(&b.p2p.peer_id())
        })
        .await
        .expect("W and B connected");
    }
    let r = TestNode::start(vec![b.tcp_addr().await], FETCH_TIMEOUT).await;
    wait_until(WAIT, || async {
        r.p2p.connected_peers().await.contains(&b.p2p.peer_id())
    })
    .await
    .expect("R connects to B");
    (w, b, r, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_finds_the_writer_through_provider_records_and_fetches() {
    let (w, _b, r, root) = writer_middle_replica(true).await;
    assert!(
        !r.p2p.connected_peers().await.contains(&w.p2p.peer_id()),
        "R has not met W before the fetch"
    );
    // The fetch alone, stuck with B (DONT_HAVE), looks up the providers and dials them.
    let block = r.p2p.fetch_block(&root).await.expect("R fetches the root");
    assert_eq!(block.as_ref(), block_data(1, 4096).as_slice());
    assert!(r.p2p.connected_peers().await.contains(&w.p2p.peer_id()));
    assert_eq!(
        r.p2p.find_providers(root, LOOKUP).await,
        vec![w.p2p.peer_id()],
        "B's DHT names W as the provider of the root"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_provide_no_provider_is_found() {
    let (w, b, r, root) = writer_middle_replica(false).await;
    assert_eq!(
        w.p2p.provider_records().await.unwrap().provided,
        vec![],
        "nothing provided"
    );
    assert_eq!(r.p2p.find_providers(root, LOOKUP).await, vec![]);
    assert_eq!(b.p2p.provider_records().await.unwrap().peer_records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirroring_replica_stands_in_for_a_stopped_writer() {
    let w = TestNode::start(vec![], FETCH_TIMEOUT).await;
    let data = block_data(2, 10_000);
    let root = w.put_block(&data);
    let b = TestNode::start(vec![w.tcp_addr().await], FETCH_TIMEOUT).await;
    w.p2p.provide_root(SLOT, root).await.unwrap();
    wait_for_peer_records(&b, 1).await;

    // M knows only B, finds W as R would, mirrors the root and provides it.
    let m = TestNode::start(vec![b.tcp_addr().await], FETCH_TIMEOUT).await;
    m.p2p.fetch_block(&root).await.expect("M mirrors the root");
    m.p2p.provide_root(SLOT, root).await.unwrap();
    wait_for_peer_records(&b, 2).await;

    w.p2p.shutdown().await;
    drop(w);

    let r = TestNode::start(vec![b.tcp_addr().await], FETCH_TIMEOUT).await;
    let block = r.p2p.fetch_block(&root).await.expect("R fetches from M");
    assert_eq!(block.as_ref(), data.as_slice());
    assert!(r.p2p.connected_peers().await.contains(&m.p2p.peer_id()));
    let providers = r.p2p.find_providers(root, LOOKUP).await;
    assert!(
        providers.contains(&m.p2p.peer_id()),
        "M is a provider: {providers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_root_replaces_the_provided_one() {
    let w = TestNode::start(vec![], FETCH_TIMEOUT).await;
    let b = TestNode::start(vec![w.tcp_addr().await], FETCH_TIMEOUT).await;
    let roots: Vec<_> = (10..15)
        .map(|seed| w.put_block(&block_data(seed, 100)))
        .collect();
    for (i, root) in roots.iter().enumerate() {
        w.p2p.provide_root(SLOT, *root).await.unwrap();
        wait_for_peer_records(&b, i + 1).await;
        let own = w.p2p.provider_records().await.unwrap();
        assert_eq!(
            own.provided,
            vec![*root],
            "only the newest root is provided"
        );
        assert_eq!(
            own.own_records, 2,
            "one own record per DHT, not one per commit"
        );
    }
    // The same root again is not news; another slot providing it keeps it when this one moves.
    let last = *roots.last().unwrap();
    w.p2p.provide_root(SLOT, last).await.unwrap();
    w.p2p.provide(last).await.unwrap();
    let next = w.put_block(&block_data(20, 100));
    w.p2p.provide_root(SLOT, next).await.unwrap();
    let own = w.p2p.provider_records().await.unwrap();
    assert_eq!(own.own_records, 4);
    assert!(own.provided.contains(&last) && own.provided.contains(&next));
    w.p2p.stop_providing(last).await;
    let own = w.p2p.provider_records().await.unwrap();
    assert_eq!((own.provided, own.own_records), (vec![next], 2));

    // Peers hold each announced root once: re-announcements do not add records.
    wait_for_peer_records(&b, 6).await;
    // W itself answers lookups with what it provides now, and B with what it was told.
    assert_eq!(
        b.p2p.find_providers(next, LOOKUP).await,
        vec![w.p2p.peer_id()]
    );
}

/// A plain Kademlia server on the LAN protocol with identify (so our node puts it into its
/// LAN DHT) that stores every provider record it is sent and never learns its peers'
/// addresses otherwise: inbound connections give none. A provider found through it is
/// reachable only by the addresses in its ADD_PROVIDER, as with kubo, which drops records
/// without addresses.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct PlainDhtServer {
    kad: libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>,
    identify: libp2p::identify::Behaviour,
}

async fn start_plain_dht_server() -> (Multiaddr, tokio::task::JoinHandle<()>) {
    use libp2p::{identify, kad};
    let swarm = p2p_support::tcp_swarm(Duration::from_secs(60), |key| {
        let peer = key.public().to_peer_id();
        let mut kad = kad::Behaviour::with_config(
            peer,
            kad::store::MemoryStore::new(peer),
            kad::Config::new(LAN_KAD_PROTOCOL),
        );
        kad.set_mode(Some(kad::Mode::Server));
        PlainDhtServer {
            kad,
            identify: identify::Behaviour::new(identify::Config::new(
                "ipfs/0.1.0".into(),
                key.public(),
            )),
        }
    });
    p2p_support::listen_and_drive(swarm).await
}

/// W and R know only a plain DHT server; W provides `root` if asked to.
async fn writer_and_replica_around_a_plain_server(
    provide: bool,
    replica_fetch_timeout: Duration,
) -> (
    TestNode,
    TestNode,
    cid::Cid,
    Vec<u8>,
    tokio::task::JoinHandle<()>,
) {
    let (dht_addr, dht) = start_plain_dht_server().await;
    let w = TestNode::start(vec![dht_addr.clone()], FETCH_TIMEOUT).await;
    let data = block_data(3, 2048);
    let root = w.put_block(&data);
    let Some(Protocol::P2p(dht_peer)) = dht_addr.iter().last() else {
        unreachable!()
    };
    wait_until(WAIT, || async {
        w.p2p.connected_peers().await.contains(&dht_peer)
    })
    .await
    .expect("W connected to the DHT server");
    // W's only addresses are on 127.0.0.1.
    assert!(w.p2p.listen_addrs().await.iter().all(|a| a
        .iter()
        .next()
        .is_some_and(|p| p == Protocol::Ip4([127, 0, 0, 1].into()))));
    if provide {
        w.p2p.provide_root(SLOT, root).await.unwrap();
        // Asked by a node of its own, so that R meets W only through its fetch.
        let probe = TestNode::start(vec![dht_addr.clone()], FETCH_TIMEOUT).await;
        let found = wait_until(WAIT, || async {
            probe.p2p.find_providers(root, LOOKUP).await == vec![w.p2p.peer_id()]
        })
        .await;
        assert!(found.is_some(), "the plain DHT server names W");
        probe.p2p.shutdown().await;
    }
    let r = TestNode::start(vec![dht_addr.clone()], replica_fetch_timeout).await;
    for node in [&w, &r] {
        wait_until(WAIT, || async {
            node.p2p.connected_peers().await.contains(&dht_peer)
        })
        .await
        .expect("connected to the DHT server");
    }
    (w, r, root, data, dht)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_records_carry_the_loopback_address() {
    let (_w, r, root, data, _dht) =
        writer_and_replica_around_a_plain_server(true, FETCH_TIMEOUT).await;
    let block = r
        .p2p
        .fetch_block(&root)
        .await
        .expect("R dials W at the address in W's provider record");
    assert_eq!(block.as_ref(), data.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_provide_a_replica_cannot_reach_the_writer() {
    let (w, r, root, _, _dht) =
        writer_and_replica_around_a_plain_server(false, Duration::from_secs(3)).await;
    let fetched = r.p2p.fetch_block(&root).await;
    assert!(fetched.is_err(), "no route to W: {fetched:?}");
    assert!(!r.p2p.connected_peers().await.contains(&w.p2p.peer_id()));
}

/// Pulls every blob of `image` from the node at `base`; whether all match their digests.
async fn serves_blobs(client: &reqwest::Client, base: &str, image: &common::PushedImage) -> bool {
    for digest in &image.blobs {
        let Ok(resp) = client
            .get(format!("{base}/v2/{}/blobs/{digest}", image.repo))
            .send()
            .await
        else {
            return false;
        };
        if resp.status() != 200 {
            return false;
        }
        match resp.bytes().await {
            Ok(body) if common::sha256(&body) == *digest => {}
            _ => return false,
        }
    }
    true
}

/// A plain DHT server and a real writer that knows only it: the server's address, its task,
/// the writer and the writer's IPNS name.
async fn writer_around_plain_dht_server() -> (
    String,
    tokio::task::JoinHandle<()>,
    common::TestNode,
    String,
) {
    let (dht_addr, dht_task) = start_plain_dht_server().await;
    let dht = dht_addr.to_string();
    let mut writer = common::TestNode::init("writer");
    writer.serve(&["--peer", &dht]);
    let (_, name) = writer.id();
    (dht, dht_task, writer, name)
}

/// Real nodes around a plain DHT server that never learns an address but from provider
/// records: a replica that knows only the server follows the writer's name and serves its
/// blobs (the writer provides its root after publishing); then a mirroring replica, having
/// mirrored, stands in for the stopped writer for a second replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_replicas_find_the_writer_and_a_mirror_by_name_alone() {
    let (dht, _dht, mut writer, name) = writer_around_plain_dht_server().await;
    let client = reqwest::Client::new();
    let image = common::wait_for("a push to the writer", || {
        let (client, base) = (&client, writer.url());
        async move { common::push_image(client, &base, "team/app", "v1", 7).await }
    })
    .await;

    let mut replica = common::TestNode::init("replica");
    replica.serve(&["--follow", &name, "--peer", &dht]);
    common::wait_for("the replica to serve the blobs", || {
        let (client, base, image) = (&client, replica.url(), &image);
        async move { serves_blobs(client, &base, image).await.then_some(()) }
    })
    .await;

    let mut mirror = common::TestNode::init("replica");
    mirror.serve(&["--follow", &name, "--mirror", "all", "--peer", &dht]);
    common::wait_for("the mirror to complete", || {
        let mirror = &mirror;
        async move {
            let status = mirror.status().await;
            let run = status.followed.first()?.mirror_progress.clone()?;
            (run.state == "complete").then_some(())
        }
    })
    .await;
    writer.kill();
    replica.kill();

    let mut second = common::TestNode::init("replica");
    second.serve(&["--follow", &name, "--peer", &dht]);
    common::wait_for(
        "the second replica to serve the blobs from the mirror",
        || {
            let (client, base, image) = (&client, second.url(), &image);
            async move { serves_blobs(client, &base, image).await.then_some(()) }
        },
    )
    .await;
}

/// A peer announcing ever more CIDs cannot grow a node's provider store without bound: the
/// oldest announcements make room for new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_provider_records_are_bounded() {
    use libp2p::futures::StreamExt as _;
    use libp2p::kad;
    use libp2p::swarm::SwarmEvent;

    const ANNOUNCED: usize = 800;
    const KEPT: usize = 768;
    let node = TestNode::start(vec![], FETCH_TIMEOUT).await;
    let addr = node.tcp_addr().await;
    let Some(Protocol::P2p(node_id)) = addr.iter().last() else {
        unreachable!()
    };
    let mut client = p2p_support::kad_client(LAN_KAD_PROTOCOL);
    client.behaviour_mut().add_address(&node_id, addr.clone());
    for seed in 0..ANNOUNCED as u64 {
        let cid = ipns_registry::tree::cid_of(ipns_registry::tree::RAW, &seed.to_le_bytes());
        client
            .behaviour_mut()
            .start_providing(kad::RecordKey::new(&cid.hash().to_bytes()))
            .unwrap();
    }
    let mut done = 0;
    tokio::time::timeout(Duration::from_secs(120), async {
        while done < ANNOUNCED {
            if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::StartProviding(_),
                ..
            }) = client.select_next_some().await
            {
                done += 1;
            }
        }
    })
    .await
    .expect("every announcement sent");
    let driver = tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });
    wait_for_peer_records(&node, KEPT).await;
    assert_eq!(
        node.p2p.provider_records().await.unwrap().peer_records,
        KEPT
    );
    driver.abort();
}

/// Replicas of one name that know only a DHT server, not each other, meet: each provides the
/// name's rendezvous key and dials the others it finds there, so blocks can come from fellow
/// replicas and not only from the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_a_name_find_each_other_through_the_dht() {
    let (dht, _dht, _writer, name) = writer_around_plain_dht_server().await;
    let mut first = common::TestNode::init("replica");
    first.serve(&["--follow", &name, "--peer", &dht]);
    let first_id = first.status().await.peer_id;
    let mut second = common::TestNode::init("replica");
    second.serve(&["--follow", &name, "--peer", &dht]);
    let second_id = second.status().await.peer_id;
    common::wait_for("the replicas to be connected to each other", || {
        let (first, second) = (&first, &second);
        let (first_id, second_id) = (&first_id, &second_id);
        async move {
            let a = first.status().await.peers.contains(second_id);
            let b = second.status().await.peers.contains(first_id);
            (a && b).then_some(())
        }
    })
    .await;
}
