//! Pulling over the OCI Distribution API: the base endpoint, unknown paths and methods,
//! manifests and blobs by GET and HEAD, byte ranges, and the 404s of unknown content.

mod api_support;

use api_support::{
    assert_error, assert_head_error, header, json, pseudo_random, sha256, TestRegistry,
    OCI_MANIFEST,
};
use std::sync::Arc;

use ipns_registry::http::{NodeHealth, Readiness};
use reqwest::Method;

#[tokio::test]
async fn base_endpoint() {
    let reg = TestRegistry::start().await;
    for path in ["/v2/", "/v2"] {
        let resp = reg.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            header(&resp, "Docker-Distribution-API-Version").as_deref(),
            Some("registry/2.0")
        );
        assert_eq!(json(resp).await, serde_json::json!({}));
    }
    let resp = reg.head("/v2/").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "Docker-Distribution-API-Version").as_deref(),
        Some("registry/2.0")
    );
}

/// A node whose readiness problems the test sets.
struct FakeHealth(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl NodeHealth for FakeHealth {
    async fn readiness(&self) -> Readiness {
        Readiness::from_problems(self.0.lock().expect("lock").clone())
    }
}

#[tokio::test]
async fn health_endpoints() {
    // Without a node behind the API: alive and ready; the status report is never on this port.
    let reg = TestRegistry::start().await;
    let resp = reg.get("/healthz").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await, serde_json::json!({ "alive": true }));
    let resp = reg.get("/readyz").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        json(resp).await,
        serde_json::json!({ "ready": true, "problems": [] })
    );
    assert_error(reg.get("/_status").await, 404, "NOT_FOUND").await;

    let health = Arc::new(FakeHealth(std::sync::Mutex::new(Vec::new())));
    let reg = TestRegistry::with_health(health.clone()).await;
    for path in ["/readyz", "/_health"] {
        let resp = reg.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            json(resp).await,
            serde_json::json!({ "ready": true, "problems": [] })
        );
    }
    *health.0.lock().expect("lock") = vec!["a second writer".into()];
    for path in ["/readyz", "/_health"] {
        let resp = reg.get(path).await;
        assert_eq!(resp.status(), 503, "{path}");
        let readiness: Readiness = resp.json().await.expect("readiness JSON");
        assert_eq!(
            readiness,
            Readiness {
                ready: false,
                problems: vec!["a second writer".into()]
            }
        );
    }
    // Alive all the same, and HEAD works too.
    assert_eq!(reg.get("/healthz").await.status(), 200);
    assert_eq!(reg.head("/readyz").await.status(), 503);
    let resp = reg.send(Method::POST, "/readyz").await;
    assert_error(resp, 405, "UNSUPPORTED").await;
    // The OCI API is served alongside.
    assert_eq!(reg.get("/v2/").await.status(), 200);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let reg = TestRegistry::start().await;
    for path in [
        "/",
        "/elsewhere",
        "/v3/",
        "/v2x",
        "/v2/app/other/thing",
        "/v2/app/tags/list/",
        "/v2/_catalog/",
        "/v2/app/blobs/uploads/x/y",
    ] {
        let err = assert_error(reg.get(path).await, 404, "NOT_FOUND").await;
        assert_eq!(err["detail"]["path"], path);
        // Every answer carries the API version, errors too.
        let resp = reg.get(path).await;
        assert_eq!(
            header(&resp, "Docker-Distribution-API-Version").as_deref(),
            Some("registry/2.0")
        );
    }
    let d = sha256(b"x");
    let upload = reg.start_upload("app").await;
    for (method, path, allow) in [
        (Method::POST, "/v2/".to_owned(), "GET, HEAD"),
        (Method::DELETE, "/v2/".to_owned(), "GET, HEAD"),
        (Method::PUT, "/v2/_catalog".to_owned(), "GET, HEAD"),
        (Method::POST, "/v2/app/tags/list".to_owned(), "GET, HEAD"),
        (
            Method::POST,
            "/v2/app/manifests/latest".to_owned(),
            "GET, HEAD, PUT, DELETE",
        ),
        (
            Method::PATCH,
            "/v2/app/manifests/latest".to_owned(),
            "GET, HEAD, PUT, DELETE",
        ),
        (
            Method::PUT,
            format!("/v2/app/blobs/{d}"),
            "GET, HEAD, DELETE",
        ),
        (
            Method::POST,
            format!("/v2/app/blobs/{d}"),
            "GET, HEAD, DELETE",
        ),
        (Method::GET, "/v2/app/blobs/uploads/".to_owned(), "POST"),
        (Method::PUT, "/v2/app/blobs/uploads/".to_owned(), "POST"),
        (
            Method::POST,
            upload.clone(),
            "GET, HEAD, PATCH, PUT, DELETE",
        ),
        (
            Method::OPTIONS,
            upload.clone(),
            "GET, HEAD, PATCH, PUT, DELETE",
        ),
        (Method::HEAD, "/v2/app/blobs/uploads/".to_owned(), "POST"),
        (Method::PUT, format!("/v2/app/referrers/{d}"), "GET, HEAD"),
    ] {
        let resp = reg.send(method.clone(), &path).await;
        // RFC 9110 15.5.6: a 405 lists the methods the resource supports.
        assert_eq!(
            header(&resp, "Allow").as_deref(),
            Some(allow),
            "{method} {path}"
        );
        if method == Method::HEAD {
            assert_head_error(resp, 405).await;
        } else {
            assert_error(resp, 405, "UNSUPPORTED").await;
        }
    }
    // Names that fail the spec's grammar, on every kind of endpoint.
    let long = "a".repeat(256);
    for path in [
        "/v2/Upper/tags/list".to_owned(),
        "/v2/a..b/tags/list".to_owned(),
        "/v2/a//b/manifests/v1".to_owned(),
        "/v2/-a/manifests/v1".to_owned(),
        format!("/v2/{long}/tags/list"),
        format!("/v2/a_/blobs/{d}"),
        format!("/v2/UP/referrers/{d}"),
    ] {
        let err = assert_error(reg.get(&path).await, 400, "NAME_INVALID").await;
        assert!(err["detail"]["name"].is_string(), "{path}");
    }
    let resp = reg.send(Method::POST, "/v2/Upper/blobs/uploads/").await;
    assert_error(resp, 400, "NAME_INVALID").await;
}

#[tokio::test]
async fn manifests_by_tag_and_digest() {
    let reg = TestRegistry::start().await;
    let (manifest, digest) = reg.push_image("lib/app", "v1", 1).await;
    for reference in ["v1", digest.as_str()] {
        let path = format!("/v2/lib/app/manifests/{reference}");
        let resp = reg.get_manifest("lib/app", reference).await;
        assert_eq!(resp.status(), 200, "{reference}");
        assert_eq!(header(&resp, "Content-Type").as_deref(), Some(OCI_MANIFEST));
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(
            header(&resp, "Content-Length"),
            Some(manifest.len().to_string())
        );
        assert_eq!(header(&resp, "ETag"), Some(format!("\"{digest}\"")));
        assert_eq!(resp.text().await.expect("body"), manifest);

        // Without Accept the manifest is served as it is: no conversion, no 404.
        let resp = reg.get(&path).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(sha256(&resp.bytes().await.expect("body")), digest);

        let resp = reg.head(&path).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "Content-Type").as_deref(), Some(OCI_MANIFEST));
        assert_eq!(
            header(&resp, "Content-Length"),
            Some(manifest.len().to_string())
        );
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str())
        );
        assert!(resp.bytes().await.expect("body").is_empty());
    }
}

#[tokio::test]
async fn blobs_by_get_and_head() {
    let reg = TestRegistry::start().await;
    // Larger than a chunk of the import profile (1 MiB), so it spans several blocks.
    let data = pseudo_random((2 << 20) + 12345, 1);
    let digest = reg.upload("app", &data).await;
    let path = format!("/v2/app/blobs/{digest}");

    let resp = reg.head(&path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "Content-Length"),
        Some(data.len().to_string())
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(header(&resp, "Accept-Ranges").as_deref(), Some("bytes"));
    assert!(resp.bytes().await.expect("body").is_empty());

    let resp = reg.get(&path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "Content-Length"),
        Some(data.len().to_string())
    );
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(resp.bytes().await.expect("body").as_ref(), &data[..]);

    // The empty blob, the config of many artifacts.
    let empty = reg.upload("app", b"").await;
    let resp = reg.get(&format!("/v2/app/blobs/{empty}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "Content-Length").as_deref(), Some("0"));
    assert!(resp.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn blob_ranges() {
    let reg = TestRegistry::start().await;
    let data = pseudo_random(1000, 2);
    let big = pseudo_random((1 << 20) + 100, 3);
    let digest = reg.upload("app", &data).await;
    let big_digest = reg.upload("app", &big).await;
    let path = format!("/v2/app/blobs/{digest}");
    let len = data.len();

    for (spec, from, to) in [
        ("bytes=0-9", 0, 10),
        ("bytes=10-", 10, len),
        ("bytes=-5", len - 5, len),
        ("bytes=-5000", 0, len),
        ("bytes=990-5000", 990, len),
        ("bytes=999-999", 999, len),
    ] {
        let resp = reg.get_range(&path, spec).await;
        assert_eq!(resp.status(), 206, "{spec}");
        assert_eq!(
            header(&resp, "Content-Range"),
            Some(format!("bytes {from}-{}/{len}", to - 1)),
            "{spec}"
        );
        assert_eq!(
            header(&resp, "Content-Length"),
            Some((to - from).to_string()),
            "{spec}"
        );
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(
            resp.bytes().await.expect("body").as_ref(),
            &data[from..to],
            "{spec}"
        );
    }
    // A range across a block boundary of a multi-block blob.
    let resp = reg
        .get_range(
            &format!("/v2/app/blobs/{big_digest}"),
            "bytes=1048570-1048589",
        )
        .await;
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.bytes().await.expect("body").as_ref(),
        &big[1048570..1048590]
    );

    // Invalid (last before first, RFC 9110 14.1.1) and unsatisfiable ranges (first past the
    // end, empty suffix): rejected with 416 and the size, which RFC 9110 14.2 allows for both.
    for spec in [
        "bytes=500-0".to_owned(),
        format!("bytes={len}-"),
        format!("bytes={len}-{}", len + 10),
        "bytes=5000-6000".to_owned(),
        "bytes=-0".to_owned(),
        "bytes=a-b".to_owned(),
        "bytes=5".to_owned(),
    ] {
        let resp = reg.get_range(&path, &spec).await;
        assert_eq!(
            header(&resp, "Content-Range"),
            Some(format!("bytes */{len}")),
            "{spec}"
        );
        assert_error(resp, 416, "BLOB_UNKNOWN").await;
    }
    // Policy: several ranges (which would need multipart/byteranges) and unknown units are
    // ignored (RFC 9110 14.2 allows it): the whole blob with 200.
    for spec in ["bytes=0-1,5-6", "bytes=0-9, 20-29", "items=0-1"] {
        let resp = reg.get_range(&path, spec).await;
        assert_eq!(resp.status(), 200, "{spec}");
        assert!(header(&resp, "Content-Range").is_none(), "{spec}");
        assert_eq!(resp.bytes().await.expect("body").as_ref(), &data[..]);
    }
    // HEAD with a range describes the part without sending it.
    let resp = reg
        .request(Method::HEAD, &path)
        .header("Range", "bytes=0-9")
        .send()
        .await
        .expect("HEAD");
    assert_eq!(resp.status(), 206);
    assert_eq!(header(&resp, "Content-Length").as_deref(), Some("10"));
    assert!(resp.bytes().await.expect("body").is_empty());

    // Every range of the empty blob is unsatisfiable.
    let empty = reg.upload("app", b"").await;
    let resp = reg
        .get_range(&format!("/v2/app/blobs/{empty}"), "bytes=0-0")
        .await;
    assert_eq!(header(&resp, "Content-Range").as_deref(), Some("bytes */0"));
    assert_eq!(resp.status(), 416);
}

#[tokio::test]
async fn unknown_manifests_blobs_and_names() {
    let reg = TestRegistry::start().await;
    let (_, digest) = reg.push_image("app", "v1", 1).await;
    let blob = reg.upload("app", b"a blob").await;

    let err = assert_error(reg.get_manifest("app", "v2").await, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(err["detail"]["reference"], "v2");
    let absent = sha256(b"no such manifest");
    assert_error(
        reg.get_manifest("app", &absent).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // A blob is not a manifest.
    assert_error(
        reg.get_manifest("app", &blob).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // The manifest exists, but in another repository.
    let err = assert_error(reg.get_manifest("nope", &digest).await, 404, "NAME_UNKNOWN").await;
    assert_eq!(err["detail"]["name"], "nope");
    assert_error(reg.get_manifest("nope", "v1").await, 404, "NAME_UNKNOWN").await;
    assert_error(reg.get("/v2/nope/tags/list").await, 404, "NAME_UNKNOWN").await;
    assert_head_error(reg.head("/v2/app/manifests/v2").await, 404).await;
    assert_head_error(reg.head(&format!("/v2/app/manifests/{absent}")).await, 404).await;

    let absent_blob = sha256(b"no such blob");
    let err = assert_error(
        reg.get(&format!("/v2/app/blobs/{absent_blob}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(err["detail"]["digest"], absent_blob);
    // The bytes are in the registry, but not linked into this repository.
    assert_error(
        reg.get(&format!("/v2/other/blobs/{blob}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_head_error(reg.head(&format!("/v2/app/blobs/{absent_blob}")).await, 404).await;
    assert_head_error(reg.head(&format!("/v2/other/blobs/{blob}")).await, 404).await;

    // Malformed blob digests: 400, never 404 or 500.
    for bad in [
        "sha256:xyz",
        "sha256:",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    ] {
        assert_error(
            reg.get(&format!("/v2/app/blobs/{bad}")).await,
            400,
            "DIGEST_INVALID",
        )
        .await;
    }
    assert_error(
        reg.get("/v2/app/blobs/notadigest").await,
        400,
        "DIGEST_INVALID",
    )
    .await;
}

/// A manifest reference that is neither a tag nor a digest names no manifest that can exist:
/// GET, HEAD and DELETE answer 404 `MANIFEST_UNKNOWN`, as the reference registry does (it
/// looks a malformed digest up as a tag and finds none), also in a repository that does not
/// exist; a push to such a name is still the client's mistake, 400.
#[tokio::test]
async fn manifests_by_names_that_cannot_be_tags() {
    let reg = TestRegistry::start().await;
    let (manifest, _) = reg.push_image("app", "v1", 1).await;
    let long = "t".repeat(129);
    let malformed_digests = [
        "sha256:xyz",
        "sha256:",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    ];
    let bad_tags = [".INVALID_MANIFEST_NAME", "-v1", ".v1", long.as_str()];
    for repo in ["app", "nope"] {
        for bad in malformed_digests.iter().chain(&bad_tags) {
            let err =
                assert_error(reg.get_manifest(repo, bad).await, 404, "MANIFEST_UNKNOWN").await;
            assert_eq!(err["detail"]["reference"], *bad);
            let path = format!("/v2/{repo}/manifests/{bad}");
            assert_head_error(reg.head(&path).await, 404).await;
            assert_error(reg.delete(&path).await, 404, "MANIFEST_UNKNOWN").await;
        }
    }
    for bad in malformed_digests {
        assert_error(
            reg.put_manifest("app", bad, OCI_MANIFEST, &manifest).await,
            400,
            "DIGEST_INVALID",
        )
        .await;
    }
    for bad in bad_tags {
        let err = assert_error(
            reg.put_manifest("app", bad, OCI_MANIFEST, &manifest).await,
            400,
            "MANIFEST_INVALID",
        )
        .await;
        assert_eq!(err["detail"]["tag"], bad);
    }
    // A method the endpoint does not have is still a 405, and the repository is untouched.
    let resp = reg
        .send(Method::PATCH, "/v2/app/manifests/.INVALID_MANIFEST_NAME")
        .await;
    assert_eq!(resp.status(), 405);
    assert_eq!(reg.tags("app").await, ["v1"]);
}
