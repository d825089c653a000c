//! Raw HTTP helpers for driving the OCI Distribution API: uploads, manifests, error bodies.

use reqwest::{Response, StatusCode};

use super::{sha256, TestNode};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Every manifest type, for `Accept`.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A client bound to one node.
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(node: &TestNode) -> Self {
        Api {
            client: reqwest::Client::new(),
            base: node.url(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn head(&self, path: &str) -> Response {
        self.client.head(self.url(path)).send().await.expect("HEAD")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE")
    }

    /// GET of a manifest accepting every manifest type.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Response {
        self.client
            .get(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Accept", ACCEPT_ALL)
            .send()
            .await
            .expect("GET manifest")
    }

    /// Uploads `data` to `repo` in one request (`POST ?digest=`); returns its sha256 digest.
    pub async fn upload(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let resp = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .body(data.to_vec())
            .send()
            .await
            .expect("POST blob");
        assert_eq!(
            resp.status(),
            201,
            "upload to {repo}: {}",
            resp.text().await.unwrap_or_default()
        );
        digest
    }

    /// PUTs a manifest; returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &str,
    ) -> Response {
        self.client
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Content-Type", media_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("PUT manifest")
    }

    /// Uploads a config and one layer derived from `seed` to `repo`; returns the OCI image
    /// manifest that references them (not pushed) and its digest.
    pub async fn image_manifest(&self, repo: &str, seed: u64) -> (String, String) {
        let layer = super::pseudo_random(2048 + seed as usize, seed);
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
        let layer_digest = self.upload(repo, &layer).await;
        let config_digest = self.upload(repo, config.as_bytes()).await;
        let manifest = oci_manifest(
            &config_digest,
            config.len(),
            &[(&layer_digest, layer.len())],
            None,
        );
        let digest = sha256(manifest.as_bytes());
        (manifest, digest)
    }

    /// Pushes [`Api::image_manifest`] under `tag`; returns the manifest digest.
    pub async fn push_image(&self, repo: &str, tag: &str, seed: u64) -> String {
        let (manifest, digest) = self.image_manifest(repo, seed).await;
        let resp = self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(resp.status(), 201, "push {repo}:{tag}");
        digest
    }
}

/// An OCI image manifest JSON for a config and layers, with an optional `subject` and
/// `artifactType`.
pub fn oci_manifest(
    config: &str,
    config_size: usize,
    layers: &[(&str, usize)],
    extra: Option<&str>,
) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, s)| format!(r#"{{"mediaType":"{OCI_LAYER}","digest":"{d}","size":{s}}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config}","size":{config_size}}},"layers":[{}]{}}}"#,
        layers.join(","),
        extra.map(|e| format!(",{e}")).unwrap_or_default()
    )
}

/// Asserts an OCI error response: its status, and that its body is `{"errors":[...]}` whose
/// first code is `code` with a message.
pub async fn assert_error(resp: Response, status: u16, code: &str) {
    let actual = resp.status();
    let text = resp.text().await.expect("error body");
    assert_eq!(
        actual,
        StatusCode::from_u16(status).expect("status"),
        "body: {text}"
    );
    let doc: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let first = &doc["errors"][0];
    assert_eq!(first["code"], code, "body: {text}");
    assert!(
        first["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body: {text}"
    );
}

/// A response header as a string.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
