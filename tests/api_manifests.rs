//! The OCI Distribution API's manifest, tag, catalog and referrers endpoints over raw HTTP.

mod common;

use common::api::{
    assert_error, header, oci_manifest, Api, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LIST,
    DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use common::{sha256, sha512, TestNode};

fn node_check(mut node: TestNode) {
    let (ok, report) = node.check();
    assert!(ok, "{report}");
}

#[tokio::test]
async fn manifests_of_every_type_round_trip() {
    let node = TestNode::start();
    let api = Api::new(&node);

    // OCI image manifest, by tag.
    let (image, image_digest) = api.image_manifest("app", 1).await;
    let resp = api.put_manifest("app", "v1", OCI_MANIFEST, &image).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(image_digest.as_str())
    );
    assert_eq!(
        header(&resp, "Location").as_deref(),
        Some(format!("/v2/app/manifests/{image_digest}").as_str())
    );
    for reference in ["v1", image_digest.as_str()] {
        let resp = api.get_manifest("app", reference).await;
        assert_eq!(resp.status(), 200, "{reference}");
        assert_eq!(header(&resp, "Content-Type").as_deref(), Some(OCI_MANIFEST));
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(image_digest.as_str())
        );
        assert_eq!(
            header(&resp, "Content-Length"),
            Some(image.len().to_string())
        );
        assert_eq!(resp.text().await.expect("body"), image);
        let resp = api.head(&format!("/v2/app/manifests/{reference}")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "Content-Length"),
            Some(image.len().to_string())
        );
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(image_digest.as_str())
        );
    }

    // OCI index over it and a second image, pushed by digest first.
    let (second, second_digest) = api.image_manifest("app", 2).await;
    let resp = api
        .put_manifest("app", &second_digest, OCI_MANIFEST, &second)
        .await;
    assert_eq!(resp.status(), 201);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{image_digest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{second_digest}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        image.len(),
        second.len()
    );
    let resp = api.put_manifest("app", "multi", OCI_INDEX, &index).await;
    assert_eq!(resp.status(), 201);
    let resp = api.get_manifest("app", "multi").await;
    assert_eq!(header(&resp, "Content-Type").as_deref(), Some(OCI_INDEX));
    assert_eq!(resp.text().await.expect("body"), index);

    // Docker schema2 manifest and manifest list.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = common::pseudo_random(5000, 3);
    let config_digest = api.upload("docker/app", config).await;
    let layer_digest = api.upload("docker/app", &layer).await;
    let docker = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"{DOCKER_LAYER}","size":{},"digest":"{layer_digest}"}}]}}"#,
        config.len(),
        layer.len()
    );
    let resp = api
        .put_manifest("docker/app", "latest", DOCKER_MANIFEST, &docker)
        .await;
    assert_eq!(resp.status(), 201);
    let docker_digest = sha256(docker.as_bytes());
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","size":{},"digest":"{docker_digest}","platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        docker.len()
    );
    let resp = api
        .put_manifest("docker/app", "list", DOCKER_LIST, &list)
        .await;
    assert_eq!(resp.status(), 201);
    for (reference, media_type, body) in [
        ("latest", DOCKER_MANIFEST, &docker),
        ("list", DOCKER_LIST, &list),
    ] {
        let resp = api.get_manifest("docker/app", reference).await;
        assert_eq!(header(&resp, "Content-Type").as_deref(), Some(media_type));
        assert_eq!(&resp.text().await.expect("body"), body);
    }

    // Restarted, every tag is still there.
    let mut node = node;
    node.restart();
    let api = Api::new(&node);
    for (repo, tag) in [
        ("app", "v1"),
        ("app", "multi"),
        ("docker/app", "latest"),
        ("docker/app", "list"),
    ] {
        assert_eq!(
            api.get_manifest(repo, tag).await.status(),
            200,
            "{repo}:{tag}"
        );
    }
    node_check(node);
}

#[tokio::test]
async fn manifests_by_sha512_digest() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let (image, _) = api.image_manifest("app", 5).await;
    let digest = sha512(image.as_bytes());
    let resp = api.put_manifest("app", &digest, OCI_MANIFEST, &image).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let resp = api.get_manifest("app", &digest).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(resp.text().await.expect("body"), image);
    // A body that does not match the digest in the URL.
    let resp = api
        .put_manifest("app", &sha512(b"other"), OCI_MANIFEST, &image)
        .await;
    assert_error(resp, 400, "DIGEST_INVALID").await;
    node_check(node);
}

#[tokio::test]
async fn invalid_manifests_are_refused() {
    let node = TestNode::start_with(&["--max-manifest-bytes", "4096"]);
    let api = Api::new(&node);
    let (image, _) = api.image_manifest("app", 1).await;

    // A layer the repository does not hold.
    let missing = oci_manifest(
        &sha256(b"config"),
        6,
        &[(&sha256(b"no such layer"), 13)],
        None,
    );
    assert_error(
        api.put_manifest("app", "v1", OCI_MANIFEST, &missing).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    // Blobs of another repository do not count.
    assert_error(
        api.put_manifest("elsewhere", "v1", OCI_MANIFEST, &image)
            .await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    // An index whose child manifest was never pushed.
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":10}}]}}"#,
        sha256(b"no such manifest")
    );
    assert_error(
        api.put_manifest("app", "idx", OCI_INDEX, &index).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    // Not JSON, not a manifest, a type that contradicts the body.
    for (media_type, body) in [
        (OCI_MANIFEST, "not json"),
        (OCI_MANIFEST, r#"{"schemaVersion":2}"#),
        (OCI_MANIFEST, r#"{"schemaVersion":1,"name":"x"}"#),
        (OCI_INDEX, image.as_str()),
    ] {
        assert_error(
            api.put_manifest("app", "bad", media_type, body).await,
            400,
            "MANIFEST_INVALID",
        )
        .await;
    }
    // Larger than the configured cap.
    let padding = "x".repeat(5000);
    let large = oci_manifest(
        &sha256(b"c"),
        1,
        &[],
        Some(&format!(r#""annotations":{{"pad":"{padding}"}}"#)),
    );
    assert_error(
        api.put_manifest("app", "large", OCI_MANIFEST, &large).await,
        413,
        "SIZE_INVALID",
    )
    .await;
    // Bad names and tags.
    assert_error(
        api.put_manifest("Bad/Name", "v1", OCI_MANIFEST, &image)
            .await,
        400,
        "NAME_INVALID",
    )
    .await;
    assert_error(
        api.put_manifest("app", "-dash", OCI_MANIFEST, &image).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    assert_error(
        api.put_manifest("app", &"t".repeat(129), OCI_MANIFEST, &image)
            .await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    // None of these was stored: the repository holds only the blobs uploaded above.
    let doc: serde_json::Value = api
        .get("/v2/app/tags/list")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["tags"], serde_json::json!([]));
    assert_error(api.get_manifest("app", "v1").await, 404, "MANIFEST_UNKNOWN").await;
    assert_error(
        api.get_manifest("elsewhere", "v1").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
    node_check(node);
}

#[tokio::test]
async fn unknown_manifests() {
    let node = TestNode::start();
    let api = Api::new(&node);
    api.push_image("app", "v1", 1).await;
    assert_error(api.get_manifest("app", "v2").await, 404, "MANIFEST_UNKNOWN").await;
    assert_error(
        api.get_manifest("app", &sha256(b"x")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(api.get_manifest("nope", "v1").await, 404, "NAME_UNKNOWN").await;
    assert_error(
        api.get_manifest("app", "sha256:zzz").await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    let resp = api.head("/v2/app/manifests/v2").await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn tags_and_catalog_paginate() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let (image, _) = api.image_manifest("lib/app", 1).await;
    let tags = ["a", "b", "c", "d", "e"];
    for tag in tags {
        assert_eq!(
            api.put_manifest("lib/app", tag, OCI_MANIFEST, &image)
                .await
                .status(),
            201
        );
    }
    let resp = api.get("/v2/lib/app/tags/list").await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "Link").is_none());
    let doc: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(doc, serde_json::json!({"name": "lib/app", "tags": tags}));

    // Follow the Link headers two at a time.
    let mut seen = Vec::new();
    let mut next = Some("/v2/lib/app/tags/list?n=2".to_owned());
    while let Some(path) = next {
        let resp = api.get(&path).await;
        assert_eq!(resp.status(), 200);
        next = header(&resp, "Link").map(|link| {
            assert!(link.ends_with(r#">; rel="next""#), "{link}");
            link[1..link.find('>').expect("<...>")].to_owned()
        });
        let doc: serde_json::Value = resp.json().await.expect("JSON");
        let page: Vec<String> = serde_json::from_value(doc["tags"].clone()).expect("tags");
        assert!(page.len() <= 2);
        seen.extend(page);
    }
    assert_eq!(seen, tags);
    let doc: serde_json::Value = api
        .get("/v2/lib/app/tags/list?last=c")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["tags"], serde_json::json!(["d", "e"]));
    let doc: serde_json::Value = api
        .get("/v2/lib/app/tags/list?n=0")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["tags"], serde_json::json!([]));
    assert_error(
        api.get("/v2/lib/app/tags/list?n=-1").await,
        400,
        "PAGINATION_NUMBER_INVALID",
    )
    .await;

    for repo in ["zeta", "alpha/one", "alpha/two", "mid"] {
        api.push_image(repo, "v1", 2).await;
    }
    let doc: serde_json::Value = api.get("/v2/_catalog").await.json().await.expect("JSON");
    assert_eq!(
        doc["repositories"],
        serde_json::json!(["alpha/one", "alpha/two", "lib/app", "mid", "zeta"])
    );
    let resp = api.get("/v2/_catalog?n=3").await;
    let link = header(&resp, "Link").expect("Link");
    assert_eq!(link, r#"</v2/_catalog?n=3&last=lib%2Fapp>; rel="next""#);
    let doc: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(
        doc["repositories"],
        serde_json::json!(["alpha/one", "alpha/two", "lib/app"])
    );
    let resp = api.get("/v2/_catalog?n=3&last=lib%2Fapp").await;
    assert!(header(&resp, "Link").is_none());
    let doc: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(doc["repositories"], serde_json::json!(["mid", "zeta"]));
}

#[tokio::test]
async fn empty_registry_lists_nothing() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let doc: serde_json::Value = api.get("/v2/_catalog").await.json().await.expect("JSON");
    assert_eq!(doc["repositories"], serde_json::json!([]));
}

#[tokio::test]
async fn referrers_and_subject() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let (image, subject) = api.image_manifest("app", 1).await;
    assert_eq!(
        api.put_manifest("app", "v1", OCI_MANIFEST, &image)
            .await
            .status(),
        201
    );

    // Two artifacts about the image: a signature and an SBOM.
    let empty = api.upload("app", b"{}").await;
    let mut referrers = Vec::new();
    for (artifact_type, seed) in [
        ("application/vnd.example.signature", 1u8),
        ("application/vnd.example.sbom", 2),
    ] {
        let blob = api.upload("app", &[seed; 32]).await;
        let manifest = oci_manifest(
            &empty,
            2,
            &[(&blob, 32)],
            Some(&format!(
                r#""artifactType":"{artifact_type}","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{}}},"annotations":{{"seed":"{seed}"}}"#,
                image.len()
            )),
        );
        let digest = sha256(manifest.as_bytes());
        let resp = api
            .put_manifest("app", &digest, OCI_MANIFEST, &manifest)
            .await;
        assert_eq!(resp.status(), 201);
        assert_eq!(
            header(&resp, "OCI-Subject").as_deref(),
            Some(subject.as_str())
        );
        referrers.push((artifact_type, digest, manifest.len()));
    }
    // A manifest without subject gets no OCI-Subject header.
    let resp = api.put_manifest("app", "plain", OCI_MANIFEST, &image).await;
    assert!(header(&resp, "OCI-Subject").is_none());

    let resp = api.get(&format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "Content-Type").as_deref(), Some(OCI_INDEX));
    assert!(header(&resp, "OCI-Filters-Applied").is_none());
    let doc: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(doc["schemaVersion"], 2);
    assert_eq!(doc["mediaType"], OCI_INDEX);
    let mut listed: Vec<(String, String, u64)> = doc["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|d| {
            assert_eq!(d["mediaType"], OCI_MANIFEST);
            (
                d["artifactType"].as_str().expect("artifactType").to_owned(),
                d["digest"].as_str().expect("digest").to_owned(),
                d["size"].as_u64().expect("size"),
            )
        })
        .collect();
    listed.sort();
    let mut expected: Vec<(String, String, u64)> = referrers
        .iter()
        .map(|(t, d, s)| (t.to_string(), d.clone(), *s as u64))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);

    let resp = api
        .get(&format!(
            "/v2/app/referrers/{subject}?artifactType=application/vnd.example.sbom"
        ))
        .await;
    assert_eq!(
        header(&resp, "OCI-Filters-Applied").as_deref(),
        Some("artifactType")
    );
    let doc: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(doc["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(doc["manifests"][0]["digest"], referrers[1].1.as_str());

    // Unknown subject: an empty index. Malformed digest: 400.
    let doc: serde_json::Value = api
        .get(&format!(
            "/v2/app/referrers/{}",
            sha256(b"nothing refers to this")
        ))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["manifests"], serde_json::json!([]));
    assert_error(
        api.get("/v2/app/referrers/sha256:nope").await,
        400,
        "DIGEST_INVALID",
    )
    .await;

    // Deleting a referrer removes it from the list.
    let resp = api
        .delete(&format!("/v2/app/manifests/{}", referrers[0].1))
        .await;
    assert_eq!(resp.status(), 202);
    let doc: serde_json::Value = api
        .get(&format!("/v2/app/referrers/{subject}"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["manifests"].as_array().map(Vec::len), Some(1));
    node_check(node);
}

#[tokio::test]
async fn deleting_tags_and_manifests() {
    let node = TestNode::start();
    let api = Api::new(&node);
    let (image, digest) = api.image_manifest("app", 1).await;
    for tag in ["v1", "latest"] {
        assert_eq!(
            api.put_manifest("app", tag, OCI_MANIFEST, &image)
                .await
                .status(),
            201
        );
    }
    // Deleting a tag keeps the manifest and the other tag.
    assert_eq!(api.delete("/v2/app/manifests/latest").await.status(), 202);
    assert_error(
        api.get_manifest("app", "latest").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(api.get_manifest("app", &digest).await.status(), 200);
    assert_eq!(api.get_manifest("app", "v1").await.status(), 200);
    let doc: serde_json::Value = api
        .get("/v2/app/tags/list")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["tags"], serde_json::json!(["v1"]));
    assert_error(
        api.delete("/v2/app/manifests/latest").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;

    // Deleting by digest removes the manifest and every tag pointing at it.
    assert_eq!(
        api.delete(&format!("/v2/app/manifests/{digest}"))
            .await
            .status(),
        202
    );
    assert_error(
        api.get_manifest("app", &digest).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(api.get_manifest("app", "v1").await, 404, "MANIFEST_UNKNOWN").await;
    assert_error(
        api.delete(&format!("/v2/app/manifests/{digest}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    node_check(node);
}
