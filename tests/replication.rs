//! Replication between real nodes on loopback: a writer publishes its root over IPNS, replicas
//! follow names in order, fetch blocks from any peer, keep serving offline, and reject bad
//! records.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{push_image, served_manifest, sha256, wait_for, PushedImage, TestNode};
use ipns_registry::admin::StatusReport;
use ipns_registry::config::Role;
use ipns_registry::names::{IpnsName, IpnsRecord};
use ipns_registry::p2p::{P2p, P2pConfig, RecordSource, RecordValidator, RecordVerdict};
use ipns_registry::store::BlockStore;
use libp2p::identity::Keypair;

const ACCEPT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// GET of a JSON document.
async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON body")
}

/// Pulls every blob of `image` from `base` and checks it against its digest.
async fn pull_all(client: &reqwest::Client, base: &str, image: &PushedImage) {
    assert_eq!(
        served_manifest(client, base, &image.repo, &image.tag)
            .await
            .as_deref(),
        Some(image.manifest.as_str()),
        "{}:{} manifest",
        image.repo,
        image.tag
    );
    for blob in &image.blobs {
        let resp = client
            .get(format!("{base}/v2/{}/blobs/{blob}", image.repo))
            .send()
            .await
            .expect("blob request");
        assert_eq!(resp.status(), 200, "blob {blob} of {}", image.repo);
        assert_eq!(&sha256(&resp.bytes().await.expect("blob body")), blob);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_serves_what_the_writer_pushes() {
    let mut writer = TestNode::init("writer");
    writer.serve(&[]);
    let (_, name) = writer.id();
    let mut replica = TestNode::init("replica");
    replica.serve(&["--follow", &name, "--peer", &writer.p2p_addr()]);
    let client = reqwest::Client::new();

    // A real client pushes to the writer.
    let oci = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let layers = vec![
        oci_client::client::ImageLayer::oci_v1(common::pseudo_random(3 << 20, 1), None),
        oci_client::client::ImageLayer::oci_v1(b"small layer".to_vec(), None),
    ];
    let config = oci_client::client::Config::oci_v1(br#"{"os":"linux"}"#.to_vec(), None);
    let manifest = oci_client::manifest::OciImageManifest::build(&layers, &config, None);
    let reference: oci_client::Reference = format!("{}/team/app:v1", writer.addr)
        .parse()
        .expect("reference");
    oci.push(
        &reference,
        &layers,
        config,
        &oci_client::secrets::RegistryAuth::Anonymous,
        Some(manifest),
    )
    .await
    .expect("push to the writer");
    let pushed = served_manifest(&client, &writer.url(), "team/app", "v1")
        .await
        .expect("writer serves its push");

    // The replica serves the same manifest, and a real client pulls identical layers from it.
    let base = replica.url();
    wait_for("the replica to serve team/app:v1", || {
        let (client, base, pushed) = (&client, &base, &pushed);
        async move {
            (served_manifest(client, base, "team/app", "v1")
                .await
                .as_ref()
                == Some(pushed))
            .then_some(())
        }
    })
    .await;
    let from_replica: oci_client::Reference = format!("{}/team/app:v1", replica.addr)
        .parse()
        .expect("reference");
    let image = oci
        .pull(
            &from_replica,
            &oci_client::secrets::RegistryAuth::Anonymous,
            vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE],
        )
        .await
        .expect("pull from the replica");
    // oci-client returns layers in the order their downloads finish: compare by digest.
    let mut pulled: Vec<String> = image.layers.iter().map(|l| sha256(&l.data)).collect();
    let mut expected: Vec<String> = layers.iter().map(|l| sha256(&l.data)).collect();
    pulled.sort();
    expected.sort();
    assert_eq!(pulled, expected);

    // A new tag reaches the running replica.
    let second = push_image(&client, &writer.url(), "team/app", "v2", 2)
        .await
        .expect("second push");
    let acknowledged = Instant::now();
    wait_for("the replica to serve team/app:v2", || {
        let (client, base, digest) = (&client, &base, &second.manifest);
        async move {
            (served_manifest(client, base, "team/app", "v2")
                .await
                .as_ref()
                == Some(digest))
            .then_some(())
        }
    })
    .await;
    println!(
        "propagation: {} ms from the writer's 201 to the replica serving the new tag",
        acknowledged.elapsed().as_millis()
    );
    pull_all(&client, &base, &second).await;

    // Tags list on the replica, and pushes refused with UNSUPPORTED.
    let tags: serde_json::Value = get_json(&client, &format!("{base}/v2/team/app/tags/list")).await;
    assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]));
    let resp = client
        .post(format!("{base}/v2/team/app/blobs/uploads/"))
        .send()
        .await
        .expect("push attempt");
    assert_eq!(resp.status(), 405);
    let body: serde_json::Value = resp.json().await.expect("error JSON");
    assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
    let resp = client
        .put(format!("{base}/v2/team/app/manifests/v3"))
        .header("Content-Type", ACCEPT_MANIFEST)
        .body("{}")
        .send()
        .await
        .expect("manifest push attempt");
    assert_eq!(resp.status(), 405);

    let report = replica.status().await;
    assert_eq!(report.role, Role::Replica);
    assert_eq!(report.followed[0].name, name);
    assert!(report.followed[0].sequence.is_some());
    assert!(report.ready, "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_follow_first_hit_wins() {
    let client = reqwest::Client::new();
    let mut a = TestNode::init("writer");
    a.serve(&[]);
    let mut b = TestNode::init("writer");
    b.serve(&[]);
    let (_, name_a) = a.id();
    let (_, name_b) = b.id();
    let x_a = push_image(&client, &a.url(), "shared/app", "x", 10)
        .await
        .expect("push A");
    let x_b = push_image(&client, &b.url(), "shared/app", "x", 20)
        .await
        .expect("push B");
    push_image(&client, &a.url(), "shared/app", "only-a", 11)
        .await
        .expect("push A");
    push_image(&client, &b.url(), "other/app", "only-b", 21)
        .await
        .expect("push B");
    assert_ne!(x_a.manifest, x_b.manifest);

    // Follow A then B, persisted with `follow add`.
    let mut replica = TestNode::init("replica");
    for name in [&name_a, &name_b] {
        replica.cli(&["follow", "add", name]);
    }
    let list: serde_json::Value =
        serde_json::from_str(&replica.cli(&["follow", "list", "--json"])).expect("list JSON");
    assert_eq!(list[0]["name"], name_a.as_str());
    assert_eq!(list[1]["name"], name_b.as_str());
    replica.serve(&["--peer", &a.p2p_addr(), "--peer", &b.p2p_addr()]);
    let base = replica.url();
    wait_for("both followed names to resolve", || {
        let replica = &replica;
        async move {
            let report = replica.status().await;
            report
                .followed
                .iter()
                .all(|f| f.root.is_some())
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        served_manifest(&client, &base, "shared/app", "x").await,
        Some(x_a.manifest.clone())
    );
    pull_all(&client, &base, &x_a).await;
    let tags: serde_json::Value =
        get_json(&client, &format!("{base}/v2/shared/app/tags/list")).await;
    assert_eq!(tags["tags"], serde_json::json!(["only-a", "x"]));
    let catalog: serde_json::Value = get_json(&client, &format!("{base}/v2/_catalog")).await;
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["other/app", "shared/app"])
    );

    // Remove A: B's x is served.
    replica.kill();
    replica.cli(&["follow", "remove", &name_a]);
    replica.serve(&["--peer", &b.p2p_addr()]);
    let base = replica.url();
    wait_for("B's x after removing A", || {
        let (client, base, digest) = (&client, &base, &x_b.manifest);
        async move {
            (served_manifest(client, base, "shared/app", "x")
                .await
                .as_ref()
                == Some(digest))
            .then_some(())
        }
    })
    .await;
    pull_all(&client, &base, &x_b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_each_other_and_offline() {
    let client = reqwest::Client::new();
    let mut writer = TestNode::init("writer");
    writer.serve(&[]);
    let (_, name) = writer.id();
    let mut images = Vec::new();
    for (i, repo) in ["fleet/api", "fleet/web", "tools/debug"].iter().enumerate() {
        images.push(
            push_image(&client, &writer.url(), repo, "v1", 100 + i as u64)
                .await
                .expect("push"),
        );
    }
    let root = writer.status().await.own.expect("own tree").root;

    let mut r1 = TestNode::init("replica");
    r1.serve(&[
        "--follow",
        &name,
        "--mirror",
        "all",
        "--peer",
        &writer.p2p_addr(),
    ]);
    wait_for("R1 to mirror the whole tree", || {
        let (r1, root) = (&r1, &root);
        async move {
            let report = r1.status().await;
            let progress = report.followed[0].mirror_progress.as_ref()?;
            (&progress.root == root && progress.state == "complete").then_some(())
        }
    })
    .await;

    let mut r2 = TestNode::init("replica");
    r2.serve(&["--follow", &name, "--peer", &r1.p2p_addr()]);
    writer.kill();
    let r2_base = r2.url();
    wait_for("R2 to resolve the writer's name from R1", || {
        let r2 = &r2;
        async move { r2.status().await.followed[0].root.clone() }
    })
    .await;
    for image in &images {
        pull_all(&client, &r2_base, image).await;
    }

    // R1 restarted with no peers at all still serves every image.
    r1.serve(&["--follow", &name, "--mirror", "all"]);
    let r1_base = r1.url();
    assert!(r1.status().await.peers.is_empty());
    for image in &images {
        pull_all(&client, &r1_base, image).await;
    }
    // And so does R2 for everything it pulled.
    r2.serve(&["--follow", &name]);
    let r2_base = r2.url();
    for image in &images {
        pull_all(&client, &r2_base, image).await;
    }
}

/// A record for `/ipfs/<root>` valid for an hour.
fn sign(key: &Keypair, root: &str, sequence: u64) -> IpnsRecord {
    IpnsRecord::sign(
        key,
        &format!("/ipfs/{root}"),
        sequence,
        Duration::from_secs(3600),
        Duration::from_secs(60),
    )
    .expect("sign")
}

/// Records handed out by the in-process "attacker" peer.
#[derive(Default)]
struct Records(Mutex<HashMap<Vec<u8>, Vec<u8>>>);

impl RecordSource for Records {
    fn newest(&self, routing_key: &[u8]) -> Option<Vec<u8>> {
        self.0.lock().expect("lock").get(routing_key).cloned()
    }
}

/// The attacker believes anything.
impl RecordValidator for Records {
    fn validate(&self, _: &[u8], _: &[u8], _: Option<&[u8]>) -> RecordVerdict {
        RecordVerdict::Accept
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_rejected() {
    let owner = Keypair::generate_ed25519();
    let name = IpnsName::from_peer_id(owner.public().to_peer_id());
    let records = Arc::new(Records::default());
    let tmp = tempfile::tempdir().expect("tmp");
    let blocks = Arc::new(BlockStore::open(tmp.path()).expect("block store"));
    let (peer, _events) = P2p::start(
        P2pConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
            fetch_timeout: Duration::from_secs(5),
            ..P2pConfig::new(Keypair::generate_ed25519())
        },
        blocks,
        records.clone(),
        records.clone(),
    )
    .await
    .expect("start the test peer");
    let peer_addr = peer.listen_addrs().await[0].to_string();

    let mut replica = TestNode::init("replica");
    replica.serve(&["--follow", &name.to_string(), "--peer", &peer_addr]);
    let empty_dir = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354";

    // Hands a record to the replica both ways a peer can: direct answers and pubsub.
    let offer = |key: &IpnsName, bytes: Vec<u8>| {
        let (records, peer, key) = (records.clone(), peer.clone(), *key);
        async move {
            records
                .0
                .lock()
                .expect("lock")
                .insert(key.routing_key(), bytes.clone());
            let _ = peer
                .publish(key.pubsub_topic(), key.routing_key(), bytes)
                .await;
        }
    };
    let sequence_of = |report: &StatusReport| report.followed[0].sequence;

    let good = sign(&owner, empty_dir, 5);
    wait_for("the valid record to be accepted", || {
        let (replica, offer, good, name) = (&replica, &offer, &good, &name);
        async move {
            offer(name, good.to_bytes().to_vec()).await;
            (sequence_of(&replica.status().await) == Some(5)).then_some(())
        }
    })
    .await;

    let other_root = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
    let forged = sign(&Keypair::generate_ed25519(), other_root, 9);
    let replayed = sign(&owner, other_root, 3);
    let same_sequence = sign(&owner, other_root, 5);
    for (what, bytes) in [
        ("forged (wrong key)", forged.to_bytes().to_vec()),
        ("replayed (older sequence)", replayed.to_bytes().to_vec()),
        (
            "same sequence, other value",
            same_sequence.to_bytes().to_vec(),
        ),
    ] {
        offer(&name, bytes).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let report = replica.status().await;
        assert_eq!(sequence_of(&report), Some(5), "{what} record was accepted");
        assert_eq!(
            report.followed[0].root.as_deref(),
            Some(empty_dir),
            "{what} changed the served root"
        );
    }

    let expired = IpnsRecord::sign_with_eol(
        &owner,
        &format!("/ipfs/{other_root}"),
        10,
        SystemTime::now() - Duration::from_secs(60),
        Duration::from_secs(60),
    )
    .expect("sign");
    offer(&name, expired.to_bytes().to_vec()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = replica.status().await;
    assert_eq!(
        sequence_of(&report),
        Some(5),
        "an expired record was accepted"
    );
    assert_eq!(report.followed[0].root.as_deref(), Some(empty_dir));

    // A newer valid record still gets through: the rejections above were about the records.
    let newer = sign(&owner, other_root, 6);
    wait_for("the newer valid record to be accepted", || {
        let (replica, offer, newer, name) = (&replica, &offer, &newer, &name);
        async move {
            offer(name, newer.to_bytes().to_vec()).await;
            (sequence_of(&replica.status().await) == Some(6)).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_with_the_same_key_is_detected() {
    let client = reqwest::Client::new();
    let mut first = TestNode::init("writer");
    first.serve(&[]);
    let (_, name) = first.id();
    // Two nodes with one key have one peer id and libp2p never connects a peer to itself, so
    // they meet through a replica that follows the name.
    let mut replica = TestNode::init("replica");
    replica.serve(&["--follow", &name, "--peer", &first.p2p_addr()]);
    let mut second = TestNode::init("writer");
    std::fs::copy(
        first.data_dir().join("keys/self.key"),
        second.data_dir().join("keys/self.key"),
    )
    .expect("copy the key");
    assert_eq!(first.id(), second.id());
    second.serve(&["--peer", &replica.p2p_addr()]);
    push_image(&client, &second.url(), "dup/app", "v1", 7)
        .await
        .expect("push to the second writer");
    // Whichever of the two sees the other's record at or above its own sequence stops: the
    // second one if it published before hearing of the first, else the first.
    let nodes = [&first, &second];
    let stopped = wait_for("one writer to report the other", || {
        let (client, nodes) = (&client, &nodes);
        async move {
            for (i, node) in nodes.iter().enumerate() {
                let resp = client
                    .get(format!("{}/readyz", node.url()))
                    .send()
                    .await
                    .ok()?;
                if resp.status() == 503 {
                    return Some(i);
                }
            }
            None
        }
    })
    .await;
    let report = nodes[stopped].status().await;
    assert!(
        report.own.as_ref().is_some_and(|o| o.conflict.is_some()),
        "{report:?}"
    );
    assert!(!report.ready);
    assert!(report.problems.iter().any(|p| p.contains("second writer")));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
        // Anything else is the running node's admin socket: not part of its state.
    }
}

async fn own_sequence(node: &TestNode) -> Option<u64> {
    node.status().await.own?.sequence
}

async fn followed_sequence(node: &TestNode) -> Option<u64> {
    node.status().await.followed[0].sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_never_go_back() {
    let client = reqwest::Client::new();
    let mut writer = TestNode::init("writer");
    writer.serve(&[]);
    let (_, name) = writer.id();
    let mut replica = TestNode::init("replica");
    replica.serve(&["--follow", &name, "--peer", &writer.p2p_addr()]);
    let v1 = push_image(&client, &writer.url(), "seq/app", "v1", 30)
        .await
        .expect("push v1");
    let base = replica.url();
    wait_for("the replica to serve v1", || {
        let (client, base, digest) = (&client, &base, &v1.manifest);
        async move {
            (served_manifest(client, base, "seq/app", "v1")
                .await
                .as_ref()
                == Some(digest))
            .then_some(())
        }
    })
    .await;
    let first = wait_for("the writer's sequence", || own_sequence(&writer)).await;

    // A backup of the writer taken now, while it is stopped.
    writer.kill();
    let backup = tempfile::tempdir().expect("temp dir");
    copy_dir(writer.data_dir(), backup.path());

    // Restarted, the writer continues above its last sequence.
    writer.serve(&["--peer", &replica.p2p_addr()]);
    let v2 = push_image(&client, &writer.url(), "seq/app", "v2", 31)
        .await
        .expect("push v2");
    wait_for("the replica to serve v2", || {
        let (client, base, digest) = (&client, &base, &v2.manifest);
        async move {
            (served_manifest(client, base, "seq/app", "v2")
                .await
                .as_ref()
                == Some(digest))
            .then_some(())
        }
    })
    .await;
    let second = followed_sequence(&replica)
        .await
        .expect("replica holds a record");
    assert!(
        second > first,
        "sequence {second} after a restart is not above {first}"
    );

    // Restored from the backup, it learns the newest sequence from its peer and goes above it:
    // the replica follows it back to the restored tree instead of ignoring it.
    writer.kill();
    std::fs::remove_dir_all(writer.data_dir()).expect("remove data dir");
    copy_dir(backup.path(), writer.data_dir());
    writer.serve(&["--peer", &replica.p2p_addr()]);
    let third = wait_for("the replica to take the restored writer's record", || {
        let replica = &replica;
        async move { followed_sequence(replica).await.filter(|s| *s > second) }
    })
    .await;
    assert_eq!(own_sequence(&writer).await, Some(third));
    assert_eq!(served_manifest(&client, &base, "seq/app", "v2").await, None);
    assert_eq!(
        served_manifest(&client, &base, "seq/app", "v1").await,
        Some(v1.manifest.clone())
    );
    let health = client
        .get(format!("{}/readyz", writer.url()))
        .send()
        .await
        .expect("readiness");
    assert_eq!(
        health.status(),
        200,
        "a restored writer is not a second writer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_renewed_before_they_lapse() {
    let client = reqwest::Client::new();
    let mut writer = TestNode::init("writer");
    // Records valid for 4 s, checked every second: renewed at half their lifetime.
    let config = writer.data_dir().join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text
        .replace("record_lifetime_secs = 172800", "record_lifetime_secs = 4")
        .replace(
            "republish_interval_secs = 120",
            "republish_interval_secs = 1",
        );
    std::fs::write(&config, text).expect("write config");
    writer.serve(&[]);
    let (_, name) = writer.id();
    let mut replica = TestNode::init("replica");
    replica.serve(&["--follow", &name, "--peer", &writer.p2p_addr()]);
    let v1 = push_image(&client, &writer.url(), "renew/app", "v1", 40)
        .await
        .expect("push");
    let base = replica.url();
    let first = wait_for("the replica to hold a record", || {
        followed_sequence(&replica)
    })
    .await;
    // Well past the first record's lifetime, with no pushes: the replica holds a newer record
    // of the same root and still accepts its renewals, so nothing lapsed. (How many renewals
    // came by then depends on the machine's load; that they keep coming is waited for.)
    tokio::time::sleep(Duration::from_secs(6)).await;
    followed_sequence(&replica).await.expect("still a record");
    wait_for(&format!("two renewals after sequence {first}"), || async {
        followed_sequence(&replica)
            .await
            .filter(|later| *later >= first + 2)
    })
    .await;
    assert_eq!(
        served_manifest(&client, &base, "renew/app", "v1").await,
        Some(v1.manifest)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_a_list_of_repositories_keeps_them_offline() {
    let client = reqwest::Client::new();
    let mut writer = TestNode::init("writer");
    writer.serve(&[]);
    let (_, name) = writer.id();
    let wanted = push_image(&client, &writer.url(), "lab/wanted", "v1", 50)
        .await
        .expect("push");
    let other = push_image(&client, &writer.url(), "lab/other", "v1", 51)
        .await
        .expect("push");
    let root = writer.status().await.own.expect("own tree").root;

    let mut replica = TestNode::init("replica");
    replica.cli(&["follow", "add", &name, "--mirror", "lab/wanted"]);
    replica.serve(&["--peer", &writer.p2p_addr()]);
    let progress = wait_for("the replica to mirror lab/wanted", || {
        let (replica, root) = (&replica, &root);
        async move {
            let progress = replica.status().await.followed[0].mirror_progress.clone()?;
            (&progress.root == root && progress.state == "complete").then_some(progress)
        }
    })
    .await;
    // Only the chosen repository's blobs: its manifest, config and layer (lab/other has three
    // more).
    assert_eq!(progress.progress.blobs_total, 3, "{progress:?}");
    assert_eq!(progress.progress.blobs_verified, 3, "{progress:?}");

    writer.kill();
    // A fetch timeout far longer than the client waits: a block nobody can provide must be
    // refused because no peer is connected at all, not after the timeout.
    let config = replica.data_dir().join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("fetch_timeout_secs = 30", "fetch_timeout_secs = 3600"),
    )
    .expect("write config");
    replica.serve(&[]);
    let base = replica.url();
    pull_all(&client, &base, &wanted).await;

    let started = Instant::now();
    let resp = client
        .get(format!("{base}/v2/lab/other/blobs/{}", other.blobs[0]))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("an answer, not a hang");
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.expect("error JSON");
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    println!(
        "offline replica refused a blob it lacks after {} ms",
        started.elapsed().as_millis()
    );
}
