//! Upload sessions and refused uploads: sessions expire when idle (bytes and all, also found at
//! start-up), are capped per client and in total, and nothing of a refused or broken upload
//! reaches the block store.

mod front_support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use front_support::{client, post_blob, pseudo_random, sha256, upload, Front, RawConn};
use ipns_registry::http::ServeOptions;
use ipns_registry::registry::{RegistryOptions, UploadLimits};
use sha2::Digest as _;

fn limits(expiry_secs: u64, max: usize, per_client: usize) -> RegistryOptions {
    RegistryOptions {
        uploads: UploadLimits {
            expiry: Duration::from_secs(expiry_secs),
            max_sessions: max,
            max_sessions_per_client: per_client,
            ..UploadLimits::default()
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
    open_session_with(client, front, "").await
}

/// `POST /v2/app/blobs/uploads/` with `query` (empty, or starting with `?`).
async fn open_session_with(
    client: &reqwest::Client,
    front: &Front,
    query: &str,
) -> reqwest::Response {
    client
        .post(front.url(&format!("/v2/app/blobs/uploads/{query}")))
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

/// `PUT ?digest=` with `body`, ending the session at `at`; the response.
async fn put_with_body(
    http: &reqwest::Client,
    front: &Front,
    at: &str,
    digest: &str,
    body: &[u8],
) -> reqwest::Response {
    http.put(front.url(&format!("{at}?digest={digest}")))
        .body(body.to_vec())
        .send()
        .await
        .expect("PUT")
}

/// Asserts a 400 with the error code `DIGEST_INVALID`.
async fn assert_digest_invalid(resp: reqwest::Response) {
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.expect("error JSON");
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");
}

/// Sends a `POST ?digest=` announcing all of `data` and half of it, then goes away.
async fn post_half_and_leave(front: &Front, digest: &str, data: &[u8]) {
    let mut conn = RawConn::connect(front.addr()).await;
    let head = format!(
        "POST /v2/app/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: registry\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    assert!(conn.send(head.as_bytes()).await);
    assert!(conn.send(&data[..data.len() / 2]).await);
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
    let resp = put_with_body(&a, &front, &sessions_a[1], &sha256(&data), &data).await;
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
    post_half_and_leave(&front, &digest, &data).await;
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

/// PATCHes `parts` one after another to a new session of `app`; returns the session's
/// location after the last.
async fn patch_all(http: &reqwest::Client, front: &Front, parts: &[&[u8]]) -> String {
    patch_all_with(http, front, "", parts).await
}

/// [`patch_all`] to a session opened with `query`.
async fn patch_all_with(
    http: &reqwest::Client,
    front: &Front,
    query: &str,
    parts: &[&[u8]],
) -> String {
    let resp = open_session_with(http, front, query).await;
    assert_eq!(resp.status(), 202);
    let mut location = location(&resp);
    for part in parts {
        let resp = http
            .patch(front.url(&location))
            .body(part.to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(resp.status(), 202);
        location = self::location(&resp);
    }
    location
}

/// Completes the session at `location` under `digest` (no body) and asserts 201.
async fn complete(http: &reqwest::Client, front: &Front, location: &str, digest: &str) {
    let resp = http
        .put(front.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .expect("PUT");
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

async fn assert_blob(http: &reqwest::Client, front: &Front, digest: &str, data: &[u8]) {
    let resp = http
        .get(front.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.expect("body")[..] == data[..],
        "the blob's bytes differ from the upload"
    );
}

/// Waits until no staging area is left under `<data>/blocks/`.
async fn assert_nothing_staged(front: &Front) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let staged: Vec<_> = front
            .block_files()
            .into_iter()
            .filter(|(name, _)| name.contains("staging"))
            .collect();
        if staged.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left staged: {staged:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn chunked_uploads_are_imported_while_their_bytes_arrive() {
    let front = Front::start(ServeOptions::default(), RegistryOptions::default()).await;
    let http = client();
    let data = pseudo_random((9 << 20) + 12345, 11);
    let digest = sha256(&data);
    let parts: Vec<&[u8]> = data.chunks(3 << 20).collect();
    let location = patch_all(&http, &front, &parts).await;
    assert_eq!(front.registry().streaming_imports(), 1);

    // The final PUT does not read the bytes back: overwritten behind the registry's back, the
    // upload file no longer holds them, yet the blob is what the client sent.
    let files = front.upload_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = front.data_dir().join("uploads").join(&files[0]);
    std::fs::write(&file, vec![0u8; data.len()]).expect("overwrite the upload file");
    complete(&http, &front, &location, &digest).await;
    assert_eq!(front.registry().streaming_imports(), 0);
    assert!(front.upload_files().is_empty());
    assert_blob(&http, &front, &digest, &data).await;
    assert_nothing_staged(&front).await;

    // A last chunk sent with the PUT is imported the same way.
    let data = pseudo_random(5 << 20, 12);
    let digest = sha256(&data);
    let location = patch_all(&http, &front, &[&data[..2 << 20]]).await;
    let resp = put_with_body(&http, &front, &location, &digest, &data[2 << 20..]).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(front.registry().streaming_imports(), 0);
    assert_blob(&http, &front, &digest, &data).await;

    // Cancelled: the import and what it staged go.
    patch_all(&http, &front, &[&data[..3 << 20]]).await;
    let files = front.upload_files();
    let session = files.last().expect("a session").clone();
    assert_eq!(front.registry().streaming_imports(), 1);
    let resp = http
        .delete(front.url(&format!("/v2/app/blobs/uploads/{session}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status(), 204);
    assert_eq!(front.registry().streaming_imports(), 0);
    assert_nothing_staged(&front).await;
}

#[tokio::test]
async fn uploads_the_streaming_import_cannot_finish_are_imported_from_their_file() {
    // One import at most: a second session at the same time has none.
    let options = RegistryOptions {
        uploads: UploadLimits {
            streaming_imports: 1,
            ..UploadLimits::default()
        },
        ..RegistryOptions::default()
    };
    let mut front = Front::start(ServeOptions::default(), options).await;
    let http = client();
    let first = pseudo_random(4 << 20, 21);
    let second = pseudo_random(3 << 20, 22);
    let first_at = patch_all(&http, &front, &[&first[..1 << 20], &first[1 << 20..]]).await;
    let second_at = patch_all(&http, &front, &[&second]).await;
    assert_eq!(front.registry().streaming_imports(), 1);
    complete(&http, &front, &second_at, &sha256(&second)).await;
    assert_blob(&http, &front, &sha256(&second), &second).await;

    // A restart ends every import: the session's file is imported.
    front.restart().await;
    assert_eq!(front.registry().streaming_imports(), 0);
    complete(&http, &front, &first_at, &sha256(&first)).await;
    assert_blob(&http, &front, &sha256(&first), &first).await;

    // A digest under another algorithm than the import hashed.
    let data = pseudo_random(2 << 20, 23);
    let location = patch_all(&http, &front, &[&data]).await;
    assert_eq!(front.registry().streaming_imports(), 1);
    let sha512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&data)));
    complete(&http, &front, &location, &sha512).await;
    assert_eq!(front.registry().streaming_imports(), 0);
    assert_blob(&http, &front, &sha512, &data).await;

    // A PATCH that breaks off: the session stays at its last complete size, the client
    // resumes from there, and the blob is right.
    let data = pseudo_random(6 << 20, 24);
    let digest = sha256(&data);
    let location = patch_all(&http, &front, &[&data[..2 << 20]]).await;
    let mut conn = RawConn::connect(front.addr()).await;
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: registry\r\nContent-Length: {}\r\n\r\n",
        4 << 20
    );
    assert!(conn.send(head.as_bytes()).await);
    assert!(conn.send(&data[2 << 20..3 << 20]).await);
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(20);
    let offset = loop {
        let resp = http
            .get(front.url(&location))
            .send()
            .await
            .expect("GET status");
        assert_eq!(resp.status(), 204);
        let range = resp.headers()["range"].to_str().expect("Range").to_owned();
        // The broken request may still be running: wait for it to give up.
        if front.registry().streaming_imports() == 0 {
            break range;
        }
        assert!(Instant::now() < deadline, "the broken PATCH never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(offset, format!("0-{}", (2 << 20) - 1));
    let resp = http
        .patch(front.url(&location))
        .header("content-range", format!("{}-{}", 2 << 20, data.len() - 1))
        .body(data[2 << 20..].to_vec())
        .send()
        .await
        .expect("PATCH the rest");
    assert_eq!(resp.status(), 202);
    let location = self::location(&resp);
    complete(&http, &front, &location, &digest).await;
    assert_blob(&http, &front, &digest, &data).await;
    assert_nothing_staged(&front).await;
}

/// Opens a session with `query`, PATCHes `data`, then overwrites the session's file with other
/// bytes of the same length, so that only an import that hashed the bytes as they came can
/// complete it; returns the upload's location.
async fn patch_then_spoil_the_file(
    http: &reqwest::Client,
    front: &Front,
    query: &str,
    data: &[u8],
) -> String {
    let location = patch_all_with(http, front, query, &[data]).await;
    let id = location
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .expect("session id");
    let file = front.data_dir().join("uploads").join(id);
    assert_eq!(
        std::fs::metadata(&file).expect("upload file").len(),
        data.len() as u64
    );
    std::fs::write(&file, vec![0u8; data.len()]).expect("overwrite");
    location
}

#[tokio::test]
async fn a_session_hashes_as_it_arrives_under_the_algorithm_it_announced() {
    let front = Front::start(ServeOptions::default(), RegistryOptions::default()).await;
    let http = client();
    let data = pseudo_random(3 << 20, 31);
    let sha512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&data)));

    // Announced and used: the bytes were hashed as they came, the file is not read again.
    let at = patch_then_spoil_the_file(&http, &front, "?digest-algorithm=sha512", &data).await;
    complete(&http, &front, &at, &sha512).await;
    assert_blob(&http, &front, &sha512, &data).await;

    // Not announced: the import hashed SHA-256, so a sha512 digest reads the file, which no
    // longer holds the bytes.
    let at = patch_then_spoil_the_file(&http, &front, "", &data).await;
    let resp = http
        .put(front.url(&format!("{at}?digest={sha512}")))
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 400);
    // The default is SHA-256, hashed as it came.
    let other = pseudo_random(2 << 20, 32);
    let at = patch_then_spoil_the_file(&http, &front, "", &other).await;
    complete(&http, &front, &at, &sha256(&other)).await;
    assert_blob(&http, &front, &sha256(&other), &other).await;

    // Announced, then ended under another algorithm: the file is imported (and is intact).
    let at = patch_all_with(&http, &front, "?digest-algorithm=sha512", &[&data]).await;
    complete(&http, &front, &at, &sha256(&data)).await;
    assert_blob(&http, &front, &sha256(&data), &data).await;

    // An algorithm the registry does not implement is refused at the start.
    let resp = open_session_with(&http, &front, "?digest-algorithm=md5").await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.expect("error JSON");
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");
    assert_eq!(body["errors"][0]["detail"]["digest-algorithm"], "md5");
}

/// Opens a session whose upload file is `/dev/full`, where every write fails; returns its
/// location.
async fn open_on_a_full_file(http: &reqwest::Client, front: &Front) -> String {
    let resp = open_session(http, front).await;
    assert_eq!(resp.status(), 202);
    let at = location(&resp);
    let id = at.rsplit('/').next().expect("session id");
    let file = front.data_dir().join("uploads").join(id);
    std::fs::remove_file(&file).expect("upload file");
    std::os::unix::fs::symlink("/dev/full", &file).expect("symlink");
    at
}

#[tokio::test]
async fn a_blob_sent_whole_with_the_final_put_is_not_written_to_the_upload_file() {
    let front = Front::start(ServeOptions::default(), RegistryOptions::default()).await;
    let http = client();
    let data = pseudo_random((3 << 20) + 5, 41);
    let digest = sha256(&data);

    // `POST`, then the whole blob in the `PUT` (as containerd pushes): it goes to the import
    // alone, so a session whose file takes no byte completes.
    let at = open_on_a_full_file(&http, &front).await;
    let resp = put_with_body(&http, &front, &at, &digest, &data).await;
    assert_eq!(resp.status(), 201);
    assert_blob(&http, &front, &digest, &data).await;

    // A `PATCH` is still written to the file, which a client resumes from.
    let at = open_on_a_full_file(&http, &front).await;
    let resp = http
        .patch(front.url(&at))
        .body(data.clone())
        .send()
        .await
        .expect("PATCH");
    assert!(resp.status().is_server_error(), "{}", resp.status());

    // Bytes that do not match the digest are refused, and the session ends.
    let at = open_on_a_full_file(&http, &front).await;
    let other = sha256(b"something else");
    let resp = put_with_body(&http, &front, &at, &other, &data).await;
    assert_digest_invalid(resp).await;
    let resp = http.get(front.url(&at)).send().await.expect("GET status");
    assert_eq!(resp.status(), 404);

    // An import that fails (its staging area cannot be made) leaves the session as it was
    // before the `PUT`, and the client's second try completes it.
    let resp = open_session(&http, &front).await;
    let at = location(&resp);
    let staging = front.data_dir().join("blocks").join("staging");
    std::fs::remove_dir_all(&staging).expect("staging");
    std::fs::write(&staging, b"in the way").expect("block staging");
    let second = pseudo_random(2 << 20, 42);
    let resp = put_with_body(&http, &front, &at, &sha256(&second), &second).await;
    assert!(resp.status().is_server_error(), "{}", resp.status());
    std::fs::remove_file(&staging).expect("unblock staging");
    std::fs::create_dir(&staging).expect("staging");
    let resp = http.get(front.url(&at)).send().await.expect("GET status");
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["range"], "0-0");
    let resp = put_with_body(&http, &front, &at, &sha256(&second), &second).await;
    assert_eq!(resp.status(), 201);
    assert_blob(&http, &front, &sha256(&second), &second).await;
    assert_nothing_staged(&front).await;
}

#[tokio::test]
async fn blobs_of_one_chunk_are_stored_without_a_staging_area() {
    // The import profile's chunk: a blob of at most this many bytes is one raw block.
    const CHUNK: usize = 1 << 20;
    let front = Front::start(ServeOptions::default(), RegistryOptions::default()).await;
    let http = client();
    // Nothing can make a staging area from now on.
    let staging = front.data_dir().join("blocks").join("staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::write(&staging, b"in the way").expect("block staging");

    // In one `POST`: empty, small, and exactly a chunk.
    for (len, seed) in [(0, 50), (4096, 51), (CHUNK, 52)] {
        let data = pseudo_random(len, seed);
        let digest = sha256(&data);
        let resp = post_blob(&http, &front, "app", &data, &digest).await;
        assert_eq!(resp.status(), 201, "{len} bytes");
        assert_blob(&http, &front, &digest, &data).await;
    }
    // A byte more takes the staging area (which fails here).
    let data = pseudo_random(CHUNK + 1, 53);
    let resp = post_blob(&http, &front, "app", &data, &sha256(&data)).await;
    assert!(resp.status().is_server_error(), "{}", resp.status());

    // `POST`, then the whole blob with the `PUT`.
    let data = pseudo_random(70_000, 54);
    let digest = sha256(&data);
    let at = location(&open_session(&http, &front).await);
    let resp = put_with_body(&http, &front, &at, &digest, &data).await;
    assert_eq!(resp.status(), 201);
    assert_blob(&http, &front, &digest, &data).await;
    assert!(front.upload_files().is_empty(), "the session ended");

    // A body that does not match its `Content-Range` is refused, and the session stays as it
    // was; bytes that do not match the digest are refused, and it ends.
    let at = location(&open_session(&http, &front).await);
    let resp = http
        .put(front.url(&format!("{at}?digest={digest}")))
        .header("Content-Range", "0-9")
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 400);
    let resp = http.get(front.url(&at)).send().await.expect("GET status");
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["range"], "0-0");
    let wrong = sha256(b"something else");
    let resp = put_with_body(&http, &front, &at, &wrong, &data).await;
    assert_digest_invalid(resp).await;
    let resp = http.get(front.url(&at)).send().await.expect("GET status");
    assert_eq!(resp.status(), 404);
    let resp = post_blob(&http, &front, "app", &data, &wrong).await;
    assert_eq!(resp.status(), 400);
    let resp = http
        .head(front.url(&format!("/v2/app/blobs/{wrong}")))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(resp.status(), 404);

    // A small body that breaks off leaves nothing.
    let before = front.block_files();
    let data = pseudo_random(200_000, 55);
    let digest = sha256(&data);
    post_half_and_leave(&front, &digest, &data).await;
    let resp = http
        .head(front.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(resp.status(), 404);
    assert_eq!(front.block_files(), before);
}
