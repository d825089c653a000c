//! The real binary under abuse, on loopback: a flood of idle sockets and slowloris clients under
//! a low open-file limit leaves `GET /v2/` and pushes working, and a hundred thousand requests
//! for unknown upload ids leave the node's memory flat.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{binary, push_image};

/// A node process with a chosen config and open-file limit, its log captured.
struct LimitedNode {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _tmp: tempfile::TempDir,
}

impl LimitedNode {
    fn start(open_files: Option<u64>, http: &str) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        std::fs::write(
            data_dir.join("config.toml"),
            format!(
                "role = \"writer\"\n[http]\nlisten = \"127.0.0.1:0\"\n{http}\n[p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\n"
            ),
        )
        .expect("config");
        let mut command = Command::new(binary());
        command
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(limit) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
            unsafe {
                command.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command.spawn().expect("spawn ipns-registry");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("listening on http://") {
                        break addr.trim().parse().expect("address");
                    }
                }
                _ => panic!("node exited before listening: {:?}", log.lock()),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        LimitedNode {
            child,
            addr,
            log,
            _tmp: tmp,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    fn open_descriptors(&self) -> usize {
        descriptors_of(self.child.id())
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for LimitedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many descriptors process `pid` holds open.
fn descriptors_of(pid: u32) -> usize {
    std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether the server closes `stream` within `within` (end of stream or a reset).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_under_a_low_open_file_limit_leave_the_registry_serving() {
    let node = LimitedNode::start(
        Some(256),
        "header_read_timeout_secs = 2\nidle_timeout_secs = 3\n",
    );
    let baseline = node.open_descriptors();
    // The node's descriptors, sampled while the flood lasts: their most.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let pid = node.child.id();
        std::thread::spawn(move || {
            let mut most = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(descriptors_of(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        })
    };
    // 300 sockets that never send a byte, 50 that dribble a request head forever.
    let mut idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(node.addr).expect("connect"))
        .collect();
    let lorises: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(node.addr).expect("connect");
            s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: reg")
                .expect("start a head");
            s
        })
        .collect();
    let dribbling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let dribbler = {
        let dribbling = dribbling.clone();
        let mut lorises: Vec<TcpStream> = lorises
            .iter()
            .map(|s| s.try_clone().expect("clone"))
            .collect();
        std::thread::spawn(move || {
            while dribbling.load(std::sync::atomic::Ordering::Relaxed) {
                for s in &mut lorises {
                    let _ = s.write_all(b"x");
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    let http = http_client();
    let resp = http.get(node.url("/v2/")).send().await.expect("GET /v2/");
    assert_eq!(resp.status(), 200);
    let pushed = push_image(
        &http,
        &format!("http://{}", node.addr),
        "flood/app",
        "v1",
        1,
    )
    .await;
    assert!(pushed.is_some(), "a push during the flood");

    // Every flooding socket is closed by the server (made room for others, or timed out).
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(30)),
            "an idle socket stayed open"
        );
    }
    let mut lorises = lorises;
    for s in &mut lorises {
        assert!(
            closed_within(s, Duration::from_secs(30)),
            "a slowloris stayed open"
        );
    }
    dribbling.store(false, std::sync::atomic::Ordering::Relaxed);
    dribbler.join().expect("dribbler");
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().expect("sampler");
    // At most 96 connections under a limit of 256 (a reserve of 64, two descriptors each),
    // besides what the node held at the start and a few for the push's files. A connection
    // asked to close counts until it has closed.
    assert!(
        most <= baseline + 96 + 16,
        "{most} descriptors open during the flood, {baseline} at start: the connection cap \
         did not hold"
    );
    let resp = http.get(node.url("/v2/")).send().await.expect("GET /v2/");
    assert_eq!(resp.status(), 200);
    // Nothing of the flood is held any more (a few descriptors for this client's connection
    // and the push's blocks aside).
    drop((idle, lorises));
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.open_descriptors() > baseline + 8 {
        assert!(
            Instant::now() < deadline,
            "{} descriptors open, {baseline} at start",
            node.open_descriptors()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exhausted = node.log_lines_with("Too many open files");
    assert!(
        exhausted.is_empty(),
        "the node ran out of descriptors:\n{}",
        exhausted.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_upload_ids_leave_memory_flat() {
    let node = LimitedNode::start(None, "");
    let workers = 8;
    let run = |count: usize| {
        let base = node.url("/v2/app/blobs/uploads/");
        async move {
            let tasks: Vec<_> = (0..workers)
                .map(|w| {
                    let base = base.clone();
                    tokio::spawn(async move {
                        let http = http_client();
                        for i in 0..count / workers {
                            // Well-formed, distinct, never issued.
                            let id = format!("{:08x}-0000-4000-8000-{:012x}", w, i);
                            let resp = http.get(format!("{base}{id}")).send().await.expect("GET");
                            assert_eq!(resp.status(), 404);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("worker");
            }
        }
    };
    // Warm up allocator arenas and connection buffers first.
    run(5_000).await;
    let before = node.rss_kib();
    run(100_000).await;
    let after = node.rss_kib();
    println!("RSS before {before} KiB, after 100,000 unknown ids {after} KiB");
    assert!(
        after < before + 6 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}
