//! Records from hostile peers: a bare Kademlia peer that puts forged, stale and foreign records
//! into a node's DHT store, and a node that gossips forged records through a node to a third
//! peer. The third parties here (a Kademlia reader, a gossipsub listener) are bare libp2p peers
//! that validate nothing, so they see exactly what the node serves and relays.

mod p2p_support;

use std::time::Duration;

use ipns_registry::names::IpnsName;
use libp2p::futures::StreamExt as _;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use p2p_support::{kad_get, signed_record, wait_until, TestNode};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A bare libp2p peer with only Kademlia (`/ipfs/kad/1.0.0`), in client mode: it stores what
/// it is told and believes what it reads.
fn kad_peer() -> Swarm<kad::Behaviour<MemoryStore>> {
    p2p_support::tcp_swarm(Duration::from_secs(60), |key| {
        let peer = key.public().to_peer_id();
        let config = kad::Config::new(StreamProtocol::new("/ipfs/kad/1.0.0"));
        let mut kad = kad::Behaviour::with_config(peer, MemoryStore::new(peer), config);
        kad.set_mode(Some(kad::Mode::Client));
        kad
    })
}

/// Puts `value` under `key` at the peers `swarm` knows (the node), and waits for the put to
/// finish. The node answers a PUT_VALUE alike whether it keeps the record or not.
async fn put(swarm: &mut Swarm<kad::Behaviour<MemoryStore>>, key: &[u8], value: Vec<u8>) {
    let record = kad::Record::new(kad::RecordKey::new(&key), value);
    let id = swarm
        .behaviour_mut()
        .put_record(record, kad::Quorum::One)
        .unwrap();
    let done = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                id: done,
                result: kad::QueryResult::PutRecord(result),
                ..
            }) = swarm.select_next_some().await
            {
                if done == id {
                    return result;
                }
            }
        }
    })
    .await
    .expect("the put finishes");
    assert!(done.is_ok(), "the node took the PUT_VALUE: {done:?}");
}

/// A fresh bare Kademlia peer that knows only the node, asks it for `key`.
async fn read_from(node: PeerId, addr: &Multiaddr, key: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = kad_peer();
    reader.behaviour_mut().add_address(&node, addr.clone());
    kad_get(&mut reader, key).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_or_stale_dht_put_does_not_replace_a_record_the_node_serves() {
    let node = TestNode::start(vec![], TIMEOUT).await;
    let node_id = node.p2p.peer_id();
    let addr = node.tcp_addr().await;

    let owner = Keypair::generate_ed25519();
    let name = IpnsName::from_public_key(&owner.public());
    let key = name.routing_key();
    let v4 = signed_record(&owner, 4);
    let v5 = signed_record(&owner, 5);
    // The node puts its record in its own DHT store (no peer takes it: it is alone).
    node.p2p
        .publish(name.pubsub_topic(), key.clone(), v5.clone())
        .await
        .unwrap();
    assert_eq!(read_from(node_id, &addr, &key).await, vec![v5.clone()]);

    let mut attacker = kad_peer();
    attacker.behaviour_mut().add_address(&node_id, addr.clone());
    let forger = Keypair::generate_ed25519();
    // Signed by another key, with a higher sequence.
    put(&mut attacker, &key, signed_record(&forger, 1000)).await;
    // Genuine but older.
    put(&mut attacker, &key, v4).await;
    // Not a record at all.
    put(&mut attacker, &key, b"garbage".to_vec()).await;
    assert_eq!(
        read_from(node_id, &addr, &key).await,
        vec![v5.clone()],
        "the node still serves its record"
    );

    // Keys it holds nothing for: a forged record, a genuine record under another namespace,
    // and a key that is no IPNS name.
    let stranger = IpnsName::from_public_key(&Keypair::generate_ed25519().public());
    put(
        &mut attacker,
        &stranger.routing_key(),
        signed_record(&forger, 1),
    )
    .await;
    let mut pk_key = b"/pk/".to_vec();
    pk_key.extend_from_slice(&name.peer_id().to_bytes());
    put(&mut attacker, &pk_key, signed_record(&owner, 6)).await;
    put(
        &mut attacker,
        b"/ipns/nothing-like-a-name",
        signed_record(&owner, 6),
    )
    .await;
    for refused in [
        stranger.routing_key(),
        pk_key,
        b"/ipns/nothing-like-a-name".to_vec(),
    ] {
        assert!(
            read_from(node_id, &addr, &refused).await.is_empty(),
            "a record under {} was stored",
            String::from_utf8_lossy(&refused)
        );
    }

    // A genuine newer record is stored and served, from anyone: the refusals above were about
    // the records, not the peer.
    let v6 = signed_record(&owner, 6);
    put(&mut attacker, &key, v6.clone()).await;
    assert_eq!(read_from(node_id, &addr, &key).await, vec![v6]);
}

/// A bare gossipsub peer subscribed to one topic that keeps every message it receives.
struct Listener {
    peer_id: PeerId,
    messages: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    async fn start(topic: &str, dial: Multiaddr) -> Listener {
        let mut swarm = p2p_support::tcp_swarm(Duration::from_secs(60), |key| {
            let config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .build()
                .unwrap();
            gossipsub::Behaviour::<
                gossipsub::IdentityTransform,
                gossipsub::AllowAllSubscriptionFilter,
            >::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
            .unwrap()
        });
        swarm
            .behaviour_mut()
            .subscribe(&IdentTopic::new(topic))
            .unwrap();
        swarm.dial(dial).unwrap();
        let peer_id = *swarm.local_peer_id();
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) =
                    swarm.select_next_some().await
                {
                    let _ = tx.send(message.data);
                }
            }
        });
        Listener {
            peer_id,
            messages,
            task,
        }
    }

    async fn next(&mut self) -> Option<Vec<u8>> {
        tokio::time::timeout(TIMEOUT, self.messages.recv())
            .await
            .ok()
            .flatten()
    }
}

/// A → B → C in a line: A gossips a forged record, B (which follows the name) rejects it and
/// lowers A's score, and C, which believes anything, never gets it. A valid record travels the
/// same way, so the line works; a stale one stops at B too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_gossip_record_is_not_relayed_to_a_third_peer() {
    let owner = Keypair::generate_ed25519();
    let name = IpnsName::from_public_key(&owner.public());
    let (topic, key) = (name.pubsub_topic(), name.routing_key());

    let a = TestNode::start(vec![], TIMEOUT).await;
    let mut b = TestNode::start(vec![], TIMEOUT).await;
    a.connect(&b).await;
    b.p2p.subscribe(topic.clone(), key.clone()).await.unwrap();
    a.wait_for_subscriber(&topic, &b).await;
    let mut c = Listener::start(&topic, b.tcp_addr().await).await;
    wait_until(TIMEOUT, || async {
        b.p2p.topic_peers(&topic).await.contains(&c.peer_id)
    })
    .await
    .expect("C's subscription reached B");

    let forged = signed_record(&Keypair::generate_ed25519(), 9);
    a.p2p
        .publish(topic.clone(), key.clone(), forged)
        .await
        .unwrap();
    // B judged it: A is penalised.
    let a_id = a.p2p.peer_id();
    wait_until(TIMEOUT, || async {
        b.p2p.gossip_score(a_id).await.is_some_and(|s| s < 0.0)
    })
    .await
    .expect("B lowers A's score for the forged record");

    let v2 = signed_record(&owner, 2);
    a.p2p
        .publish(topic.clone(), key.clone(), v2.clone())
        .await
        .unwrap();
    // B hands only the valid record to its owner, and C gets it first: had B relayed the
    // forged one, C would have had that first, on the same connection.
    let (_, delivered, _) = b.next_record(TIMEOUT).await.expect("B delivers a record");
    assert_eq!(delivered, v2);
    assert_eq!(c.next().await, Some(v2.clone()), "C's first message");

    // B now holds v2 (as its follower would): an older genuine record stops at B too.
    b.records.set(&key, &v2);
    a.p2p
        .publish(topic.clone(), key.clone(), signed_record(&owner, 1))
        .await
        .unwrap();
    let v3 = signed_record(&owner, 3);
    a.p2p
        .publish(topic.clone(), key.clone(), v3.clone())
        .await
        .unwrap();
    assert_eq!(
        c.next().await,
        Some(v3),
        "C's next message skips the stale one"
    );
    assert!(c.messages.try_recv().is_err(), "nothing else reached C");
}
