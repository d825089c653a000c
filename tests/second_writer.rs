//! A second writer of one IPNS name, with real processes on loopback: the first writer sees the
//! other's record, refuses writes with a clear error, says why on `/_health` (`/readyz`), in its
//! status report and `ipns-registry status`, keeps refusing after a restart, and accepts writes (and publishes
//! again) only when restarted with `--take-over-name`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{binary, push_image, served_manifest, wait_for, TestNode, WAIT};
use ipns_registry::http::Readiness;

/// `/_health` (the old name of `/readyz`, still answered): its status and document.
async fn health(client: &reqwest::Client, base: &str) -> (u16, Readiness) {
    let resp = client
        .get(format!("{base}/_health"))
        .send()
        .await
        .expect("health");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("readiness JSON"))
}

/// Asserts that `base` refuses a write with 503 `UNAVAILABLE`, naming the conflict and the
/// override.
async fn assert_writes_refused(client: &reqwest::Client, base: &str, name: &str) {
    let resp = client
        .post(format!("{base}/v2/dup/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 503);
    let doc: serde_json::Value = resp.json().await.expect("error JSON");
    let error = &doc["errors"][0];
    assert_eq!(error["code"], "UNAVAILABLE", "{doc}");
    let message = error["message"].as_str().expect("message");
    assert!(message.contains(name), "{message}");
    assert!(message.contains("--take-over-name"), "{message}");
    assert!(
        push_image(client, base, "dup/app", "refused", 99)
            .await
            .is_none(),
        "a push went through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_stops_the_first_until_it_takes_the_name_over() {
    let client = reqwest::Client::new();
    let mut first = TestNode::init("writer");
    first.serve(&[]);
    let (_, name) = first.id();
    let v1 = push_image(&client, &first.url(), "dup/app", "v1", 1)
        .await
        .expect("push to the first writer");
    // Two nodes with one key have one peer id and libp2p never connects a peer to itself, so
    // they meet through a replica that follows the name.
    let mut replica = TestNode::init("replica");
    replica.serve(&["--follow", &name, "--peer", &first.p2p_addr()]);
    let replica_base = replica.url();
    wait_for("the replica to serve v1", || {
        let (client, base, digest) = (&client, &replica_base, &v1.manifest);
        async move {
            (served_manifest(client, base, "dup/app", "v1")
                .await
                .as_ref()
                == Some(digest))
            .then_some(())
        }
    })
    .await;

    // A second writer on a copy of the key publishes above the first's record; the first
    // hears of it from the replica.
    let mut second = TestNode::init("writer");
    std::fs::copy(
        first.data_dir().join("keys/self.key"),
        second.data_dir().join("keys/self.key"),
    )
    .expect("copy the key");
    assert_eq!(first.id(), second.id());
    second.serve(&["--peer", &replica.p2p_addr()]);
    let base = first.url();
    let problem = wait_for("the first writer to report the second", || {
        let (client, base) = (&client, &base);
        async move {
            let (code, readiness) = health(client, base).await;
            (code == 503 && !readiness.ready).then(|| readiness.problems.join("; "))
        }
    })
    .await;
    assert!(problem.contains("second writer"), "{problem}");
    assert!(problem.contains("--take-over-name"), "{problem}");

    // Writes are refused; reads go on.
    assert_writes_refused(&client, &base, &name).await;
    assert_eq!(
        served_manifest(&client, &base, "dup/app", "v1").await,
        Some(v1.manifest.clone())
    );
    let report = first.status().await;
    assert!(
        report.own.as_ref().is_some_and(|o| o.conflict.is_some()),
        "{report:?}"
    );
    assert!(
        report
            .writes_refused
            .as_deref()
            .is_some_and(|w| w.contains(&name)),
        "{report:?}"
    );
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(first.data_dir())
        .arg("status")
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "status exits 1 on a problem: {text}");
    assert!(
        text.contains("PROBLEM") && text.contains("second writer"),
        "{text}"
    );

    // A restart does not forget it.
    first.restart();
    let base = first.url();
    let (code, readiness) = health(&client, &base).await;
    assert_eq!(code, 503, "{readiness:?}");
    assert_writes_refused(&client, &base, &name).await;

    // The other writer gone, the operator takes the name over: writes are accepted, and the
    // first publishes above the second's record, so the replica follows it again.
    second.kill();
    first.serve(&["--peer", &replica.p2p_addr(), "--take-over-name"]);
    let base = first.url();
    let (code, readiness) = health(&client, &base).await;
    assert_eq!(code, 200, "{readiness:?}");
    let v2 = push_image(&client, &base, "dup/app", "v2", 2)
        .await
        .expect("push after taking over");
    wait_for("the replica to serve the first writer's v2", || {
        let (client, base, digest) = (&client, &replica_base, &v2.manifest);
        async move {
            (served_manifest(client, base, "dup/app", "v2")
                .await
                .as_ref()
                == Some(digest))
            .then_some(())
        }
    })
    .await;

    // Taken over for good: a plain restart stays healthy.
    first.serve(&["--peer", &replica.p2p_addr()]);
    let (code, readiness) = health(&client, &first.url()).await;
    assert_eq!(code, 200, "{readiness:?}");
}

#[test]
fn taking_over_is_for_writers() {
    let replica = TestNode::init("replica");
    let mut child = Command::new(binary())
        .arg("--data-dir")
        .arg(replica.data_dir())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .args(["--no-mdns", "--take-over-name"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a replica started with --take-over-name");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--take-over-name applies to writers"), "{err}");
}
