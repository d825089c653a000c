//! Records from the start: a writer killed and started again serves the record it holds on disk
//! through the DHT and through libp2p fetch before it publishes anything again, and a fresh
//! replica follows it and serves its image; that replica, restarted with the writer gone, serves
//! the followed record too.

mod common;
mod p2p_support;

use std::time::{Duration, Instant, SystemTime};

use common::{push_image, TestNode};
use ipns_registry::names::{judge_record, IpnsName, RecordJudgement};
use ipns_registry::p2p::{KAD_PROTOCOL, LAN_KAD_PROTOCOL};
use libp2p::Multiaddr;
use p2p_support::{fetch_from, kad_get_from, FETCH_OK};

const WAIT: Duration = Duration::from_secs(45);

/// The writer's TCP p2p address.
fn p2p_addr(node: &TestNode) -> Multiaddr {
    node.p2p_addr().parse().expect("a multiaddr")
}

/// The sequence of a valid record of `name`.
fn sequence_of(name: &IpnsName, record: &[u8]) -> u64 {
    match judge_record(&name.routing_key(), record, [], SystemTime::now()) {
        RecordJudgement::Valid(r) => r.sequence(),
        other => panic!("not a valid record of {name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_nodes_serve_the_records_they_hold_before_publishing_again() {
    let mut writer = TestNode::init("writer");
    // Republishing is an hour away: whatever is served after the restart comes from disk.
    let config = writer.data_dir().join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config.toml");
    assert!(text.contains("republish_interval_secs = 120"));
    std::fs::write(
        &config,
        text.replace(
            "republish_interval_secs = 120",
            "republish_interval_secs = 3600",
        ),
    )
    .expect("write config.toml");
    writer.serve(&[]);
    let (_, name_text) = writer.id();
    let name: IpnsName = name_text.parse().expect("an IPNS name");
    let key = name.routing_key();
    let client = reqwest::Client::new();
    let image = push_image(&client, &writer.url(), "team/app", "v1", 7)
        .await
        .expect("push to the writer");

    // The record naming the pushed tree, as the running writer serves it.
    let deadline = Instant::now() + WAIT;
    let published = loop {
        let status = writer.status().await;
        let own = status.own.expect("a writer reports its own name");
        let answer = fetch_from(&p2p_addr(&writer), &key).await;
        if answer.status == FETCH_OK && Some(sequence_of(&name, &answer.data)) == own.sequence {
            break answer.data;
        }
        assert!(
            Instant::now() < deadline,
            "the writer never served its record"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    writer.restart();
    let addr = p2p_addr(&writer);
    // Fetch alone, the DHTs alone (LAN as kubo on a LAN asks, WAN too): the very record from
    // before the restart, not a new one.
    let answer = fetch_from(&addr, &key).await;
    assert_eq!(answer.status, FETCH_OK);
    assert_eq!(
        answer.data, published,
        "fetch serves the record held on disk"
    );
    assert_eq!(
        kad_get_from(LAN_KAD_PROTOCOL, &addr, &key).await,
        vec![published.clone()]
    );
    assert_eq!(
        kad_get_from(KAD_PROTOCOL, &addr, &key).await,
        vec![published.clone()]
    );

    // A fresh replica resolves the name and serves the image.
    let mut replica = TestNode::init("replica");
    replica.serve(&["--follow", &name_text, "--peer", &writer.p2p_addr()]);
    let url = format!(
        "{}/v2/{}/manifests/{}",
        replica.url(),
        image.repo,
        image.tag
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let served = client
            .get(&url)
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200);
        if let Some(resp) = served {
            let body = resp.bytes().await.expect("manifest body");
            assert_eq!(common::sha256(&body), image.manifest);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never served the image"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still the record from before the restart: nothing was published to get here.
    let status = replica.status().await;
    assert_eq!(
        status.followed[0].sequence,
        Some(sequence_of(&name, &published))
    );

    // The replica, restarted with the writer gone, serves the followed record it holds from
    // its first moment, over fetch and both DHTs.
    writer.kill();
    replica.restart();
    let addr = p2p_addr(&replica);
    let answer = fetch_from(&addr, &key).await;
    assert_eq!(answer.status, FETCH_OK);
    assert_eq!(
        answer.data, published,
        "the replica serves the followed record"
    );
    assert_eq!(
        kad_get_from(LAN_KAD_PROTOCOL, &addr, &key).await,
        vec![published.clone()]
    );
    assert_eq!(
        kad_get_from(KAD_PROTOCOL, &addr, &key).await,
        vec![published]
    );
}
