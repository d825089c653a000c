//! Crash safety: SIGKILL the node while pushes are in flight, restart it, and check that every
//! push it acknowledged is intact and the store is consistent.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{pseudo_random, push_image, sha256, TestNode};

/// Starts a chunked upload and streams a large body into it slowly, so a kill lands mid-write.
async fn slow_upload(client: reqwest::Client, base: String) {
    let Ok(resp) = client
        .post(format!("{base}/v2/crash/big/blobs/uploads/"))
        .send()
        .await
    else {
        return;
    };
    let Some(location) = resp.headers().get("location").and_then(|l| l.to_str().ok()) else {
        return;
    };
    let url = format!("{base}{location}");
    let chunks = futures_util::stream::unfold(0u64, |i| async move {
        if i >= 400 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        Some((Ok::<_, std::io::Error>(pseudo_random(256 * 1024, i)), i + 1))
    });
    let _ = client
        .patch(url)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_sigkill() {
    let mut node = TestNode::start();
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let mut seed = 0u64;

    for round in 0..3 {
        let base = node.url();
        let upload = tokio::spawn(slow_upload(client.clone(), base.clone()));
        // Four writers push concurrently into two repositories until the node dies.
        let mut writers = Vec::new();
        for w in 0..4u64 {
            let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
            let first_seed = seed + w * 10_000;
            writers.push(tokio::spawn(async move {
                let repo = format!("crash/repo{}", w % 2);
                for i in 0.. {
                    let tag = format!("r{round}-w{w}-{i}");
                    match push_image(&client, &base, &repo, &tag, first_seed + i)
                        .await
                        .map(|p| p.manifest)
                    {
                        Some(digest) => {
                            acked
                                .lock()
                                .expect("lock")
                                .push((repo.clone(), tag, digest))
                        }
                        None => break,
                    }
                }
            }));
        }
        seed += 100_000;
        // Kill once some pushes have been acknowledged in this round and others are in flight.
        let target = acked.lock().expect("lock").len() + 12;
        while acked.lock().expect("lock").len() < target {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        node.kill();
        for w in writers {
            let _ = w.await;
        }
        let _ = upload.await;
        node.restart();

        let base = node.url();
        let acked_now = acked.lock().expect("lock").clone();
        for (repo, tag, digest) in &acked_now {
            for reference in [tag, digest] {
                let resp = client
                    .get(format!("{base}/v2/{repo}/manifests/{reference}"))
                    .header("Accept", "application/vnd.oci.image.manifest.v1+json")
                    .send()
                    .await
                    .expect("request");
                assert_eq!(resp.status(), 200, "round {round}: {repo}:{reference} lost");
                let body = resp.bytes().await.expect("body");
                assert_eq!(&sha256(&body), digest, "{repo}:{reference} corrupted");
            }
        }
    }
    assert!(acked.lock().expect("lock").len() >= 36);
    let (ok, report) = node.check();
    assert!(ok, "store inconsistent after crashes:\n{report}");
}

#[tokio::test]
async fn interrupted_upload_resumes_after_restart() {
    let mut node = TestNode::start();
    let client = reqwest::Client::new();
    let base = node.url();
    let resp = client
        .post(format!("{base}/v2/crash/resume/blobs/uploads/"))
        .send()
        .await
        .expect("start upload");
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let blob = pseudo_random(3 * 1024 * 1024 + 17, 7);
    let first = &blob[..1024 * 1024];
    let resp = client
        .patch(format!("{base}{location}"))
        .header("Content-Range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), 202);

    node.kill();
    node.restart();
    let base = node.url();
    let status = client
        .get(format!("{base}{location}"))
        .send()
        .await
        .expect("status");
    assert_eq!(status.status(), 204);
    assert_eq!(
        status.headers()["range"],
        format!("0-{}", first.len() - 1).as_str()
    );
    let rest = &blob[first.len()..];
    let resp = client
        .patch(format!("{base}{location}"))
        .header(
            "Content-Range",
            format!("{}-{}", first.len(), blob.len() - 1),
        )
        .body(rest.to_vec())
        .send()
        .await
        .expect("patch rest");
    assert_eq!(resp.status(), 202);
    let digest = sha256(&blob);
    let resp = client
        .put(format!("{base}{location}?digest={digest}"))
        .send()
        .await
        .expect("finish");
    assert_eq!(resp.status(), 201);
    let got = client
        .get(format!("{base}/v2/crash/resume/blobs/{digest}"))
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(got.len(), blob.len());
    assert_eq!(sha256(&got), digest);
    let (ok, report) = node.check();
    assert!(ok, "{report}");
}
