//! Test harness: runs the real `ipns-registry` binary on an ephemeral loopback port with its own
//! data directory, so tests drive it exactly as users and clients do.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ipns-registry")
}

/// A node process with its own data directory.
pub struct TestNode {
    child: Option<Child>,
    data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// `host:port` of its HTTP API.
    pub addr: String,
    extra_args: Vec<String>,
}

impl TestNode {
    /// Starts a writer on a fresh data directory.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a writer on a fresh data directory with extra `serve` flags.
    pub fn start_with(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let mut node = TestNode {
            child: None,
            data_dir,
            _tmp: Some(tmp),
            addr: String::new(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        };
        node.spawn();
        node
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
            .args(&self.extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ipns-registry");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            assert!(Instant::now() < deadline, "node did not report its address");
            match lines.next() {
                Some(Ok(line)) => {
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

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex(&sha2::Sha256::digest(data)))
}

/// `sha512:<hex>` of `data`.
pub fn sha512(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha512:{}", hex(&sha2::Sha512::digest(data)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
