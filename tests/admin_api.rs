//! The admin API and the health endpoints, with the real binary: `status` through the admin
//! socket (mode 0600) and through a loopback TCP port, refusals of anything but loopback,
//! typed errors for unknown commands, a stale socket replaced at start; `/healthz` and
//! `/readyz` for a node with a full disk and for a replica with nothing to serve.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{binary, TestNode};
use ipns_registry::admin::{AdminClient, AdminEndpoint, AdminError, StatusReport};
use ipns_registry::config::Role;
use ipns_registry::http::{Liveness, Readiness};

/// Sets `key = value` in the `[section]` of the node's config file (appending the section).
fn configure(node: &TestNode, section: &str, key: &str, value: toml::Value) {
    let path = node.data_dir().join("config.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let mut config: toml::Table = text.parse().expect("config TOML");
    let table = config
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("a table");
    table.insert(key.into(), value);
    std::fs::write(&path, toml::to_string(&config).expect("TOML")).expect("write config");
}

fn run(node: &TestNode, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("--data-dir")
        .arg(node.data_dir())
        .args(args)
        .output()
        .expect("run ipns-registry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_through_the_socket_and_a_loopback_port() {
    let mut node = TestNode::init("writer");
    configure(&node, "admin", "listen", "127.0.0.1:0".into());
    node.serve(&[]);
    let socket = node.data_dir().join("admin.sock");
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "only the node's user may use the socket"
    );

    let report: StatusReport = node.status().await;
    assert_eq!(report.role, Role::Writer);
    assert!(report.ready, "{:?}", report.problems);
    assert!(report.own.is_some());
    assert_eq!(report.gc.interval_secs, 24 * 3600);
    assert!(report.disk.is_some_and(|d| d.available_bytes > 0));

    // The same report over the loopback port the node printed.
    let tcp = node
        .admin_endpoints
        .iter()
        .find_map(|e| e.strip_prefix("http://"))
        .expect("a TCP admin endpoint")
        .to_owned();
    let out = run(&node, &["status", "--json", "--listen", &tcp]);
    assert!(out.status.success(), "{out:?}");
    let over_tcp: StatusReport = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(over_tcp.peer_id, report.peer_id);
    let text = run(&node, &["status"]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("ready:     yes"));

    // Only loopback: the client refuses other addresses before connecting.
    let out = run(&node, &["status", "--listen", "192.0.2.1:5001"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));

    // Unknown commands and methods get a typed error, not a hang or a 500.
    let client = AdminClient::new(AdminEndpoint::Socket(socket.clone())).expect("client");
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Unknown {}
    impl ipns_registry::admin::AdminCommand for Unknown {
        const PATH: &'static str = "/export-everything";
        type Response = StatusReport;
    }
    match client.call(&Unknown {}).await {
        Err(AdminError::Refused { status, message }) => {
            assert_eq!(status, 404);
            assert!(message.contains("/status"), "{message}");
        }
        other => panic!("unexpected answer: {other:?}"),
    }
    let resp = reqwest::Client::new()
        .get(format!("http://{tcp}/status"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 405);

    // Killed, the node leaves its socket behind; the next start replaces it.
    node.kill();
    assert!(socket.exists());
    let out = run(&node, &["status"]);
    assert!(!out.status.success(), "no node: status fails");
    node.restart();
    assert!(node.status().await.ready);
}

#[test]
fn the_admin_api_refuses_other_addresses() {
    let node = TestNode::init("writer");
    configure(&node, "admin", "listen", "0.0.0.0:0".into());
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(node.data_dir())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ])
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_of_a_full_disk_and_of_a_replica_with_nothing_to_serve() {
    let client = reqwest::Client::new();
    let mut node = TestNode::init("writer");
    // A threshold no disk meets: the node is alive but not ready.
    configure(&node, "health", "min_free_bytes", i64::MAX.into());
    node.serve(&[]);
    let resp = client
        .get(format!("{}/healthz", node.url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Liveness>().await.expect("JSON"),
        Liveness { alive: true }
    );
    let resp = client
        .get(format!("{}/readyz", node.url()))
        .send()
        .await
        .expect("readyz");
    assert_eq!(resp.status(), 503);
    let readiness: Readiness = resp.json().await.expect("JSON");
    assert!(!readiness.ready);
    assert!(
        readiness
            .problems
            .iter()
            .any(|p| p.contains("disk nearly full")),
        "{readiness:?}"
    );
    // `status` says so too, and exits 1.
    let out = run(&node, &["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("PROBLEM:   disk nearly full"));

    // A replica that follows a name nobody publishes has no root to serve from.
    let (_, name) = TestNode::init("writer").id();
    let mut replica = TestNode::init("replica");
    replica.serve(&["--follow", &name]);
    let resp = client
        .get(format!("{}/readyz", replica.url()))
        .send()
        .await
        .expect("readyz");
    assert_eq!(resp.status(), 503);
    let readiness: Readiness = resp.json().await.expect("JSON");
    assert!(
        readiness
            .problems
            .iter()
            .any(|p| p.contains("no followed name has resolved")),
        "{readiness:?}"
    );
    assert!(!replica.status().await.ready);
}
