//! Test harness: runs the real `ipns-registry` binary on an ephemeral loopback port with its own
//! data directory, so tests drive it exactly as users and clients do.

#![allow(dead_code)] // each test binary uses a different part of the harness

mod bytes;
#[allow(unused_imports)] // each test binary uses a different part
pub use bytes::{pseudo_random, sha256, sha512};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ipns-registry")
}

/// How long tests wait for something that happens between processes (a record to arrive, a
/// replica to serve): generous, for loaded CI machines; a probe returns as soon as it succeeds.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `probe` until it yields a value; fails the test after [`WAIT`], naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The sha256 of the manifest `reference` that the node at `base` serves, if it serves it.
pub async fn served_manifest(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    reference: &str,
) -> Option<String> {
    let resp = client
        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .ok()?;
    if resp.status() != 200 {
        return None;
    }
    Some(sha256(&resp.bytes().await.ok()?))
}

/// A node process with its own data directory.
pub struct TestNode {
    child: Option<Child>,
    data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// `host:port` of its HTTP API.
    pub addr: String,
    /// Its libp2p listen addresses (with /p2p/<id>), as printed at start.
    pub p2p_addrs: Vec<String>,
    /// Where its admin API is (`unix:PATH`, `http://ADDR`), as printed at start.
    pub admin_endpoints: Vec<String>,
    extra_args: Vec<String>,
}

impl TestNode {
    /// Starts a writer on a fresh data directory.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a writer on a fresh data directory with extra `serve` flags.
    pub fn start_with(args: &[&str]) -> Self {
        let mut node = Self::init("writer");
        node.serve(args);
        node
    }

    /// Creates a fresh data directory with `init --role <role>`, without starting the node.
    pub fn init(role: &str) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let out = Command::new(binary())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["init", "--role", role])
            .output()
            .expect("run init");
        assert!(out.status.success(), "init failed: {out:?}");
        TestNode {
            child: None,
            data_dir,
            _tmp: Some(tmp),
            addr: String::new(),
            p2p_addrs: Vec::new(),
            admin_endpoints: Vec::new(),
            extra_args: Vec::new(),
        }
    }

    /// Creates a data directory at `data_dir` (which the caller cleans up) with
    /// `init --role <role>`, without starting the node.
    pub fn init_at(data_dir: &Path, role: &str) -> Self {
        let out = Command::new(binary())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["init", "--role", role])
            .output()
            .expect("run init");
        assert!(out.status.success(), "init failed: {out:?}");
        TestNode {
            child: None,
            data_dir: data_dir.to_owned(),
            _tmp: None,
            addr: String::new(),
            p2p_addrs: Vec::new(),
            extra_args: Vec::new(),
            admin_endpoints: Vec::new(),
        }
    }

    /// Starts (or restarts) the node with these `serve` flags, on loopback ports chosen by the
    /// system, without mDNS.
    pub fn serve(&mut self, args: &[&str]) {
        self.kill();
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }

    /// `id --json` of the node: its peer id and IPNS name.
    pub fn id(&self) -> (String, String) {
        let out = Command::new(binary())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["id", "--json"])
            .output()
            .expect("run id");
        assert!(out.status.success(), "id failed: {out:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("id JSON");
        (
            doc["peer_id"].as_str().expect("peer_id").to_owned(),
            doc["ipns_name"].as_str().expect("ipns_name").to_owned(),
        )
    }

    /// Runs another `ipns-registry` command on this data directory; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .expect("run ipns-registry");
        assert!(out.status.success(), "{args:?} failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The node's status report, asked for through its admin API (the socket in its data
    /// directory), as `ipns-registry status` does.
    pub async fn status(&self) -> ipns_registry::admin::StatusReport {
        self.admin()
            .call(&ipns_registry::admin::StatusRequest::default())
            .await
            .expect("status from the admin API")
    }

    /// A client of the node's admin API over the socket in its data directory.
    pub fn admin(&self) -> ipns_registry::admin::AdminClient {
        ipns_registry::admin::AdminClient::new(ipns_registry::admin::AdminEndpoint::Socket(
            self.data_dir.join("admin.sock"),
        ))
        .expect("admin client")
    }

    /// Runs `ipns-registry gc --json` with `args` on this data directory (through the running
    /// node's admin API, or on the stopped node's stores); returns the report.
    pub fn gc(&self, args: &[&str]) -> ipns_registry::registry::GcReport {
        let mut all = vec!["gc", "--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.cli(&all)).expect("gc report JSON")
    }

    /// The node's TCP libp2p address, for other nodes' `--peer`.
    pub fn p2p_addr(&self) -> String {
        self.p2p_addrs
            .iter()
            .find(|a| a.contains("/tcp/"))
            .cloned()
            .expect("node printed a TCP p2p address")
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spawn(&mut self) {
        let mut child = Command::new(binary())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .args(&self.extra_args)
            // TEST_NODE_LOG raises the children's log level when chasing a failure.
            .env(
                "RUST_LOG",
                std::env::var("TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ipns-registry");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        self.p2p_addrs.clear();
        self.admin_endpoints.clear();
        let addr = loop {
            assert!(Instant::now() < deadline, "node did not report its address");
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("p2p listening on ") {
                        self.p2p_addrs.push(addr.trim().to_owned());
                    }
                    if let Some(endpoint) = line.strip_prefix("admin API on ") {
                        self.admin_endpoints.push(endpoint.trim().to_owned());
                    }
                    if let Some(url) = line.strip_prefix("listening on http://") {
                        break url.trim().to_owned();
                    }
                }
                _ => panic!("node exited before listening"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.addr = addr;
        self.child = Some(child);
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same data directory (on a new port).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops the node and runs `ipns-registry check` on its data directory; returns the
    /// exit status and output.
    pub fn check(&mut self) -> (bool, String) {
        self.kill();
        let out = Command::new(binary())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("check")
            .output()
            .expect("run check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An image pushed by [`push_image`].
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// Repository.
    pub repo: String,
    /// Tag.
    pub tag: String,
    /// Manifest digest.
    pub manifest: String,
    /// Config and layer digests.
    pub blobs: Vec<String>,
}

/// Pushes a small single-layer image tagged `tag` with raw HTTP (single-request blob uploads);
/// returns it once the registry has answered 201 for the manifest, `None` on any failure.
pub async fn push_image(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    seed: u64,
) -> Option<PushedImage> {
    let layer = pseudo_random(4096 + seed as usize % 1000, seed);
    let layer_digest = sha256(&layer);
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let config_digest = sha256(&config);
    for (digest, body) in [
        (&layer_digest, layer.clone()),
        (&config_digest, config.clone()),
    ] {
        let resp = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
            .body(body)
            .send()
            .await
            .ok()?;
        if resp.status() != 201 {
            return None;
        }
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let resp = client
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .ok()?;
    (resp.status() == 201).then(|| PushedImage {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        manifest: sha256(manifest.as_bytes()),
        blobs: vec![config_digest, layer_digest],
    })
}
