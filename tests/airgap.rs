//! Air-gapped moves with real processes: `ipns-registry export` from a writer (running, and
//! stopped), `ipns-registry import` into a fresh node with no peers and no mDNS (stopped, and
//! running), then pulls over HTTP that must give the writer's bytes; a multi-arch index; and
//! corrupted CARs that must be refused with a clear error and import nothing.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use common::{binary, pseudo_random, push_image, sha256, PushedImage, TestNode};
use ipns_registry::car::{CarReader, CarWriter};
use ipns_registry::registry::{layout, Digest, ExportReport, ImportReport};
use ipns_registry::tree::{apply_changes, resolve, BlockSource, Change, TreeError};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// Runs `ipns-registry` on `data_dir`; returns success, stdout and stderr.
fn run(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ipns-registry");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn export(node: &TestNode, car: &Path, images: &[&str]) -> ExportReport {
    let mut args = vec!["export", "--json", "-o", car.to_str().expect("utf-8 path")];
    args.extend_from_slice(images);
    let (ok, out, err) = run(node.data_dir(), &args);
    assert!(ok, "export failed: {err}");
    serde_json::from_str(&out).expect("export report JSON")
}

fn import(data_dir: &Path, car: &Path) -> Result<ImportReport, String> {
    let (ok, out, err) = run(
        data_dir,
        &["import", "--json", car.to_str().expect("utf-8 path")],
    );
    if ok {
        Ok(serde_json::from_str(&out).expect("import report JSON"))
    } else {
        Err(err)
    }
}

/// Block files in a data directory's store (staging areas and temporary files left out).
fn stored_blocks(data_dir: &Path) -> usize {
    let mut count = 0;
    let Ok(shards) = std::fs::read_dir(data_dir.join("blocks")) else {
        return 0;
    };
    for shard in shards.flatten() {
        let name = shard.file_name().to_string_lossy().into_owned();
        if name.len() == 2 && shard.path().is_dir() {
            count += std::fs::read_dir(shard.path()).expect("shard").count();
        }
    }
    count
}

/// GET of `path` on `base`: status, `Docker-Content-Digest` and body.
async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, Option<String>, Bytes) {
    let resp = client
        .get(format!("{base}{path}"))
        .header("Accept", ACCEPT)
        .send()
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    let digest = resp
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, digest, resp.bytes().await.expect("body"))
}

/// Asserts that `to` serves `image` (manifest by tag and digest, every blob) with the bytes
/// `from` serves.
async fn assert_same_image(client: &reqwest::Client, from: &str, to: &str, image: &PushedImage) {
    let repo = &image.repo;
    for reference in [&image.tag, &image.manifest] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let want = get(client, from, &path).await;
        let got = get(client, to, &path).await;
        assert_eq!(got.0, 200, "{path} on the importing node");
        assert_eq!(got, want, "{path}");
        assert_eq!(got.1.as_deref(), Some(image.manifest.as_str()));
    }
    for blob in &image.blobs {
        let path = format!("/v2/{repo}/blobs/{blob}");
        let got = get(client, to, &path).await;
        assert_eq!(got.0, 200, "{path}");
        assert_eq!(&sha256(&got.2), blob, "{path} byte for byte");
        assert_eq!(got, get(client, from, &path).await);
    }
}

/// A writer with two tags in `app` and one image in `team/tool`.
async fn writer_with_images(client: &reqwest::Client) -> (TestNode, Vec<PushedImage>) {
    let writer = TestNode::start();
    let mut images = Vec::new();
    for (repo, tag, seed) in [("app", "v1", 1), ("app", "v2", 2), ("team/tool", "1.0", 3)] {
        images.push(
            push_image(client, &writer.url(), repo, tag, seed)
                .await
                .expect("push"),
        );
    }
    (writer, images)
}

#[tokio::test]
async fn export_from_a_running_writer_then_import_into_a_fresh_stopped_node() {
    let client = reqwest::Client::new();
    let (writer, images) = writer_with_images(&client).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let car = tmp.path().join("images.car");

    let report = export(&writer, &car, &["app:v1", "team/tool"]);
    assert_eq!(report.images.len(), 2, "{report:?}");
    assert_eq!(report.images[0].digest, images[0].manifest);
    assert_eq!(report.images[1].tag.as_deref(), Some("1.0"));
    let car_len = std::fs::metadata(&car).expect("car").len();
    assert_eq!(report.bytes, car_len, "the report gives the CAR's length");

    // The CAR: one root, every block once, each matching its CID.
    let mut reader = CarReader::new(std::fs::File::open(&car).expect("open")).expect("header");
    assert_eq!(reader.roots().len(), 1);
    assert_eq!(reader.roots()[0].to_string(), report.root);
    let mut seen = std::collections::HashSet::new();
    while let Some((cid, _)) = reader.next_block().expect("block") {
        assert!(seen.insert(cid), "{cid} written twice");
    }
    assert_eq!(seen.len() as u64, report.blocks);

    // A fresh data directory, not even initialised: import creates it (as a writer).
    let mut fresh = TestNode::init("writer");
    std::fs::remove_dir_all(fresh.data_dir()).expect("clear");
    let imported = import(fresh.data_dir(), &car).expect("import");
    assert_eq!(imported.root, report.root);
    assert_eq!(imported.repositories, 2);
    assert_eq!(imported.manifests, 2);
    assert_eq!(imported.blobs, 6, "two configs, two layers, two manifests");
    assert_eq!(imported.blocks, report.blocks);
    assert_eq!(imported.bytes, car_len);
    let mut tags: Vec<String> = imported
        .tags
        .iter()
        .map(|t| format!("{}:{}", t.repository, t.tag.clone().unwrap_or_default()))
        .collect();
    tags.sort();
    assert_eq!(tags, ["app:v1", "team/tool:1.0"]);

    // Served by a node with no peers and no mDNS, as the writer served it.
    fresh.serve(&[]);
    assert_same_image(&client, &writer.url(), &fresh.url(), &images[0]).await;
    assert_same_image(&client, &writer.url(), &fresh.url(), &images[2]).await;
    let (status, _, _) = get(&client, &fresh.url(), "/v2/app/manifests/v2").await;
    assert_eq!(status, 404, "app:v2 was not exported");
    let (ok, out) = fresh.check();
    assert!(ok, "check after import: {out}");
}

#[tokio::test]
async fn export_from_a_stopped_writer_then_import_through_a_running_node() {
    let client = reqwest::Client::new();
    let (mut writer, images) = writer_with_images(&client).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let car = tmp.path().join("app.car");
    // A node killed with SIGKILL leaves its socket behind: export falls back to the stores.
    let writer_url = writer.url();
    let served: Vec<_> = {
        let mut all = Vec::new();
        for image in &images[..2] {
            let path = format!("/v2/app/manifests/{}", image.tag);
            all.push(get(&client, &writer_url, &path).await);
        }
        all
    };
    writer.kill();
    let report = export(&writer, &car, &["app"]);
    assert_eq!(report.images.len(), 2, "every tag of app: {report:?}");

    let target = TestNode::start();
    let before = stored_blocks(target.data_dir());
    let imported = import(target.data_dir(), &car).expect("import through the admin API");
    assert_eq!(imported.manifests, 2);
    assert!(stored_blocks(target.data_dir()) > before);
    for (image, want) in images[..2].iter().zip(served) {
        let path = format!("/v2/app/manifests/{}", image.tag);
        assert_eq!(get(&client, &target.url(), &path).await, want);
        for blob in &image.blobs {
            let (status, _, body) =
                get(&client, &target.url(), &format!("/v2/app/blobs/{blob}")).await;
            assert_eq!(status, 200);
            assert_eq!(&sha256(&body), blob);
        }
    }
    // Importing the same CAR again changes nothing a client sees, and adds no blocks.
    let again = import(target.data_dir(), &car).expect("import again");
    assert_eq!(again.blocks_new, 0);
    assert_eq!(again.new_root, imported.new_root, "the same tree");
}

#[tokio::test]
async fn a_multi_arch_index_moves_with_its_children() {
    let client = reqwest::Client::new();
    let writer = TestNode::start();
    let base = writer.url();
    let mut children = Vec::new();
    for (arch, seed) in [("amd64", 11), ("arm64", 12)] {
        // A 3 MiB layer: several chunks, so files with more than one block move too.
        let layer = pseudo_random(3 * 1024 * 1024 + seed as usize, seed);
        let config = format!(r#"{{"architecture":"{arch}","os":"linux"}}"#).into_bytes();
        for body in [&layer, &config] {
            let resp = client
                .post(format!(
                    "{base}/v2/multi/blobs/uploads/?digest={}",
                    sha256(body)
                ))
                .body(body.clone())
                .send()
                .await
                .expect("upload");
            assert_eq!(resp.status(), 201);
        }
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
            sha256(&config),
            config.len(),
            sha256(&layer),
            layer.len()
        );
        let digest = sha256(manifest.as_bytes());
        let resp = client
            .put(format!("{base}/v2/multi/manifests/{digest}"))
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .expect("put child");
        assert_eq!(resp.status(), 201);
        children.push((arch, digest, manifest.len(), sha256(&layer)));
    }
    let entries: Vec<String> = children
        .iter()
        .map(|(arch, digest, size, _)| {
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{size},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#
            )
        })
        .collect();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        entries.join(",")
    );
    let resp = client
        .put(format!("{base}/v2/multi/manifests/latest"))
        .header("Content-Type", OCI_INDEX)
        .body(index.clone())
        .send()
        .await
        .expect("put index");
    assert_eq!(resp.status(), 201);

    let tmp = tempfile::tempdir().expect("tmp");
    let car = tmp.path().join("multi.car");
    let report = export(&writer, &car, &["multi:latest"]);
    assert_eq!(report.images[0].digest, sha256(index.as_bytes()));

    let target = TestNode::start();
    let imported = import(target.data_dir(), &car).expect("import");
    assert_eq!(imported.manifests, 3, "the index and both children");
    let to = target.url();
    let (status, digest, body) = get(&client, &to, "/v2/multi/manifests/latest").await;
    assert_eq!(status, 200);
    assert_eq!(body, index.as_bytes());
    assert_eq!(digest, Some(sha256(index.as_bytes())));
    for (_, digest, _, layer) in &children {
        let got = get(&client, &to, &format!("/v2/multi/manifests/{digest}")).await;
        assert_eq!(
            got,
            get(&client, &base, &format!("/v2/multi/manifests/{digest}")).await
        );
        let (status, _, body) = get(&client, &to, &format!("/v2/multi/blobs/{layer}")).await;
        assert_eq!(status, 200);
        assert_eq!(&sha256(&body), layer);
    }
}

/// The blocks of a CAR, in order, with its root.
fn read_car(path: &Path) -> (Cid, Vec<(Cid, Vec<u8>)>) {
    let mut reader = CarReader::new(std::fs::File::open(path).expect("open")).expect("header");
    let root = reader.roots()[0];
    let mut blocks = Vec::new();
    while let Some(block) = reader.next_block().expect("block") {
        blocks.push(block);
    }
    (root, blocks)
}

fn write_car(path: &Path, root: Cid, blocks: &[(Cid, Vec<u8>)]) {
    let mut writer =
        CarWriter::new(std::fs::File::create(path).expect("create"), &[root]).expect("header");
    for (cid, data) in blocks {
        writer.write_block(cid, data).expect("block");
    }
    writer.finish().expect("finish");
}

/// Blocks held in memory, for building a forged tree.
struct MemoryBlocks(HashMap<Cid, Bytes>);

#[async_trait]
impl BlockSource for MemoryBlocks {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        self.0
            .get(cid)
            .cloned()
            .ok_or(TreeError::BlockMissing(*cid))
    }
}

#[tokio::test]
async fn corrupted_cars_are_refused_and_import_nothing() {
    let client = reqwest::Client::new();
    let (writer, images) = writer_with_images(&client).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let good = tmp.path().join("good.car");
    export(&writer, &good, &["app:v1"]);
    let bytes = std::fs::read(&good).expect("read");
    let (root, blocks) = read_car(&good);

    let mut cases: Vec<(&str, PathBuf, &str)> = Vec::new();
    let mut add = |name: &'static str, data: Vec<u8>, expect: &'static str| {
        let path = tmp.path().join(format!("{name}.car"));
        std::fs::write(&path, data).expect("write");
        cases.push((name, path, expect));
    };
    let mut flipped = bytes.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x01;
    add("flipped", flipped, "does not match its CID");
    add(
        "truncated",
        bytes[..bytes.len() - 100].to_vec(),
        "truncated",
    );
    let mut header = bytes.clone();
    header[3] ^= 0xff;
    add("header", header, "CAR header");
    add("empty", Vec::new(), "truncated at byte 0");

    // The root's block left out.
    let without_root = tmp.path().join("rootless.car");
    let rest: Vec<_> = blocks.iter().filter(|(c, _)| *c != root).cloned().collect();
    write_car(&without_root, root, &rest);
    cases.push((
        "root missing",
        without_root,
        "neither in the CAR nor on this node",
    ));

    // Every block matches its CID, but the layer's data is the config's bytes.
    let memory = MemoryBlocks(
        blocks
            .iter()
            .map(|(c, d)| (*c, Bytes::from(d.clone())))
            .collect(),
    );
    let layer: Digest = images[0].blobs[1].parse().expect("digest");
    let config: Digest = images[0].blobs[0].parse().expect("digest");
    let config_data = resolve(&memory, &root, &layout::blob_data(&config))
        .await
        .expect("walk")
        .expect("config data");
    let (forged_root, new_blocks) = apply_changes(
        &memory,
        &root,
        vec![Change::Put {
            path: layout::blob_data(&layer),
            link: config_data,
        }],
    )
    .await
    .expect("forge");
    let mut forged_blocks = blocks.clone();
    forged_blocks.extend(new_blocks.into_iter().map(|(c, d)| (c, d.to_vec())));
    let forged = tmp.path().join("forged.car");
    write_car(&forged, forged_root.cid, &forged_blocks);
    cases.push(("blob digest", forged, "hashes to"));

    // Into a running node (through the admin API) and into a stopped one.
    let running = TestNode::start();
    let mut stopped = TestNode::start();
    stopped.kill();
    for node in [&running, &stopped] {
        let blocks_before = stored_blocks(node.data_dir());
        for (name, path, expect) in &cases {
            let err = import(node.data_dir(), path).expect_err(name);
            assert!(err.contains(expect), "{name}: {err}");
            assert!(
                err.contains("refused") || err.contains("CAR"),
                "{name}: says the CAR is at fault: {err}"
            );
            assert_eq!(
                stored_blocks(node.data_dir()),
                blocks_before,
                "{name}: blocks left"
            );
        }
    }
    let (status, _, body) = get(&client, &running.url(), "/v2/_catalog").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).expect("json")["repositories"],
        serde_json::json!([])
    );
    // The good CAR still imports afterwards.
    import(running.data_dir(), &good).expect("the good CAR");
}

#[tokio::test]
async fn unknown_images_and_replicas_are_refused() {
    let client = reqwest::Client::new();
    let (writer, _) = writer_with_images(&client).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let car = tmp.path().join("x.car");
    let car_arg = car.to_str().expect("utf-8");
    for (image, expect) in [
        ("app:v9", "app:v9"),
        ("nope", "nope"),
        ("Bad:tag", "not a repository name"),
    ] {
        let (ok, _, err) = run(writer.data_dir(), &["export", "-o", car_arg, image]);
        assert!(!ok, "{image}");
        assert!(err.contains(expect), "{image}: {err}");
        assert!(!car.exists(), "{image}: no CAR left behind");
    }
    export(&writer, &car, &["app:v1"]);
    let replica = TestNode::init("replica");
    let (ok, _, err) = run(replica.data_dir(), &["import", car_arg]);
    assert!(!ok);
    assert!(err.contains("read-only replica"), "{err}");
}
