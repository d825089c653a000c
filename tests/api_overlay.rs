//! A replica's view over several followed roots, driven over HTTP: the first root that has a
//! path answers, and a root whose blocks cannot be had never lets a later root's tag stand in
//! for its own (content addressed by digest may still come from any root).

mod api_support;

use api_support::{assert_error, header, json, TestRegistry};
use cid::Cid;
use ipns_registry::tree::{cid_of, DAG_PB};

/// A dag-pb CID whose block exists nowhere: a root that cannot be read.
fn unreadable_root() -> Cid {
    cid_of(DAG_PB, b"a root nobody has")
}

async fn tag_digest(reg: &TestRegistry, reference: &str) -> (u16, Option<String>) {
    let resp = reg.get_manifest("shared/app", reference).await;
    (
        resp.status().as_u16(),
        header(&resp, "Docker-Content-Digest"),
    )
}

#[tokio::test]
async fn first_readable_hit_wins_and_unreadable_roots_never_shadow_tags() {
    let mut reg = TestRegistry::start().await;
    // Two states of one tree, both kept in the block store: `x` moves from the first image to
    // the second.
    let (_, first) = reg.push_image("shared/app", "x", 1).await;
    let root_first = reg.registry().root();
    let (_, second) = reg.push_image("shared/app", "x", 2).await;
    let root_second = reg.registry().root();
    assert_ne!(root_first, root_second);
    reg.reopen_read_only().await;

    reg.registry()
        .set_followed_roots(vec![root_first, root_second]);
    assert_eq!(tag_digest(&reg, "x").await, (200, Some(first.clone())));
    reg.registry()
        .set_followed_roots(vec![root_second, root_first]);
    assert_eq!(tag_digest(&reg, "x").await, (200, Some(second.clone())));

    // An earlier root that cannot be read: its `x` might differ, so no later root answers it.
    let unreadable = unreadable_root();
    reg.registry()
        .set_followed_roots(vec![unreadable, root_second]);
    let resp = reg.get_manifest("shared/app", "x").await;
    let body = assert_error(resp, 503, "UNAVAILABLE").await;
    assert!(
        body.to_string().contains(&unreadable.to_string()),
        "the error names the missing block: {body}"
    );
    let resp = reg.get("/v2/shared/app/tags/list").await;
    assert_error(resp, 503, "UNAVAILABLE").await;
    // By digest the content is the same in every root: the readable one serves it.
    assert_eq!(tag_digest(&reg, &second).await, (200, Some(second.clone())));
    let manifest = json(reg.get_manifest("shared/app", &second).await).await;
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest");
    let resp = reg.get(&format!("/v2/shared/app/blobs/{layer}")).await;
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.expect("layer bytes");
    assert_eq!(api_support::sha256(&bytes), layer);

    // A readable root before the unreadable one answers as usual.
    reg.registry()
        .set_followed_roots(vec![root_second, unreadable]);
    assert_eq!(tag_digest(&reg, "x").await, (200, Some(second.clone())));
    // ...but a tag it lacks is not declared unknown while a later root cannot be read.
    let resp = reg.get_manifest("shared/app", "only-elsewhere").await;
    assert_error(resp, 503, "UNAVAILABLE").await;
}
