//! `/metrics` on real nodes: the page parses as Prometheus (OpenMetrics) text, and its counters
//! and gauges move after a push, a pull and a replica's fetch; access follows the config; and
//! `--log-format json` writes one JSON object per line.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{push_image, wait_for, TestNode};
use ipns_registry::names::{IpnsName, IpnsRecord};
use ipns_registry::p2p::{P2p, P2pConfig, RecordSource, RecordValidator, RecordVerdict};
use ipns_registry::store::BlockStore;
use libp2p::identity::Keypair;
use prometheus_parse::{LineInfo, Scrape, Value};

const ACCEPT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// One scrape of a node's `/metrics`, parsed.
struct Metrics {
    scrape: Scrape,
    text: String,
}

impl Metrics {
    /// Parses `text`, insisting that the parser understood every line: the only lines it
    /// skips are OpenMetrics' `# UNIT` comments and the closing `# EOF`.
    fn parse(text: String) -> Self {
        assert!(text.ends_with("# EOF\n"), "no closing # EOF:\n{text}");
        for line in text.lines() {
            if let LineInfo::Ignored | LineInfo::Empty = LineInfo::parse(line) {
                assert!(
                    line.starts_with("# UNIT ipns_registry_") || line == "# EOF",
                    "a line the parser does not understand: {line:?}"
                );
            }
        }
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        assert!(!scrape.samples.is_empty(), "no samples:\n{text}");
        for sample in &scrape.samples {
            assert!(
                sample.metric.starts_with("ipns_registry_"),
                "{} is not named ipns_registry_*",
                sample.metric
            );
        }
        Metrics { scrape, text }
    }

    /// The value of `metric` with (at least) `labels`; `None` if no such sample. Histograms
    /// are read through their `_count` and `_sum` samples.
    fn get(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{metric} is not a single value: {other:?}"),
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "{metric} {labels:?} matches several samples:\n{}",
            self.text
        );
        matching.first().copied()
    }

    /// Like [`Self::get`], with 0 for a counter that has not appeared yet.
    fn count(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(metric, labels).unwrap_or(0.0)
    }
}

async fn scrape(client: &reqwest::Client, base: &str) -> Metrics {
    let resp = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    Metrics::parse(resp.text().await.expect("metrics body"))
}

const REQUESTS: &str = "ipns_registry_http_requests_total";

fn request(
    class: &'static str,
    method: &'static str,
    status: &'static str,
) -> [(&'static str, &'static str); 3] {
    [("class", class), ("method", method), ("status", status)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_after_a_push_and_a_pull() {
    let node = TestNode::start();
    let base = node.url();
    let client = reqwest::Client::new();

    // The first count of the block store runs in the background: wait for it.
    let before = wait_for("the block count", || async {
        let m = scrape(&client, &base).await;
        m.get("ipns_registry_store_blocks", &[]).map(|_| m)
    })
    .await;
    let blocks_before = before.count("ipns_registry_store_blocks", &[]);
    let bytes_before = before.count("ipns_registry_store_bytes", &[]);
    assert!(blocks_before >= 1.0, "the empty root is a block");
    let commits_before = before.count("ipns_registry_tree_commit_duration_seconds_count", &[]);

    let image = push_image(&client, &base, "team/app", "v1", 7)
        .await
        .expect("push");
    let manifest = client
        .get(format!("{base}/v2/team/app/manifests/v1"))
        .header("Accept", ACCEPT_MANIFEST)
        .send()
        .await
        .expect("pull manifest");
    assert_eq!(manifest.status(), 200);
    manifest.bytes().await.expect("manifest body");
    let mut pulled = 0;
    for blob in &image.blobs {
        let resp = client
            .get(format!("{base}/v2/team/app/blobs/{blob}"))
            .send()
            .await
            .expect("pull blob");
        assert_eq!(resp.status(), 200);
        pulled += resp.bytes().await.expect("blob body").len();
    }
    let missing = client
        .get(format!("{base}/v2/team/app/manifests/nope"))
        .send()
        .await
        .expect("missing tag");
    assert_eq!(missing.status(), 404);

    let after = scrape(&client, &base).await;
    let moved =
        |labels: &[(&str, &str)]| after.count(REQUESTS, labels) - before.count(REQUESTS, labels);
    assert_eq!(
        moved(&request("upload", "POST", "201")),
        2.0,
        "two blob uploads"
    );
    assert_eq!(moved(&request("manifest", "PUT", "201")), 1.0);
    assert_eq!(moved(&request("manifest", "GET", "200")), 1.0);
    assert_eq!(moved(&request("manifest", "GET", "404")), 1.0);
    assert_eq!(moved(&request("blob", "GET", "200")), 2.0);
    // Every scrape before this one was counted under its own class.
    assert!(after.count(REQUESTS, &request("metrics", "GET", "200")) >= 1.0);
    let latency = |class, method| {
        after.count(
            "ipns_registry_http_request_duration_seconds_count",
            &[("class", class), ("method", method)],
        )
    };
    assert_eq!(latency("manifest", "PUT"), 1.0);
    assert_eq!(latency("blob", "GET"), 2.0);
    assert!(
        after.count(
            "ipns_registry_http_request_body_bytes_total",
            &[("class", "upload")]
        ) >= 4096.0,
        "the layer's bytes came in"
    );
    assert!(
        after.count(
            "ipns_registry_http_response_body_bytes_total",
            &[("class", "blob")]
        ) >= pulled as f64,
        "the blobs' bytes went out"
    );

    // Two blobs and a manifest: at least three commits of the tree.
    let commits = after.count("ipns_registry_tree_commit_duration_seconds_count", &[]);
    assert!(commits >= commits_before + 3.0, "{commits} commits");
    assert!(after.count("ipns_registry_tree_commit_duration_seconds_sum", &[]) > 0.0);

    // The pushed blocks are held: layer, config, manifest, links and the new directories.
    let blocks = after.count("ipns_registry_store_blocks", &[]);
    let bytes = after.count("ipns_registry_store_bytes", &[]);
    assert!(
        blocks >= blocks_before + 4.0,
        "{blocks_before} -> {blocks} blocks"
    );
    assert!(
        bytes >= bytes_before + 4096.0,
        "{bytes_before} -> {bytes} bytes"
    );

    // An upload session shows while it is open.
    assert_eq!(after.get("ipns_registry_upload_sessions", &[]), Some(0.0));
    let started = client
        .post(format!("{base}/v2/team/app/blobs/uploads/"))
        .send()
        .await
        .expect("start upload");
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let open = scrape(&client, &base).await;
    assert_eq!(open.get("ipns_registry_upload_sessions", &[]), Some(1.0));
    let cancelled = client
        .delete(format!("{base}{location}"))
        .send()
        .await
        .expect("cancel upload");
    assert_eq!(cancelled.status(), 204);
    let closed = scrape(&client, &base).await;
    assert_eq!(closed.get("ipns_registry_upload_sessions", &[]), Some(0.0));
    assert_eq!(
        closed.count(REQUESTS, &request("upload", "DELETE", "204")),
        1.0
    );

    // HEAD tells the length only; other methods are refused with the spec's JSON.
    let head = client
        .head(format!("{base}/metrics"))
        .send()
        .await
        .expect("HEAD /metrics");
    assert_eq!(head.status(), 200);
    let post = client
        .post(format!("{base}/metrics"))
        .send()
        .await
        .expect("POST /metrics");
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    let body: serde_json::Value = post.json().await.expect("OCI error JSON");
    assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
}

/// Records a test peer holds: none of its own; every record is accepted.
#[derive(Default)]
struct NoRecords(Mutex<HashMap<Vec<u8>, Vec<u8>>>);

impl RecordSource for NoRecords {
    fn newest(&self, routing_key: &[u8]) -> Option<Vec<u8>> {
        self.0.lock().expect("lock").get(routing_key).cloned()
    }
}

impl RecordValidator for NoRecords {
    fn validate(&self, _: &[u8], _: &[u8], _: Option<&[u8]>) -> RecordVerdict {
        RecordVerdict::Accept
    }
}

/// The newest record of `name` that the node at `p2p_addr` hands out when asked directly,
/// checked against the name's key.
async fn record_of(name: &IpnsName, p2p_addr: &str) -> IpnsRecord {
    let tmp = tempfile::tempdir().expect("tmp");
    let blocks = Arc::new(BlockStore::open(tmp.path()).expect("block store"));
    let records = Arc::new(NoRecords::default());
    let (peer, _events) = P2p::start(
        P2pConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
            ..P2pConfig::new(Keypair::generate_ed25519())
        },
        blocks,
        records.clone(),
        records,
    )
    .await
    .expect("start the test peer");
    peer.dial(p2p_addr.parse().expect("multiaddr"))
        .await
        .expect("dial the writer");
    let answers = peer
        .query_records(name.routing_key(), Duration::from_secs(5))
        .await;
    peer.shutdown().await;
    answers
        .iter()
        .filter_map(|bytes| IpnsRecord::validate(name, bytes, SystemTime::now()).ok())
        .max_by_key(IpnsRecord::sequence)
        .expect("the writer answers with its record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_fetch_moves_bitswap_and_the_followed_sequence() {
    let writer = TestNode::start();
    let (_, name) = writer.id();
    let mut replica = TestNode::init("replica");
    replica.serve(&["--follow", &name, "--peer", &writer.p2p_addr()]);
    let client = reqwest::Client::new();
    let (wbase, rbase) = (writer.url(), replica.url());

    let image = push_image(&client, &wbase, "lib/tool", "1.0", 11)
        .await
        .expect("push");
    let root_published = wait_for("the replica to serve the pushed tag", || async {
        let resp = client
            .get(format!("{rbase}/v2/lib/tool/manifests/1.0"))
            .header("Accept", ACCEPT_MANIFEST)
            .send()
            .await
            .ok()?;
        (resp.status() == 200).then_some(())
    })
    .await;
    let () = root_published;
    let before = scrape(&client, &rbase).await;
    let mut pulled = 0;
    for blob in &image.blobs {
        let resp = client
            .get(format!("{rbase}/v2/lib/tool/blobs/{blob}"))
            .send()
            .await
            .expect("pull from the replica");
        assert_eq!(resp.status(), 200);
        pulled += resp.bytes().await.expect("blob").len();
    }
    let after = scrape(&client, &rbase).await;

    // The blobs came over Bitswap: at least one block each, and at least their bytes.
    let received =
        |m: &Metrics, what| m.count(&format!("ipns_registry_bitswap_received_{what}_total"), &[]);
    assert!(
        received(&after, "blocks") >= received(&before, "blocks") + image.blobs.len() as f64,
        "blocks received: {} -> {}",
        received(&before, "blocks"),
        received(&after, "blocks")
    );
    assert!(
        received(&after, "bytes") >= received(&before, "bytes") + pulled as f64,
        "bytes received"
    );
    assert!(after.count("ipns_registry_p2p_peers", &[]) >= 1.0);
    assert!(after.count(REQUESTS, &request("blob", "GET", "200")) >= image.blobs.len() as f64);

    // The writer sent them, and its published sequence is its record's.
    let written = scrape(&client, &wbase).await;
    assert!(
        written.count("ipns_registry_bitswap_sent_blocks_total", &[]) >= image.blobs.len() as f64
    );
    assert!(written.count("ipns_registry_bitswap_sent_bytes_total", &[]) >= pulled as f64);
    assert!(written.count("ipns_registry_publish_duration_seconds_count", &[]) >= 1.0);
    let ipns_name = IpnsName::parse(&name).expect("name");
    let record = record_of(&ipns_name, &writer.p2p_addr()).await;
    let published = written
        .get("ipns_registry_published_sequence", &[])
        .expect("a writer that published reports its sequence");
    assert_eq!(published, record.sequence() as f64);

    // The replica holds that record for the name, accepted during this run.
    let followed = [("name", name.as_str())];
    assert_eq!(
        after.get("ipns_registry_followed_sequence", &followed),
        Some(record.sequence() as f64)
    );
    let age = after
        .get("ipns_registry_followed_root_age_seconds", &followed)
        .expect("root age");
    assert!(age >= 0.0);
    // Nothing is mirrored ahead of requests here, so there is no mirror run to report.
    assert_eq!(after.get("ipns_registry_mirror_complete", &followed), None);
    // A replica publishes nothing.
    assert_eq!(after.get("ipns_registry_published_sequence", &[]), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirroring_replica_reports_its_progress() {
    let writer = TestNode::start();
    let (_, name) = writer.id();
    let mut replica = TestNode::init("replica");
    replica.serve(&[
        "--follow",
        &name,
        "--mirror",
        "all",
        "--peer",
        &writer.p2p_addr(),
    ]);
    let client = reqwest::Client::new();
    let image = push_image(&client, &writer.url(), "mirrored/app", "v2", 3)
        .await
        .expect("push");
    let rbase = replica.url();
    let followed = [("name", name.as_str())];
    // Layer, config and manifest: the root that holds the whole push, mirrored.
    let blobs = image.blobs.len() as f64 + 1.0;
    let done = wait_for("the mirror run of the whole push to complete", || async {
        let m = scrape(&client, &rbase).await;
        let complete = m.get("ipns_registry_mirror_complete", &followed) == Some(1.0);
        let total = m.get("ipns_registry_mirror_blobs", &followed) == Some(blobs);
        (complete && total).then_some(m)
    })
    .await;
    assert_eq!(
        done.get("ipns_registry_mirror_blobs_verified", &followed),
        Some(blobs)
    );
    // A run walks what earlier runs (of the roots the writer published on the way) have not
    // verified yet: at least the new root's directories.
    assert!(done.count("ipns_registry_mirror_blocks", &followed) >= 1.0);
    assert!(done.count("ipns_registry_mirror_bytes", &followed) > 0.0);
}

/// Adds `user` with `password` to the node's htpasswd file (cheap bcrypt cost).
fn add_user(node: &TestNode, user: &str, password: &str) {
    let mut child = Command::new(common::binary())
        .arg("--data-dir")
        .arg(node.data_dir())
        .args(["user", "add", user, "--password-stdin", "--cost", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    assert!(child.wait().expect("user add").success());
}

/// Writes a config file for `node` holding `text`; returns its path.
fn config_file(node: &TestNode, text: &str) -> String {
    let path = node.data_dir().join("metrics-test.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_read_metrics_follows_the_config() {
    let client = reqwest::Client::new();

    // By default anyone may, also on a node with users (like /healthz).
    let mut node = TestNode::init("writer");
    add_user(&node, "alice", "wonderland");
    node.serve(&[]);
    scrape(&client, &node.url()).await;

    // `anonymous = false`: any user's credentials, and the Basic challenge without them.
    let config = config_file(&node, "[metrics]\nanonymous = false\n");
    node.serve(&["--config", &config]);
    let url = format!("{}/metrics", node.url());
    let anonymous = client.get(&url).send().await.expect("anonymous");
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let wrong = client
        .get(&url)
        .basic_auth("alice", Some("guess"))
        .send()
        .await
        .expect("wrong password");
    assert_eq!(wrong.status(), 401);
    let user = client
        .get(&url)
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .expect("user");
    assert_eq!(user.status(), 200);
    let page = Metrics::parse(user.text().await.expect("body"));
    // The refused scrapes were counted too.
    assert_eq!(page.count(REQUESTS, &request("metrics", "GET", "401")), 2.0);

    // `enabled = false`: no such endpoint; requests are still counted (and cost nothing to
    // serve).
    let config = config_file(&node, "[metrics]\nenabled = false\n");
    node.serve(&["--config", &config]);
    let off = client
        .get(format!("{}/metrics", node.url()))
        .send()
        .await
        .expect("disabled");
    assert_eq!(off.status(), 404);
}

/// Runs `serve` with `--log-format format` and debug logs, makes a request, stops the node,
/// and returns its stderr lines.
fn serve_logs(format: &str) -> Vec<String> {
    let node = TestNode::init("writer");
    let mut child = Command::new(common::binary())
        .arg("--data-dir")
        .arg(node.data_dir())
        .args(["--log-format", format, "serve", "--listen", "127.0.0.1:0"])
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .env("RUST_LOG", "info,ipns_registry=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let collected = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        match stdout.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    break addr.trim().to_owned();
                }
            }
            _ => panic!("node exited before listening"),
        }
    };
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut conn, &mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // SIGTERM: a clean stop, whose log lines come out too.
    // SAFETY: kill(2) on the child's pid, which has not been waited for yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    collected.join().expect("stderr reader")
}

#[test]
fn json_logs_are_one_object_per_line() {
    let lines = serve_logs("json");
    assert!(lines.len() >= 3, "{lines:?}");
    let mut answered = false;
    for line in &lines {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line:?}"));
        assert!(object.is_object(), "{line}");
        assert!(object["timestamp"].is_string(), "{line}");
        assert!(object["level"].is_string(), "{line}");
        assert!(object["target"].is_string(), "{line}");
        // The request's log line carries its span's fields.
        if object["message"] == "answered" {
            answered = true;
            assert_eq!(object["status"], 200, "{line}");
            assert_eq!(object["span"]["path"], "/v2/", "{line}");
        }
    }
    assert!(answered, "no request logged: {lines:?}");
}

#[test]
fn text_logs_have_no_colour_codes_off_a_terminal() {
    let lines = serve_logs("text");
    assert!(lines.iter().any(|l| l.contains("answered")), "{lines:?}");
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "colour code in {line:?}");
        assert!(!line.starts_with('{'), "JSON in text mode: {line:?}");
    }
}
