//! A real client written by others, the `oci-client` crate, pushing to and pulling from a
//! registry served in-process: chunked and monolithic pushes, streamed blobs, mounts, indexes,
//! referrers, tags, catalog and partial blob reads, and pulls after a restart.

mod api_support;

use api_support::{pseudo_random, sha256, TestRegistry};
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{
    ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest, OciManifest,
    IMAGE_LAYER_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

fn client(monolithic: bool) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        use_monolithic_push: monolithic,
        ..Default::default()
    })
}

fn reference(reg: &TestRegistry, name: &str) -> Reference {
    format!("{}/{name}", reg.addr()).parse().expect("reference")
}

async fn collect(stream: oci_client::client::SizedStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = stream.stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

#[tokio::test]
async fn push_and_pull_images_chunked_and_monolithic() {
    let mut reg = TestRegistry::start().await;
    let auth = RegistryAuth::Anonymous;
    let mut pushed = Vec::new();
    for (monolithic, name) in [(false, "team/chunked:v1"), (true, "team/monolithic:v1")] {
        let oci = client(monolithic);
        let image = reference(&reg, name);
        // Larger than the client's 4 MiB chunk, so the chunked push takes several PATCHes.
        let layers = vec![
            ImageLayer::oci_v1(pseudo_random(9 << 20, 1), None),
            ImageLayer::oci_v1(b"small".to_vec(), None),
        ];
        let config = Config::oci_v1(br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), None);
        let manifest = OciImageManifest::build(&layers, &config, None);
        oci.push(
            &image,
            &layers,
            config.clone(),
            &auth,
            Some(manifest.clone()),
        )
        .await
        .expect("push");

        let pulled = oci
            .pull(&image, &auth, vec![IMAGE_LAYER_MEDIA_TYPE])
            .await
            .expect("pull");
        let mut got: Vec<String> = pulled.layers.iter().map(|l| sha256(&l.data)).collect();
        let mut want: Vec<String> = layers.iter().map(|l| sha256(&l.data)).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{name}");
        assert_eq!(pulled.config.data, config.data);

        let (pulled_manifest, digest, config_json) = oci
            .pull_manifest_and_config(&image, &auth)
            .await
            .expect("manifest and config");
        assert_eq!(pulled_manifest.layers.len(), 2);
        assert_eq!(config_json.as_bytes(), &config.data[..]);
        assert_eq!(
            oci.fetch_manifest_digest(&image, &auth)
                .await
                .expect("HEAD"),
            digest
        );
        let by_digest = reference(
            &reg,
            &format!("{}@{digest}", name.split(':').next().unwrap_or(name)),
        );
        let (raw, _) = oci
            .pull_manifest_raw(&by_digest, &auth, &[OCI_IMAGE_MEDIA_TYPE])
            .await
            .expect("by digest");
        assert_eq!(sha256(&raw), digest);
        pushed.push((name, digest, want));
    }
    reg.assert_consistent().await;

    // Reopened on the same data directory, both images pull as pushed.
    reg.restart().await;
    let oci = client(false);
    for (name, digest, want) in pushed {
        let image = reference(&reg, name);
        let pulled = oci
            .pull(&image, &auth, vec![IMAGE_LAYER_MEDIA_TYPE])
            .await
            .expect("pull after restart");
        assert_eq!(pulled.digest.as_deref(), Some(digest.as_str()), "{name}");
        let mut got: Vec<String> = pulled.layers.iter().map(|l| sha256(&l.data)).collect();
        got.sort();
        assert_eq!(got, want, "{name}");
    }
}

#[tokio::test]
async fn streamed_blobs_mounts_and_partial_reads() {
    let reg = TestRegistry::start().await;
    let oci = client(false);
    let image = reference(&reg, "stream/app:v1");
    let data = pseudo_random(6 << 20, 2);
    let chunks: Vec<oci_client::errors::Result<bytes::Bytes>> = data
        .chunks(700_000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let pushed = oci
        .push_blob_stream_chunked(&image, futures_util::stream::iter(chunks))
        .await
        .expect("streamed push");
    assert_eq!(pushed.blob_digest, sha256(&data));
    assert_eq!(pushed.size, data.len() as u64);
    assert!(oci
        .blob_exists(&image, &pushed.blob_digest)
        .await
        .expect("HEAD"));

    // Mount into another repository, then read part of it there.
    let other = reference(&reg, "mounted/app:v1");
    assert!(!oci
        .blob_exists(&other, &pushed.blob_digest)
        .await
        .expect("HEAD"));
    oci.mount_blob(&other, &image, &pushed.blob_digest)
        .await
        .expect("mount");
    assert!(oci
        .blob_exists(&other, &pushed.blob_digest)
        .await
        .expect("HEAD"));
    let descriptor = OciDescriptor {
        media_type: IMAGE_LAYER_MEDIA_TYPE.into(),
        digest: pushed.blob_digest.clone(),
        size: data.len() as i64,
        ..Default::default()
    };
    match oci
        .pull_blob_stream_partial(&other, &descriptor, 1_000_000, Some(2_000_000))
        .await
        .expect("partial")
    {
        oci_client::client::BlobResponse::Partial(stream) => {
            assert_eq!(collect(stream).await, &data[1_000_000..3_000_000]);
        }
        oci_client::client::BlobResponse::Full(_) => panic!("the range was ignored"),
    }
    let mut whole = Vec::new();
    oci.pull_blob(&other, &descriptor, &mut whole)
        .await
        .expect("pull blob");
    assert_eq!(whole, data);
    reg.assert_consistent().await;
}

#[tokio::test]
async fn indexes_referrers_tags_and_catalog() {
    let reg = TestRegistry::start().await;
    let oci = client(false);
    let auth = RegistryAuth::Anonymous;
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let image = reference(&reg, &format!("multi/app:{arch}"));
        let layers = vec![ImageLayer::oci_v1(
            format!("layer for {arch}").into_bytes(),
            None,
        )];
        let config = Config::oci_v1(
            format!(r#"{{"architecture":"{arch}","os":"linux"}}"#).into_bytes(),
            None,
        );
        let manifest = OciImageManifest::build(&layers, &config, None);
        let size = serde_json::to_vec(&manifest).expect("JSON").len();
        let url = oci
            .push(&image, &layers, config, &auth, Some(manifest))
            .await
            .expect("push")
            .manifest_url;
        let digest = url.rsplit('/').next().expect("digest").to_owned();
        entries.push(ImageIndexEntry {
            media_type: OCI_IMAGE_MEDIA_TYPE.into(),
            digest,
            size: size as i64,
            platform: None,
            annotations: None,
            artifact_type: None,
        });
    }
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.into()),
        manifests: entries.clone(),
        artifact_type: None,
        annotations: None,
    };
    let latest = reference(&reg, "multi/app:latest");
    oci.push_manifest_list(&latest, &auth, index)
        .await
        .expect("push index");
    match oci
        .pull_manifest(&latest, &auth)
        .await
        .expect("pull index")
        .0
    {
        OciManifest::ImageIndex(pulled) => {
            let digests: Vec<&str> = pulled.manifests.iter().map(|m| m.digest.as_str()).collect();
            assert_eq!(
                digests,
                entries
                    .iter()
                    .map(|e| e.digest.as_str())
                    .collect::<Vec<_>>()
            );
        }
        other => panic!("not an index: {other:?}"),
    }

    // An artifact about the amd64 image, found through the referrers API.
    let subject = &entries[0];
    let sbom = reference(&reg, "multi/app:sbom");
    let layers = vec![ImageLayer::new(
        b"{\"sbom\":true}".to_vec(),
        "application/spdx+json".into(),
        None,
    )];
    let config = Config::oci_v1(b"{}".to_vec(), None);
    let mut manifest = OciImageManifest::build(&layers, &config, None);
    manifest.artifact_type = Some("application/vnd.example.sbom".into());
    manifest.subject = Some(OciDescriptor {
        media_type: subject.media_type.clone(),
        digest: subject.digest.clone(),
        size: subject.size,
        ..Default::default()
    });
    oci.push(&sbom, &layers, config, &auth, Some(manifest))
        .await
        .expect("push artifact");
    let amd64 = reference(&reg, &format!("multi/app@{}", subject.digest));
    let referrers = oci.pull_referrers(&amd64, None).await.expect("referrers");
    assert_eq!(referrers.manifests.len(), 1);
    assert_eq!(
        referrers.manifests[0].artifact_type.as_deref(),
        Some("application/vnd.example.sbom")
    );
    let filtered = oci
        .pull_referrers(&amd64, Some("application/vnd.example.other"))
        .await
        .expect("filtered referrers");
    assert!(filtered.manifests.is_empty());

    let tags = oci
        .list_tags(&latest, &auth, None, None)
        .await
        .expect("tags");
    assert_eq!(tags.tags, ["amd64", "arm64", "latest", "sbom"]);
    let page = oci
        .list_tags(&latest, &auth, Some(2), Some("amd64"))
        .await
        .expect("page");
    assert_eq!(page.tags, ["arm64", "latest"]);
    let catalog = oci
        .catalog(&latest, &auth, None, None)
        .await
        .expect("catalog");
    assert_eq!(catalog.repositories, ["multi/app"]);
    reg.assert_consistent().await;
}
