//! Pushing over the OCI Distribution API: every blob upload flavour, cross-repository mounts,
//! manifests of every type and digest algorithm, and the errors each push can get.

mod api_support;

use api_support::{
    assert_error, header, index_manifest, json, oci_manifest, pseudo_random, sha256, sha512,
    TestRegistry, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX,
    OCI_MANIFEST,
};
use ipns_registry::registry::RegistryOptions;
use reqwest::Method;

/// Asserts a 201 for a blob: `Location` of the blob and its digest.
fn assert_blob_created(resp: &reqwest::Response, repo: &str, digest: &str) {
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(resp, "Location"),
        Some(format!("/v2/{repo}/blobs/{digest}"))
    );
    assert_eq!(
        header(resp, "Docker-Content-Digest").as_deref(),
        Some(digest)
    );
}

async fn blob_bytes(reg: &TestRegistry, repo: &str, digest: &str) -> Vec<u8> {
    let resp = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(resp.status(), 200, "{repo}@{digest}");
    resp.bytes().await.expect("body").to_vec()
}

#[tokio::test]
async fn monolithic_post_then_put() {
    let reg = TestRegistry::start().await;
    let data = pseudo_random((3 << 20) + 7, 1);
    let digest = sha256(&data);

    let resp = reg.send(Method::POST, "/v2/lib/app/blobs/uploads/").await;
    assert_eq!(resp.status(), 202);
    let location = header(&resp, "Location").expect("Location");
    let uuid = header(&resp, "Docker-Upload-UUID").expect("Docker-Upload-UUID");
    assert_eq!(location, format!("/v2/lib/app/blobs/uploads/{uuid}"));
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-0"));

    let resp = reg
        .request(Method::PUT, &format!("{location}?digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_blob_created(&resp, "lib/app", &digest);
    assert_eq!(blob_bytes(&reg, "lib/app", &digest).await, data);
    // The session ended with the upload.
    assert_error(reg.get(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // Also without the trailing slash.
    let resp = reg.send(Method::POST, "/v2/lib/app/blobs/uploads").await;
    assert_eq!(resp.status(), 202);
    reg.assert_consistent().await;
}

#[tokio::test]
async fn single_request_post_with_digest() {
    let reg = TestRegistry::start().await;
    for data in [
        b"single request".to_vec(),
        Vec::new(),
        pseudo_random(1 << 20, 2),
    ] {
        let digest = sha256(&data);
        let resp = reg.post_blob("app", &digest, &data).await;
        assert_blob_created(&resp, "app", &digest);
        assert_eq!(blob_bytes(&reg, "app", &digest).await, data);
    }
    // Pushing bytes the registry already has is fine.
    let digest = reg.upload("app", b"single request").await;
    assert_eq!(blob_bytes(&reg, "app", &digest).await, b"single request");
    reg.assert_consistent().await;
}

#[tokio::test]
async fn chunked_upload_with_status() {
    let reg = TestRegistry::start().await;
    let data = pseudo_random(250_000, 3);
    let digest = sha256(&data);
    let resp = reg.send(Method::POST, "/v2/big/app/blobs/uploads/").await;
    assert_eq!(resp.status(), 202);
    let mut location = header(&resp, "Location").expect("Location");
    let uuid = header(&resp, "Docker-Upload-UUID").expect("uuid");

    let mut offset = 0;
    for chunk in data.chunks(100_000) {
        let end = offset + chunk.len() - 1;
        let resp = reg
            .request(Method::PATCH, &location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{offset}-{end}"))
            .header("Content-Length", chunk.len())
            .body(chunk.to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(resp.status(), 202);
        assert_eq!(header(&resp, "Range"), Some(format!("0-{end}")));
        assert_eq!(
            header(&resp, "Docker-Upload-UUID").as_deref(),
            Some(uuid.as_str())
        );
        location = header(&resp, "Location").expect("Location");
        offset = end + 1;

        let resp = reg.get(&location).await;
        assert_eq!(resp.status(), 204);
        assert_eq!(header(&resp, "Range"), Some(format!("0-{end}")));
        assert_eq!(
            header(&resp, "Docker-Upload-UUID").as_deref(),
            Some(uuid.as_str())
        );
        assert_eq!(
            header(&resp, "Location").as_deref(),
            Some(location.as_str())
        );
        assert!(resp.bytes().await.expect("body").is_empty());
        // HEAD answers as GET does.
        let resp = reg.head(&location).await;
        assert_eq!(resp.status(), 204);
        assert_eq!(header(&resp, "Range"), Some(format!("0-{end}")));
    }
    let resp = reg
        .request(Method::PUT, &format!("{location}?digest={digest}"))
        .send()
        .await
        .expect("PUT");
    assert_blob_created(&resp, "big/app", &digest);
    assert_eq!(blob_bytes(&reg, "big/app", &digest).await, data);
    assert_error(reg.get(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;

    // Streamed PATCHes without Content-Range, and a final PUT carrying the last chunk.
    let location = reg.start_upload("big/app").await;
    let mut location = location;
    for part in [&data[..1000], &data[1000..5000]] {
        let resp = reg
            .request(Method::PATCH, &location)
            .body(part.to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(resp.status(), 202);
        location = header(&resp, "Location").expect("Location");
    }
    let resp = reg.get(&location).await;
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-4999"));
    let resp = reg
        .request(Method::PUT, &format!("{location}?digest={digest}"))
        .body(data[5000..].to_vec())
        .send()
        .await
        .expect("PUT");
    assert_blob_created(&resp, "big/app", &digest);
    reg.assert_consistent().await;
}

#[tokio::test]
async fn bad_chunks_leave_the_session_intact() {
    let reg = TestRegistry::start().await;
    let data = pseudo_random(3000, 4);
    let digest = sha256(&data);
    let location = reg.start_upload("app").await;
    let resp = reg
        .request(Method::PATCH, &location)
        .header("Content-Range", "0-999")
        .body(data[..1000].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), 202);

    // Out of order: behind, or past the end of what the session has. 416 with its size.
    for range in ["0-9", "500-509", "1001-1010", "300000-300009"] {
        let resp = reg
            .request(Method::PATCH, &location)
            .header("Content-Range", range)
            .body(vec![0u8; 10])
            .send()
            .await
            .expect("PATCH");
        assert_eq!(header(&resp, "Range").as_deref(), Some("0-999"), "{range}");
        assert_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    }
    // Malformed Content-Range: 416 as well.
    for range in ["abc", "10-5", "-5", "5-"] {
        let resp = reg
            .request(Method::PATCH, &location)
            .header("Content-Range", range)
            .body(vec![0u8; 10])
            .send()
            .await
            .expect("PATCH");
        assert_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    }
    // A chunk shorter than its Content-Range announces: 400, none of it kept.
    let resp = reg
        .request(Method::PATCH, &location)
        .header("Content-Range", "1000-1999")
        .body(data[1000..1500].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_error(resp, 400, "BLOB_UPLOAD_INVALID").await;
    let resp = reg.get(&location).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-999"));

    // The client resumes where the session is, with `bytes ` prefixed ranges as some send.
    let resp = reg
        .request(Method::PATCH, &location)
        .header("Content-Range", "bytes 1000-1999/3000")
        .body(data[1000..2000].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-1999"));

    // The closing PUT's chunk is held to its Content-Range like a PATCH: out of order is 416
    // and leaves the session as it was.
    for range in ["1000-1999", "2500-3499"] {
        let resp = reg
            .request(Method::PUT, &format!("{location}?digest={digest}"))
            .header("Content-Range", range)
            .body(data[2000..].to_vec())
            .send()
            .await
            .expect("PUT");
        assert_eq!(header(&resp, "Range").as_deref(), Some("0-1999"), "{range}");
        assert_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    }
    let resp = reg
        .request(Method::PUT, &format!("{location}?digest={digest}"))
        .header("Content-Range", "2000-2999")
        .body(data[2000..].to_vec())
        .send()
        .await
        .expect("PUT");
    assert_blob_created(&resp, "app", &digest);
    assert_eq!(blob_bytes(&reg, "app", &digest).await, data);
    reg.assert_consistent().await;
}

#[tokio::test]
async fn cancelled_and_unknown_uploads() {
    let reg = TestRegistry::start().await;
    let location = reg.start_upload("app").await;
    let resp = reg
        .request(Method::PATCH, &location)
        .body(vec![1u8; 100])
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), 202);
    let resp = reg.delete(&location).await;
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.expect("body").is_empty());

    let digest = sha256(&[1u8; 100]);
    let err = assert_error(reg.get(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(
        err["detail"]["uuid"].as_str(),
        location.rsplit('/').next(),
        "{err}"
    );
    let resp = reg
        .request(Method::PATCH, &location)
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("PATCH");
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = reg
        .send(Method::PUT, &format!("{location}?digest={digest}"))
        .await;
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(reg.delete(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // Nothing of the cancelled upload became a blob.
    assert_error(
        reg.get(&format!("/v2/app/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;

    // Ids the registry never issued, including ones that try to leave the uploads directory.
    for id in [
        "not-a-session",
        "00000000-0000-0000-0000-000000000000",
        "..%2fmeta",
    ] {
        let path = format!("/v2/app/blobs/uploads/{id}");
        assert_error(reg.get(&path).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
        let resp = reg
            .send(Method::PUT, &format!("{path}?digest={}", sha256(b"")))
            .await;
        assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
    // A session of one repository is not reachable through another.
    let resp = reg.send(Method::POST, "/v2/one/blobs/uploads/").await;
    let id = header(&resp, "Docker-Upload-UUID").expect("uuid");
    assert_error(
        reg.get(&format!("/v2/two/blobs/uploads/{id}")).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_eq!(
        reg.get(&format!("/v2/one/blobs/uploads/{id}"))
            .await
            .status(),
        204
    );
    reg.assert_consistent().await;
}

#[tokio::test]
async fn wrong_and_malformed_digests() {
    let reg = TestRegistry::start().await;
    let data = b"the content".to_vec();

    // Single request with a digest of other bytes: 400, nothing stored.
    let wrong = sha256(b"something else");
    let resp = reg.post_blob("app", &wrong, &data).await;
    assert_error(resp, 400, "DIGEST_INVALID").await;
    assert_error(
        reg.get(&format!("/v2/app/blobs/{wrong}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    // Closing a session with a wrong digest: 400, and the session is gone with its bytes.
    let location = reg.start_upload("app").await;
    let resp = reg
        .request(Method::PUT, &format!("{location}?digest={wrong}"))
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_error(resp, 400, "DIGEST_INVALID").await;
    assert_error(
        reg.get(&format!("/v2/app/blobs/{wrong}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        reg.get(&format!("/v2/app/blobs/{}", sha256(&data))).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;

    // Malformed digests, in the query of both flavours: 400, never 500.
    for bad in [
        "sha256:xyz",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:",
        "nocolon",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ] {
        let resp = reg.post_blob("app", bad, &data).await;
        assert_error(resp, 400, "DIGEST_INVALID").await;
        let location = reg.start_upload("app").await;
        let resp = reg
            .request(Method::PUT, &format!("{location}?digest={bad}"))
            .body(data.clone())
            .send()
            .await
            .expect("PUT");
        assert_error(resp, 400, "DIGEST_INVALID").await;
        // The session survives a refused digest (its body unread) and can still complete.
        let resp = reg
            .request(Method::PUT, &format!("{location}?digest={}", sha256(&data)))
            .body(data.clone())
            .send()
            .await
            .expect("PUT");
        assert_eq!(resp.status(), 201, "{bad}");
    }
    // PUT without a digest.
    let location = reg.start_upload("app").await;
    let resp = reg
        .request(Method::PUT, &location)
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_error(resp, 400, "DIGEST_INVALID").await;
    reg.assert_consistent().await;
}

#[tokio::test]
async fn sha512_blobs_and_manifests() {
    let reg = TestRegistry::start().await;
    let layer = pseudo_random(100_000, 7);
    let layer_digest = sha512(&layer);
    reg.upload_as("app", &layer, &layer_digest).await;
    // Chunked, closed with a sha512 digest.
    let config = br#"{"architecture":"arm64","os":"linux"}"#.to_vec();
    let config_digest = sha512(&config);
    let location = reg.start_upload("app").await;
    let resp = reg
        .request(Method::PATCH, &location)
        .header("Content-Range", format!("0-{}", config.len() - 1))
        .body(config.clone())
        .send()
        .await
        .expect("PATCH");
    let location = header(&resp, "Location").expect("Location");
    let resp = reg
        .send(Method::PUT, &format!("{location}?digest={config_digest}"))
        .await;
    assert_blob_created(&resp, "app", &config_digest);
    for (digest, data) in [(&layer_digest, &layer), (&config_digest, &config)] {
        let resp = reg.get(&format!("/v2/app/blobs/{digest}")).await;
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(&resp.bytes().await.expect("body")[..], &data[..]);
    }
    let wrong = sha512(b"other");
    let resp = reg.post_blob("app", &wrong, &layer).await;
    assert_error(resp, 400, "DIGEST_INVALID").await;

    // A manifest over sha512 blobs, pushed and pulled by its sha512 digest.
    let manifest = oci_manifest(
        &config_digest,
        config.len(),
        &[(&layer_digest, layer.len())],
        None,
    );
    let digest = sha512(manifest.as_bytes());
    let resp = reg
        .put_manifest("app", &digest, OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(
        header(&resp, "Location"),
        Some(format!("/v2/app/manifests/{digest}"))
    );
    let resp = reg.get_manifest("app", &digest).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(resp.text().await.expect("body"), manifest);
    // Only under the algorithm it was pushed with.
    assert_error(
        reg.get_manifest("app", &sha256(manifest.as_bytes())).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // An index naming it by its sha512 digest.
    let index = index_manifest(OCI_INDEX, &[(OCI_MANIFEST, &digest, manifest.len())]);
    assert_eq!(
        reg.put_manifest("app", "multi", OCI_INDEX, &index)
            .await
            .status(),
        201
    );
    // A body that does not match the digest in the URL.
    let resp = reg
        .put_manifest("app", &sha512(b"other"), OCI_MANIFEST, &manifest)
        .await;
    assert_error(resp, 400, "DIGEST_INVALID").await;
    reg.assert_consistent().await;
}

/// The values of every `OCI-Tag` header of a response, split at commas.
fn oci_tags(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("OCI-Tag")
        .iter()
        .flat_map(|v| v.to_str().expect("ASCII").split(','))
        .map(|t| t.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn tags_as_parameters_of_a_manifest_push() {
    let reg = TestRegistry::start().await;
    let (image, digest) = reg.image_manifest("app", 1).await;
    // By digest, with tags (one repeated): all set in one push, each listed once.
    let resp = reg
        .put_manifest(
            "app",
            &format!("{digest}?tag=v1&tag=latest&tag=v1"),
            OCI_MANIFEST,
            &image,
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(oci_tags(&resp), ["v1", "latest"]);
    assert_eq!(reg.tags("app").await, ["latest", "v1"]);
    for tag in ["v1", "latest"] {
        let resp = reg.get_manifest("app", tag).await;
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str())
        );
    }
    // A tag set by a parameter moves like any other.
    let (other, other_digest) = reg.image_manifest("app", 2).await;
    let resp = reg
        .put_manifest("app", "next?tag=latest", OCI_MANIFEST, &other)
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(oci_tags(&resp), ["next", "latest"]);
    let resp = reg.get_manifest("app", "latest").await;
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(other_digest.as_str())
    );
    // Without parameters, no OCI-Tag.
    let resp = reg.put_manifest("app", "plain", OCI_MANIFEST, &image).await;
    assert_eq!(resp.status(), 201);
    assert!(oci_tags(&resp).is_empty());

    // A tag keeps the digest algorithm of the push by digest that set it.
    let manifest_512 = format!("{image}\n");
    let digest_512 = sha512(manifest_512.as_bytes());
    let resp = reg
        .put_manifest(
            "app",
            &format!("{digest_512}?tag=long"),
            OCI_MANIFEST,
            &manifest_512,
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(oci_tags(&resp), ["long"]);
    let resp = reg.get_manifest("app", "long").await;
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest_512.as_str())
    );
    assert_eq!(resp.text().await.expect("body"), manifest_512);

    // A malformed tag, or too many, refuse the whole push.
    let (third, third_digest) = reg.image_manifest("app", 3).await;
    let resp = reg
        .put_manifest(
            "app",
            &format!("{third_digest}?tag=ok&tag=-bad"),
            OCI_MANIFEST,
            &third,
        )
        .await;
    let error = assert_error(resp, 400, "MANIFEST_INVALID").await;
    assert_eq!(error["detail"]["tag"], "-bad");
    let many: String = (0..101).map(|n| format!("tag=t{n}&")).collect();
    let resp = reg
        .put_manifest(
            "app",
            &format!("{third_digest}?{many}"),
            OCI_MANIFEST,
            &third,
        )
        .await;
    assert_error(resp, 414, "UNSUPPORTED").await;
    assert_error(
        reg.get_manifest("app", &third_digest).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        reg.tags("app").await,
        ["latest", "long", "next", "plain", "v1"]
    );
    reg.assert_consistent().await;
}

#[tokio::test]
async fn cross_repository_mount() {
    let reg = TestRegistry::start().await;
    let data = b"shared layer".to_vec();
    let digest = reg.upload("source/app", &data).await;

    // Mounting an existing blob: 201 with its location, no upload.
    let resp = reg
        .send(
            Method::POST,
            &format!("/v2/target/app/blobs/uploads/?mount={digest}&from=source/app"),
        )
        .await;
    assert_blob_created(&resp, "target/app", &digest);
    assert_eq!(blob_bytes(&reg, "target/app", &digest).await, data);
    // Mounting what the repository already has is fine too.
    let resp = reg
        .send(
            Method::POST,
            &format!("/v2/target/app/blobs/uploads/?mount={digest}&from=source/app"),
        )
        .await;
    assert_eq!(resp.status(), 201);

    // Unknown blob, or not in the named repository: 202 and an upload session instead, which
    // works like any other.
    for query in [
        format!("mount={}&from=source/app", sha256(b"absent")),
        format!("mount={digest}&from=elsewhere"),
    ] {
        let resp = reg
            .send(Method::POST, &format!("/v2/third/blobs/uploads/?{query}"))
            .await;
        assert_eq!(resp.status(), 202, "{query}");
        let location = header(&resp, "Location").expect("Location");
        assert!(
            location.starts_with("/v2/third/blobs/uploads/"),
            "{location}"
        );
        assert!(header(&resp, "Docker-Upload-UUID").is_some());
        let resp = reg
            .request(Method::PUT, &format!("{location}?digest={digest}"))
            .body(data.clone())
            .send()
            .await
            .expect("PUT");
        assert_blob_created(&resp, "third", &digest);
    }
    let resp = reg
        .send(
            Method::POST,
            "/v2/fourth/blobs/uploads/?mount=sha256:bad&from=source/app",
        )
        .await;
    assert_error(resp, 400, "DIGEST_INVALID").await;
    let resp = reg
        .send(
            Method::POST,
            &format!("/v2/fourth/blobs/uploads/?mount={digest}&from=Bad..Name"),
        )
        .await;
    assert_error(resp, 400, "NAME_INVALID").await;
    // Neither refused mount linked anything.
    assert_error(
        reg.get(&format!("/v2/fourth/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    reg.assert_consistent().await;
}

#[tokio::test]
async fn manifests_of_every_type() {
    let reg = TestRegistry::start().await;

    // OCI image manifest, by tag.
    let (image, image_digest) = reg.image_manifest("app", 1).await;
    let resp = reg.put_manifest("app", "v1", OCI_MANIFEST, &image).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(image_digest.as_str())
    );
    assert_eq!(
        header(&resp, "Location"),
        Some(format!("/v2/app/manifests/{image_digest}"))
    );
    assert!(header(&resp, "OCI-Subject").is_none());

    // A second image by digest, then an OCI index over both.
    let (second, second_digest) = reg.image_manifest("app", 2).await;
    let resp = reg
        .put_manifest("app", &second_digest, OCI_MANIFEST, &second)
        .await;
    assert_eq!(resp.status(), 201);
    let index = index_manifest(
        OCI_INDEX,
        &[
            (OCI_MANIFEST, &image_digest, image.len()),
            (OCI_MANIFEST, &second_digest, second.len()),
        ],
    );
    let resp = reg.put_manifest("app", "multi", OCI_INDEX, &index).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "Docker-Content-Digest"),
        Some(sha256(index.as_bytes()))
    );

    // Docker schema2 manifest and manifest list.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = pseudo_random(5000, 3);
    let config_digest = reg.upload("docker/app", config).await;
    let layer_digest = reg.upload("docker/app", &layer).await;
    let docker = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"{DOCKER_LAYER}","size":{},"digest":"{layer_digest}"}}]}}"#,
        config.len(),
        layer.len()
    );
    let resp = reg
        .put_manifest("docker/app", "latest", DOCKER_MANIFEST, &docker)
        .await;
    assert_eq!(resp.status(), 201);
    let docker_digest = sha256(docker.as_bytes());
    let list = index_manifest(
        DOCKER_LIST,
        &[(DOCKER_MANIFEST, &docker_digest, docker.len())],
    );
    let resp = reg
        .put_manifest("docker/app", "list", DOCKER_LIST, &list)
        .await;
    assert_eq!(resp.status(), 201);

    // An OCI manifest without mediaType in the body, typed by its Content-Type, and an
    // artifact whose non-distributable layer the registry does not hold.
    let bare = image.replacen(&format!(r#""mediaType":"{OCI_MANIFEST}","#), "", 1);
    assert_ne!(bare, image);
    let resp = reg.put_manifest("app", "bare", OCI_MANIFEST, &bare).await;
    assert_eq!(resp.status(), 201);
    let empty = reg.upload("app", b"{}").await;
    let foreign = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"{}","size":9}}]}}"#,
        sha256(b"elsewhere")
    );
    assert_eq!(
        reg.put_manifest("app", "foreign", OCI_MANIFEST, &foreign)
            .await
            .status(),
        201
    );

    // Each is served as pushed, with its own media type.
    for (repo, reference, media_type, body) in [
        ("app", "v1", OCI_MANIFEST, &image),
        ("app", image_digest.as_str(), OCI_MANIFEST, &image),
        ("app", second_digest.as_str(), OCI_MANIFEST, &second),
        ("app", "multi", OCI_INDEX, &index),
        ("app", "bare", OCI_MANIFEST, &bare),
        ("app", "foreign", OCI_MANIFEST, &foreign),
        ("docker/app", "latest", DOCKER_MANIFEST, &docker),
        (
            "docker/app",
            docker_digest.as_str(),
            DOCKER_MANIFEST,
            &docker,
        ),
        ("docker/app", "list", DOCKER_LIST, &list),
    ] {
        let resp = reg.get_manifest(repo, reference).await;
        assert_eq!(resp.status(), 200, "{repo}:{reference}");
        assert_eq!(
            header(&resp, "Content-Type").as_deref(),
            Some(media_type),
            "{repo}:{reference}"
        );
        assert_eq!(
            header(&resp, "Docker-Content-Digest"),
            Some(sha256(body.as_bytes()))
        );
        assert_eq!(&resp.text().await.expect("body"), body);
    }
    // Re-tagging moves the tag.
    let resp = reg.put_manifest("app", "v1", OCI_MANIFEST, &second).await;
    assert_eq!(resp.status(), 201);
    let resp = reg.get_manifest("app", "v1").await;
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(second_digest.as_str())
    );
    reg.assert_consistent().await;
}

#[tokio::test]
async fn invalid_manifests_are_refused() {
    let reg = TestRegistry::start().await;
    let (image, image_digest) = reg.image_manifest("app", 1).await;
    let config_digest = reg.upload("app", b"{}").await;

    // A layer, or the config, the repository does not hold.
    let missing = sha256(b"no such blob");
    for manifest in [
        oci_manifest(&config_digest, 2, &[(&missing, 13)], None),
        oci_manifest(&missing, 13, &[], None),
    ] {
        let err = assert_error(
            reg.put_manifest("app", "v1", OCI_MANIFEST, &manifest).await,
            400,
            "MANIFEST_BLOB_UNKNOWN",
        )
        .await;
        assert_eq!(err["detail"]["digest"], missing);
    }
    // Blobs of another repository do not count.
    assert_error(
        reg.put_manifest("elsewhere", "v1", OCI_MANIFEST, &image)
            .await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    // An index whose child manifest was never pushed (its blobs were).
    let index = index_manifest(OCI_INDEX, &[(OCI_MANIFEST, &image_digest, image.len())]);
    let err = assert_error(
        reg.put_manifest("app", "idx", OCI_INDEX, &index).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(err["detail"]["digest"], image_digest);

    // Not JSON, not a manifest, a type that contradicts the body or is unknown.
    let bad_digest = image.replacen("sha256:", "sha256:zz", 1);
    for (media_type, body) in [
        (OCI_MANIFEST, "not json"),
        (OCI_MANIFEST, ""),
        (OCI_MANIFEST, "[]"),
        (OCI_MANIFEST, r#"{"schemaVersion":2}"#),
        (OCI_MANIFEST, r#"{"schemaVersion":1,"name":"x"}"#),
        (OCI_INDEX, image.as_str()),
        (DOCKER_MANIFEST, image.as_str()),
        ("application/json", image.as_str()),
        (OCI_MANIFEST, bad_digest.as_str()),
        (
            "application/vnd.example.unknown+json",
            r#"{"schemaVersion":2,"mediaType":"application/vnd.example.unknown+json"}"#,
        ),
        (
            OCI_MANIFEST,
            &format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
        ),
        (
            OCI_INDEX,
            &format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#),
        ),
    ] {
        assert_error(
            reg.put_manifest("app", "bad", media_type, body).await,
            400,
            "MANIFEST_INVALID",
        )
        .await;
    }
    // Bad names and tags.
    assert_error(
        reg.put_manifest("Bad/Name", "v1", OCI_MANIFEST, &image)
            .await,
        400,
        "NAME_INVALID",
    )
    .await;
    for tag in ["-dash", ".dot", &"t".repeat(129)] {
        let err = assert_error(
            reg.put_manifest("app", tag, OCI_MANIFEST, &image).await,
            400,
            "MANIFEST_INVALID",
        )
        .await;
        assert_eq!(err["detail"]["tag"], *tag);
    }
    // The longest tag the grammar allows is fine.
    let longest = "t".repeat(128);
    assert_eq!(
        reg.put_manifest("app", &longest, OCI_MANIFEST, &image)
            .await
            .status(),
        201
    );

    // None of the refused pushes was stored.
    assert_eq!(reg.tags("app").await, [longest]);
    assert_error(reg.get_manifest("app", "v1").await, 404, "MANIFEST_UNKNOWN").await;
    assert_error(
        reg.get_manifest("app", "bad").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        reg.get_manifest("elsewhere", "v1").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
    reg.assert_consistent().await;
}

#[tokio::test]
async fn manifest_over_the_limit() {
    let reg = TestRegistry::with_manifest_limit(1024).await;
    let (image, _) = reg.image_manifest("app", 1).await;
    assert!(image.len() < 1024);
    assert_eq!(
        reg.put_manifest("app", "small", OCI_MANIFEST, &image)
            .await
            .status(),
        201
    );
    let padding = "x".repeat(2000);
    let large = image.replacen(
        "\"layers\"",
        &format!(r#""annotations":{{"pad":"{padding}"}},"layers""#),
        1,
    );
    // Announced by Content-Length: refused before the body is read.
    let err = assert_error(
        reg.put_manifest("app", "large", OCI_MANIFEST, &large).await,
        413,
        "SIZE_INVALID",
    )
    .await;
    assert_eq!(err["detail"]["limit"], 1024);
    // Streamed without a length: refused once the limit is passed.
    let parts: Vec<Result<Vec<u8>, std::io::Error>> = large
        .as_bytes()
        .chunks(500)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let resp = reg
        .request(Method::PUT, "/v2/app/manifests/streamed")
        .header("Content-Type", OCI_MANIFEST)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            parts,
        )))
        .send()
        .await
        .expect("PUT");
    assert_error(resp, 413, "SIZE_INVALID").await;
    assert_eq!(reg.tags("app").await, ["small"]);
    let doc = json(reg.get("/v2/app/tags/list").await).await;
    assert_eq!(doc["tags"], serde_json::json!(["small"]));
    reg.assert_consistent().await;
}

#[tokio::test]
async fn a_read_only_registry_refuses_pushes() {
    let reg = TestRegistry::start_with(RegistryOptions {
        writable: false,
        ..RegistryOptions::default()
    })
    .await;
    let digest = sha256(b"data");
    let image = oci_manifest(&digest, 4, &[], None);
    for (method, path, allow) in [
        (Method::POST, "/v2/app/blobs/uploads/".to_owned(), ""),
        (
            Method::POST,
            format!("/v2/app/blobs/uploads/?digest={digest}"),
            "",
        ),
        (
            Method::POST,
            format!("/v2/app/blobs/uploads/?mount={digest}&from=other"),
            "",
        ),
        (
            Method::DELETE,
            format!("/v2/app/blobs/{digest}"),
            "GET, HEAD",
        ),
        (
            Method::DELETE,
            "/v2/app/manifests/v1".to_owned(),
            "GET, HEAD",
        ),
        (Method::PUT, "/v2/app/manifests/v1".to_owned(), "GET, HEAD"),
    ] {
        let resp = reg
            .request(method.clone(), &path)
            .header("Content-Type", OCI_MANIFEST)
            .body(image.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(
            header(&resp, "Allow").as_deref(),
            Some(allow),
            "{method} {path}"
        );
        let err = assert_error(resp, 405, "UNSUPPORTED").await;
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| m.contains("read-only")),
            "{err}"
        );
    }
    // Reads work, over nothing.
    assert_eq!(reg.get("/v2/").await.status(), 200);
    let doc = json(reg.get("/v2/_catalog").await).await;
    assert_eq!(doc["repositories"], serde_json::json!([]));
    assert_error(reg.get_manifest("app", "v1").await, 404, "NAME_UNKNOWN").await;
}
