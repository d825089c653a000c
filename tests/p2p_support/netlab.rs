//! Test networks from `scripts/netlab.sh`: a lab of network namespaces made for one test and
//! removed when it is dropped (also when the test panics), and things (p2p nodes) run inside one
//! of its hosts on a thread and runtime of their own.

use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc as std_mpsc;

use ipns_registry::p2p::P2pConfig;
use tokio::sync::oneshot;

use super::TestNode;

/// The lab script, in the source tree.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/netlab.sh")
}

/// Runs `netlab.sh ARGS`; its standard output, or `Err` with what it said.
fn netlab(args: &[&str]) -> Result<String, String> {
    let out = Command::new(script())
        .args(args)
        .output()
        .map_err(|e| format!("running {}: {e}", script().display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "netlab.sh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether `tool` is on the PATH.
fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A lab brought up by `netlab.sh up`, under a name no other test (or test run) uses; brought
/// down on drop.
pub struct NetLab {
    name: String,
}

impl NetLab {
    /// `netlab.sh up <unique name> TOPOLOGY...` (e.g. `&["lan", "2"]`). `Err` with the reason
    /// when this machine cannot have a lab (not root, no `ip`, no `iptables` for `internet`),
    /// for the test to print and skip; panics when the lab itself fails to come up.
    pub fn up(prefix: &str, topology: &[&str]) -> Result<NetLab, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        if !installed("ip") {
            return Err("iproute2's `ip` is not installed".into());
        }
        if topology.first() == Some(&"internet") && !installed("iptables") {
            return Err("`iptables` is not installed (the NAT routers need it)".into());
        }
        // Unique per process and per lab in it; lab names are at most 16 of [a-z0-9].
        static LABS: AtomicU32 = AtomicU32::new(0);
        let prefix: String = prefix
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            .take(6)
            .collect();
        let name = format!(
            "{prefix}{}x{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let lab = NetLab { name };
        let mut args = vec!["up", lab.name.as_str()];
        args.extend_from_slice(topology);
        if let Err(e) = netlab(&args) {
            panic!("the lab did not come up: {e}");
        }
        Ok(lab)
    }

    /// The lab's name (as `netlab.sh` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace file of `host` (`/run/netns/<ns>`).
    pub fn ns_path(&self, host: &str) -> PathBuf {
        match netlab(&["ns", &self.name, host]) {
            Ok(ns) => PathBuf::from("/run/netns").join(ns),
            Err(e) => panic!("{e}"),
        }
    }

    /// The IPv4 address of `host` (a NAT router's public one).
    pub fn addr(&self, host: &str) -> Ipv4Addr {
        match netlab(&["addr", &self.name, host]) {
            Ok(addr) => addr
                .parse()
                .unwrap_or_else(|e| panic!("netlab.sh addr {host}: {addr:?}: {e}")),
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a node from `config` with a fresh store inside `host`.
    pub fn start_node(&self, host: &str, config: P2pConfig) -> InNamespace<TestNode> {
        InNamespace::start(self.ns_path(host), move || TestNode::start_with(config))
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if let Err(e) = netlab(&["down", &self.name]) {
            eprintln!("removing lab {}: {e}", self.name);
        }
    }
}

/// A value (a node) built and kept on a thread of its own that entered a network namespace
/// before building its tokio runtime, so every socket the value opens, and every thread its
/// runtime starts, lives in that namespace. Dropping it drops the value on that runtime, then
/// stops the thread.
pub struct InNamespace<T: Send + 'static> {
    value: Option<T>,
    back: Option<oneshot::Sender<T>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> InNamespace<T> {
    /// Enters the namespace at `ns_path` on a new thread and builds the value there with
    /// `build`; panics (with the thread's panic) when that fails.
    pub fn start<F, Fut>(ns_path: PathBuf, build: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (back, returned) = oneshot::channel::<T>();
        let thread = std::thread::spawn(move || {
            let ns = File::open(&ns_path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", ns_path.display()));
            // SAFETY: a valid namespace file descriptor; setns changes only this thread.
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                if ready_tx.send(build().await).is_err() {
                    return;
                }
                // The value comes back here to be dropped where its tasks run.
                drop(returned.await);
            });
        });
        match ready_rx.recv() {
            Ok(value) => InNamespace {
                value: Some(value),
                back: Some(back),
                thread: Some(thread),
            },
            Err(_) => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => panic!("the thread in the namespace ended without a value"),
            },
        }
    }
}

impl<T: Send + 'static> Deref for InNamespace<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value.as_ref().expect("present until dropped")
    }
}

impl<T: Send + 'static> DerefMut for InNamespace<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("present until dropped")
    }
}

impl<T: Send + 'static> Drop for InNamespace<T> {
    fn drop(&mut self) {
        if let (Some(value), Some(back)) = (self.value.take(), self.back.take()) {
            let _ = back.send(value);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
