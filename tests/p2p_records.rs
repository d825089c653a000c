//! Records between in-process nodes on loopback: gossipsub publish, the direct request-response
//! query, the pull a new subscriber makes, and the DHT. The records are real IPNS records of one
//! name: every node validates what it stores, relays and delivers.

mod p2p_support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipns_registry::names::{IpnsName, IpnsRecord};
use ipns_registry::p2p::{P2pError, MAX_RECORD_SIZE};
use libp2p::identity::Keypair;
use p2p_support::TestNode;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The key of the name every record here is for.
fn owner() -> &'static Keypair {
    static OWNER: OnceLock<Keypair> = OnceLock::new();
    OWNER.get_or_init(Keypair::generate_ed25519)
}

fn name() -> IpnsName {
    IpnsName::from_public_key(&owner().public())
}

/// The name's routing key.
fn key() -> Vec<u8> {
    name().routing_key()
}

/// The name's pubsub topic.
fn topic() -> String {
    name().pubsub_topic()
}

/// A record of the name with this sequence number.
fn record(sequence: u64) -> Vec<u8> {
    IpnsRecord::sign(
        owner(),
        "/ipfs/bafkqaaa",
        sequence,
        Duration::from_secs(3600),
        Duration::from_secs(60),
    )
    .unwrap()
    .to_bytes()
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_reaches_a_subscriber() {
    let writer = TestNode::start(vec![], TIMEOUT).await;
    let mut reader = TestNode::start(vec![], TIMEOUT).await;
    reader.connect(&writer).await;
    reader.p2p.subscribe(topic(), key()).await.unwrap();
    // The subscription travels to the writer with the next gossipsub message.
    writer.wait_for_subscriber(&topic(), &reader).await;

    let sent = record(1);
    let start = Instant::now();
    writer
        .p2p
        .publish(topic(), key(), sent.clone())
        .await
        .unwrap();
    let (got_key, got, from) = reader.next_record(TIMEOUT).await.expect("record");
    println!("pubsub delivery took {:?}", start.elapsed());
    assert_eq!(got_key, key());
    assert_eq!(got, sent);
    assert_eq!(from, Some(writer.p2p.peer_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_travels_through_a_subscribed_middle_node() {
    let writer = TestNode::start(vec![], TIMEOUT).await;
    let mut middle = TestNode::start(vec![], TIMEOUT).await;
    let mut last = TestNode::start(vec![], TIMEOUT).await;
    middle.connect(&writer).await;
    last.connect(&middle).await;
    for node in [&middle, &last] {
        node.p2p.subscribe(topic(), key()).await.unwrap();
    }
    writer.wait_for_subscriber(&topic(), &middle).await;
    middle.wait_for_subscriber(&topic(), &last).await;
    let sent = record(2);
    let start = Instant::now();
    writer
        .p2p
        .publish(topic(), key(), sent.clone())
        .await
        .unwrap();
    for node in [&mut middle, &mut last] {
        let (_, got, from) = node.next_record(TIMEOUT).await.expect("record");
        assert_eq!(got, sent);
        assert_eq!(from, Some(writer.p2p.peer_id()), "the original publisher");
    }
    println!("pubsub delivery to both took {:?}", start.elapsed());
}

/// A new subscriber does not wait for the next publish: it asks its peers for their newest
/// record when it subscribes, and asks each peer that connects later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_subscriber_gets_the_newest_record_at_once() {
    let writer = TestNode::start(vec![], TIMEOUT).await;
    let held = record(3);
    writer.records.set(&key(), &held);

    // Connected first, then subscribed.
    let mut early = TestNode::start(vec![], TIMEOUT).await;
    early.connect(&writer).await;
    early.p2p.subscribe(topic(), key()).await.unwrap();
    let (got_key, got, from) = early.next_record(TIMEOUT).await.expect("record");
    assert_eq!((got_key, &got), (key(), &held));
    assert_eq!(from, Some(writer.p2p.peer_id()));

    // Subscribed first, then connected.
    let mut late = TestNode::start(vec![], TIMEOUT).await;
    late.p2p.subscribe(topic(), key()).await.unwrap();
    late.connect(&writer).await;
    let (_, got, _) = late.next_record(TIMEOUT).await.expect("record");
    assert_eq!(got, held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_records_asks_connected_peers() {
    let holder = TestNode::start(vec![], TIMEOUT).await;
    let answer = record(4);
    holder.records.set(&key(), &answer);
    let other = TestNode::start(vec![], TIMEOUT).await;
    let mut asker = TestNode::start(vec![], TIMEOUT).await;
    asker.connect(&holder).await;
    asker.connect(&other).await;

    let start = Instant::now();
    let records = asker.p2p.query_records(key(), Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert_eq!(records, vec![answer.clone()]);
    println!("query_records took {took:?}");
    let (got_key, got, from) = asker.next_record(TIMEOUT).await.expect("event");
    assert_eq!((got_key, got), (key(), answer));
    assert_eq!(from, Some(holder.p2p.peer_id()));

    let none = asker
        .p2p
        .query_records(
            IpnsName::from_public_key(&Keypair::generate_ed25519().public()).routing_key(),
            Duration::from_secs(3),
        )
        .await;
    assert!(none.is_empty());
}

/// A record put in the DHT by one node is found by another whose peers hold nothing in their
/// record sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_records_finds_dht_records() {
    let writer = TestNode::start(vec![], TIMEOUT).await;
    let dht = TestNode::start(vec![], TIMEOUT).await;
    writer.connect(&dht).await;
    let asker = TestNode::start(vec![], TIMEOUT).await;
    asker.connect(&dht).await;
    // The put reaches `dht` once identify has put it in the writer's routing table, which
    // takes a moment after connecting: publish again until the record can be found.
    let dht_record = record(5);
    let found = p2p_support::wait_until(TIMEOUT, || async {
        writer
            .p2p
            .publish(topic(), key(), dht_record.clone())
            .await
            .unwrap();
        let records = asker.p2p.query_records(key(), Duration::from_secs(2)).await;
        assert!(records.len() <= 1, "{records:?}");
        records == vec![dht_record.clone()]
    })
    .await;
    // No node's record source holds it, so only the DHT can have answered.
    assert!(found.is_some(), "the record put by the writer is found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_without_peers_is_fine_and_oversized_records_are_refused() {
    let node = TestNode::start(vec![], TIMEOUT).await;
    node.p2p.publish(topic(), key(), record(6)).await.unwrap();
    let err = node
        .p2p
        .publish(topic(), key(), vec![0; MAX_RECORD_SIZE + 1])
        .await
        .unwrap_err();
    assert!(matches!(err, P2pError::RecordTooLarge { .. }), "{err}");
    node.p2p.unsubscribe(topic()).await.unwrap();
}
