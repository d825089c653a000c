//! A replica that takes everything from another node's trustless gateway (`--gateway URL`),
//! with no libp2p peer at all: real binaries on loopback, the writer reachable only through
//! its HTTP port (the replica gets no `--peer`, and mDNS is off).

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::{pseudo_random, push_image, sha256, TestNode};

const WAIT: Duration = Duration::from_secs(60);
const ACCEPT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(client: &reqwest::Client, url: &str, accept: &str) -> Option<bytes::Bytes> {
    let resp = client.get(url).header("Accept", accept).send().await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.bytes().await.ok()
}

#[tokio::test]
async fn a_replica_pulls_through_a_gateway_without_peers() {
    let client = reqwest::Client::new();
    let writer = TestNode::start();
    let (_, name) = writer.id();
    let image = push_image(&client, &writer.url(), "app/web", "v1", 11)
        .await
        .expect("push");
    // A blob of three chunks, so the replica fetches a DAG, not only single blocks.
    let big = pseudo_random(2_500_000, 12);
    let big_digest = sha256(&big);
    let resp = client
        .post(format!(
            "{}/v2/app/web/blobs/uploads/?digest={big_digest}",
            writer.url()
        ))
        .body(big.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 201);

    // Until the writer's published record covers both, a replica would resolve an older tree.
    let hex = big_digest.trim_start_matches("sha256:");
    let published = format!(
        "{}/ipns/{name}/docker/registry/v2/repositories/app/web/_layers/sha256/{hex}/link?format=car&dag-scope=block",
        writer.url()
    );
    wait_for("the writer's record to cover the pushes", || {
        get(&client, &published, "*/*")
    })
    .await;

    let mut replica = TestNode::init("replica");
    replica.serve(&["--follow", &name, "--gateway", &writer.url()]);
    let manifest_url = format!("{}/v2/app/web/manifests/v1", replica.url());
    let manifest = wait_for("the replica to serve the manifest", || {
        get(&client, &manifest_url, ACCEPT_MANIFEST)
    })
    .await;
    assert_eq!(sha256(&manifest), image.manifest);
    for digest in &image.blobs {
        let url = format!("{}/v2/app/web/blobs/{digest}", replica.url());
        let blob = get(&client, &url, "*/*")
            .await
            .expect("blob from the replica");
        assert_eq!(&sha256(&blob), digest);
    }
    let url = format!("{}/v2/app/web/blobs/{big_digest}", replica.url());
    let blob = get(&client, &url, "*/*")
        .await
        .expect("big blob from the replica");
    assert!(blob == big, "the replica serves the blob byte for byte");

    // No libp2p peer was ever involved.
    let status = replica.status().await;
    assert!(status.peers.is_empty(), "{:?}", status.peers);

    // The replica's own gateway now serves the followed record it took, unchanged.
    let writer_record = get(
        &client,
        &format!("{}/ipns/{name}", writer.url()),
        "application/vnd.ipfs.ipns-record",
    )
    .await
    .expect("writer's record");
    let replica_record = get(
        &client,
        &format!("{}/ipns/{name}", replica.url()),
        "application/vnd.ipfs.ipns-record",
    )
    .await
    .expect("replica's record");
    assert_eq!(writer_record, replica_record);
}

#[test]
fn a_gateway_url_that_is_not_http_stops_the_start() {
    let replica = TestNode::init("replica");
    let out = std::process::Command::new(common::binary())
        .arg("--data-dir")
        .arg(replica.data_dir())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-mdns",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--gateway",
            "ftp://127.0.0.1/",
        ])
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only http:// and https://"), "{stderr}");
}
