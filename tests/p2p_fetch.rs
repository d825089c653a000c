//! The standard record exchange and both DHTs, driven by bare libp2p peers that speak exactly
//! one protocol each: a `/libp2p/fetch/0.0.1` client byte for byte as `@libp2p/fetch`, hostile
//! fetch servers, and Kademlia peers on `/ipfs/lan/kad/1.0.0` and `/ipfs/kad/1.0.0`.

mod p2p_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipns_registry::names::{judge_record, IpnsName, IpnsRecord, RecordJudgement};
use ipns_registry::p2p::{KAD_PROTOCOL, LAN_KAD_PROTOCOL, MAX_RECORD_SIZE};
use libp2p::identity::Keypair;
use libp2p::kad;
use libp2p::kad::store::{MemoryStore, RecordStore as _};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, Multiaddr, StreamProtocol};
use p2p_support::{
    fetch_from, kad_get_from, length_prefixed, loopback_config, signed_record, wait_until,
    FetchResponse, MemoryRecords, RawFetchPeer, TestNode, FETCH_ERROR, FETCH_NOT_FOUND, FETCH_OK,
};
use prost::Message as _;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A node that holds `record` for `name` from the start.
async fn node_holding(name: &IpnsName, record: &[u8]) -> TestNode {
    let records = Arc::new(MemoryRecords::default());
    records.set(&name.routing_key(), record);
    TestNode::start_holding(
        loopback_config(Keypair::generate_ed25519(), vec![], TIMEOUT),
        records,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_answers_ok_not_found_and_error_as_the_spec_says() {
    let owner = Keypair::generate_ed25519();
    let name = IpnsName::from_public_key(&owner.public());
    let v3 = signed_record(&owner, 3);
    let node = node_holding(&name, &v3).await;
    let addr = node.tcp_addr().await;

    // The key Helia asks under: "/ipns/" and the binary multihash (not UTF-8).
    let key = name.routing_key();
    let answer = fetch_from(&addr, &key).await;
    assert_eq!(answer.status, FETCH_OK);
    assert_eq!(answer.data, v3);
    assert!(matches!(
        judge_record(&key, &answer.data, [], SystemTime::now()),
        RecordJudgement::Valid(r) if r.sequence() == 3
    ));

    let stranger = IpnsName::from_public_key(&Keypair::generate_ed25519().public());
    let answer = fetch_from(&addr, &stranger.routing_key()).await;
    assert_eq!(answer.status, FETCH_NOT_FOUND);
    assert!(answer.data.is_empty());

    // Keys no record can exist under: another namespace, a broken multihash, nothing at all.
    let mut pk_key = b"/pk/".to_vec();
    pk_key.extend_from_slice(&name.peer_id().to_bytes());
    for bad in [pk_key, b"/ipns/not-a-multihash".to_vec(), Vec::new()] {
        let answer = fetch_from(&addr, &bad).await;
        assert_eq!(
            answer.status,
            FETCH_ERROR,
            "key {:?}",
            String::from_utf8_lossy(&bad)
        );
        assert!(!answer.data.is_empty(), "an error says why");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_fetch_answers_are_bounded_and_validated() {
    let owner = Keypair::generate_ed25519();
    let name = IpnsName::from_public_key(&owner.public());
    let key = name.routing_key();
    let genuine = signed_record(&owner, 7);
    let honest = node_holding(&name, &genuine).await;

    let ok = |data: Vec<u8>| {
        length_prefixed(
            &FetchResponse {
                status: FETCH_OK,
                data,
            }
            .encode_to_vec(),
        )
    };
    // A higher sequence signed by another key; garbage as a record; a record one byte over the
    // cap; a frame announcing 64 MiB (and sending 1 MiB of it); not protobuf at all.
    let forged = ok(signed_record(&Keypair::generate_ed25519(), 1000));
    let garbage = ok(b"not a record".to_vec());
    let oversized_record = ok(vec![0; MAX_RECORD_SIZE + 1]);
    let mut buf = unsigned_varint::encode::usize_buffer();
    let mut huge_frame = unsigned_varint::encode::usize(64 << 20, &mut buf).to_vec();
    huge_frame.extend(vec![0x12; 1 << 20]);
    let not_protobuf = length_prefixed(&[0xff; 16]);
    let mut hostile = Vec::new();
    for answer in [forged, garbage, oversized_record, huge_frame, not_protobuf] {
        hostile.push(RawFetchPeer::start(answer).await);
    }

    let node = TestNode::start(vec![], TIMEOUT).await;
    for peer in &hostile {
        node.p2p.dial(peer.addr.clone()).await.unwrap();
    }
    node.connect(&honest).await;
    assert_eq!(node.p2p.connected_peers().await.len(), hostile.len() + 1);

    // Every connected peer is asked; only the genuine record comes back.
    let records = node.p2p.query_records(key.clone(), TIMEOUT).await;
    assert_eq!(records, vec![genuine.clone()]);

    // With only hostile peers, nothing comes back at all, and the node keeps running.
    let alone = TestNode::start(vec![], TIMEOUT).await;
    for peer in &hostile {
        alone.p2p.dial(peer.addr.clone()).await.unwrap();
    }
    assert!(alone
        .p2p
        .query_records(key.clone(), TIMEOUT)
        .await
        .is_empty());
    assert_eq!(
        fetch_from(&alone.tcp_addr().await, &key).await.status,
        FETCH_NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_records_are_served_on_both_dhts_from_the_start() {
    let owner = Keypair::generate_ed25519();
    let name = IpnsName::from_public_key(&owner.public());
    let key = name.routing_key();
    let v4 = signed_record(&owner, 4);
    // Nothing is published: the node only holds the record, as after a restart.
    let node = node_holding(&name, &v4).await;
    let addr = node.tcp_addr().await;
    assert_eq!(
        kad_get_from(LAN_KAD_PROTOCOL, &addr, &key).await,
        vec![v4.clone()]
    );
    assert_eq!(
        kad_get_from(KAD_PROTOCOL, &addr, &key).await,
        vec![v4.clone()]
    );

    // An expired held record is not served.
    let lapsed_owner = Keypair::generate_ed25519();
    let lapsed_name = IpnsName::from_public_key(&lapsed_owner.public());
    let lapsed = IpnsRecord::sign_with_eol(
        &lapsed_owner,
        "/ipfs/bafkqaaa",
        1,
        SystemTime::now() - Duration::from_secs(60),
        Duration::from_secs(60),
    )
    .unwrap()
    .to_bytes()
    .to_vec();
    let node = node_holding(&lapsed_name, &lapsed).await;
    let addr = node.tcp_addr().await;
    assert!(
        kad_get_from(LAN_KAD_PROTOCOL, &addr, &lapsed_name.routing_key())
            .await
            .is_empty()
    );
}

/// A bare DHT server (Kademlia on one protocol, identify) on 127.0.0.1 holding one record.
#[derive(NetworkBehaviour)]
struct DhtServerBehaviour {
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
}

struct DhtServer {
    addr: Multiaddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DhtServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DhtServer {
    async fn start(protocol: StreamProtocol, key: &[u8], value: Vec<u8>) -> DhtServer {
        let mut swarm = p2p_support::tcp_swarm(Duration::from_secs(60), |key| {
            let peer = key.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                peer,
                MemoryStore::new(peer),
                kad::Config::new(protocol),
            );
            kad.set_mode(Some(kad::Mode::Server));
            DhtServerBehaviour {
                identify: identify::Behaviour::new(identify::Config::new(
                    "ipfs/0.1.0".into(),
                    key.public(),
                )),
                kad,
            }
        });
        swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .put(kad::Record::new(kad::RecordKey::new(&key), value))
            .unwrap();
        let (addr, task) = p2p_support::listen_and_drive(swarm).await;
        DhtServer { addr, task }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_peers_go_to_the_lan_dht_and_not_the_wan_one() {
    let owner = Keypair::generate_ed25519();
    let name = IpnsName::from_public_key(&owner.public());
    let key = name.routing_key();
    let on_wan = signed_record(&owner, 1);
    let on_lan = signed_record(&owner, 2);
    // kubo on a LAN: the same record key on a WAN-only and a LAN-only DHT server, both on
    // 127.0.0.1. Neither speaks fetch or pubsub: only the DHTs can find their records.
    let wan = DhtServer::start(KAD_PROTOCOL, &key, on_wan.clone()).await;
    let lan = DhtServer::start(LAN_KAD_PROTOCOL, &key, on_lan.clone()).await;

    let node = TestNode::start(vec![], TIMEOUT).await;
    node.p2p.dial(wan.addr.clone()).await.unwrap();
    node.p2p.dial(lan.addr.clone()).await.unwrap();
    // Found once identify has told the node the LAN server's protocols and addresses.
    let found = wait_until(TIMEOUT, || async {
        node.p2p
            .query_records(key.clone(), TIMEOUT)
            .await
            .contains(&on_lan)
    })
    .await;
    assert!(found.is_some(), "the LAN DHT found the LAN server's record");
    // The WAN server, dialled first, is identified as well by now; its loopback address keeps
    // it out of the WAN DHT's routing table, so its record never turns up.
    for _ in 0..3 {
        let records = node.p2p.query_records(key.clone(), TIMEOUT).await;
        assert!(!records.contains(&on_wan), "a loopback peer in the WAN DHT");
    }
}
