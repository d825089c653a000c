//! Error messages as users read them: the command line prints an error with its whole chain of
//! causes (`error: a: b: c`), and no cause may appear twice in that line. A wrapper either
//! repeats its cause's text or chains it as its `source`, never both.

mod common;

use std::error::Error;
use std::process::Command;

use common::{binary, TestNode};
use ipns_registry::node::NodeError;
use ipns_registry::p2p::P2pError;
use ipns_registry::registry::RegistryError;
use ipns_registry::store::StoreError;

/// Fails if any error in the chain of `err` contains the text of its own source.
fn assert_each_cause_once(err: &(dyn Error + 'static)) {
    let mut current = err;
    while let Some(source) = current.source() {
        let (outer, inner) = (current.to_string(), source.to_string());
        assert!(
            !outer.contains(&inner),
            "{outer:?} repeats its source {inner:?}; the chain prints it twice: {:#}",
            anyhow::anyhow!(err.to_string())
        );
        current = source;
    }
}

/// `{:#}` of the error as the command line prints it.
fn printed(err: NodeError) -> String {
    format!("{:#}", anyhow::Error::from(err))
}

#[test]
fn node_errors_print_each_cause_once() {
    let disk_full = || std::io::Error::from_raw_os_error(libc::ENOSPC);
    let cases = [
        NodeError::P2p(P2pError::Setup(
            "failed to build behaviour: Operation not supported (os error 95)".into(),
        )),
        NodeError::Registry(RegistryError::Store(StoreError::Io {
            context: "writing block bafy".into(),
            error: disk_full(),
        })),
        NodeError::Registry(RegistryError::Store(StoreError::Meta(sled::Error::Io(
            disk_full(),
        )))),
        NodeError::Listen {
            addr: "127.0.0.1:5000".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        },
    ];
    for err in cases {
        assert_each_cause_once(&err);
        let line = printed(err);
        for needle in ["(os error 95)", "(os error 28)", "address in use"] {
            assert!(
                line.matches(needle).count() <= 1,
                "{needle:?} printed more than once: {line}"
            );
        }
    }
}

#[test]
fn a_failing_start_names_the_cause_once() {
    // The node's key file is unreadable (a directory in its place): `serve` fails at start.
    let node = TestNode::init("writer");
    let key = node.data_dir().join("keys").join("self.key");
    std::fs::remove_file(&key).expect("remove the key");
    std::fs::create_dir(&key).expect("a directory where the key was");
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(node.data_dir())
        .args(["serve", "--listen", "127.0.0.1:0", "--no-mdns"])
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .expect("run serve");
    assert!(
        !out.status.success(),
        "serve started without a key: {out:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(line.contains("node key"), "{line}");
    assert!(line.contains(&key.display().to_string()), "{line}");
    assert_eq!(line.matches("(os error 21)").count(), 1, "{line}");
    assert_eq!(line.matches("key file").count(), 1, "{line}");
}
