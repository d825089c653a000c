//! A full disk: the data directory on a small loop-mounted ext4 file system. Pushes that meet
//! `ENOSPC` get a clear OCI error (507), what was committed before still pulls byte for byte,
//! `check` is clean after a restart, and pushes work again once space is freed, without a
//! restart. The metadata store (sled) meets `ENOSPC` too, and recovers.
//!
//! Needs root (mount), `mkfs.ext4` and loop devices; skipped with a printed reason otherwise.
//! The file system is unmounted and removed on exit, also when the test fails.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{pseudo_random, sha256, TestNode};
use ipns_registry::store::MetaStore;

/// A small ext4 file system on a loop device, mounted under a temporary directory.
struct LoopFs {
    _tmp: tempfile::TempDir,
    mount: PathBuf,
    image: PathBuf,
    mounted: bool,
}

impl LoopFs {
    /// Creates and mounts a file system of `mib` MiB, or says why it cannot.
    fn create(mib: u64) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root to mount a loop device".into());
        }
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = tmp.path().join("fs.img");
        let mount = tmp.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(mib * 1024 * 1024).map_err(|e| e.to_string())?;
        drop(file);
        let mut fs = LoopFs {
            _tmp: tmp,
            mount,
            image,
            mounted: false,
        };
        // -m 0: no blocks reserved for root, which the test runs as.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&fs.image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&fs.image)
            .arg(&fs.mount))?;
        fs.mounted = true;
        Ok(fs)
    }

    /// Free bytes on the file system.
    fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.mount.as_os_str().as_encoded_bytes())
            .expect("path without NUL");
        // SAFETY: statvfs fills the zeroed struct; the path is a valid C string.
        unsafe {
            let mut stat: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut stat), 0, "statvfs");
            stat.f_bavail as u64 * stat.f_frsize as u64
        }
    }

    /// Writes a file at `path` until the file system is full; returns the bytes written.
    fn fill(&self, path: &Path) -> u64 {
        let mut file = std::fs::File::create(path).expect("create filler");
        let chunk = vec![0x5a_u8; 64 * 1024];
        let mut written = 0;
        // ext4 reserves room for metadata while data waits in the page cache and gives back
        // what it did not need once synced: fill again until a sync frees nothing (a few tens of
        // KiB were left otherwise, room enough for a tiny push).
        for _ in 0..8 {
            // Bounded by the file system's size.
            loop {
                match file.write(&chunk) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("writing the filler: {e}"),
                }
            }
            // Whatever the page cache still holds must reach the disk (or fail) now.
            let _ = file.sync_all();
            if self.free_bytes() == 0 {
                break;
            }
        }
        // A big file stops while ext4 still keeps room for its extent tree; small files take
        // the rest (they stay: the big one frees plenty when removed).
        for i in 0..1024 {
            let small = path.with_extension(format!("small{i}"));
            let stored = std::fs::File::create(&small)
                .and_then(|mut f| f.write_all(&chunk[..4096]).and_then(|()| f.sync_all()));
            match stored {
                Ok(()) => written += 4096,
                Err(_) => {
                    let _ = std::fs::remove_file(&small);
                    break;
                }
            }
        }
        written
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let unmounted = Command::new("umount").arg(&self.mount).status();
            if !matches!(unmounted, Ok(s) if s.success()) {
                // Something still holds a file open: detach lazily, the loop device goes with it.
                let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
            }
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The loop file system, or `None` after printing why the test is skipped.
fn loop_fs(mib: u64) -> Option<LoopFs> {
    match LoopFs::create(mib) {
        Ok(fs) => Some(fs),
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

/// An image with one layer of `layer_len` pseudo-random bytes.
struct Image {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

impl Image {
    fn new(repo: &str, tag: &str, layer_len: usize, seed: u64) -> Self {
        let layer = pseudo_random(layer_len, seed);
        let config =
            format!(r#"{{"architecture":"arm64","os":"linux","seed":{seed}}}"#).into_bytes();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
            sha256(&config),
            config.len(),
            sha256(&layer),
            layer.len()
        )
        .into_bytes();
        Image {
            repo: repo.into(),
            tag: tag.into(),
            manifest,
            blobs: vec![config, layer],
        }
    }
}

/// A refused request: its status and body.
#[derive(Debug)]
struct Refused {
    status: u16,
    body: String,
}

/// Pushes the blobs (the layer in 1 MiB chunks: POST, PATCH..., PUT) and the manifest; the
/// first refusal ends it.
async fn push(client: &reqwest::Client, base: &str, image: &Image) -> Result<(), Refused> {
    let refused = |status: u16, body: String| Refused { status, body };
    let repo = &image.repo;
    for blob in &image.blobs {
        let resp = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .map_err(|e| refused(0, e.to_string()))?;
        if resp.status() != 202 {
            return Err(refused(
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            ));
        }
        let mut location = location(base, &resp);
        let mut start = 0;
        for chunk in blob.chunks(1024 * 1024) {
            let resp = client
                .patch(&location)
                .header("Content-Type", "application/octet-stream")
                .header(
                    "Content-Range",
                    format!("{start}-{}", start + chunk.len() - 1),
                )
                .body(chunk.to_vec())
                .send()
                .await
                .map_err(|e| refused(0, e.to_string()))?;
            if resp.status() != 202 {
                return Err(refused(
                    resp.status().as_u16(),
                    resp.text().await.unwrap_or_default(),
                ));
            }
            location = location_of(base, &resp);
            start += chunk.len();
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = client
            .put(format!("{location}{sep}digest={}", sha256(blob)))
            .send()
            .await
            .map_err(|e| refused(0, e.to_string()))?;
        if resp.status() != 201 {
            return Err(refused(
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            ));
        }
    }
    let resp = client
        .put(format!("{base}/v2/{repo}/manifests/{}", image.tag))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(image.manifest.clone())
        .send()
        .await
        .map_err(|e| refused(0, e.to_string()))?;
    if resp.status() != 201 {
        return Err(refused(
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        ));
    }
    Ok(())
}

fn location(base: &str, resp: &reqwest::Response) -> String {
    location_of(base, resp)
}

fn location_of(base: &str, resp: &reqwest::Response) -> String {
    let loc = resp
        .headers()
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .expect("Location header")
        .to_owned();
    if loc.starts_with("http") {
        loc
    } else {
        format!("{base}{loc}")
    }
}

/// Pulls the image by tag and checks the manifest and every blob byte for byte.
async fn assert_pulls(client: &reqwest::Client, base: &str, image: &Image) {
    let repo = &image.repo;
    let resp = client
        .get(format!("{base}/v2/{repo}/manifests/{}", image.tag))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(resp.status(), 200, "pulling {repo}:{}", image.tag);
    assert_eq!(resp.bytes().await.expect("manifest body"), image.manifest);
    for blob in &image.blobs {
        let resp = client
            .get(format!("{base}/v2/{repo}/blobs/{}", sha256(blob)))
            .send()
            .await
            .expect("GET blob");
        assert_eq!(resp.status(), 200, "pulling a blob of {repo}");
        let got = resp.bytes().await.expect("blob body");
        assert!(
            got[..] == blob[..],
            "a blob of {repo} differs after the disk filled up"
        );
    }
}

/// The refusal is a clear OCI error: 507, code `UNKNOWN`, a message that says the storage is
/// full and what to do.
fn assert_storage_full(refused: &Refused) {
    assert_eq!(
        refused.status, 507,
        "expected 507 Insufficient Storage: {refused:?}"
    );
    let doc: serde_json::Value = serde_json::from_str(&refused.body)
        .unwrap_or_else(|e| panic!("OCI error JSON expected ({e}): {refused:?}"));
    let error = &doc["errors"][0];
    assert_eq!(error["code"], "UNKNOWN", "{refused:?}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("storage is full") && message.contains("free space"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_on_a_full_disk_fail_clearly_and_recover() {
    let Some(fs) = loop_fs(64) else { return };
    let mut node = TestNode::init_at(&fs.mount.join("data"), "writer");
    node.serve(&[]);
    let client = reqwest::Client::new();
    let base = node.url();

    let kept = [
        Image::new("keep/small", "v1", 3000, 1),
        Image::new("keep/large", "v1", 3 * 1024 * 1024 + 17, 2),
    ];
    for image in &kept {
        push(&client, &base, image)
            .await
            .expect("push before the disk fills");
    }

    // Push 4 MiB images until the disk is full (64 MiB: well within 30 pushes).
    let mut refusal = None;
    for i in 0..30 {
        let image = Image::new(&format!("fill/app{i}"), "v1", 4 * 1024 * 1024, 100 + i);
        if let Err(refused) = push(&client, &base, &image).await {
            refusal = Some(refused);
            break;
        }
    }
    let refused = refusal.expect("the 64 MiB disk never filled up");
    assert_storage_full(&refused);

    // Now take the last bytes too, so that even the metadata store (sled) cannot write.
    let filler = fs.mount.join("filler");
    let filled = fs.fill(&filler);
    println!(
        "disk full: {} bytes of filler, {} free",
        filled,
        fs.free_bytes()
    );
    let small = Image::new("after/full", "v1", 5000, 7);
    assert_storage_full(
        &push(&client, &base, &small)
            .await
            .expect_err("a push on a full disk"),
    );

    // Pulls keep working, byte for byte.
    for image in &kept {
        assert_pulls(&client, &base, image).await;
    }

    // Space freed: pushes work again, without a restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    push(&client, &base, &small)
        .await
        .expect("a push once space is freed");
    assert_pulls(&client, &base, &small).await;

    // After a restart, everything committed is there and the store is consistent.
    let (clean, report) = node.check();
    assert!(clean, "check after the disk was full: {report}");
    node.restart();
    let base = node.url();
    for image in kept.iter().chain([&small]) {
        assert_pulls(&client, &base, image).await;
    }
    drop(node);
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_store_survives_enospc() {
    let Some(fs) = loop_fs(16) else { return };
    let dir = fs.mount.join("meta");
    let root = cid::Cid::try_from("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
        .expect("CID");
    let store = MetaStore::open(&dir).expect("open");
    store.set_root(&root).await.expect("commit a root");

    let filler = fs.mount.join("filler");
    fs.fill(&filler);
    // Upload records of 4 KiB until sled cannot write (at most 16 MiB of them).
    let record = "x".repeat(4096);
    let mut failure = None;
    for i in 0..4096 {
        if let Err(e) = store.put_upload(&format!("u{i}"), &record).await {
            failure = Some(e);
            break;
        }
    }
    let failure = failure.expect("sled never ran out of space on a full 16 MiB disk");
    assert!(
        failure.is_storage_full(),
        "not reported as a full disk: {failure}"
    );
    // While sled itself has no space, it cannot even be reopened (its recovery writes), so
    // reads fail too; once space is freed it reopens, with the committed root intact.
    std::fs::remove_file(&filler).expect("remove the filler");
    assert_eq!(store.root().expect("read the root"), Some(root));
    store
        .put_upload("after", &"freed".to_owned())
        .await
        .expect("a write once space is freed");
    drop(store);

    let store = MetaStore::open(&dir).expect("reopen after ENOSPC");
    assert_eq!(store.root().expect("root"), Some(root));
    assert_eq!(
        store.upload::<String>("after").expect("read"),
        Some("freed".to_owned())
    );
    drop(store);
    drop(fs);
}
