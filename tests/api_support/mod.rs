//! In-process harness for the OCI Distribution API tests: a [`Registry`] on its own temporary
//! data directory, served by [`HttpApi`] on a loopback port, driven over real HTTP.

#![allow(dead_code)] // each test binary uses a different part of the harness

#[path = "../common/bytes.rs"]
mod bytes;
#[allow(unused_imports)] // each test binary uses a different part
pub use bytes::{pseudo_random, sha256, sha512};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipns_registry::config::AuthConfig;
use ipns_registry::http::auth::{htpasswd, Auth, HtpasswdFile};
use ipns_registry::http::{serve, HttpApi, NodeHealth};
use ipns_registry::registry::{Registry, RegistryOptions};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Every manifest type, for `Accept`.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A running server: the registry, and the task serving it.
struct Running {
    registry: Arc<Registry>,
    base: String,
    addr: String,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// A writable registry on its own data directory, served on 127.0.0.1.
pub struct TestRegistry {
    tmp: tempfile::TempDir,
    options: RegistryOptions,
    health: Option<Arc<dyn NodeHealth>>,
    auth: Option<AuthConfig>,
    running: Option<Running>,
    /// Basic credentials every request of the harness carries, if set.
    credentials: Option<(String, String)>,
    /// A client that keeps no idle connections, so that a stopped server lets go of its
    /// registry as soon as the last response is read.
    pub client: reqwest::Client,
}

impl TestRegistry {
    /// A registry with the default options.
    pub async fn start() -> Self {
        Self::start_with(RegistryOptions {
            writable: true,
            ..RegistryOptions::default()
        })
        .await
    }

    /// A registry that refuses manifests over `max_manifest_bytes`.
    pub async fn with_manifest_limit(max_manifest_bytes: u64) -> Self {
        Self::start_with(RegistryOptions {
            max_manifest_bytes,
            writable: true,
            ..RegistryOptions::default()
        })
        .await
    }

    /// A registry with these options.
    pub async fn start_with(options: RegistryOptions) -> Self {
        Self::start_full(options, None).await
    }

    /// A registry whose API answers `/readyz` (and `/_health`) from `health`.
    pub async fn with_health(health: Arc<dyn NodeHealth>) -> Self {
        Self::start_full(RegistryOptions::default(), Some(health)).await
    }

    /// A registry whose API checks credentials and access rules: `auth` is the `[auth]` config
    /// (its htpasswd path, if relative, is under the data directory), `users` are written to
    /// that file as `(name, password)` with bcrypt hashes before the server starts.
    pub async fn with_auth(
        options: RegistryOptions,
        auth: AuthConfig,
        users: &[(&str, &str)],
    ) -> Self {
        let mut registry = Self::unstarted(options, None);
        registry.auth = Some(auth);
        for (user, password) in users {
            registry.set_password(user, password);
        }
        registry.run().await;
        registry
    }

    async fn start_full(options: RegistryOptions, health: Option<Arc<dyn NodeHealth>>) -> Self {
        let mut registry = Self::unstarted(options, health);
        registry.run().await;
        registry
    }

    fn unstarted(options: RegistryOptions, health: Option<Arc<dyn NodeHealth>>) -> Self {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        TestRegistry {
            tmp: tempfile::tempdir().expect("temp dir"),
            options,
            health,
            auth: None,
            running: None,
            credentials: None,
            client,
        }
    }

    /// The htpasswd file of a registry started [`TestRegistry::with_auth`].
    pub fn htpasswd_path(&self) -> PathBuf {
        self.auth
            .as_ref()
            .expect("an auth config")
            .htpasswd_path(&self.data_dir())
    }

    /// Adds `user` to the htpasswd file or sets a new password (the cheapest bcrypt cost, as
    /// tests need no strength); a running server notices within a second.
    pub fn set_password(&self, user: &str, password: &str) {
        let path = self.htpasswd_path();
        let mut file = HtpasswdFile::read(&path).expect("read htpasswd");
        let hash = htpasswd::hash_password(password, 4).expect("hash");
        file.set_hash(user, hash).expect("set the hash");
        file.write().expect("write htpasswd");
    }

    /// Removes `user` from the htpasswd file.
    pub fn remove_user(&self, user: &str) {
        let path = self.htpasswd_path();
        let mut file = HtpasswdFile::read(&path).expect("read htpasswd");
        assert!(file.remove(user), "{user} is not in the file");
        file.write().expect("write htpasswd");
    }

    /// Sends `user:password` as Basic credentials with every later request of the harness
    /// (`None`: no credentials).
    pub fn login(&mut self, credentials: Option<(&str, &str)>) {
        self.credentials = credentials.map(|(u, p)| (u.to_owned(), p.to_owned()));
    }

    fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    async fn run(&mut self) {
        std::fs::create_dir_all(self.data_dir()).expect("data dir");
        let registry = Registry::open(&self.data_dir(), self.options.clone())
            .await
            .expect("open registry");
        let registry = Arc::new(registry);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address").to_string();
        let mut api = HttpApi::new(registry.clone());
        if let Some(health) = &self.health {
            api = api.with_health(health.clone());
        }
        if let Some(auth) = &self.auth {
            let auth = Auth::open(auth, &self.data_dir()).await.expect("auth");
            api = api.with_auth(Arc::new(auth));
        }
        let api = Arc::new(api);
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, api, async move {
            let _ = stop.await;
        }));
        self.running = Some(Running {
            registry,
            base: format!("http://{addr}"),
            addr,
            shutdown,
            task,
        });
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("the server is running")
    }

    /// The registry being served.
    pub fn registry(&self) -> &Registry {
        &self.running().registry
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.running().addr
    }

    /// The absolute URL of `path` (a path starting with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running().base)
    }

    /// Stops serving and closes the registry (its stores released), keeping the data directory.
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let _ = running.shutdown.send(());
        running
            .task
            .await
            .expect("server task")
            .expect("server result");
        // Connection tasks still hold the API until their clients hang up.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut registry = running.registry;
        loop {
            match Arc::try_unwrap(registry) {
                Ok(registry) => {
                    drop(registry);
                    return;
                }
                Err(shared) => {
                    assert!(
                        Instant::now() < deadline,
                        "connections kept the registry open"
                    );
                    registry = shared;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Stops and reopens the registry on the same data directory, on a new port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }

    /// Stops and reopens the registry on the same data directory as a read-only replica
    /// (nothing followed yet: see [`Registry::set_followed_roots`]).
    pub async fn reopen_read_only(&mut self) {
        self.stop().await;
        self.options.writable = false;
        self.run().await;
    }

    /// Runs the registry's full consistency check and asserts it found no problem.
    pub async fn assert_consistent(&self) {
        let report = self.registry().check().await.expect("check runs");
        assert!(
            report.problems.is_empty(),
            "consistency check: {:#?}",
            report.problems
        );
    }

    /// A request to `path` (with the credentials of [`TestRegistry::login`], if any).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.client.request(method, self.url(path));
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// Sends a body-less request.
    pub async fn send(&self, method: Method, path: &str) -> Response {
        self.request(method.clone(), path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path).await
    }

    /// `HEAD path`.
    pub async fn head(&self, path: &str) -> Response {
        self.send(Method::HEAD, path).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Response {
        self.send(Method::DELETE, path).await
    }

    /// `GET path` with a `Range` header.
    pub async fn get_range(&self, path: &str, range: &str) -> Response {
        self.request(Method::GET, path)
            .header("Range", range)
            .send()
            .await
            .expect("GET with Range")
    }

    /// GET of a manifest accepting every manifest type.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Response {
        self.request(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Accept", ACCEPT_ALL)
            .send()
            .await
            .expect("GET manifest")
    }

    /// PUT of a manifest with a `Content-Type`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &str,
    ) -> Response {
        self.request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", media_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("PUT manifest")
    }

    /// `POST /v2/<repo>/blobs/uploads/`: opens an upload session; returns its `Location`.
    pub async fn start_upload(&self, repo: &str) -> String {
        let resp = self
            .send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .await;
        assert_eq!(resp.status(), 202, "POST upload to {repo}");
        header(&resp, "Location").expect("Location of the session")
    }

    /// Uploads `data` to `repo` in one request (`POST ?digest=`) under its sha256 digest;
    /// returns the digest.
    pub async fn upload(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        self.upload_as(repo, data, &digest).await;
        digest
    }

    /// `POST /v2/<repo>/blobs/uploads/?digest=<digest>` with `data`: a whole upload in one
    /// request, whatever the registry answers.
    pub async fn post_blob(&self, repo: &str, digest: &str, data: &[u8]) -> Response {
        self.request(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        )
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("POST blob")
    }

    /// Uploads `data` to `repo` in one request under `digest`; asserts 201.
    pub async fn upload_as(&self, repo: &str, data: &[u8], digest: &str) {
        let resp = self.post_blob(repo, digest, data).await;
        let status = resp.status();
        assert_eq!(
            status,
            201,
            "upload to {repo}: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// Uploads a config and one layer derived from `seed` to `repo`; returns the OCI image
    /// manifest that references them (not pushed) and its sha256 digest.
    pub async fn image_manifest(&self, repo: &str, seed: u64) -> (String, String) {
        let layer = pseudo_random(2048 + seed as usize, seed);
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

    /// Pushes [`TestRegistry::image_manifest`] under `tag`; returns the manifest and its digest.
    pub async fn push_image(&self, repo: &str, tag: &str, seed: u64) -> (String, String) {
        let (manifest, digest) = self.image_manifest(repo, seed).await;
        let resp = self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(resp.status(), 201, "push {repo}:{tag}");
        (manifest, digest)
    }

    /// The tags `GET /v2/<repo>/tags/list` reports.
    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let resp = self.get(&format!("/v2/{repo}/tags/list")).await;
        assert_eq!(resp.status(), 200, "tags of {repo}");
        let doc = json(resp).await;
        assert_eq!(doc["name"], repo);
        serde_json::from_value(doc["tags"].clone()).expect("tags array")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(());
        }
    }
}

/// An OCI image manifest JSON for a config and layers; `extra` is spliced in as more
/// top-level members (`"subject":{...}`, `"artifactType":"..."`).
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

/// An index (`media_type` OCI index or Docker list) over `(media type, digest, size)` entries.
pub fn index_manifest(media_type: &str, entries: &[(&str, &str, usize)]) -> String {
    let entries: Vec<String> = entries
        .iter()
        .enumerate()
        .map(|(i, (t, d, s))| {
            format!(
                r#"{{"mediaType":"{t}","digest":"{d}","size":{s},"platform":{{"architecture":"arch{i}","os":"linux"}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[{}]}}"#,
        entries.join(",")
    )
}

/// Reads a JSON body, with the text in the panic message if it is not JSON.
pub async fn json(resp: Response) -> serde_json::Value {
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts an OCI error response: its status, `Content-Type: application/json`, and a body
/// `{"errors":[{"code","message"[,"detail"]}]}` whose only error has `code`. Returns that error.
pub async fn assert_error(resp: Response, status: u16, code: &str) -> serde_json::Value {
    let actual = resp.status();
    let content_type = header(&resp, "Content-Type");
    let text = resp.text().await.expect("error body");
    assert_eq!(
        actual,
        StatusCode::from_u16(status).expect("status"),
        "body: {text}"
    );
    assert_eq!(content_type.as_deref(), Some("application/json"), "{text}");
    let doc: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let errors = doc["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "body: {text}");
    let error = &errors[0];
    assert_eq!(error["code"], code, "body: {text}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body: {text}"
    );
    let members = error.as_object().expect("error object");
    assert!(
        members
            .keys()
            .all(|k| ["code", "message", "detail"].contains(&k.as_str())),
        "body: {text}"
    );
    error.clone()
}

/// Asserts a HEAD error response: status and an empty body.
pub async fn assert_head_error(resp: Response, status: u16) {
    assert_eq!(resp.status(), status);
    assert!(resp.bytes().await.expect("body").is_empty());
}

/// A response header as a string.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The target of a `Link: <target>; rel="next"` header.
pub fn next_link(resp: &Response) -> Option<String> {
    header(resp, "Link").map(|link| {
        assert!(link.starts_with('<'), "{link}");
        assert!(link.ends_with(r#">; rel="next""#), "{link}");
        link[1..link.find('>').expect("<...>")].to_owned()
    })
}
