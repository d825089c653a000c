//! A followed tree is untrusted input: a UnixFS node that declares an absurd size, or a manifest
//! over the registry's limit, gives the client a clean OCI error and the node keeps serving.
//! The hostile trees are built locally from a pushed image, then followed by a read-only
//! registry driven over HTTP.

mod api_support;

use api_support::{assert_error, json, TestRegistry};
use cid::Cid;
use ipns_registry::registry::{layout, Digest, RepoName};
use ipns_registry::tree::{
    apply_changes, cid_of, Change, DataType, FileImporter, Link, PbNode, UnixfsData, DAG_PB,
};

const REPO: &str = "hostile/app";

/// A file node that declares `filesize` bytes and holds none: stored, and its CID returned.
fn declared_only(reg: &TestRegistry, filesize: u64) -> Link {
    let mut data = UnixfsData::new(DataType::File);
    data.filesize = Some(filesize);
    let bytes = PbNode {
        links: Vec::new(),
        data: Some(data.encode()),
    }
    .encode();
    let cid = cid_of(DAG_PB, &bytes);
    reg.registry()
        .tree()
        .blocks()
        .put_blocking(&cid, &bytes)
        .unwrap();
    Link {
        cid,
        tsize: bytes.len() as u64,
    }
}

/// The registry's current tree with `changes` applied, its new blocks stored.
async fn edited(reg: &TestRegistry, changes: Vec<Change>) -> Cid {
    let blocks = reg.registry().tree().blocks().clone();
    let (root, new_blocks) = apply_changes(blocks.as_ref(), &reg.registry().root(), changes)
        .await
        .unwrap();
    for (cid, bytes) in new_blocks {
        blocks.put_blocking(&cid, &bytes).unwrap();
    }
    root.cid
}

/// Pushes `REPO:v1`, an image of one layer: its manifest's digest and its layer's.
async fn push_one_layer_image(reg: &TestRegistry) -> (String, String) {
    let (manifest, manifest_digest) = reg.push_image(REPO, "v1", 1).await;
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    (manifest_digest, layer_digest)
}

fn digest(text: &str) -> Digest {
    text.parse().unwrap()
}

#[tokio::test]
async fn a_followed_tree_declaring_a_size_of_2_pow_60_gives_a_clean_error() {
    let mut reg = TestRegistry::start().await;
    let (manifest_digest, layer_digest) = push_one_layer_image(&reg).await;

    // The same tree, but the manifest's and the layer's data are nodes declaring 2^60 bytes.
    let huge = declared_only(&reg, 1 << 60);
    let hostile = edited(
        &reg,
        vec![
            Change::Put {
                path: layout::blob_data(&digest(&manifest_digest)),
                link: huge,
            },
            Change::Put {
                path: layout::blob_data(&digest(&layer_digest)),
                link: huge,
            },
        ],
    )
    .await;
    reg.reopen_read_only().await;
    reg.registry().set_followed_roots(vec![hostile]);

    for reference in ["v1", manifest_digest.as_str()] {
        let resp = reg.get_manifest(REPO, reference).await;
        let body = assert_error(resp, 502, "UNKNOWN").await;
        let message = body["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains("followed tree") && message.contains("1152921504606846976"),
            "{message}"
        );
    }
    for method in ["GET", "HEAD"] {
        let resp = reg
            .send(
                method.parse().unwrap(),
                &format!("/v2/{REPO}/blobs/{layer_digest}"),
            )
            .await;
        // The upstream tree is at fault, not this node: 502, as for the manifest.
        assert_eq!(resp.status(), 502, "{method}");
        if method == "GET" {
            let body = json(resp).await;
            assert!(body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("declares 1152921504606846976 bytes"));
        }
    }
    // Still alive, and still serving what it can.
    assert_eq!(reg.get("/v2/").await.status(), 200);
    assert_eq!(
        reg.get(&format!("/v2/{REPO}/tags/list")).await.status(),
        200
    );
}

#[tokio::test]
async fn a_followed_manifest_over_the_limit_is_refused_like_a_pushed_one() {
    let mut reg = TestRegistry::start().await;
    reg.push_image(REPO, "v1", 2).await;
    // A 5 MiB "manifest", honest about its size and digest, linked into the repository.
    let big: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
    let big_digest = digest(&api_support::sha256(&big));
    let blocks = reg.registry().tree().blocks().clone();
    let data = {
        let mut importer = FileImporter::new(&blocks);
        importer.write(&big).unwrap();
        importer.finish().unwrap().0
    };
    let (link, (link_cid, link_bytes)) = {
        let text = big_digest.to_string().into_bytes();
        let cid = cid_of(ipns_registry::tree::RAW, &text);
        (
            Link {
                cid,
                tsize: text.len() as u64,
            },
            (cid, text),
        )
    };
    blocks.put_blocking(&link_cid, &link_bytes).unwrap();
    let repo = RepoName::parse(REPO).unwrap();
    let hostile = edited(
        &reg,
        vec![
            Change::Put {
                path: layout::blob_data(&big_digest),
                link: data,
            },
            Change::Put {
                path: layout::revision_link(&repo, &big_digest),
                link,
            },
        ],
    )
    .await;
    reg.reopen_read_only().await;
    reg.registry().set_followed_roots(vec![hostile]);

    let resp = reg.get_manifest(REPO, &big_digest.to_string()).await;
    let body = assert_error(resp, 502, "UNKNOWN").await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("5242880 bytes") && message.contains("registry.max_manifest_bytes"),
        "{message}"
    );
    // The rest of the followed tree is served as before.
    assert_eq!(reg.get_manifest(REPO, "v1").await.status(), 200);
}

/// A followed tree whose blob bytes do not hash to the digest it files them under (the blocks
/// all match their CIDs, so only the digest check catches it). The first client to ask for the
/// whole blob gets it as it is checked, and its body ends early, without the last piece: no
/// client ever holds all the wrong bytes. From then on the blob is refused before any byte goes
/// out, whole or in part, and the node keeps serving.
#[tokio::test]
async fn a_followed_blob_whose_bytes_miss_their_digest_is_refused() {
    let mut reg = TestRegistry::start().await;
    let (_, layer_digest) = push_one_layer_image(&reg).await;

    // Three chunks of other bytes where the layer's data was.
    let store = reg.registry().tree().blocks().clone();
    let mut importer = FileImporter::new(store.as_ref());
    for i in 0..3u8 {
        importer.write(&vec![i; 1 << 20]).unwrap();
    }
    let (other, _) = importer.finish().unwrap();
    let hostile = edited(
        &reg,
        vec![Change::Put {
            path: layout::blob_data(&digest(&layer_digest)),
            link: other,
        }],
    )
    .await;
    reg.reopen_read_only().await;
    reg.registry().set_followed_roots(vec![hostile]);

    let path = format!("/v2/{REPO}/blobs/{layer_digest}");
    let mut resp = reg.get(&path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(3 << 20));
    let mut received = 0;
    let cut = loop {
        match resp.chunk().await {
            Ok(Some(piece)) => {
                // Every byte that does go out is one of the tree's (verified) blocks.
                for &byte in piece.iter() {
                    assert_eq!(byte, (received >> 20) as u8, "at offset {received}");
                    received += 1;
                }
            }
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut, "the body must end early, not look complete");
    assert!(
        received <= 2 << 20,
        "the last piece went out: {received} bytes"
    );

    for range in [None, Some("bytes=0-99")] {
        let resp = match range {
            None => reg.get(&path).await,
            Some(range) => reg.get_range(&path, range).await,
        };
        let body = assert_error(resp, 502, "UNKNOWN").await;
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("hashes to"), "{body}");
    }
    assert_eq!(reg.get("/v2/").await.status(), 200);
}
