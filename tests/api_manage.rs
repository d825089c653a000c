//! Content management over the OCI Distribution API (deleting manifests, tags and blobs),
//! concurrent uploads and pulls, and a registry reopened on its data directory.

mod api_support;

use std::time::Duration;

use api_support::{
    assert_error, header, pseudo_random, sha256, TestRegistry, OCI_INDEX, OCI_MANIFEST,
};
use reqwest::Method;

#[tokio::test]
async fn deleting_a_manifest_by_digest() {
    let reg = TestRegistry::start().await;
    let (image, digest) = reg.image_manifest("app", 1).await;
    let (other, other_digest) = reg.image_manifest("app", 2).await;
    // `old` pointed at the image before it moved to the other manifest: its history names the
    // image, its current link does not.
    for (tag, body) in [
        ("v1", &image),
        ("latest", &image),
        ("old", &image),
        ("old", &other),
        ("keep", &other),
    ] {
        let resp = reg.put_manifest("app", tag, OCI_MANIFEST, body).await;
        assert_eq!(resp.status(), 201);
    }
    let resp = reg.delete(&format!("/v2/app/manifests/{digest}")).await;
    assert_eq!(resp.status(), 202);
    assert!(resp.bytes().await.expect("body").is_empty());

    assert_error(
        reg.get_manifest("app", &digest).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        reg.head(&format!("/v2/app/manifests/{digest}"))
            .await
            .status(),
        404
    );
    // The tags pointing at it went with it; the others stay.
    assert_error(reg.get_manifest("app", "v1").await, 404, "MANIFEST_UNKNOWN").await;
    assert_error(
        reg.get_manifest("app", "latest").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(reg.tags("app").await, ["keep", "old"]);
    for tag in ["old", "keep", other_digest.as_str()] {
        let resp = reg.get_manifest("app", tag).await;
        assert_eq!(resp.status(), 200, "{tag}");
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(other_digest.as_str())
        );
    }
    // Its blobs stay in the repository: other manifests may use them.
    let doc: serde_json::Value = serde_json::from_str(&image).expect("JSON");
    let layer = doc["layers"][0]["digest"].as_str().expect("layer");
    assert_eq!(
        reg.get(&format!("/v2/app/blobs/{layer}")).await.status(),
        200
    );

    // Deleting it again, or in a repository that does not have it: 404.
    assert_error(
        reg.delete(&format!("/v2/app/manifests/{digest}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        reg.delete(&format!("/v2/nope/manifests/{other_digest}"))
            .await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // Pushed again, it is back.
    let resp = reg.put_manifest("app", "v1", OCI_MANIFEST, &image).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(reg.get_manifest("app", &digest).await.status(), 200);
    reg.assert_consistent().await;
}

#[tokio::test]
async fn deleting_a_tag_keeps_the_manifest() {
    let reg = TestRegistry::start().await;
    let (image, digest) = reg.image_manifest("app", 1).await;
    for tag in ["v1", "latest"] {
        let resp = reg.put_manifest("app", tag, OCI_MANIFEST, &image).await;
        assert_eq!(resp.status(), 201);
    }
    // An index over it, which must keep working when a tag of its child goes.
    let index = api_support::index_manifest(OCI_INDEX, &[(OCI_MANIFEST, &digest, image.len())]);
    let resp = reg.put_manifest("app", "multi", OCI_INDEX, &index).await;
    assert_eq!(resp.status(), 201);

    let resp = reg.delete("/v2/app/manifests/latest").await;
    assert_eq!(resp.status(), 202);
    assert_error(
        reg.get_manifest("app", "latest").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    for reference in [digest.as_str(), "v1", "multi"] {
        assert_eq!(
            reg.get_manifest("app", reference).await.status(),
            200,
            "{reference}"
        );
    }
    assert_eq!(reg.tags("app").await, ["multi", "v1"]);
    assert_error(
        reg.delete("/v2/app/manifests/latest").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // No manifest can have a name that is not a tag (as the reference registry answers).
    assert_error(
        reg.delete("/v2/app/manifests/-bad").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // Deleting every tag leaves the repository and its manifests in place.
    for tag in ["v1", "multi"] {
        assert_eq!(
            reg.delete(&format!("/v2/app/manifests/{tag}"))
                .await
                .status(),
            202
        );
    }
    assert!(reg.tags("app").await.is_empty());
    assert_eq!(reg.get_manifest("app", &digest).await.status(), 200);
    reg.assert_consistent().await;
}

#[tokio::test]
async fn deleting_blobs() {
    let reg = TestRegistry::start().await;
    let digest = reg.upload("app", b"to be deleted").await;
    let kept = reg.upload("other", b"to be deleted").await;
    assert_eq!(digest, kept);
    reg.upload("app", b"stays").await;

    let resp = reg.delete(&format!("/v2/app/blobs/{digest}")).await;
    assert_eq!(resp.status(), 202);
    assert!(resp.bytes().await.expect("body").is_empty());
    assert_error(
        reg.get(&format!("/v2/app/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(
        reg.head(&format!("/v2/app/blobs/{digest}")).await.status(),
        404
    );
    assert_error(
        reg.delete(&format!("/v2/app/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        reg.delete(&format!("/v2/nope/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        reg.delete("/v2/app/blobs/sha256:bad").await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    // The same bytes linked into another repository stay there.
    let resp = reg.get(&format!("/v2/other/blobs/{kept}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.expect("body")[..], b"to be deleted");
    // A manifest can no longer use the deleted blob in that repository.
    let config = reg.upload("app", b"{}").await;
    let manifest = api_support::oci_manifest(&config, 2, &[(&digest, 13)], None);
    assert_error(
        reg.put_manifest("app", "v1", OCI_MANIFEST, &manifest).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    // Uploaded again, it is back.
    reg.upload("app", b"to be deleted").await;
    assert_eq!(
        reg.get(&format!("/v2/app/blobs/{digest}")).await.status(),
        200
    );
    reg.assert_consistent().await;
}

/// A request body fed by the test, chunk by chunk, through the returned sender.
fn fed_body() -> (tokio::sync::mpsc::Sender<Vec<u8>>, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    (tx, reqwest::Body::wrap_stream(stream))
}

#[tokio::test]
async fn uploads_and_pulls_run_concurrently() {
    let reg = TestRegistry::start().await;
    let (image, _) = reg.push_image("app", "before", 1).await;
    let small = reg.upload("app", b"already here").await;

    // A slow single-request upload and a slow PATCH, both to the same repository, held open
    // mid-body while everything else goes on.
    let big = pseudo_random(3 << 20, 9);
    let big_digest = sha256(&big);
    let (slow_post_tx, slow_post_body) = fed_body();
    let slow_post = tokio::spawn(
        reg.request(
            Method::POST,
            &format!("/v2/app/blobs/uploads/?digest={big_digest}"),
        )
        .body(slow_post_body)
        .send(),
    );
    let chunked = pseudo_random(2 << 20, 10);
    let chunked_digest = sha256(&chunked);
    let location = reg.start_upload("app").await;
    let (slow_patch_tx, slow_patch_body) = fed_body();
    let slow_patch = tokio::spawn(
        reg.request(Method::PATCH, &location)
            .body(slow_patch_body)
            .send(),
    );
    slow_post_tx
        .send(big[..1000].to_vec())
        .await
        .expect("first part");
    slow_patch_tx
        .send(chunked[..5000].to_vec())
        .await
        .expect("first part");

    // Meanwhile: two uploads in parallel, pulls of what is there, two manifest pushes, and
    // another session.
    let a = pseudo_random(500_000, 11);
    let b = pseudo_random(600_000, 12);
    let (da, db) = tokio::join!(reg.upload("app", &a), reg.upload("app", &b));
    for (digest, data) in [(&da, &a), (&db, &b)] {
        let resp = reg.get(&format!("/v2/app/blobs/{digest}")).await;
        assert_eq!(&resp.bytes().await.expect("body")[..], &data[..]);
    }
    assert_eq!(
        reg.get(&format!("/v2/app/blobs/{small}")).await.status(),
        200
    );
    let resp = reg.get_manifest("app", "before").await;
    assert_eq!(resp.text().await.expect("body"), image);
    let (pushed_a, pushed_b) = tokio::join!(
        reg.push_image("app", "during-a", 2),
        reg.push_image("app", "during-b", 3)
    );
    assert_ne!(pushed_a.1, pushed_b.1);
    let resp = reg
        .get_range(&format!("/v2/app/blobs/{da}"), "bytes=100-199")
        .await;
    assert_eq!(&resp.bytes().await.expect("body")[..], &a[100..200]);
    let other_session = reg.start_upload("app").await;
    let resp = tokio::time::timeout(Duration::from_secs(5), reg.get(&other_session))
        .await
        .expect("a session does not wait for another one's writer");
    assert_eq!(resp.status(), 204);
    assert!(!slow_post.is_finished() && !slow_patch.is_finished());

    // The slow requests finish, and their blobs are whole.
    slow_post_tx.send(big[1000..].to_vec()).await.expect("rest");
    drop(slow_post_tx);
    slow_patch_tx
        .send(chunked[5000..].to_vec())
        .await
        .expect("rest");
    drop(slow_patch_tx);
    let resp = slow_post.await.expect("task").expect("slow POST");
    assert_eq!(resp.status(), 201);
    let resp = slow_patch.await.expect("task").expect("slow PATCH");
    assert_eq!(resp.status(), 202);
    assert_eq!(
        header(&resp, "Range"),
        Some(format!("0-{}", chunked.len() - 1))
    );
    let location = header(&resp, "Location").expect("Location");
    let resp = reg
        .send(Method::PUT, &format!("{location}?digest={chunked_digest}"))
        .await;
    assert_eq!(resp.status(), 201);
    for (digest, data) in [(&big_digest, &big), (&chunked_digest, &chunked)] {
        let resp = reg.get(&format!("/v2/app/blobs/{digest}")).await;
        assert_eq!(&resp.bytes().await.expect("body")[..], &data[..]);
    }
    assert_eq!(reg.tags("app").await, ["before", "during-a", "during-b"]);
    reg.assert_consistent().await;
}

#[tokio::test]
async fn a_reopened_registry_keeps_everything() {
    let mut reg = TestRegistry::start().await;
    let mut tagged = Vec::new();
    for (repo, tag, seed) in [
        ("app", "v1", 1),
        ("app", "v2", 2),
        ("lib/tool", "latest", 3),
        ("lib/tool", "1.0", 3),
    ] {
        let (_, digest) = reg.push_image(repo, tag, seed).await;
        tagged.push((repo, tag, digest));
    }
    let deleted = reg.push_image("app", "gone", 4).await.1;
    assert_eq!(
        reg.delete(&format!("/v2/app/manifests/{deleted}"))
            .await
            .status(),
        202
    );
    // An upload in progress survives too: sessions are local state, kept on disk.
    let data = pseudo_random(10_000, 5);
    let location = reg.start_upload("app").await;
    let resp = reg
        .request(Method::PATCH, &location)
        .header("Content-Range", "0-3999")
        .body(data[..4000].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), 202);
    let root = reg.registry().root();

    reg.restart().await;
    assert_eq!(reg.registry().root(), root);
    assert_eq!(reg.tags("app").await, ["v1", "v2"]);
    assert_eq!(reg.tags("lib/tool").await, ["1.0", "latest"]);
    for (repo, tag, digest) in &tagged {
        let resp = reg.get_manifest(repo, tag).await;
        assert_eq!(resp.status(), 200, "{repo}:{tag}");
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str())
        );
    }
    assert_error(
        reg.get_manifest("app", &deleted).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let doc = api_support::json(reg.get("/v2/_catalog").await).await;
    assert_eq!(doc["repositories"], serde_json::json!(["app", "lib/tool"]));

    let resp = reg.get(&location).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-3999"));
    let resp = reg
        .request(Method::PUT, &format!("{location}?digest={}", sha256(&data)))
        .header("Content-Range", "4000-9999")
        .body(data[4000..].to_vec())
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 201);
    reg.assert_consistent().await;

    // And once more, with the finished upload in it.
    reg.restart().await;
    let resp = reg.get(&format!("/v2/app/blobs/{}", sha256(&data))).await;
    assert_eq!(&resp.bytes().await.expect("body")[..], &data[..]);
    reg.assert_consistent().await;
}

/// Reads are cached per tree root (issue 11): a tag read many times, then moved, deleted and
/// pushed again, is answered from the tree of the moment each time, never from an older one.
#[tokio::test]
async fn cached_reads_follow_every_change_of_a_tag() {
    let reg = TestRegistry::start().await;
    let (first, first_digest) = reg.push_image("app", "v1", 1).await;
    let (second, second_digest) = reg.image_manifest("app", 2).await;
    async fn served(reg: &TestRegistry, digest: &str) {
        for _ in 0..3 {
            let resp = reg.get_manifest("app", "v1").await;
            assert_eq!(resp.status(), 200);
            assert_eq!(
                header(&resp, "Docker-Content-Digest").as_deref(),
                Some(digest)
            );
        }
    }
    served(&reg, &first_digest).await;

    let resp = reg.put_manifest("app", "v1", OCI_MANIFEST, &second).await;
    assert_eq!(resp.status(), 201);
    served(&reg, &second_digest).await;

    let resp = reg.delete("/v2/app/manifests/v1").await;
    assert_eq!(resp.status(), 202);
    for _ in 0..3 {
        assert_error(reg.get_manifest("app", "v1").await, 404, "MANIFEST_UNKNOWN").await;
    }
    // The manifests themselves stay, by digest.
    assert_eq!(reg.get_manifest("app", &second_digest).await.status(), 200);

    let resp = reg.put_manifest("app", "v1", OCI_MANIFEST, &first).await;
    assert_eq!(resp.status(), 201);
    served(&reg, &first_digest).await;

    let resp = reg
        .delete(&format!("/v2/app/manifests/{first_digest}"))
        .await;
    assert_eq!(resp.status(), 202);
    assert_error(
        reg.get_manifest("app", &first_digest).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(reg.get_manifest("app", "v1").await, 404, "MANIFEST_UNKNOWN").await;
    reg.assert_consistent().await;
}
