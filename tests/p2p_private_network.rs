//! Private networks (a pre-shared key in kubo's `swarm.key` format): nodes holding the same key
//! connect and replicate; a node without it, or with another key, cannot connect, and the node
//! it tried to reach says why in one log line naming the address.

mod common;
mod p2p_support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ipns_registry::config::Config;
use ipns_registry::p2p::{parse_swarm_key, PreSharedKey};
use libp2p::identity::Keypair;
use p2p_support::{loopback_config, wait_until, TestNode};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A kubo `swarm.key` file with a key made of `byte`.
fn swarm_key_file(byte: u8) -> String {
    format!(
        "/key/swarm/psk/1.0.0/\n/base16/\n{}\n",
        hex::encode([byte; 32])
    )
}

fn swarm_key(byte: u8) -> PreSharedKey {
    parse_swarm_key(&swarm_key_file(byte)).unwrap()
}

/// Everything logged by this test binary, for the lines the nodes write.
fn captured_log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_env_filter("ipns_registry=warn")
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .init();
        log
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&captured_log().lock().unwrap()).into_owned()
}

#[test]
fn swarm_keys_are_read_in_kubos_format_only() {
    let key = parse_swarm_key(&swarm_key_file(7)).unwrap();
    // The same key, written by kubo's tools with CRLF line ends.
    let crlf = swarm_key_file(7).replace('\n', "\r\n");
    assert_eq!(
        parse_swarm_key(&crlf).unwrap().fingerprint().to_string(),
        key.fingerprint().to_string()
    );
    for bad in [
        String::new(),
        "/key/swarm/psk/1.0.0/\n/base64/\nAAAA\n".to_owned(),
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", "ab".repeat(31)),
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", "zz".repeat(32)),
        // Multi-byte characters where hex digits belong must not panic the parser.
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", "é".repeat(32)),
    ] {
        assert!(parse_swarm_key(&bad).is_err(), "{bad:?}");
    }
}

/// In-process nodes: two with the key exchange blocks; one without and one with another key
/// cannot connect, and the keyed node logs why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_nodes_holding_the_key_connect() {
    captured_log();
    let private = |byte| {
        let mut config = loopback_config(Keypair::generate_ed25519(), vec![], TIMEOUT);
        config.private_network = Some(swarm_key(byte));
        config
    };
    let a = TestNode::start_with(private(1)).await;
    // QUIC cannot carry a private network: only the TCP address is bound.
    let addrs = a.p2p.listen_addrs().await;
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    assert!(log_text().contains("skipping a QUIC address"));

    let b = TestNode::start_with(private(1)).await;
    b.connect(&a).await;
    let cid = a.put_block(b"inside the private network");
    assert_eq!(
        b.p2p.fetch_block(&cid).await.unwrap().as_ref(),
        b"inside the private network"
    );

    let public = TestNode::start(vec![], TIMEOUT).await;
    let other_key = TestNode::start_with(private(2)).await;
    // A refused dial may wait for the handshake deadline (8 s): dial both at once.
    let addr = a.tcp_addr().await;
    let (refused_public, refused_other) = tokio::join!(
        public.p2p.dial(addr.clone()),
        other_key.p2p.dial(addr.clone())
    );
    assert!(refused_public.is_err(), "a node without the key connected");
    assert!(refused_other.is_err(), "a node with another key connected");
    for outsider in [&public, &other_key] {
        assert!(!outsider
            .p2p
            .connected_peers()
            .await
            .contains(&a.p2p.peer_id()));
        assert!(!a
            .p2p
            .connected_peers()
            .await
            .contains(&outsider.p2p.peer_id()));
    }
    // Both were refused by the key, and the node said so once for their host (both come from
    // 127.0.0.1), naming where they came from.
    let incoming =
        "private network handshake failed with an incoming connection from /ip4/127.0.0.1/tcp/";
    let said = wait_until(TIMEOUT, || async { log_text().contains(incoming) }).await;
    let log = log_text();
    assert!(said.is_some(), "{log}");
    assert!(
        log.contains("does the peer hold the same swarm.key?"),
        "{log}"
    );
}

/// Real nodes: a writer with `swarm.key` in its data directory and a replica configured with
/// the same key replicate an image; a replica without the key gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_the_same_swarm_key_replicate_a_third_cannot_connect() {
    let client = reqwest::Client::new();
    let mut writer = common::TestNode::init("writer");
    // Picked up from the data directory, as kubo does.
    std::fs::write(writer.data_dir().join("swarm.key"), swarm_key_file(9)).unwrap();
    writer.serve(&[]);
    let (_, name) = writer.id();

    // Named in the configuration.
    let mut replica = common::TestNode::init("replica");
    let key_path = replica.data_dir().join("network.key");
    std::fs::write(&key_path, swarm_key_file(9)).unwrap();
    let config_path = replica.data_dir().join("config.toml");
    let mut config = Config::load(&config_path).unwrap();
    config.p2p.swarm_key = Some(key_path);
    config.save(&config_path).unwrap();
    replica.serve(&["--follow", &name, "--peer", &writer.p2p_addr()]);

    let mut outsider = common::TestNode::init("replica");
    outsider.serve(&["--follow", &name, "--peer", &writer.p2p_addr()]);

    let image = common::push_image(&client, &writer.url(), "private/app", "v1", 3)
        .await
        .expect("push to the writer");
    let manifest_url = |base: String| format!("{base}/v2/private/app/manifests/v1");
    let pulled = wait_until(Duration::from_secs(45), || async {
        let resp = client
            .get(manifest_url(replica.url()))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        resp.status() == 200 && common::sha256(&resp.bytes().await.unwrap()) == image.manifest
    })
    .await;
    assert!(pulled.is_some(), "the replica serves the writer's image");
    for blob in &image.blobs {
        let resp = client
            .get(format!("{}/v2/private/app/blobs/{blob}", replica.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(&common::sha256(&resp.bytes().await.unwrap()), blob);
    }

    // The outsider has been dialling the writer all along (every 3 s) and never got in: no
    // peer, no record, no image.
    let status = outsider.status().await;
    assert!(status.peers.is_empty(), "{status:?}");
    assert!(status.followed[0].sequence.is_none(), "{status:?}");
    let resp = client
        .get(manifest_url(outsider.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), 200);
    let writer_status = writer.status().await;
    assert_eq!(
        writer_status.peers.len(),
        1,
        "only the replica: {writer_status:?}"
    );
}
