//! Manifest pushes: descriptor sizes are checked against the content held, and a large
//! manifest is validated without the tree's write lock, so other pushes go on meanwhile — while
//! a blob deleted during the validation is still caught.
//!
//! To see the lock, the registry reads its tree through a gate the test can close on one block
//! (the directory that holds a repository's link to a blob): a validation that reads it waits
//! there, for as long as the test likes, exactly where a slow lookup would.

mod front_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use front_support::{client, oci_manifest, push_image, upload, Front, OCI_INDEX, OCI_MANIFEST};
use ipns_registry::http::ServeOptions;
use ipns_registry::registry::{layout, Digest, RegistryOptions, RepoName};
use ipns_registry::store::BlockStore;
use ipns_registry::tree::{resolve, BlockSource, TreeError};
use tokio::sync::watch;

async fn put_manifest(
    http: &reqwest::Client,
    front: &Front,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: String,
) -> reqwest::Response {
    http.put(front.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Content-Type", media_type)
        .body(body)
        .send()
        .await
        .expect("PUT manifest")
}

async fn assert_manifest_invalid(resp: reqwest::Response, needle: &str) {
    assert_eq!(resp.status(), 400);
    let error: serde_json::Value = resp.json().await.expect("JSON error");
    assert_eq!(error["errors"][0]["code"], "MANIFEST_INVALID");
    let message = error["errors"][0]["message"].as_str().expect("message");
    assert!(message.contains(needle), "{message}");
}

#[tokio::test]
async fn descriptor_sizes_must_match_the_content() {
    let front = Front::start(ServeOptions::default(), RegistryOptions::default()).await;
    let http = client();
    let layer = front_support::pseudo_random(5000, 1);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer_digest = upload(&http, &front, "app", &layer).await;
    let config_digest = upload(&http, &front, "app", config).await;
    let config_ref = (config_digest.as_str(), config.len());

    let negative = oci_manifest(config_ref, &[(&layer_digest, 5000)])
        .replace("\"size\":5000", "\"size\":-5000");
    let resp = put_manifest(&http, &front, "app", "neg", OCI_MANIFEST, negative).await;
    assert_manifest_invalid(resp, "negative").await;
    let wrong = oci_manifest(config_ref, &[(&layer_digest, 4999)]);
    let resp = put_manifest(&http, &front, "app", "wrong", OCI_MANIFEST, wrong).await;
    assert_manifest_invalid(resp, "declares 4999 bytes").await;
    let twice = oci_manifest(config_ref, &[(&layer_digest, 5000), (&layer_digest, 5001)]);
    let resp = put_manifest(&http, &front, "app", "twice", OCI_MANIFEST, twice).await;
    assert_manifest_invalid(resp, "sizes 5000 and 5001").await;

    let good = oci_manifest(config_ref, &[(&layer_digest, 5000), (&layer_digest, 5000)]);
    let resp = put_manifest(&http, &front, "app", "v1", OCI_MANIFEST, good.clone()).await;
    assert_eq!(resp.status(), 201);
    let manifest_digest = front_support::sha256(good.as_bytes());
    // An index entry's size is the manifest's length.
    let index = |size: usize| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{manifest_digest}","size":{size}}}]}}"#
        )
    };
    let resp = put_manifest(&http, &front, "app", "i", OCI_INDEX, index(good.len() + 1)).await;
    assert_manifest_invalid(resp, "declares").await;
    let resp = put_manifest(&http, &front, "app", "i", OCI_INDEX, index(good.len())).await;
    assert_eq!(resp.status(), 201);
    // Nothing of the refused manifests was tagged.
    let resp = http
        .get(front.url("/v2/app/tags/list"))
        .send()
        .await
        .expect("tags");
    let tags: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(tags["tags"], serde_json::json!(["i", "v1"]));
}

/// Blocks reads of one CID while closed.
struct Gate {
    blocks: Arc<BlockStore>,
    closed_on: Mutex<Option<Cid>>,
    open: watch::Sender<bool>,
    waiting: watch::Sender<usize>,
}

impl Gate {
    fn new(blocks: Arc<BlockStore>) -> Self {
        Gate {
            blocks,
            closed_on: Mutex::new(None),
            open: watch::Sender::new(true),
            waiting: watch::Sender::new(0),
        }
    }

    fn close_on(&self, cid: Cid) {
        *self.closed_on.lock().expect("gate") = Some(cid);
        self.open.send_replace(false);
    }

    fn open(&self) {
        self.open.send_replace(true);
    }

    /// Waits until `n` reads are held at the gate (within 30 s).
    async fn until_waiting(&self, n: usize) {
        let mut waiting = self.waiting.subscribe();
        tokio::time::timeout(Duration::from_secs(30), waiting.wait_for(|w| *w >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} reads never reached the gate"))
            .expect("gate");
    }
}

#[async_trait]
impl BlockSource for Gate {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        let gated = *self.closed_on.lock().expect("gate") == Some(*cid);
        if gated {
            let mut open = self.open.subscribe();
            self.waiting.send_modify(|w| *w += 1);
            let _ = open.wait_for(|o| *o).await;
        }
        self.blocks.block(cid).await
    }
}

struct Gated {
    front: Front,
    gate: Arc<Gate>,
}

async fn gated_front() -> Gated {
    let gate_slot: Arc<Mutex<Option<Arc<Gate>>>> = Arc::default();
    let slot = gate_slot.clone();
    let front = Front::start_wrapped(
        ServeOptions::default(),
        RegistryOptions::default(),
        Some(Box::new(move |blocks| {
            let gate = Arc::new(Gate::new(blocks));
            *slot.lock().expect("slot") = Some(gate.clone());
            gate
        })),
    )
    .await;
    let gate = gate_slot.lock().expect("slot").clone().expect("gate made");
    Gated { front, gate }
}

/// The directory holding `repo`'s link to `digest`: every lookup of that link reads it.
async fn layer_dir(front: &Front, gate: &Gate, repo: &str, digest: &str) -> Cid {
    let repo = RepoName::parse(repo).expect("repo");
    let digest: Digest = digest.parse().expect("digest");
    let mut path = layout::layer_link(&repo, &digest);
    path.pop();
    resolve(gate.blocks.as_ref(), &front.registry().root(), &path)
        .await
        .expect("resolve")
        .expect("the link exists")
        .cid
}

/// A manifest listing one blob 26,000 times (about 4 MB).
async fn big_manifest(http: &reqwest::Client, front: &Front) -> (String, String) {
    let layer = front_support::pseudo_random(1000, 7);
    let config = br#"{"architecture":"amd64","os":"linux","big":true}"#;
    let layer_digest = upload(http, front, "big/app", &layer).await;
    let config_digest = upload(http, front, "big/app", config).await;
    let layers = vec![(layer_digest.as_str(), layer.len()); 26_000];
    let manifest = oci_manifest((&config_digest, config.len()), &layers);
    assert!(manifest.len() < 4 << 20);
    (manifest, layer_digest)
}

#[tokio::test]
async fn a_push_goes_on_while_a_large_manifest_is_validated() {
    let Gated { front, gate } = gated_front().await;
    let http = client();
    let (manifest, layer_digest) = big_manifest(&http, &front).await;
    gate.close_on(layer_dir(&front, &gate, "big/app", &layer_digest).await);
    let big = tokio::spawn({
        let url = front.url("/v2/big/app/manifests/v1");
        let http = http.clone();
        async move {
            http.put(url)
                .header("Content-Type", OCI_MANIFEST)
                .body(manifest)
                .send()
                .await
                .expect("PUT")
                .status()
        }
    });
    // The big manifest's validation is under way (held at the gate)...
    gate.until_waiting(1).await;
    // ...and a whole image push, blobs and manifest, completes meanwhile.
    let small = tokio::time::timeout(
        Duration::from_secs(60),
        push_image(&http, &front, "small/app", "v1", 3),
    )
    .await
    .expect("the small push waited for the big manifest");
    assert_eq!(small, 201);
    assert!(!big.is_finished());
    gate.open();
    assert_eq!(big.await.expect("task"), 201);
    for (repo, tag) in [("big/app", "v1"), ("small/app", "v1")] {
        let resp = http
            .get(front.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 200, "{repo}:{tag}");
    }
}

#[tokio::test]
async fn a_blob_deleted_during_validation_is_caught() {
    let Gated { front, gate } = gated_front().await;
    let http = client();
    let (manifest, layer_digest) = big_manifest(&http, &front).await;
    gate.close_on(layer_dir(&front, &gate, "big/app", &layer_digest).await);
    let put = tokio::spawn({
        let url = front.url("/v2/big/app/manifests/v1");
        let http = http.clone();
        async move {
            http.put(url)
                .header("Content-Type", OCI_MANIFEST)
                .body(manifest)
                .send()
                .await
                .expect("PUT")
        }
    });
    gate.until_waiting(1).await;
    // The delete takes the write lock, then reads the same directory: both wait at the gate.
    let delete = tokio::spawn({
        let url = front.url(&format!("/v2/big/app/blobs/{layer_digest}"));
        let http = http.clone();
        async move { http.delete(url).send().await.expect("DELETE").status() }
    });
    gate.until_waiting(2).await;
    gate.open();
    assert_eq!(delete.await.expect("task"), 202);
    let resp = put.await.expect("task");
    assert_eq!(resp.status(), 400);
    let error: serde_json::Value = resp.json().await.expect("JSON error");
    assert_eq!(error["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(error["errors"][0]["detail"]["digest"], layer_digest);
    let resp = http
        .get(front.url("/v2/big/app/manifests/v1"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 404);
}
