//! Content discovery over the OCI Distribution API: tag lists and the catalog with `n`/`last`
//! pagination and `Link` headers, and the referrers API with its `artifactType` filter.

mod api_support;

use api_support::{
    assert_error, header, index_manifest, json, next_link, oci_manifest, sha256, sha512,
    TestRegistry, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST,
};

/// Follows `Link: <...>; rel="next"` from `first`; returns the pages' entries under `key`.
async fn follow_pages(reg: &TestRegistry, first: &str, key: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next {
        let resp = reg.get(&path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            header(&resp, "Content-Type").as_deref(),
            Some("application/json")
        );
        next = next_link(&resp);
        let doc = json(resp).await;
        pages.push(serde_json::from_value(doc[key].clone()).expect("entries"));
        assert!(pages.len() < 20, "pagination does not end");
    }
    pages
}

#[tokio::test]
async fn tags_paginate_with_link_headers() {
    let reg = TestRegistry::start().await;
    let (image, _) = reg.image_manifest("lib/app", 1).await;
    // Pushed out of order; listed lexically (byte order: upper case first).
    let tags = ["v2", "a", "B", "v10", "latest", "1.0"];
    for tag in tags {
        let resp = reg.put_manifest("lib/app", tag, OCI_MANIFEST, &image).await;
        assert_eq!(resp.status(), 201);
    }
    let sorted = ["1.0", "B", "a", "latest", "v10", "v2"];

    let resp = reg.get("/v2/lib/app/tags/list").await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "Link").is_none());
    assert_eq!(
        json(resp).await,
        serde_json::json!({"name": "lib/app", "tags": sorted})
    );

    let pages = follow_pages(&reg, "/v2/lib/app/tags/list?n=2", "tags").await;
    assert_eq!(
        pages,
        [vec!["1.0", "B"], vec!["a", "latest"], vec!["v10", "v2"]]
    );
    let resp = reg.get("/v2/lib/app/tags/list?n=2").await;
    assert_eq!(
        header(&resp, "Link").as_deref(),
        Some(r#"</v2/lib/app/tags/list?n=2&last=B>; rel="next""#)
    );
    // A page that ends exactly at the last tag has no Link.
    let resp = reg.get("/v2/lib/app/tags/list?n=2&last=latest").await;
    assert!(header(&resp, "Link").is_none());
    assert_eq!(json(resp).await["tags"], serde_json::json!(["v10", "v2"]));
    // `last` alone, `last` that is not a tag, `n` larger than the rest.
    for (query, expected) in [
        ("last=latest", vec!["v10", "v2"]),
        ("last=b", vec!["latest", "v10", "v2"]),
        ("n=100", sorted.to_vec()),
        ("n=100&last=v2", vec![]),
        ("n=0", vec![]),
    ] {
        let resp = reg.get(&format!("/v2/lib/app/tags/list?{query}")).await;
        assert_eq!(resp.status(), 200, "{query}");
        assert!(header(&resp, "Link").is_none(), "{query}");
        assert_eq!(
            json(resp).await["tags"],
            serde_json::json!(expected),
            "{query}"
        );
    }
    for bad in ["n=-1", "n=abc", "n=1.5"] {
        let err = assert_error(
            reg.get(&format!("/v2/lib/app/tags/list?{bad}")).await,
            400,
            "PAGINATION_NUMBER_INVALID",
        )
        .await;
        assert_eq!(err["detail"]["parameter"], "n");
    }
}

#[tokio::test]
async fn catalog_paginates_with_link_headers() {
    let reg = TestRegistry::start().await;
    // Nested names, a repository inside another's namespace, one with only a blob.
    for repo in ["zeta", "alpha/one", "alpha/two", "mid", "alpha"] {
        reg.push_image(repo, "v1", 2).await;
    }
    reg.upload("blobs/only", b"no manifest yet").await;
    let all = [
        "alpha",
        "alpha/one",
        "alpha/two",
        "blobs/only",
        "mid",
        "zeta",
    ];
    let resp = reg.get("/v2/_catalog").await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "Link").is_none());
    assert_eq!(json(resp).await, serde_json::json!({ "repositories": all }));

    let resp = reg.get("/v2/_catalog?n=3").await;
    assert_eq!(
        header(&resp, "Link").as_deref(),
        Some(r#"</v2/_catalog?n=3&last=alpha%2Ftwo>; rel="next""#)
    );
    let pages = follow_pages(&reg, "/v2/_catalog?n=4", "repositories").await;
    assert_eq!(pages, [all[..4].to_vec(), all[4..].to_vec()]);
    let pages = follow_pages(&reg, "/v2/_catalog?n=1", "repositories").await;
    assert_eq!(pages.concat(), all);
    assert_eq!(pages.len(), all.len());
    let resp = reg.get("/v2/_catalog?last=blobs%2Fonly").await;
    assert_eq!(
        json(resp).await["repositories"],
        serde_json::json!(["mid", "zeta"])
    );
    assert_error(
        reg.get("/v2/_catalog?n=x").await,
        400,
        "PAGINATION_NUMBER_INVALID",
    )
    .await;
    // A repository with blobs but no tags lists no tags, but exists.
    assert!(reg.tags("blobs/only").await.is_empty());
    // Parent namespaces that are not repositories are not listed and have no tags.
    reg.push_image("deep/nested/repo", "v1", 3).await;
    assert_error(reg.get("/v2/deep/tags/list").await, 404, "NAME_UNKNOWN").await;
    assert_error(
        reg.get("/v2/deep/nested/tags/list").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn empty_registry() {
    let reg = TestRegistry::start().await;
    let resp = reg.get("/v2/_catalog").await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "Link").is_none());
    assert_eq!(json(resp).await, serde_json::json!({"repositories": []}));
    let resp = reg.get("/v2/_catalog?n=10&last=x").await;
    assert_eq!(json(resp).await["repositories"], serde_json::json!([]));
    let err = assert_error(reg.get("/v2/app/tags/list").await, 404, "NAME_UNKNOWN").await;
    assert_eq!(err["detail"]["name"], "app");
    // Referrers never 404 (the spec reserves 404 for registries without the API).
    let resp = reg
        .get(&format!("/v2/app/referrers/{}", sha256(b"x")))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        json(resp).await,
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    );
    reg.assert_consistent().await;
}

#[tokio::test]
async fn referrers() {
    let reg = TestRegistry::start().await;
    let (image, subject) = reg.push_image("app", "v1", 1).await;
    let empty = reg.upload("app", b"{}").await;

    // A signature and an SBOM about the image, pushed by digest; and an artifact whose type
    // comes from its config (no artifactType).
    let mut pushed = Vec::new();
    for (artifact_type, seed) in [
        (Some("application/vnd.example.signature"), 1u8),
        (Some("application/vnd.example.sbom"), 2),
        (None, 3),
    ] {
        let blob = reg.upload("app", &[seed; 32]).await;
        let artifact = artifact_type
            .map(|t| format!(r#""artifactType":"{t}","#))
            .unwrap_or_default();
        let manifest = oci_manifest(
            &empty,
            2,
            &[(&blob, 32)],
            Some(&format!(
                r#"{artifact}"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{}}},"annotations":{{"org.example.seed":"{seed}"}}"#,
                image.len()
            )),
        );
        let digest = sha256(manifest.as_bytes());
        let resp = reg
            .put_manifest("app", &digest, OCI_MANIFEST, &manifest)
            .await;
        assert_eq!(resp.status(), 201);
        assert_eq!(
            header(&resp, "OCI-Subject").as_deref(),
            Some(subject.as_str())
        );
        let artifact_type = artifact_type.unwrap_or("application/vnd.oci.image.config.v1+json");
        pushed.push((artifact_type.to_owned(), digest, manifest.len(), seed));
    }
    // An index with a subject and no artifactType: listed without one.
    let index = index_manifest(OCI_INDEX, &[(OCI_MANIFEST, &subject, image.len())]).replacen(
        r#""manifests""#,
        &format!(
            r#""subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{}}},"manifests""#,
            image.len()
        ),
        1,
    );
    let resp = reg.put_manifest("app", "index", OCI_INDEX, &index).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "OCI-Subject").as_deref(),
        Some(subject.as_str())
    );
    // A manifest without subject gets no OCI-Subject header and is no referrer.
    let resp = reg.put_manifest("app", "plain", OCI_MANIFEST, &image).await;
    assert!(header(&resp, "OCI-Subject").is_none());
    // A referrer in another repository is not listed here.
    reg.upload("other", b"{}").await;
    let elsewhere = oci_manifest(
        &empty,
        2,
        &[],
        Some(&format!(
            r#""subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":1}}"#
        )),
    );
    assert_eq!(
        reg.put_manifest("other", "x", OCI_MANIFEST, &elsewhere)
            .await
            .status(),
        201
    );

    let resp = reg.get(&format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "Content-Type").as_deref(), Some(OCI_INDEX));
    assert!(header(&resp, "OCI-Filters-Applied").is_none());
    let doc = json(resp).await;
    assert_eq!(doc["schemaVersion"], 2);
    assert_eq!(doc["mediaType"], OCI_INDEX);
    let listed = doc["manifests"].as_array().expect("manifests");
    assert_eq!(listed.len(), 4, "{doc}");
    for (artifact_type, digest, size, seed) in &pushed {
        let d = listed
            .iter()
            .find(|d| d["digest"] == digest.as_str())
            .unwrap_or_else(|| panic!("{digest} not listed: {doc}"));
        assert_eq!(d["mediaType"], OCI_MANIFEST);
        assert_eq!(d["artifactType"], artifact_type.as_str());
        assert_eq!(d["size"], *size);
        assert_eq!(d["annotations"]["org.example.seed"], seed.to_string());
    }
    let d = listed
        .iter()
        .find(|d| d["digest"] == sha256(index.as_bytes()).as_str())
        .expect("the index is listed");
    assert_eq!(d["mediaType"], OCI_INDEX);
    assert_eq!(d["size"], index.len());
    assert!(d.get("artifactType").is_none(), "{d}");

    // Filtered by artifactType.
    let resp = reg
        .get(&format!(
            "/v2/app/referrers/{subject}?artifactType=application/vnd.example.sbom"
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "OCI-Filters-Applied").as_deref(),
        Some("artifactType")
    );
    let doc = json(resp).await;
    assert_eq!(doc["manifests"].as_array().map(Vec::len), Some(1), "{doc}");
    assert_eq!(doc["manifests"][0]["digest"], pushed[1].1.as_str());
    let resp = reg
        .get(&format!(
            "/v2/app/referrers/{subject}?artifactType=application%2Fvnd.example.none"
        ))
        .await;
    assert_eq!(
        header(&resp, "OCI-Filters-Applied").as_deref(),
        Some("artifactType")
    );
    assert_eq!(json(resp).await["manifests"], serde_json::json!([]));

    // Unknown subject, unknown repository: an empty index. Malformed digest: 400.
    for path in [
        format!("/v2/app/referrers/{}", sha256(b"nothing refers to this")),
        format!("/v2/app/referrers/{}", sha512(b"nothing refers to this")),
        format!("/v2/nope/referrers/{subject}"),
    ] {
        let resp = reg.get(&path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(header(&resp, "Content-Type").as_deref(), Some(OCI_INDEX));
        assert_eq!(json(resp).await["manifests"], serde_json::json!([]));
    }
    for bad in ["sha256:nope", "latest"] {
        assert_error(
            reg.get(&format!("/v2/app/referrers/{bad}")).await,
            400,
            "DIGEST_INVALID",
        )
        .await;
    }

    // Deleting a referrer removes it from the list.
    let resp = reg
        .delete(&format!("/v2/app/manifests/{}", pushed[0].1))
        .await;
    assert_eq!(resp.status(), 202);
    let doc = json(reg.get(&format!("/v2/app/referrers/{subject}")).await).await;
    let digests: Vec<&str> = doc["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|d| d["digest"].as_str())
        .collect();
    assert_eq!(digests.len(), 3, "{doc}");
    assert!(!digests.contains(&pushed[0].1.as_str()));
    reg.assert_consistent().await;
}

#[tokio::test]
async fn referrers_before_their_subject() {
    let reg = TestRegistry::start().await;
    // The spec lets a manifest name a subject the registry does not hold (yet).
    let empty = reg.upload("app", b"{}").await;
    let absent = sha256(b"pushed later");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.sig","config":{{"mediaType":"{OCI_EMPTY}","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{absent}","size":99}}}}"#
    );
    let resp = reg
        .put_manifest("app", "sig", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "OCI-Subject").as_deref(),
        Some(absent.as_str())
    );
    let doc = json(reg.get(&format!("/v2/app/referrers/{absent}")).await).await;
    assert_eq!(doc["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(doc["manifests"][0]["digest"], sha256(manifest.as_bytes()));
    assert_eq!(
        doc["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    // A subject with a malformed digest is an invalid manifest.
    let bad = manifest.replace(&absent, "sha256:zz");
    assert_error(
        reg.put_manifest("app", "bad", OCI_MANIFEST, &bad).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    reg.assert_consistent().await;
}
