//! Harness for the p2p tests: in-process nodes on 127.0.0.1, each with its own temporary block
//! store and an in-memory record source.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod netlab;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use ipns_registry::names::{check_routing_key, judge_record, RecordJudgement};
use ipns_registry::p2p::{P2p, P2pConfig, P2pEvent, RecordSource, RecordValidator, RecordVerdict};
use ipns_registry::store::BlockStore;
use ipns_registry::tree::{cid_of, RAW};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

/// Records held in memory, keyed by routing key; records from the network are judged against
/// them as a node judges them against its own and followed records.
#[derive(Default)]
pub struct MemoryRecords(Mutex<HashMap<Vec<u8>, Vec<u8>>>);

impl MemoryRecords {
    /// Sets the newest record for a key.
    pub fn set(&self, key: &[u8], record: &[u8]) {
        self.0.lock().unwrap().insert(key.to_vec(), record.to_vec());
    }
}

impl RecordSource for MemoryRecords {
    fn newest(&self, routing_key: &[u8]) -> Option<Vec<u8>> {
        self.0.lock().unwrap().get(routing_key).cloned()
    }

    fn all(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let held = self.0.lock().unwrap();
        held.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl RecordValidator for MemoryRecords {
    fn validate(&self, routing_key: &[u8], record: &[u8], held: Option<&[u8]>) -> RecordVerdict {
        let own = self.newest(routing_key);
        let held = held.into_iter().chain(own.as_deref());
        match judge_record(routing_key, record, held, std::time::SystemTime::now()) {
            RecordJudgement::Valid(_) => RecordVerdict::Accept,
            RecordJudgement::Stale(why) => RecordVerdict::Ignore(why.to_string()),
            RecordJudgement::Invalid(why) => RecordVerdict::Reject(why.to_string()),
        }
    }

    fn check_key(&self, routing_key: &[u8]) -> Result<(), String> {
        check_routing_key(routing_key)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// One in-process node.
pub struct TestNode {
    pub p2p: P2p,
    pub events: mpsc::Receiver<P2pEvent>,
    pub blocks: Arc<BlockStore>,
    pub records: Arc<MemoryRecords>,
    pub keypair: Keypair,
    _dir: tempfile::TempDir,
}

/// Logs to stderr with `RUST_LOG` (off by default).
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// A config for a loopback node (TCP and QUIC on ephemeral ports, no mDNS).
pub fn loopback_config(
    keypair: Keypair,
    peers: Vec<Multiaddr>,
    fetch_timeout: Duration,
) -> P2pConfig {
    P2pConfig {
        listen: vec![
            "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        ],
        peers,
        mdns: false,
        fetch_timeout,
        ..P2pConfig::new(keypair)
    }
}

impl TestNode {
    /// Starts a loopback node with a new identity.
    pub async fn start(peers: Vec<Multiaddr>, fetch_timeout: Duration) -> TestNode {
        Self::start_with(loopback_config(
            Keypair::generate_ed25519(),
            peers,
            fetch_timeout,
        ))
        .await
    }

    /// Starts a node from a config, with a fresh store.
    pub async fn start_with(config: P2pConfig) -> TestNode {
        Self::start_holding(config, Arc::new(MemoryRecords::default())).await
    }

    /// Starts a node from a config, with a fresh store, holding `records` from the start (as
    /// a node restarted on its data directory does).
    pub async fn start_holding(config: P2pConfig, records: Arc<MemoryRecords>) -> TestNode {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let blocks = Arc::new(BlockStore::open(dir.path().join("blocks")).unwrap());
        let keypair = config.keypair.clone();
        let (p2p, events) = P2p::start(config, blocks.clone(), records.clone(), records.clone())
            .await
            .unwrap();
        TestNode {
            p2p,
            events,
            blocks,
            records,
            keypair,
            _dir: dir,
        }
    }

    /// Its TCP listen address, with `/p2p/<id>`.
    pub async fn tcp_addr(&self) -> Multiaddr {
        self.p2p
            .listen_addrs()
            .await
            .into_iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
            .expect("a TCP listen address")
    }

    /// Its QUIC listen address, with `/p2p/<id>`.
    pub async fn quic_addr(&self) -> Multiaddr {
        self.p2p
            .listen_addrs()
            .await
            .into_iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)))
            .expect("a QUIC listen address")
    }

    /// Stores a raw block and returns its CID.
    pub fn put_block(&self, data: &[u8]) -> Cid {
        let cid = cid_of(RAW, data);
        self.blocks.put_blocking(&cid, data).unwrap();
        cid
    }

    /// Connects to `other` over TCP and waits until both sides see the connection.
    pub async fn connect(&self, other: &TestNode) {
        self.p2p.dial(other.tcp_addr().await).await.unwrap();
        let me = self.p2p.peer_id();
        wait_until(Duration::from_secs(5), || async {
            other.p2p.connected_peers().await.contains(&me)
        })
        .await
        .expect("the other side sees the connection");
    }

    /// Waits until this node knows that `other` subscribes to `topic` (so a publish reaches it).
    pub async fn wait_for_subscriber(&self, topic: &str, other: &TestNode) {
        let them = other.p2p.peer_id();
        wait_until(Duration::from_secs(10), || async {
            self.p2p.topic_peers(topic).await.contains(&them)
        })
        .await
        .expect("the subscription reached the publisher");
    }

    /// The next record event, skipping others, within `timeout`.
    pub async fn next_record(
        &mut self,
        timeout: Duration,
    ) -> Option<(Vec<u8>, Vec<u8>, Option<PeerId>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(P2pEvent::Record {
                    routing_key,
                    record,
                    from,
                })) => return Some((routing_key, record, from)),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }
}

/// Polls `check` every 50 ms until it holds; the time it took, or `None` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
pub fn block_data(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A bare libp2p peer (TCP, noise, yamux, libp2p-stream; no identify, no DHT) that speaks only
/// Bitswap 1.2.0 with a fixed answer per CID: the data it sends for a want-block, forged if it
/// does not hash to the CID. Nobody can discover it; it is reached only by dialling it.
pub struct RawBitswapPeer {
    pub peer_id: PeerId,
    pub addr: Multiaddr,
    /// Want-block entries received so far.
    pub wants_seen: Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RawBitswapPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RawBitswapPeer {
    /// Starts the peer on 127.0.0.1 with the answers it gives.
    pub async fn start(answers: HashMap<Cid, Vec<u8>>) -> RawBitswapPeer {
        Self::start_losing(answers, 0).await
    }

    /// Like [`RawBitswapPeer::start`], but the first `lost` want-blocks it receives are lost in
    /// transit: counted in `wants_seen`, never answered.
    pub async fn start_losing(answers: HashMap<Cid, Vec<u8>>, lost: usize) -> RawBitswapPeer {
        use ipns_registry::p2p::bitswap::{CidPrefix, Message, PayloadBlock, WantType};
        use std::sync::atomic::{AtomicUsize, Ordering};

        let wants_seen = Arc::new(AtomicUsize::new(0));
        let seen = wants_seen.clone();
        let (peer_id, addr, tasks) = serve_bitswap(move |message: Message| {
            let mut reply = Message::default();
            for entry in message.entries {
                if entry.cancel || entry.want_type != WantType::Block {
                    continue;
                }
                if seen.fetch_add(1, Ordering::SeqCst) < lost {
                    continue;
                }
                if let Some(data) = answers.get(&entry.cid) {
                    reply.payload.push(PayloadBlock {
                        prefix: CidPrefix::of(&entry.cid),
                        data: Bytes::from(data.clone()),
                    });
                }
            }
            reply
        })
        .await;
        RawBitswapPeer {
            peer_id,
            addr,
            wants_seen,
            tasks,
        }
    }
}

/// A bare libp2p peer (TCP, noise, yamux, libp2p-stream) on 127.0.0.1 speaking Bitswap 1.2.0:
/// every message a peer sends is answered with what `answer` makes of it (nothing, if that is
/// empty), over one outbound stream per peer. Its id, address, and the tasks that run it.
async fn serve_bitswap<F>(answer: F) -> (PeerId, Multiaddr, Vec<tokio::task::JoinHandle<()>>)
where
    F: Fn(ipns_registry::p2p::bitswap::Message) -> ipns_registry::p2p::bitswap::Message
        + Send
        + Sync
        + 'static,
{
    use ipns_registry::p2p::bitswap::{read_message, write_message, Version};
    use libp2p::futures::StreamExt as _;
    use libp2p::StreamProtocol;

    init_tracing();
    let swarm = tcp_swarm(Duration::from_secs(60), |_| libp2p_stream::Behaviour::new());
    let peer_id = *swarm.local_peer_id();
    let protocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");
    let mut control = swarm.behaviour().new_control();
    let mut incoming = control.accept(protocol.clone()).unwrap();
    let (addr, driver) = listen_and_drive(swarm).await;
    let answer = Arc::new(answer);
    let server = tokio::spawn(async move {
        while let Some((peer, mut inbound)) = incoming.next().await {
            let mut control = control.clone();
            let answer = answer.clone();
            let protocol = protocol.clone();
            tokio::spawn(async move {
                let mut outbound = None;
                while let Ok(Some(message)) = read_message(&mut inbound).await {
                    let reply = answer(message);
                    if reply.is_empty() {
                        continue;
                    }
                    if outbound.is_none() {
                        outbound = control.open_stream(peer, protocol.clone()).await.ok();
                    }
                    if let Some(stream) = outbound.as_mut() {
                        let _ = write_message(stream, &reply, Version::V120).await;
                    }
                }
            });
        }
    });
    (peer_id, addr, vec![driver, server])
}

/// A libp2p fetch answer as it travels (`FetchResponse` of the spec's `.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchResponse {
    /// 0 OK, 1 NOT_FOUND, 2 ERROR.
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// The record, or the error message.
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// `FetchRequest` of the spec's `.proto`.
#[derive(Clone, PartialEq, prost::Message)]
struct FetchRequest {
    #[prost(bytes = "vec", tag = "1")]
    identifier: Vec<u8>,
}

/// `OK`.
pub const FETCH_OK: i32 = 0;
/// `NOT_FOUND`.
pub const FETCH_NOT_FOUND: i32 = 1;
/// `ERROR`.
pub const FETCH_ERROR: i32 = 2;

/// A length-prefixed message, as `@libp2p/fetch` frames it.
pub fn length_prefixed(bytes: &[u8]) -> Vec<u8> {
    let mut buf = unsigned_varint::encode::usize_buffer();
    let mut out = unsigned_varint::encode::usize(bytes.len(), &mut buf).to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A bare libp2p swarm (TCP, noise, yamux) with only libp2p-stream, on 127.0.0.1.
fn stream_swarm() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    tcp_swarm(Duration::from_secs(60), |_| libp2p_stream::Behaviour::new())
}

/// Asks the node at `addr` (ending in `/p2p/<id>`) for `key` over `/libp2p/fetch/0.0.1`, from a
/// bare peer that speaks nothing else, byte for byte as `@libp2p/fetch` does.
pub async fn fetch_from(addr: &Multiaddr, key: &[u8]) -> FetchResponse {
    use libp2p::futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
    use prost::Message as _;

    init_tracing();
    let Some(Protocol::P2p(node)) = addr.iter().last() else {
        panic!("{addr} names no peer");
    };
    let mut swarm = stream_swarm();
    let mut control = swarm.behaviour().new_control();
    swarm.dial(addr.clone()).unwrap();
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let exchange = async {
        let mut stream = control
            .open_stream(node, libp2p::StreamProtocol::new("/libp2p/fetch/0.0.1"))
            .await
            .expect("the node speaks fetch");
        let request = FetchRequest {
            identifier: key.to_vec(),
        }
        .encode_to_vec();
        stream.write_all(&length_prefixed(&request)).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let (len, body) = unsigned_varint::decode::usize(&answer).expect("a length prefix");
        assert_eq!(
            body.len(),
            len,
            "exactly one message, then the stream closes"
        );
        FetchResponse::decode(body).expect("a FetchResponse")
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("a fetch answer in time");
    driver.abort();
    answer
}

/// A bare peer on 127.0.0.1 that answers every fetch request with `answer`, raw bytes (a
/// framed `FetchResponse`, or anything else).
pub struct RawFetchPeer {
    pub addr: Multiaddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RawFetchPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RawFetchPeer {
    /// Starts it.
    pub async fn start(answer: Vec<u8>) -> RawFetchPeer {
        use libp2p::futures::{AsyncWriteExt as _, StreamExt as _};

        init_tracing();
        let swarm = stream_swarm();
        let mut control = swarm.behaviour().new_control();
        let mut incoming = control
            .accept(libp2p::StreamProtocol::new("/libp2p/fetch/0.0.1"))
            .unwrap();
        let (addr, driver) = listen_and_drive(swarm).await;
        let server = tokio::spawn(async move {
            while let Some((_, mut stream)) = incoming.next().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    // The request is not even read: the answer is the same for any key.
                    let _ = stream.write_all(&answer).await;
                    let _ = stream.close().await;
                });
            }
        });
        RawFetchPeer {
            addr,
            tasks: vec![driver, server],
        }
    }
}

/// A bare Kademlia peer on `protocol` in client mode: it asks and believes what it reads.
pub fn kad_client(
    protocol: libp2p::StreamProtocol,
) -> libp2p::Swarm<libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>> {
    use libp2p::kad;
    tcp_swarm(Duration::from_secs(60), |key| {
        let peer = key.public().to_peer_id();
        let config = kad::Config::new(protocol);
        let mut kad = kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), config);
        kad.set_mode(Some(kad::Mode::Client));
        kad
    })
}

/// Every record a fresh bare Kademlia peer on `protocol` that knows only the node at `addr`
/// (ending in `/p2p/<id>`) gets for `key` (GET_VALUE).
pub async fn kad_get_from(
    protocol: libp2p::StreamProtocol,
    addr: &Multiaddr,
    key: &[u8],
) -> Vec<Vec<u8>> {
    init_tracing();
    let Some(Protocol::P2p(node)) = addr.iter().last() else {
        panic!("{addr} names no peer");
    };
    let mut swarm = kad_client(protocol);
    swarm.behaviour_mut().add_address(&node, addr.clone());
    kad_get(&mut swarm, key).await
}

/// Every record the peers `swarm` knows return for `key` (a Kademlia GET_VALUE, waited for to
/// its last step).
pub async fn kad_get(
    swarm: &mut libp2p::Swarm<libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>>,
    key: &[u8],
) -> Vec<Vec<u8>> {
    use libp2p::futures::StreamExt as _;
    use libp2p::kad;
    use libp2p::swarm::SwarmEvent;
    let id = swarm.behaviour_mut().get_record(kad::RecordKey::new(&key));
    let mut found = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                id: done,
                result: kad::QueryResult::GetRecord(result),
                step,
                ..
            }) = swarm.select_next_some().await
            {
                if done != id {
                    continue;
                }
                if let Ok(kad::GetRecordOk::FoundRecord(record)) = result {
                    found.push(record.record.value);
                }
                if step.last {
                    return;
                }
            }
        }
    })
    .await
    .expect("the DHT get finishes");
    found
}

/// An IPNS record of `key`'s name at `sequence` (an hour's lifetime, a minute's TTL), as bytes.
pub fn signed_record(key: &Keypair, sequence: u64) -> Vec<u8> {
    ipns_registry::names::IpnsRecord::sign(
        key,
        "/ipfs/bafkqaaa",
        sequence,
        Duration::from_secs(3600),
        Duration::from_secs(60),
    )
    .unwrap()
    .to_bytes()
    .to_vec()
}

/// Listens on 127.0.0.1 (TCP, an ephemeral port), then drives `swarm` in a task of its own;
/// returns the listen address with `/p2p/<id>`, and the task.
pub async fn listen_and_drive<B>(
    mut swarm: libp2p::Swarm<B>,
) -> (Multiaddr, tokio::task::JoinHandle<()>)
where
    B: libp2p::swarm::NetworkBehaviour + Send,
    B::ToSwarm: Send,
{
    use libp2p::futures::StreamExt as _;
    use libp2p::swarm::SwarmEvent;

    let peer_id = *swarm.local_peer_id();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address.with(Protocol::P2p(peer_id));
        }
    };
    let task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (addr, task)
}

/// A bare libp2p peer for the tests' own protocol ends: TCP on tokio with noise and yamux,
/// `behaviour` built from its new identity, idle connections kept for `idle`.
pub fn tcp_swarm<B: libp2p::swarm::NetworkBehaviour>(
    idle: Duration,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("the TCP transport")
        .with_behaviour(behaviour)
        .expect("the behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build()
}

/// What a [`ScriptedBitswapPeer`] does with a want-block for a CID it claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockAnswer {
    /// Sends the data it holds (forged if that does not hash to the CID).
    Send,
    /// Never sends anything (after having said HAVE).
    Withhold,
}

/// A bare Bitswap 1.2.0 peer (like [`RawBitswapPeer`]) that also answers want-haves: HAVE for
/// every CID it holds data for, DONT_HAVE for others when asked to. Want-blocks are answered as
/// `answer` says. Counts the want-blocks it receives and the blocks it sends.
pub struct ScriptedBitswapPeer {
    pub peer_id: PeerId,
    pub addr: Multiaddr,
    /// Want-block entries received so far.
    pub want_blocks: Arc<std::sync::atomic::AtomicUsize>,
    /// Blocks sent so far.
    pub blocks_sent: Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ScriptedBitswapPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ScriptedBitswapPeer {
    /// Starts the peer on 127.0.0.1 with the data it claims to hold and how it answers.
    pub async fn start(holds: HashMap<Cid, Vec<u8>>, answer: BlockAnswer) -> ScriptedBitswapPeer {
        use ipns_registry::p2p::bitswap::{
            BlockPresence, CidPrefix, Message, PayloadBlock, Presence, WantType,
        };
        use std::sync::atomic::{AtomicUsize, Ordering};

        let want_blocks = Arc::new(AtomicUsize::new(0));
        let blocks_sent = Arc::new(AtomicUsize::new(0));
        let (seen, sent) = (want_blocks.clone(), blocks_sent.clone());
        let (peer_id, addr, tasks) = serve_bitswap(move |message: Message| {
            let mut reply = Message::default();
            for entry in message.entries {
                if entry.cancel {
                    continue;
                }
                let held = holds.get(&entry.cid);
                match (entry.want_type, held) {
                    (WantType::Have, Some(_)) => reply.presences.push(BlockPresence {
                        cid: entry.cid,
                        presence: Presence::Have,
                    }),
                    (WantType::Block, Some(data)) => {
                        seen.fetch_add(1, Ordering::SeqCst);
                        if answer == BlockAnswer::Send {
                            sent.fetch_add(1, Ordering::SeqCst);
                            reply.payload.push(PayloadBlock {
                                prefix: CidPrefix::of(&entry.cid),
                                data: Bytes::from(data.clone()),
                            });
                        }
                    }
                    (_, None) if entry.send_dont_have => reply.presences.push(BlockPresence {
                        cid: entry.cid,
                        presence: Presence::DontHave,
                    }),
                    _ => {}
                }
            }
            reply
        })
        .await;
        ScriptedBitswapPeer {
            peer_id,
            addr,
            want_blocks,
            blocks_sent,
            tasks,
        }
    }
}
