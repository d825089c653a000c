//! The OCI Distribution API's blob endpoints over raw HTTP: every upload flavour, pulls with
//! ranges, mounts, deletes, and the errors each returns.

mod common;

use common::api::{assert_error, header, Api};
use common::{pseudo_random, sha256, sha512, TestNode};

#[tokio::test]
async fn base_endpoint_and_unknown_paths() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let resp = api.get("/v2/").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "Docker-Distribution-API-Version").as_deref(),
        Some("registry/2.0")
    );
    assert_eq!(api.get("/v2").await.status(), 200);
    assert_error(api.get("/v2/a/other/thing").await, 404, "NOT_FOUND").await;
    assert_error(api.get("/elsewhere").await, 404, "NOT_FOUND").await;
    let resp = api.client.post(api.url("/v2/")).send().await.expect("POST");
    assert_error(resp, 405, "UNSUPPORTED").await;
    let resp = api
        .client
        .post(api.url("/v2/a/tags/list"))
        .send()
        .await
        .expect("POST");
    assert_error(resp, 405, "UNSUPPORTED").await;
    assert_error(api.get("/v2/Upper/tags/list").await, 400, "NAME_INVALID").await;
    assert_error(api.get("/v2/a..b/tags/list").await, 400, "NAME_INVALID").await;
    assert_error(
        api.get("/v2/nothing/here/tags/list").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn monolithic_upload_and_pull_with_ranges() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let data = pseudo_random(3 << 20, 1);
    let digest = sha256(&data);

    // POST opens a session, PUT with the digest and the whole body closes it.
    let resp = api
        .client
        .post(api.url("/v2/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 202);
    let location = header(&resp, "Location").expect("Location");
    assert!(header(&resp, "Docker-Upload-UUID").is_some());
    let resp = api
        .client
        .put(api.url(&format!("{location}?digest={digest}")))
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(
        header(&resp, "Location").as_deref(),
        Some(format!("/v2/app/blobs/{digest}").as_str())
    );

    let path = format!("/v2/app/blobs/{digest}");
    let resp = api.head(&path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "Content-Length"),
        Some(data.len().to_string())
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let resp = api.get(&path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), &data[..]);

    let len = data.len();
    let range = |r: &'static str| {
        let api = &api;
        let path = path.clone();
        async move {
            api.client
                .get(api.url(&path))
                .header("Range", r)
                .send()
                .await
                .expect("GET range")
        }
    };
    for (spec, from, to) in [
        ("bytes=0-9", 0, 10),
        ("bytes=1048570-1048589", 1048570, 1048590),
        ("bytes=3145000-", 3145000, len),
        ("bytes=-5", len - 5, len),
        ("bytes=100-99999999", 100, len),
    ] {
        let resp = range(spec).await;
        assert_eq!(resp.status(), 206, "{spec}");
        assert_eq!(
            header(&resp, "Content-Range"),
            Some(format!("bytes {from}-{}/{len}", to - 1)),
            "{spec}"
        );
        assert_eq!(
            resp.bytes().await.expect("body").as_ref(),
            &data[from..to],
            "{spec}"
        );
    }
    // Invalid (last before first) and unsatisfiable ranges: 416 with the size (RFC 9110 14.4).
    for spec in ["bytes=500-0", &format!("bytes={len}-"), "bytes=-0"] {
        let resp = api
            .client
            .get(api.url(&path))
            .header("Range", spec)
            .send()
            .await
            .expect("GET range");
        assert_eq!(resp.status(), 416, "{spec}");
        assert_eq!(
            header(&resp, "Content-Range"),
            Some(format!("bytes */{len}")),
            "{spec}"
        );
    }
    // Multiple ranges and other units are ignored: the whole blob.
    for spec in ["bytes=0-1,5-6", "items=0-1"] {
        let resp = range(spec).await;
        assert_eq!(resp.status(), 200, "{spec}");
        assert_eq!(resp.bytes().await.expect("body").len(), len, "{spec}");
    }

    assert_error(
        api.get(&format!("/v2/app/blobs/{}", sha256(b"absent")))
            .await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    let resp = api
        .head(&format!("/v2/app/blobs/{}", sha256(b"absent")))
        .await;
    assert_eq!(resp.status(), 404);
    assert_error(
        api.get(&format!("/v2/other/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn single_request_upload_and_digest_errors() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let data = b"single request".to_vec();
    let digest = api.upload("app", &data).await;
    assert_eq!(
        api.get(&format!("/v2/app/blobs/{digest}"))
            .await
            .bytes()
            .await
            .expect("body")
            .as_ref(),
        &data[..]
    );

    // The empty blob (used as the config of many artifacts).
    let empty = api.upload("app", b"").await;
    let resp = api.get(&format!("/v2/app/blobs/{empty}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "Content-Length").as_deref(), Some("0"));
    assert!(resp.bytes().await.expect("body").is_empty());

    // A digest that does not match the bytes.
    let wrong = sha256(b"something else");
    let resp = api
        .client
        .post(api.url(&format!("/v2/app/blobs/uploads/?digest={wrong}")))
        .body(data.clone())
        .send()
        .await
        .expect("POST");
    assert_error(resp, 400, "DIGEST_INVALID").await;
    assert_error(
        api.get(&format!("/v2/app/blobs/{wrong}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;

    // Malformed digests, in the query and in the path: 400, never 500.
    for bad in [
        "sha256:xyz",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:",
        "nocolon",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    ] {
        let resp = api
            .client
            .post(api.url(&format!("/v2/app/blobs/uploads/?digest={bad}")))
            .body(data.clone())
            .send()
            .await
            .expect("POST");
        assert_error(resp, 400, "DIGEST_INVALID").await;
        if bad.contains(':') {
            assert_error(
                api.get(&format!("/v2/app/blobs/{bad}")).await,
                400,
                "DIGEST_INVALID",
            )
            .await;
        }
    }
    // PUT without a digest.
    let resp = api
        .client
        .post(api.url("/v2/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    let location = header(&resp, "Location").expect("Location");
    let resp = api
        .client
        .put(api.url(&location))
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_error(resp, 400, "DIGEST_INVALID").await;
    node_check(node);
}

fn node_check(mut node: TestNode) {
    let (ok, report) = node.check();
    assert!(ok, "{report}");
}

#[tokio::test]
async fn sha512_blobs() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let data = pseudo_random(100_000, 7);
    let digest = sha512(&data);
    let resp = api
        .client
        .post(api.url(&format!("/v2/app/blobs/uploads/?digest={digest}")))
        .body(data.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let resp = api.get(&format!("/v2/app/blobs/{digest}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(resp.bytes().await.expect("body").as_ref(), &data[..]);
    let wrong = sha512(b"other");
    let resp = api
        .client
        .post(api.url(&format!("/v2/app/blobs/uploads/?digest={wrong}")))
        .body(data)
        .send()
        .await
        .expect("POST");
    assert_error(resp, 400, "DIGEST_INVALID").await;
    node_check(node);
}

#[tokio::test]
async fn chunked_upload_status_and_out_of_order_chunks() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let data = pseudo_random(250_000, 3);
    let digest = sha256(&data);
    let resp = api
        .client
        .post(api.url("/v2/big/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 202);
    let mut location = header(&resp, "Location").expect("Location");
    let uuid = header(&resp, "Docker-Upload-UUID").expect("uuid");

    let mut offset = 0;
    for chunk in data.chunks(100_000) {
        let end = offset + chunk.len() - 1;
        let resp = api
            .client
            .patch(api.url(&location))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{offset}-{end}"))
            .body(chunk.to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(resp.status(), 202);
        assert_eq!(header(&resp, "Range"), Some(format!("0-{end}")));
        location = header(&resp, "Location").expect("Location");
        offset = end + 1;

        // The status of the session says how far it got.
        let resp = api.get(&location).await;
        assert_eq!(resp.status(), 204);
        assert_eq!(header(&resp, "Range"), Some(format!("0-{end}")));
        assert_eq!(
            header(&resp, "Docker-Upload-UUID").as_deref(),
            Some(uuid.as_str())
        );
        assert!(header(&resp, "Location").is_some());
    }

    // A chunk that does not start where the last one ended: 416, and the session is unharmed.
    for range in ["0-9", "300000-300009"] {
        let resp = api
            .client
            .patch(api.url(&location))
            .header("Content-Range", range)
            .body(vec![0u8; 10])
            .send()
            .await
            .expect("PATCH");
        assert_eq!(resp.status(), 416, "{range}");
        assert_eq!(
            header(&resp, "Range"),
            Some(format!("0-{}", data.len() - 1)),
            "{range}"
        );
    }
    let resp = api
        .client
        .put(api.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 201);
    assert_eq!(
        api.get(&format!("/v2/big/app/blobs/{digest}"))
            .await
            .bytes()
            .await
            .expect("body")
            .as_ref(),
        &data[..]
    );
    // The session is gone once the blob is committed.
    assert_error(api.get(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;

    // A chunked upload whose final PUT carries the last chunk.
    let resp = api
        .client
        .post(api.url("/v2/big/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    let location = header(&resp, "Location").expect("Location");
    let resp = api
        .client
        .patch(api.url(&location))
        .body(data[..1000].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), 202);
    let location = header(&resp, "Location").expect("Location");
    let resp = api
        .client
        .put(api.url(&format!("{location}?digest={digest}")))
        .body(data[1000..].to_vec())
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 201);
    node_check(node);
}

#[tokio::test]
async fn cancelled_and_unknown_uploads() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let resp = api
        .client
        .post(api.url("/v2/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    let location = header(&resp, "Location").expect("Location");
    let resp = api
        .client
        .patch(api.url(&location))
        .body(vec![1u8; 100])
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), 202);
    let resp = api.delete(&location).await;
    assert_eq!(resp.status(), 204);
    assert_error(api.get(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = api
        .client
        .patch(api.url(&location))
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("PATCH");
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(api.delete(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = api
        .client
        .put(api.url(&format!(
            "/v2/app/blobs/uploads/not-a-session?digest={}",
            sha256(b"")
        )))
        .send()
        .await
        .expect("PUT");
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // A session of one repository is not reachable through another.
    let resp = api
        .client
        .post(api.url("/v2/one/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    let id = header(&resp, "Docker-Upload-UUID").expect("uuid");
    assert_error(
        api.get(&format!("/v2/two/blobs/uploads/{id}")).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn cross_repository_mount() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let data = b"shared layer".to_vec();
    let digest = api.upload("source/app", &data).await;

    // Mounting an existing blob: 201 with its location, no upload.
    let resp = api
        .client
        .post(api.url(&format!(
            "/v2/target/app/blobs/uploads/?mount={digest}&from=source/app"
        )))
        .send()
        .await
        .expect("POST mount");
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "Location").as_deref(),
        Some(format!("/v2/target/app/blobs/{digest}").as_str())
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(
        api.get(&format!("/v2/target/app/blobs/{digest}"))
            .await
            .bytes()
            .await
            .expect("body")
            .as_ref(),
        &data[..]
    );

    // Unknown blob, or not in the named repository: 202 and an upload session instead.
    for query in [
        format!("mount={}&from=source/app", sha256(b"absent")),
        format!("mount={digest}&from=elsewhere"),
    ] {
        let resp = api
            .client
            .post(api.url(&format!("/v2/third/blobs/uploads/?{query}")))
            .send()
            .await
            .expect("POST mount");
        assert_eq!(resp.status(), 202, "{query}");
        let location = header(&resp, "Location").expect("Location");
        assert!(
            location.starts_with("/v2/third/blobs/uploads/"),
            "{location}"
        );
    }
    let resp = api
        .client
        .post(api.url("/v2/third/blobs/uploads/?mount=sha256:bad&from=source/app"))
        .send()
        .await
        .expect("POST mount");
    assert_error(resp, 400, "DIGEST_INVALID").await;
    node_check(node);
}

#[tokio::test]
async fn deleting_blobs() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let digest = api.upload("app", b"to be deleted").await;
    let kept = api.upload("other", b"to be deleted").await;
    assert_eq!(digest, kept);
    let resp = api.delete(&format!("/v2/app/blobs/{digest}")).await;
    assert_eq!(resp.status(), 202);
    assert_error(
        api.get(&format!("/v2/app/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        api.delete(&format!("/v2/app/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    // The same bytes linked into another repository stay there.
    assert_eq!(
        api.get(&format!("/v2/other/blobs/{kept}")).await.status(),
        200
    );
    node_check(node);
}

#[tokio::test]
async fn uploads_run_concurrently_with_pulls() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let small = api.upload("app", b"already here").await;

    // A slow streaming upload holds no lock: other uploads and pulls complete meanwhile.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let rx = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    let big = pseudo_random(1 << 20, 9);
    let big_digest = sha256(&big);
    let slow = {
        let client = api.client.clone();
        let url = api.url(&format!("/v2/app/blobs/uploads/?digest={big_digest}"));
        tokio::spawn(async move {
            client
                .post(url)
                .body(reqwest::Body::wrap_stream(rx))
                .send()
                .await
                .expect("slow POST")
                .status()
        })
    };
    tx.send(big[..1000].to_vec()).await.expect("first part");
    for i in 0..3 {
        let other = api
            .upload("app", format!("concurrent {i}").as_bytes())
            .await;
        assert_eq!(
            api.get(&format!("/v2/app/blobs/{other}")).await.status(),
            200
        );
        assert_eq!(
            api.get(&format!("/v2/app/blobs/{small}")).await.status(),
            200
        );
        api.push_image("app", &format!("t{i}"), i).await;
    }
    tx.send(big[1000..].to_vec()).await.expect("rest");
    drop(tx);
    assert_eq!(slow.await.expect("slow upload"), 201);
    assert_eq!(
        api.get(&format!("/v2/app/blobs/{big_digest}"))
            .await
            .bytes()
            .await
            .expect("body")
            .as_ref(),
        &big[..]
    );
    node_check(node);
}
