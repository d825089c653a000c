//! Records between in-process nodes on loopback: gossipsub publish, the direct request-response
//! query, the pull a new subscriber makes, and the DHT.

mod p2p_support;

use std::time::{Duration, Instant};

use ipns_registry::p2p::{P2pError, MAX_RECORD_SIZE};
use p2p_support::TestNode;

const TIMEOUT: Duration = Duration::from_secs(10);
const TOPIC: &str = "/record/L2lwbnMvdGVzdA";
const KEY: &[u8] = b"/ipns/test-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_reaches_a_subscriber() {
    let writer = TestNode::start(vec![], TIMEOUT).await;
    let mut reader = TestNode::start(vec![], TIMEOUT).await;
    reader.connect(&writer).await;
    reader
        .p2p
        .subscribe(TOPIC.into(), KEY.to_vec())
        .await
        .unwrap();
    // The subscription travels to the writer with the next gossipsub message.
    writer.wait_for_subscriber(TOPIC, &reader).await;

    let start = Instant::now();
    writer
        .p2p
        .publish(TOPIC.into(), KEY.to_vec(), b"record v1".to_vec())
        .await
        .unwrap();
    let (key, record, from) = reader.next_record(TIMEOUT).await.expect("record");
    println!("pubsub delivery took {:?}", start.elapsed());
    assert_eq!(key, KEY);
    assert_eq!(record, b"record v1");
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
        node.p2p
            .subscribe(TOPIC.into(), KEY.to_vec())
            .await
            .unwrap();
    }
    writer.wait_for_subscriber(TOPIC, &middle).await;
    middle.wait_for_subscriber(TOPIC, &last).await;
    let start = Instant::now();
    writer
        .p2p
        .publish(TOPIC.into(), KEY.to_vec(), b"record v2".to_vec())
        .await
        .unwrap();
    for node in [&mut middle, &mut last] {
        let (_, record, from) = node.next_record(TIMEOUT).await.expect("record");
        assert_eq!(record, b"record v2");
        assert_eq!(from, Some(writer.p2p.peer_id()), "the original publisher");
    }
    println!("pubsub delivery to both took {:?}", start.elapsed());
}

/// A new subscriber does not wait for the next publish: it asks its peers for their newest
/// record when it subscribes, and asks each peer that connects later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_subscriber_gets_the_newest_record_at_once() {
    let writer = TestNode::start(vec![], TIMEOUT).await;
    writer.records.set(KEY, b"held record");

    // Connected first, then subscribed.
    let mut early = TestNode::start(vec![], TIMEOUT).await;
    early.connect(&writer).await;
    early
        .p2p
        .subscribe(TOPIC.into(), KEY.to_vec())
        .await
        .unwrap();
    let (key, record, from) = early.next_record(TIMEOUT).await.expect("record");
    assert_eq!(
        (key.as_slice(), record.as_slice()),
        (KEY, b"held record".as_slice())
    );
    assert_eq!(from, Some(writer.p2p.peer_id()));

    // Subscribed first, then connected.
    let mut late = TestNode::start(vec![], TIMEOUT).await;
    late.p2p
        .subscribe(TOPIC.into(), KEY.to_vec())
        .await
        .unwrap();
    late.connect(&writer).await;
    let (_, record, _) = late.next_record(TIMEOUT).await.expect("record");
    assert_eq!(record, b"held record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_records_asks_connected_peers() {
    let holder = TestNode::start(vec![], TIMEOUT).await;
    holder.records.set(KEY, b"direct answer");
    let other = TestNode::start(vec![], TIMEOUT).await;
    let mut asker = TestNode::start(vec![], TIMEOUT).await;
    asker.connect(&holder).await;
    asker.connect(&other).await;

    let start = Instant::now();
    let records = asker
        .p2p
        .query_records(KEY.to_vec(), Duration::from_secs(5))
        .await;
    let took = start.elapsed();
    assert_eq!(records, vec![b"direct answer".to_vec()]);
    // Every peer and the DHT answered, so the call returned before its timeout.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    println!("query_records took {took:?}");
    let (key, record, from) = asker.next_record(TIMEOUT).await.expect("event");
    assert_eq!(
        (key.as_slice(), record.as_slice()),
        (KEY, b"direct answer".as_slice())
    );
    assert_eq!(from, Some(holder.p2p.peer_id()));

    let none = asker
        .p2p
        .query_records(b"/ipns/unknown".to_vec(), Duration::from_secs(3))
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
    let found = p2p_support::wait_until(TIMEOUT, || async {
        writer
            .p2p
            .publish(TOPIC.into(), KEY.to_vec(), b"dht record".to_vec())
            .await
            .unwrap();
        let records = asker
            .p2p
            .query_records(KEY.to_vec(), Duration::from_secs(2))
            .await;
        assert!(records.len() <= 1, "{records:?}");
        records == vec![b"dht record".to_vec()]
    })
    .await;
    // No node's record source holds it, so only the DHT can have answered.
    assert!(found.is_some(), "the record put by the writer is found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_without_peers_is_fine_and_oversized_records_are_refused() {
    let node = TestNode::start(vec![], TIMEOUT).await;
    node.p2p
        .publish(TOPIC.into(), KEY.to_vec(), b"lonely".to_vec())
        .await
        .unwrap();
    let err = node
        .p2p
        .publish(TOPIC.into(), KEY.to_vec(), vec![0; MAX_RECORD_SIZE + 1])
        .await
        .unwrap_err();
    assert!(matches!(err, P2pError::RecordTooLarge { .. }), "{err}");
    node.p2p.unsubscribe(TOPIC.into()).await.unwrap();
}
