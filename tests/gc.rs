//! Garbage collection with real processes on loopback: `ipns-registry gc` on a running node
//! (through its admin socket) and on a stopped one. A deleted image's unique blocks go, other
//! images and followed trees stay; disk use returns to where it started after images come and
//! go; a collection running during a burst of concurrent pushes loses nothing acknowledged.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{pseudo_random, sha256, wait_for, TestNode};
use ipns_registry::admin::GcRequest;
use ipns_registry::registry::GcReport;
use ipns_registry::tree::{cid_of, CHUNK_SIZE, RAW};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image: its blobs (config first) and manifest, as pushed.
#[derive(Debug, Clone)]
struct Image {
    repo: String,
    tag: String,
    blobs: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

impl Image {
    /// An image whose config is made from `seed` and whose layers are `layers`.
    fn new(repo: &str, tag: &str, seed: u64, layers: Vec<Vec<u8>>) -> Self {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
        let mut blobs = vec![config.into_bytes()];
        blobs.extend(layers);
        let descriptor = |media: &str, blob: &[u8]| {
            format!(
                r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
                sha256(blob),
                blob.len()
            )
        };
        let layers: Vec<String> = blobs[1..]
            .iter()
            .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l))
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
            descriptor("application/vnd.oci.image.config.v1+json", &blobs[0]),
            layers.join(",")
        );
        Image {
            repo: repo.into(),
            tag: tag.into(),
            blobs,
            manifest: manifest.into_bytes(),
        }
    }

    fn manifest_digest(&self) -> String {
        sha256(&self.manifest)
    }
}

/// Uploads one blob: in one request, or (`chunked`) through a session with one PATCH and a
/// closing PUT. `true` once the registry acknowledged it (201).
async fn upload(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    blob: &[u8],
    chunked: bool,
) -> bool {
    let digest = sha256(blob);
    if !chunked {
        let resp = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
            .body(blob.to_vec())
            .send()
            .await;
        return resp.is_ok_and(|r| r.status() == 201);
    }
    let Ok(resp) = client
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
    else {
        return false;
    };
    let Some(location) = resp
        .headers()
        .get("Location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned)
    else {
        return false;
    };
    let url = |location: &str| {
        if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location.to_owned()
        }
    };
    let Ok(resp) = client
        .patch(url(&location))
        .header("Content-Type", "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .await
    else {
        return false;
    };
    if resp.status() != 202 {
        return false;
    }
    let Some(location) = resp
        .headers()
        .get("Location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned)
    else {
        return false;
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    client
        .put(format!("{}{separator}digest={digest}", url(&location)))
        .send()
        .await
        .is_ok_and(|r| r.status() == 201)
}

/// Pushes `image` (blobs, then the manifest under its tag); `true` once the manifest was
/// acknowledged.
async fn push(client: &reqwest::Client, base: &str, image: &Image, chunked: bool) -> bool {
    for blob in &image.blobs {
        if !upload(client, base, &image.repo, blob, chunked).await {
            return false;
        }
    }
    client
        .put(format!("{base}/v2/{}/manifests/{}", image.repo, image.tag))
        .header("Content-Type", OCI_MANIFEST)
        .body(image.manifest.clone())
        .send()
        .await
        .is_ok_and(|r| r.status() == 201)
}

/// Deletes the image's manifest by digest (and with it the tags pointing at it).
async fn delete_manifest(client: &reqwest::Client, base: &str, image: &Image) {
    let resp = client
        .delete(format!(
            "{base}/v2/{}/manifests/{}",
            image.repo,
            image.manifest_digest()
        ))
        .send()
        .await
        .expect("DELETE manifest");
    assert_eq!(resp.status(), 202, "delete {}", image.repo);
}

/// Pulls `image` by tag and checks the manifest and every blob byte for byte.
async fn assert_pulls(client: &reqwest::Client, base: &str, image: &Image) {
    let resp = client
        .get(format!("{base}/v2/{}/manifests/{}", image.repo, image.tag))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(resp.status(), 200, "{}:{}", image.repo, image.tag);
    assert_eq!(
        resp.bytes().await.expect("manifest").as_ref(),
        image.manifest
    );
    for blob in &image.blobs {
        let resp = client
            .get(format!("{base}/v2/{}/blobs/{}", image.repo, sha256(blob)))
            .send()
            .await
            .expect("GET blob");
        assert_eq!(resp.status(), 200, "blob of {}:{}", image.repo, image.tag);
        let got = resp.bytes().await.expect("blob");
        assert!(
            got.as_ref() == blob.as_slice(),
            "a blob of {}:{} differs",
            image.repo,
            image.tag
        );
    }
}

/// Where the raw leaf blocks of a blob's bytes are stored (each chunk of the import profile).
fn leaf_paths(data_dir: &Path, blob: &[u8]) -> Vec<std::path::PathBuf> {
    blob.chunks(CHUNK_SIZE)
        .map(|chunk| {
            let cid = cid_of(RAW, chunk).to_string();
            data_dir
                .join("blocks")
                .join(&cid[cid.len() - 2..])
                .join(cid)
        })
        .collect()
}

/// Bytes of all files under `dir` (as `du -sb` counts them).
fn disk_use(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        if meta.is_dir() {
            total += disk_use(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_frees_a_deleted_images_blocks_and_keeps_the_rest() {
    let client = reqwest::Client::new();
    // An upstream writer whose tree the node follows and mirrors.
    let mut upstream = TestNode::init("writer");
    upstream.serve(&[]);
    let (_, upstream_name) = upstream.id();
    let followed = Image::new(
        "up/base",
        "v1",
        1,
        vec![pseudo_random(CHUNK_SIZE + 500, 100)],
    );
    assert!(push(&client, &upstream.url(), &followed, false).await);
    let upstream_root = upstream.status().await.own.expect("own").root;

    let mut node = TestNode::init("writer");
    node.serve(&[
        "--follow",
        &upstream_name,
        "--mirror",
        "all",
        "--peer",
        &upstream.p2p_addr(),
    ]);
    wait_for("the node to mirror the followed tree", || {
        let (node, root) = (&node, &upstream_root);
        async move {
            let report = node.status().await;
            let mirror = report.followed[0].mirror_progress.as_ref()?;
            (&mirror.root == root && mirror.state == "complete").then_some(())
        }
    })
    .await;

    // Two images in one repository sharing a base layer; A has a layer of its own (three
    // chunks) and so has B.
    let base_layer = pseudo_random(CHUNK_SIZE + 1000, 1);
    let a = Image::new(
        "app/svc",
        "a",
        10,
        vec![base_layer.clone(), pseudo_random(2 * CHUNK_SIZE + 77, 2)],
    );
    let b = Image::new(
        "app/svc",
        "b",
        11,
        vec![base_layer.clone(), pseudo_random(CHUNK_SIZE / 2, 3)],
    );
    assert!(push(&client, &node.url(), &a, false).await);
    assert!(push(&client, &node.url(), &b, true).await);
    delete_manifest(&client, &node.url(), &a).await;

    let a_unique = leaf_paths(node.data_dir(), &a.blobs[2]);
    assert!(a_unique.iter().all(|p| p.is_file()), "A's layer is stored");

    // A dry run says what a collection would do and changes nothing.
    let dry = node.gc(&["--dry-run", "--grace", "0"]);
    assert!(dry.dry_run);
    assert!(
        a_unique.iter().all(|p| p.is_file()),
        "a dry run deletes nothing"
    );

    let report: GcReport = node.gc(&["--grace", "0"]);
    println!("gc: {report:?}");
    // A's config and unique layer were linked but referenced by no manifest any more.
    assert_eq!(report.tree.layer_links_removed, 2, "{report:?}");
    // Their data and A's manifest are needed by no repository.
    assert_eq!(report.tree.blobs_removed, 3, "{report:?}");
    assert_eq!(
        (report.tree.layer_links_removed, report.tree.blobs_removed),
        (dry.tree.layer_links_removed, dry.tree.blobs_removed),
        "the dry run foresaw the tree changes"
    );
    assert_eq!(report.sweep.blocks_freed, dry.sweep.blocks_freed);
    assert_eq!(report.sweep.bytes_freed, dry.sweep.bytes_freed);
    assert!(
        report.sweep.bytes_freed >= a.blobs[2].len() as u64,
        "{report:?}"
    );
    assert_eq!(report.mark.roots, 2, "the own root and the followed root");
    for path in &a_unique {
        assert!(!path.exists(), "{} survived", path.display());
    }
    for path in leaf_paths(node.data_dir(), &base_layer) {
        assert!(path.is_file(), "B's base layer went: {}", path.display());
    }
    // A is gone from the registry, B pulls as pushed.
    let resp = client
        .get(format!(
            "{}/v2/app/svc/blobs/{}",
            node.url(),
            sha256(&a.blobs[2])
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 404);
    assert_pulls(&client, &node.url(), &b).await;
    let status = node.status().await;
    assert_eq!(
        status.gc.last.as_ref(),
        Some(&report),
        "status shows the last gc"
    );

    // The followed tree is intact: with its writer gone, the node serves it from its own disk.
    upstream.kill();
    assert_pulls(&client, &node.url(), &followed).await;
    let again = node.gc(&["--grace", "0"]);
    assert_eq!(again.sweep.blocks_freed, 0, "{again:?}");
    let (clean, text) = node.check();
    assert!(clean, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_use_returns_after_pushing_and_deleting_twenty_times() {
    let client = reqwest::Client::new();
    let mut node = TestNode::init("writer");
    node.serve(&[]);
    let kept = Image::new("keep/app", "v1", 1, vec![pseudo_random(2 * CHUNK_SIZE, 1)]);
    assert!(push(&client, &node.url(), &kept, false).await);
    let start = disk_use(node.data_dir());
    let churn = Image::new(
        "churn/app",
        "v1",
        2,
        vec![pseudo_random(CHUNK_SIZE + 4096, 2)],
    );
    for i in 0..20 {
        assert!(
            push(&client, &node.url(), &churn, i % 2 == 1).await,
            "push {i}"
        );
        delete_manifest(&client, &node.url(), &churn).await;
    }
    let before_gc = disk_use(node.data_dir());
    let report = node.gc(&["--grace", "0"]);
    let after_gc = disk_use(node.data_dir());
    println!(
        "disk use: {start} bytes at the start, {before_gc} after pushing and deleting an image \
         20 times, {after_gc} after gc (freed {} blocks, {} bytes)",
        report.sweep.blocks_freed, report.sweep.bytes_freed
    );
    assert!(
        after_gc <= start + start / 10,
        "{after_gc} bytes after gc, {start} at the start"
    );
    assert_pulls(&client, &node.url(), &kept).await;
    let (clean, text) = node.check();
    assert!(clean, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_on_a_stopped_node() {
    let client = reqwest::Client::new();
    let mut node = TestNode::init("writer");
    node.serve(&[]);
    let kept = Image::new("keep/app", "v1", 1, vec![pseudo_random(5000, 1)]);
    let gone = Image::new("gone/app", "v1", 2, vec![pseudo_random(CHUNK_SIZE, 2)]);
    assert!(push(&client, &node.url(), &kept, false).await);
    assert!(push(&client, &node.url(), &gone, false).await);
    delete_manifest(&client, &node.url(), &gone).await;
    // Killed: the socket file stays behind, with nobody listening on it.
    node.kill();
    assert!(node.data_dir().join("admin.sock").exists());
    let report = node.gc(&["--grace", "0"]);
    assert_eq!(report.tree.blobs_removed, 3, "{report:?}");
    assert!(report.sweep.bytes_freed >= CHUNK_SIZE as u64, "{report:?}");
    for path in leaf_paths(node.data_dir(), &gone.blobs[1]) {
        assert!(!path.exists());
    }
    // Nothing is left to collect, and the node starts and serves what it kept.
    assert_eq!(node.gc(&[]).sweep.blocks_freed, 0);
    node.restart();
    assert_pulls(&client, &node.url(), &kept).await;
    let (clean, text) = node.check();
    assert!(clean, "{text}");
}

/// The layer of pusher `p`'s image `i` in the burst: a bit over one chunk.
fn burst_layer(p: u64, i: u64) -> Vec<u8> {
    pseudo_random(CHUNK_SIZE + 1000 * (i as usize + 1), 1000 + p * 100 + i)
}

/// Pushes an image with each burst layer to `burst/churn` and deletes it, blobs included.
async fn churn(client: &reqwest::Client, base: &str, pushers: u64, images: u64) {
    for p in 0..pushers {
        for i in 0..images {
            let image = Image::new(
                "burst/churn",
                "x",
                9000 + p * 100 + i,
                vec![burst_layer(p, i)],
            );
            if !push(client, base, &image, false).await {
                continue;
            }
            delete_manifest(client, base, &image).await;
            for blob in &image.blobs {
                let _ = client
                    .delete(format!("{base}/v2/burst/churn/blobs/{}", sha256(blob)))
                    .send()
                    .await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_during_concurrent_pushes_loses_nothing_acknowledged() {
    const PUSHERS: u64 = 3;
    const IMAGES: u64 = 6;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let mut node = TestNode::init("writer");
    node.serve(&[]);
    let base = node.url();
    // The layers the pushers will push: a churner pushes and deletes each of them (blobs
    // too) first and again meanwhile, so their blocks lie on disk as garbage while the pushers
    // upload the same bytes, which the store then takes from what is on disk.
    let images: Vec<Vec<Image>> = (0..PUSHERS)
        .map(|p| {
            (0..IMAGES)
                .map(|i| {
                    let (repo, tag) = (format!("burst/p{p}"), format!("v{i}"));
                    Image::new(&repo, &tag, p * 100 + i, vec![burst_layer(p, i)])
                })
                .collect()
        })
        .collect();
    churn(&client, &base, PUSHERS, IMAGES).await;

    let done = Arc::new(AtomicBool::new(false));
    let collector = {
        let (admin, done) = (node.admin(), done.clone());
        tokio::spawn(async move {
            let mut reports = Vec::new();
            while !done.load(Ordering::Acquire) {
                let report = admin
                    .call(&GcRequest::default())
                    .await
                    .expect("gc during pushes");
                reports.push(report);
            }
            reports
        })
    };
    let churner = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move { churn(&client, &base, PUSHERS, IMAGES).await })
    };
    let pushers: Vec<_> = images
        .iter()
        .cloned()
        .enumerate()
        .map(|(p, images)| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for (i, image) in images.into_iter().enumerate() {
                    if push(&client, &base, &image, (p + i) % 2 == 0).await {
                        acknowledged.push(image);
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for pusher in pushers {
        acknowledged.extend(pusher.await.expect("pusher"));
    }
    churner.await.expect("churner");
    done.store(true, Ordering::Release);
    let reports = collector.await.expect("collector");
    let freed: u64 = reports.iter().map(|r| r.sweep.blocks_freed).sum();
    let in_flight: u64 = reports.iter().map(|r| r.sweep.blocks_in_flight).sum();
    println!(
        "{} collections during {} acknowledged pushes: {freed} blocks freed, {in_flight} kept \
         for writes in flight",
        reports.len(),
        acknowledged.len()
    );
    assert_eq!(
        acknowledged.len() as u64,
        PUSHERS * IMAGES,
        "every push succeeds"
    );
    assert!(!reports.is_empty());

    // Everything acknowledged is there, before and after one more collection.
    for image in &acknowledged {
        assert_pulls(&client, &base, image).await;
    }
    let last = node.gc(&[]);
    assert!(
        freed + last.sweep.blocks_freed > 0,
        "the churn left garbage to collect"
    );
    for image in &acknowledged {
        assert_pulls(&client, &base, image).await;
    }
    let (clean, text) = node.check();
    assert!(clean, "{text}");
}
