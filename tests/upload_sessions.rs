//! Upload sessions and refused uploads: sessions expire when idle (bytes and all, also found at
//! start-up), are capped per client and in total, and nothing of a refused or broken upload
//! reaches the block store.

mod front_support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use front_support::{client, pseudo_random, sha256, upload, Front, RawConn};
use ipns_registry::http::ServeOptions;
use ipns_registry::registry::{RegistryOptions, UploadLimits};

fn limits(expiry_secs: u64, max: usize, per_client: usize) -> RegistryOptions {
    RegistryOptions {
        uploads: UploadLimits {
            expiry: Duration::from_secs(expiry_secs),
            max_sessions: max,
            max_sessions_per_client: per_client,
        },
        ..RegistryOptions::default()
    }
}

/// A client whose connections come from `ip` (any 127.x address is loopback).
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .local_address(IpAddr::V4(ip))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn open_session(client: &reqwest::Client, front: &Front) -> reqwest::Response {
    client
        .post(front.url("/v2/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST")
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"]
        .to_str()
        .expect("Location")
        .to_owned()
}

async fn assert_too_many(resp: reqwest::Response) {
    assert_eq!(resp.status(), 429);
    let error: serde_json::Value = resp.json().await.expect("JSON error");
    assert_eq!(error["errors"][0]["code"], "TOOMANYREQUESTS");
    let message = error["errors"][0]["message"].as_str().expect("message");
    assert!(message.contains("upload sessions"), "{message}");
}

#[tokio::test]
async fn sessions_are_capped_per_client_and_in_total() {
    let front = Front::start(ServeOptions::default(), limits(3600, 5, 3)).await;
    let a = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let b = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let mut sessions_a = Vec::new();
    for _ in 0..3 {
        let resp = open_session(&a, &front).await;
        assert_eq!(resp.status(), 202);
        sessions_a.push(location(&resp));
    }
    assert_too_many(open_session(&a, &front).await).await;
    // Another client still may, up to the total.
    for _ in 0..2 {
        assert_eq!(open_session(&b, &front).await.status(), 202);
    }
    assert_too_many(open_session(&b, &front).await).await;
    // Monolithic uploads open no session and are not capped.
    upload(&a, &front, "app", b"whole blob").await;
    // Ending a session frees its place; so does completing one.
    let resp = a
        .delete(front.url(&sessions_a[0]))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status(), 204);
    let data = b"chunked".to_vec();
    let resp = a
        .put(front.url(&format!("{}?digest={}", sessions_a[1], sha256(&data))))
        .body(data)
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 201);
    assert_eq!(open_session(&a, &front).await.status(), 202);
    assert_eq!(open_session(&b, &front).await.status(), 202);
    assert_too_many(open_session(&b, &front).await).await;
}

#[tokio::test]
async fn idle_sessions_expire_with_their_bytes() {
    let mut front = Front::start(ServeOptions::default(), limits(2, 2, 2)).await;
    let http = client();
    let resp = open_session(&http, &front).await;
    let idle = location(&resp);
    let resp = http
        .patch(front.url(&idle))
        .body(vec![1u8; 5000])
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), 202);
    assert_eq!(front.upload_files().len(), 1);
    // A session that keeps receiving bytes outlives the expiry.
    let resp = open_session(&http, &front).await;
    let active = location(&resp);
    let active_id = active.rsplit('/').next().expect("id").to_owned();
    let feed = |http: reqwest::Client, url: String| async move {
        let resp = http
            .patch(url)
            .body(vec![2u8; 10])
            .send()
            .await
            .expect("PATCH");
        assert_eq!(resp.status(), 202);
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        feed(http.clone(), front.url(&active)).await;
        let status = http
            .get(front.url(&idle))
            .send()
            .await
            .expect("GET")
            .status();
        if status == 404 {
            break;
        }
        assert_eq!(status, 204);
        assert!(Instant::now() < deadline, "the idle session did not expire");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        front.upload_files(),
        [active_id],
        "the idle session's file is gone"
    );
    // Its place is free again (the cap is 2).
    let resp = open_session(&http, &front).await;
    assert_eq!(resp.status(), 202);
    let replacement = location(&resp);
    for _ in 0..8 {
        feed(http.clone(), front.url(&active)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let resp = http.get(front.url(&active)).send().await.expect("GET");
    assert_eq!(resp.status(), 204, "an active session does not expire");

    // Sessions that expired while the node was down are gone as soon as it starts again.
    front.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    front.restart().await;
    assert!(
        front.upload_files().is_empty(),
        "{:?}",
        front.upload_files()
    );
    for location in [&active, &replacement] {
        let resp = http.get(front.url(location)).send().await.expect("GET");
        assert_eq!(resp.status(), 404);
    }
    assert_eq!(open_session(&http, &front).await.status(), 202);
}

fn assert_no_leftovers(front: &Front, before: &[(String, u64)]) {
    assert_eq!(
        front.block_files(),
        before,
        "the block store must be as it was (no blocks, nothing staged)"
    );
    assert!(
        front.upload_files().is_empty(),
        "{:?}",
        front.upload_files()
    );
}

#[tokio::test]
async fn a_mismatched_upload_leaves_the_block_store_as_it_was() {
    let front = Front::start(ServeOptions::default(), RegistryOptions::default()).await;
    let http = client();
    upload(&http, &front, "app", b"something already stored").await;
    let before = front.block_files();
    let data = pseudo_random(8 << 20, 3);
    let wrong = sha256(b"other bytes");

    // Monolithic.
    let resp = http
        .post(front.url(&format!("/v2/app/blobs/uploads/?digest={wrong}")))
        .body(data.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);
    let error: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(error["errors"][0]["code"], "DIGEST_INVALID");
    assert_no_leftovers(&front, &before);

    // Chunked, in three PATCHes.
    let resp = open_session(&http, &front).await;
    let mut location = location(&resp);
    for part in data.chunks(3 << 20) {
        let resp = http
            .patch(front.url(&location))
            .body(part.to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(resp.status(), 202);
        location = resp.headers()["location"]
            .to_str()
            .expect("Location")
            .to_owned();
    }
    let resp = http
        .put(front.url(&format!("{location}?digest={wrong}")))
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 400);
    assert_no_leftovers(&front, &before);

    // The same bytes under their true digest are stored, then a refused copy changes nothing.
    let digest = upload(&http, &front, "app", &data).await;
    let stored = front.block_files();
    assert!(stored.len() > before.len());
    let resp = http
        .post(front.url(&format!("/v2/other/blobs/uploads/?digest={wrong}")))
        .body(data.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);
    assert_eq!(front.block_files(), stored);
    let resp = http
        .get(front.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(&resp.bytes().await.expect("body")[..], &data[..]);
}

#[tokio::test]
async fn a_broken_monolithic_upload_leaves_nothing() {
    let front = Front::start(ServeOptions::default(), RegistryOptions::default()).await;
    let before = front.block_files();
    let data = pseudo_random(3 << 20, 4);
    let digest = sha256(&data);
    // Half the announced body, then the client goes away.
    let mut conn = RawConn::connect(front.addr()).await;
    let head = format!(
        "POST /v2/app/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: registry\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    assert!(conn.send(head.as_bytes()).await);
    assert!(conn.send(&data[..data.len() / 2]).await);
    drop(conn);
    // The server notices the broken body; its staging area goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while front.block_files() != before {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            front.block_files()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(front.upload_files().is_empty());
    let http = client();
    let resp = http
        .head(front.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(resp.status(), 404);
    // The whole body, sent again, is stored.
    assert_eq!(upload(&http, &front, "app", &data).await, digest);
}
