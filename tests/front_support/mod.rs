//! In-process harness for the HTTP front door tests: a registry on its own data directory,
//! served by `serve_with` (chosen timeouts, caps, TLS) on a loopback port, and a raw HTTP/1.1
//! client for what ordinary clients hide (keep-alive reuse, half-sent bodies, stalls).

#![allow(dead_code)] // each test binary uses a different part of the harness

#[path = "../common/bytes.rs"]
mod bytes;
#[allow(unused_imports)] // each test binary uses a different part
pub use bytes::{pseudo_random, sha256};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipns_registry::http::{serve_with, HttpApi, ServeOptions};
use ipns_registry::registry::{Registry, RegistryOptions, Stores};
use ipns_registry::store::BlockStore;
use ipns_registry::tree::BlockSource;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// Wraps the local block store into the source the registry reads through.
pub type SourceWrapper = Box<dyn Fn(Arc<BlockStore>) -> Arc<dyn BlockSource> + Send + Sync>;

struct Running {
    registry: Arc<Registry>,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// A registry served in-process with chosen server options.
pub struct Front {
    tmp: tempfile::TempDir,
    options: ServeOptions,
    registry_options: RegistryOptions,
    wrap: Option<SourceWrapper>,
    running: Option<Running>,
}

impl Front {
    /// Serves a fresh writable registry.
    pub async fn start(options: ServeOptions, registry_options: RegistryOptions) -> Self {
        Self::start_wrapped(options, registry_options, None).await
    }

    /// Serves a fresh writable registry whose reads go through `wrap(local blocks)`.
    pub async fn start_wrapped(
        options: ServeOptions,
        registry_options: RegistryOptions,
        wrap: Option<SourceWrapper>,
    ) -> Self {
        let mut front = Front {
            tmp: tempfile::tempdir().expect("temp dir"),
            options,
            registry_options,
            wrap,
            running: None,
        };
        front.run().await;
        front
    }

    async fn run(&mut self) {
        let data_dir = self.data_dir();
        let stores = Stores::open(&data_dir).expect("stores");
        let source: Arc<dyn BlockSource> = match &self.wrap {
            Some(wrap) => wrap(stores.blocks.clone()),
            None => stores.blocks.clone(),
        };
        let registry = Registry::new(&stores, &data_dir, self.registry_options.clone(), source)
            .await
            .expect("open registry");
        drop(stores);
        let registry = Arc::new(registry);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let api = Arc::new(HttpApi::new(registry.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(
            listener,
            api,
            self.options.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        self.running = Some(Running {
            registry,
            addr,
            stop,
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

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.running().addr
    }

    /// `http(s)://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{path}", self.addr())
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// Files in `<data>/uploads/`.
    pub fn upload_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.data_dir().join("uploads"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Every file under `<data>/blocks/` (blocks, and anything staged or temporary), with
    /// its size.
    pub fn block_files(&self) -> Vec<(String, u64)> {
        let mut files = Vec::new();
        let mut dirs = vec![self.data_dir().join("blocks")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(meta) = entry.metadata() {
                    let name = path.strip_prefix(self.data_dir()).unwrap_or(&path);
                    files.push((name.display().to_string(), meta.len()));
                }
            }
        }
        files.sort();
        files
    }

    /// Stops serving and closes the registry, keeping the data directory.
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let _ = running.stop.send(());
        running
            .task
            .await
            .expect("server task")
            .expect("server result");
        // Connection tasks hold the API until their clients hang up or time out.
        let deadline = Instant::now() + Duration::from_secs(30);
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
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Stops and reopens the registry on the same data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
        }
    }
}

/// A client that keeps no idle connections.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// `POST ?digest=` of `data` to `repo` in one request; the response.
pub async fn post_blob(
    client: &reqwest::Client,
    front: &Front,
    repo: &str,
    data: &[u8],
    digest: &str,
) -> reqwest::Response {
    client
        .post(front.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(data.to_vec())
        .send()
        .await
        .expect("POST blob")
}

/// Uploads `data` in one request under its sha256 digest; asserts 201, returns the digest.
pub async fn upload(client: &reqwest::Client, front: &Front, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let resp = post_blob(client, front, repo, data, &digest).await;
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    digest
}

/// An OCI image manifest over a config and layers (`(digest, size)`).
pub fn oci_manifest(config: (&str, usize), layers: &[(&str, usize)]) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, s)| format!(r#"{{"mediaType":"{OCI_LAYER}","digest":"{d}","size":{s}}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},"layers":[{}]}}"#,
        config.0,
        config.1,
        layers.join(",")
    )
}

/// Pushes a small image (config + one layer from `seed`) to `repo:tag`; returns the
/// response status of the manifest PUT.
pub async fn push_image(
    client: &reqwest::Client,
    front: &Front,
    repo: &str,
    tag: &str,
    seed: u64,
) -> u16 {
    let layer = pseudo_random(3000 + seed as usize, seed);
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
    let layer_digest = upload(client, front, repo, &layer).await;
    let config_digest = upload(client, front, repo, config.as_bytes()).await;
    let manifest = oci_manifest(
        (&config_digest, config.len()),
        &[(&layer_digest, layer.len())],
    );
    client
        .put(front.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .expect("PUT manifest")
        .status()
        .as_u16()
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body (by `Content-Length`).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server announced it will close the connection.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// One raw HTTP/1.1 connection.
pub struct RawConn {
    stream: BufReader<TcpStream>,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        RawConn {
            stream: BufReader::new(stream),
        }
    }

    /// Sends bytes; `false` if the server already closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.get_mut().write_all(bytes).await.is_ok()
    }

    /// Reads one response (within 30 s).
    pub async fn response(&mut self) -> std::io::Result<RawResponse> {
        tokio::time::timeout(Duration::from_secs(30), self.read_response())
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response"))?
    }

    async fn read_response(&mut self) -> std::io::Result<RawResponse> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("status line"))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let text = line.trim_end();
            if text.is_empty() {
                break;
            }
            let (name, value) = text.split_once(':').ok_or_else(|| invalid("header"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await?;
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Whether the server closes the connection within `within` (reads hit end of stream or
    /// a reset), discarding anything it still sends.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 4096];
        let until = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(until, self.stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}
