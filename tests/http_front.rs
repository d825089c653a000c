//! The HTTP front door, in-process over real loopback connections: connections stay usable
//! (or close cleanly) after an early error, stalled bodies and slow or idle clients are cut off,
//! the connection cap makes room by closing idle connections, and HTTPS works with a private CA.

mod front_support;

use std::time::Duration;

use front_support::{client, push_image, sha256, upload, Front, RawConn};
use ipns_registry::http::ServeOptions;
use ipns_registry::registry::RegistryOptions;

fn options() -> ServeOptions {
    ServeOptions::default()
}

fn request(method: &str, path: &str, body_len: usize) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: registry\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_len}\r\n\r\n"
    )
    .into_bytes()
}

/// An error answered before the request body is read must leave the connection either usable
/// for the next request (small bodies are read and dropped) or closed with `Connection:
/// close` after the response (large ones) — never read the rest of the body as a request.
#[tokio::test]
async fn an_early_error_never_spoils_the_next_request() {
    let front = Front::start(options(), RegistryOptions::default()).await;
    let unknown = "/v2/app/blobs/uploads/0e6a1a51-6c1d-4c3c-8a3c-3c0d6c1d7a11";
    for (round, size) in [1_000usize, 60_000, 200_000, 3_000_000]
        .into_iter()
        .cycle()
        .take(24)
        .enumerate()
    {
        let body = front_support::pseudo_random(size, round as u64);
        let mut conn = RawConn::connect(front.addr()).await;
        let mut bytes = request("PATCH", unknown, size);
        bytes.extend_from_slice(&body);
        // The server may answer and close before taking the whole body: that is its right.
        let _ = conn.send(&bytes).await;
        let resp = conn.response().await.expect("an answer to the PATCH");
        assert_eq!(resp.status, 404, "round {round}");
        let error: serde_json::Value = serde_json::from_slice(&resp.body).expect("JSON error");
        assert_eq!(error["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
        if resp.closes() {
            assert!(
                size > 64 * 1024,
                "a {size}-byte body should have been drained"
            );
            assert!(
                conn.closed_within(Duration::from_secs(40)).await,
                "round {round}: announced Connection: close but kept the connection"
            );
            continue;
        }
        assert!(
            conn.send(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
                .await
        );
        let next = conn
            .response()
            .await
            .expect("an answer to the next request");
        assert_eq!(next.status, 200, "round {round} ({size} bytes): {next:?}");
    }
}

/// A request body that stops arriving fails with a clear error after the stall timeout, the
/// connection closes, and the session keeps what it had; a slow body that keeps coming is fine.
#[tokio::test]
async fn a_stalled_body_fails_cleanly() {
    let front = Front::start(
        ServeOptions {
            body_stall_timeout: Duration::from_secs(1),
            ..options()
        },
        RegistryOptions::default(),
    )
    .await;
    let http = client();
    let resp = http
        .post(front.url("/v2/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"]
        .to_str()
        .expect("Location")
        .to_owned();
    let resp = http
        .patch(front.url(&location))
        .body(vec![7u8; 10])
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), 202);

    // 1000 of 100000 announced bytes, then nothing.
    let mut conn = RawConn::connect(front.addr()).await;
    let mut bytes = request("PATCH", &location, 100_000);
    bytes.extend_from_slice(&[1u8; 1000]);
    assert!(conn.send(&bytes).await);
    let resp = conn
        .response()
        .await
        .expect("an answer to the stalled PATCH");
    assert_eq!(resp.status, 400);
    let error: serde_json::Value = serde_json::from_slice(&resp.body).expect("JSON error");
    assert_eq!(error["errors"][0]["code"], "BLOB_UPLOAD_INVALID");
    let message = error["errors"][0]["message"].as_str().expect("message");
    assert!(message.contains("no bytes"), "{message}");
    assert!(resp.closes(), "a stalled connection cannot be reused");
    assert!(conn.closed_within(Duration::from_secs(10)).await);
    let resp = http.get(front.url(&location)).send().await.expect("GET");
    assert_eq!(resp.status(), 204);
    assert_eq!(
        resp.headers()["range"],
        "0-9",
        "the session kept its 10 bytes"
    );

    // A body that arrives slowly but steadily (every 300 ms, for longer than the stall
    // timeout) is not cut off.
    let mut conn = RawConn::connect(front.addr()).await;
    assert!(conn.send(&request("PATCH", &location, 10)).await);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(conn.send(&[2u8]).await);
    }
    let resp = conn.response().await.expect("an answer to the slow PATCH");
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(resp.header("range"), Some("0-19"));
}

/// A connection that sends nothing, or only part of a request head, is closed after the
/// header timeout; an idle keep-alive connection after the idle timeout; a head dribbled in
/// within the header timeout is served.
#[tokio::test]
async fn slow_and_idle_clients_are_cut_off() {
    let front = Front::start(
        ServeOptions {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            ..options()
        },
        RegistryOptions::default(),
    )
    .await;
    let mut silent = RawConn::connect(front.addr()).await;
    let mut partial = RawConn::connect(front.addr()).await;
    assert!(partial.send(b"GET /v2/ HTTP/1.1\r\nHost: regi").await);
    let mut idle = RawConn::connect(front.addr()).await;
    assert!(
        idle.send(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
            .await
    );
    assert_eq!(idle.response().await.expect("answer").status, 200);
    let mut dribbler = RawConn::connect(front.addr()).await;
    let head = b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n";
    for piece in head.chunks(10) {
        assert!(dribbler.send(piece).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dribbler.response().await.expect("answer").status, 200);

    assert!(silent.closed_within(Duration::from_secs(20)).await);
    assert!(partial.closed_within(Duration::from_secs(20)).await);
    assert!(idle.closed_within(Duration::from_secs(20)).await);
    // The server still answers.
    let resp = client().get(front.url("/v2/")).send().await.expect("GET");
    assert_eq!(resp.status(), 200);
}

/// At the connection cap, the connection idle longest is closed to admit a new client; when
/// every connection is busy, a new client waits until one is done.
#[tokio::test]
async fn at_the_cap_idle_connections_make_room() {
    let front = Front::start(
        ServeOptions {
            max_connections: 4,
            ..options()
        },
        RegistryOptions::default(),
    )
    .await;
    let get = b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n";
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut conn = RawConn::connect(front.addr()).await;
        assert!(conn.send(get).await);
        assert_eq!(conn.response().await.expect("answer").status, 200);
        idle.push(conn);
        // Distinct idle-since times, so "oldest" is well defined.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut newcomer = RawConn::connect(front.addr()).await;
    assert!(newcomer.send(get).await);
    assert_eq!(newcomer.response().await.expect("answer").status, 200);
    assert!(
        idle[0].closed_within(Duration::from_secs(10)).await,
        "the oldest idle connection made room"
    );
    drop(idle);
    drop(newcomer);

    // Four connections each in the middle of a request body.
    let resp = client()
        .post(front.url("/v2/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    let location = resp.headers()["location"]
        .to_str()
        .expect("Location")
        .to_owned();
    // Four connections each in the middle of a request body. `Expect: 100-continue` makes the
    // server say when it has started on the request (it asks for the body).
    let mut busy = Vec::new();
    for i in 0..4 {
        let mut conn = RawConn::connect(front.addr()).await;
        let digest = sha256(&[i as u8; 100]);
        let head = format!(
            "POST /v2/app/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: registry\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"
        );
        assert!(conn.send(head.as_bytes()).await);
        assert_eq!(conn.response().await.expect("100 Continue").status, 100);
        assert!(conn.send(&[i as u8; 50]).await);
        busy.push((conn, i as u8));
    }
    let fifth = tokio::spawn({
        let url = front.url(&location);
        async move { client().get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !fifth.is_finished(),
        "served while every connection was busy"
    );
    let (mut conn, i) = busy.remove(0);
    assert!(conn.send(&[i; 50]).await);
    assert_eq!(conn.response().await.expect("answer").status, 201);
    drop(conn);
    assert_eq!(fifth.await.expect("task").expect("GET"), 204);
    for (mut conn, i) in busy {
        assert!(conn.send(&[i; 50]).await);
        assert_eq!(conn.response().await.expect("answer").status, 201);
    }
}

/// HTTPS with a certificate from a private CA: a client trusting that CA pushes and pulls;
/// a plain-HTTP request to the TLS port fails without harming the server.
#[tokio::test]
async fn https_push_and_pull_with_a_private_ca() {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ipns-registry test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
    let server = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    // A full chain: the server certificate, then the CA.
    std::fs::write(&cert_path, format!("{}{}", server.pem(), ca.pem())).expect("write cert");
    std::fs::write(&key_path, server_key.serialize_pem()).expect("write key");
    let tls = ipns_registry::http::tls::server_config(&cert_path, &key_path).expect("TLS config");

    let front = Front::start(
        ServeOptions {
            tls: Some(tls),
            ..options()
        },
        RegistryOptions::default(),
    )
    .await;
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("CA")])
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTPS client");
    assert!(front.url("/").starts_with("https://"));
    let resp = https.get(front.url("/v2/")).send().await.expect("GET /v2/");
    assert_eq!(resp.status(), 200);
    assert_eq!(push_image(&https, &front, "tls/app", "v1", 1).await, 201);
    let data = front_support::pseudo_random(3 << 20, 5);
    let digest = upload(&https, &front, "tls/app", &data).await;
    let resp = https
        .get(front.url(&format!("/v2/tls/app/blobs/{digest}")))
        .send()
        .await
        .expect("GET blob");
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.expect("body")[..], &data[..]);

    // A client that does not trust the CA is refused; so is plain HTTP. The server lives on.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only(Vec::new())
        .build()
        .expect("client");
    assert!(untrusting.get(front.url("/v2/")).send().await.is_err());
    let mut plain = RawConn::connect(front.addr()).await;
    let _ = plain
        .send(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
        .await;
    assert!(
        plain.response().await.is_err(),
        "plain HTTP on the TLS port"
    );
    let resp = https.get(front.url("/v2/")).send().await.expect("GET /v2/");
    assert_eq!(resp.status(), 200);
}
