//! Bitswap: blocks by CID from connected peers, and our blocks to peers that want them.
//!
//! Bitswap 1.2.0 from the spec (<https://specs.ipfs.tech/bitswap-protocol/>), also answering
//! 1.1.0, 1.0.0 and the bare `/ipfs/bitswap`, over libp2p-stream. As in kubo, each side sends on
//! a stream it opened itself: wants go out on our stream to the peer, and the peer's blocks come
//! back on a stream it opens to us. One [`session`] task per connected peer owns our outbound
//! stream (wants, cancels, and the blocks and presences we serve); one reader task per inbound
//! stream decodes what the peer sends.
//!
//! Client side: every connected peer gets a want-have for each want, and one peer at a time a
//! want-block, as [`scheduler`] decides (a peer that said HAVE, by load and throughput; moved on
//! DONT_HAVE, disconnect, junk or a missed deadline). The first block whose data hashes to the
//! CID is stored and shared with every caller waiting for it, and the other peers that were sent
//! the want get a cancel. A block is never trusted: its CID is recomputed from the data, so a
//! forged block names a different CID, which nobody wants; a peer sending such data loses its
//! want-blocks to other peers.
//!
//! When no connected peer can deliver a want (none is connected, every one answered DONT_HAVE,
//! or none delivered within [`PROVIDER_SEARCH_DELAY`] and either none said HAVE or one that did
//! missed its deadline), the engine asks the swarm once per want
//! to look up the CID's providers in the DHTs and dial them; peers that connect are sent every
//! pending want, so the want reaches the providers without further ado.

mod block;
mod message;
mod scheduler;
mod session;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use libp2p::futures::{AsyncRead, AsyncWrite, AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::AbortHandle;
use tracing::Instrument as _;

pub use block::{is_supported, verify_block, CidPrefix, SHA2_256, SHA2_512};
pub use message::{
    BlockPresence, Entry, Message, PayloadBlock, Presence, Version, WantType, MAX_MESSAGE_SIZE,
};

use crate::metrics::P2pMetrics;
use crate::store::BlockStore;
use scheduler::{Order, Scheduler};
use session::{PeerWants, SessionCommand};

use super::frame::{self, FrameError};
use super::P2pError;

/// Bitswap protocol ids, most preferred first: we open streams with the first the peer supports
/// and accept all of them.
pub const PROTOCOLS: [(StreamProtocol, Version); 4] = [
    (StreamProtocol::new("/ipfs/bitswap/1.2.0"), Version::V120),
    (StreamProtocol::new("/ipfs/bitswap/1.1.0"), Version::V110),
    (StreamProtocol::new("/ipfs/bitswap/1.0.0"), Version::V100),
    (StreamProtocol::new("/ipfs/bitswap"), Version::V100),
];

/// Default of received blocks being hashed and stored at once per inbound stream: bounds memory
/// (each holds a block, up to 1 MiB) while keeping disks and cores busy.
pub const DEFAULT_RECEIVE_CONCURRENCY: usize = 16;

/// How long a fetch waits for a first peer when none is connected.
pub const NO_PEER_GRACE: Duration = Duration::from_secs(5);

/// How long connected peers have to deliver a want before its providers are looked up in the
/// DHTs anyway (kubo's Bitswap waits as long): peers on Bitswap 1.0/1.1 never say DONT_HAVE.
pub const PROVIDER_SEARCH_DELAY: Duration = Duration::from_secs(1);
/// How often a fetch checks whether its want is stuck, before [`PROVIDER_SEARCH_DELAY`].
const STUCK_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Notices from the engine to one session that may wait (wants, cancels, blocks stored). When a
/// session is this far behind (it is stuck writing to its peer), further notices are dropped and
/// the session catches up from the engine's state once it runs again.
const SESSION_NOTICES: usize = 1024;
/// Wantlist messages from a peer waiting for its session. When they pile up, the peer's stream
/// is no longer read until the session catches up: the peer is slowed down, not buffered.
const PEER_WANTLISTS: usize = 8;
/// Inbound Bitswap streams one peer may have open at once (each costs a reader and a buffer).
const MAX_INBOUND_STREAMS: usize = 4;
/// How often deadlines of want-blocks and the delay for unanswered wants are checked.
const SCHEDULE_TICK: Duration = Duration::from_millis(100);
/// Wants lately completed or given up that are remembered: a block for one of them is a late
/// copy, not junk.
const RECENT_WANTS: usize = 4096;

/// Errors of the Bitswap wire protocol.
#[derive(Debug, thiserror::Error)]
pub enum BitswapError {
    /// A message could not be decoded.
    #[error("malformed bitswap message: {0}")]
    Malformed(String),
    /// A message exceeds [`MAX_MESSAGE_SIZE`].
    #[error("bitswap message of {0} bytes exceeds the 4 MiB limit")]
    TooLarge(u64),
    /// Block data does not hash to its CID.
    #[error("block data does not match CID {0}")]
    HashMismatch(Cid),
    /// The CID uses a hash function we cannot verify.
    #[error("unsupported multihash function 0x{0:x}")]
    UnsupportedHash(u64),
    /// The stream failed.
    #[error("bitswap stream: {0}")]
    Io(io::Error),
}

// Written out rather than `#[from]`, which would also make the inner error the `source`: its
// text is already in the message, and error-chain printers (anyhow's `{:#}`) would repeat it.
impl From<io::Error> for BitswapError {
    fn from(e: io::Error) -> Self {
        BitswapError::Io(e)
    }
}

/// Reads one length-prefixed message; `None` at a clean end of stream. The buffer is filled as
/// bytes arrive (a declared length is only checked against [`MAX_MESSAGE_SIZE`]), and only a
/// block of at least half the message keeps it alive afterwards ([`Message::decode_shared`]).
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Message>, BitswapError> {
    match frame::read_frame(reader, MAX_MESSAGE_SIZE).await {
        Ok(Some(body)) => Message::decode_shared(Bytes::from(body)).map(Some),
        Ok(None) => Ok(None),
        Err(FrameError::TooLarge { declared, .. }) => Err(BitswapError::TooLarge(declared)),
        Err(FrameError::Io(e)) => Err(BitswapError::Io(e)),
        Err(e) => Err(BitswapError::Malformed(e.to_string())),
    }
}

/// Writes one length-prefixed message encoded for `version`, and flushes.
pub async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Message,
    version: Version,
) -> Result<(), BitswapError> {
    for piece in message.encode_framed(version)? {
        writer.write_all(&piece).await?;
    }
    writer.flush().await?;
    Ok(())
}

/// A block we are fetching: one per CID however many callers wait for it.
struct Want {
    /// Tells apart successive wants for the same CID.
    id: u64,
    /// Carries the verified block to every waiter.
    block: watch::Sender<Option<Bytes>>,
    /// Callers still waiting; the want is cancelled when this drops to zero.
    waiters: usize,
    /// Whether the swarm was asked to find providers for it already (once per want).
    sought: bool,
}

struct SessionHandle {
    /// Engine notices; full means the session is behind, see [`SESSION_NOTICES`].
    commands: mpsc::Sender<SessionCommand>,
    /// Set when a notice was dropped: the session resynchronises from the engine's state.
    behind: Arc<AtomicBool>,
    /// The peer's wantlist updates, read from its inbound streams.
    peer_wants: mpsc::Sender<PeerWants>,
    task: AbortHandle,
}

impl SessionHandle {
    /// Hands the session a notice, or marks it behind if it cannot take more.
    fn notify(&self, command: SessionCommand) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.commands.try_send(command) {
            self.behind.store(true, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct State {
    wants: HashMap<Cid, Want>,
    sessions: HashMap<PeerId, SessionHandle>,
    next_want_id: u64,
    /// Decreasing, so that peers serving by priority serve older wants first.
    next_priority: i32,
    closed: bool,
    accept_task: Option<AbortHandle>,
    /// Open inbound streams per peer.
    inbound: HashMap<PeerId, usize>,
    /// Which peer gets which want.
    scheduler: Scheduler,
    /// Wants lately completed or given up (see [`RECENT_WANTS`]), oldest first.
    recent: VecDeque<Cid>,
    recent_set: HashSet<Cid>,
    tick_task: Option<AbortHandle>,
}

impl State {
    /// Hands the scheduler's orders to the sessions, one notice per peer and kind.
    fn apply(&self, orders: Vec<Order>) {
        let mut wants: HashMap<PeerId, Vec<(Cid, i32, WantType)>> = HashMap::new();
        let mut cancels: HashMap<PeerId, Vec<Cid>> = HashMap::new();
        for order in orders {
            match order {
                Order::Want {
                    peer,
                    cid,
                    priority,
                    want_type,
                } => wants
                    .entry(peer)
                    .or_default()
                    .push((cid, priority, want_type)),
                Order::Cancel { peer, cid } => cancels.entry(peer).or_default().push(cid),
            }
        }
        // Cancels first: a cancel and a new want for the same CID mean "ask again".
        for (peer, cids) in cancels {
            if let Some(session) = self.sessions.get(&peer) {
                session.notify(SessionCommand::Cancel(cids));
            }
        }
        for (peer, entries) in wants {
            if let Some(session) = self.sessions.get(&peer) {
                session.notify(SessionCommand::Want(entries));
            }
        }
    }

    /// Remembers a want that ended, so that copies of its block arriving late are not junk.
    fn remember(&mut self, cid: Cid) {
        if self.recent_set.insert(cid) {
            self.recent.push_back(cid);
            if self.recent.len() > RECENT_WANTS {
                if let Some(old) = self.recent.pop_front() {
                    self.recent_set.remove(&old);
                }
            }
        }
    }
}

/// The Bitswap engine shared by the swarm task, the sessions and the callers of `fetch`.
pub(crate) struct Bitswap {
    blocks: Arc<BlockStore>,
    control: libp2p_stream::Control,
    state: Mutex<State>,
    /// How many peer sessions run, for fetches waiting to see whether anyone is connected.
    sessions: watch::Sender<usize>,
    /// Peers that stopped reading what we send them: the swarm disconnects them.
    stalled: mpsc::UnboundedSender<PeerId>,
    /// Wants no connected peer delivers: the swarm looks up their providers and dials them.
    seek: mpsc::UnboundedSender<Cid>,
    /// Received blocks hashed and stored at once per inbound stream.
    receive_concurrency: usize,
    /// Where blocks sent and received are counted.
    metrics: P2pMetrics,
}

impl Bitswap {
    /// Starts accepting Bitswap streams; `control` must come from the swarm's stream behaviour.
    /// Peers that stop reading their stream are sent to `stalled`, for the swarm to disconnect;
    /// wants no connected peer delivers are sent to `seek`, for the swarm to find providers.
    /// At most `receive_concurrency` received blocks per stream are hashed and stored at once.
    /// Blocks sent and received are counted into `metrics`.
    pub(crate) fn start(
        blocks: Arc<BlockStore>,
        mut control: libp2p_stream::Control,
        stalled: mpsc::UnboundedSender<PeerId>,
        seek: mpsc::UnboundedSender<Cid>,
        receive_concurrency: usize,
        metrics: P2pMetrics,
    ) -> Result<Arc<Self>, P2pError> {
        let mut incoming = Vec::new();
        for (protocol, _) in PROTOCOLS {
            let streams = control
                .accept(protocol.clone())
                .map_err(|e| P2pError::Setup(format!("registering {protocol}: {e}")))?;
            incoming.push(streams);
        }
        let engine = Arc::new(Bitswap {
            blocks,
            control,
            state: Mutex::new(State {
                next_priority: i32::MAX,
                ..State::default()
            }),
            sessions: watch::channel(0).0,
            stalled,
            seek,
            receive_concurrency: receive_concurrency.max(1),
            metrics,
        });
        let accepting = engine.clone();
        let task = tokio::spawn(async move {
            let mut incoming = libp2p::futures::stream::select_all(incoming);
            // libp2p-stream drops inbound streams while this loop is busy, so it only spawns.
            while let Some((peer, stream)) = incoming.next().await {
                let Some(guard) = accepting.admit_inbound(peer) else {
                    tracing::debug!(%peer, "too many inbound bitswap streams from one peer, refusing another");
                    continue;
                };
                let engine = accepting.clone();
                tokio::spawn(
                    async move {
                        engine.read_inbound(peer, stream).await;
                        drop(guard);
                    }
                    .instrument(tracing::debug_span!("bitswap_in", %peer)),
                );
            }
        });
        let ticking = Arc::downgrade(&engine);
        let tick_task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(SCHEDULE_TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(engine) = ticking.upgrade() else {
                    return;
                };
                let mut state = engine.lock();
                let orders = state.scheduler.tick(tokio::time::Instant::now());
                state.apply(orders);
            }
        });
        let mut state = engine.lock();
        state.accept_task = Some(task.abort_handle());
        state.tick_task = Some(tick_task.abort_handle());
        drop(state);
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind: still consistent enough.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the session with a newly connected peer and tells it every pending want.
    pub(crate) fn peer_connected(self: &Arc<Self>, peer: PeerId) {
        let mut state = self.lock();
        if state.closed || state.sessions.contains_key(&peer) {
            return;
        }
        let (tx, rx) = mpsc::channel(SESSION_NOTICES);
        let (wants_tx, wants_rx) = mpsc::channel(PEER_WANTLISTS);
        let behind = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(
            session::run(
                peer,
                self.control.clone(),
                self.blocks.clone(),
                Arc::downgrade(self),
                session::Inbox {
                    notices: rx,
                    behind: behind.clone(),
                    peer_wants: wants_rx,
                },
            )
            .instrument(tracing::debug_span!("bitswap_session", %peer)),
        );
        state.sessions.insert(
            peer,
            SessionHandle {
                commands: tx,
                behind,
                peer_wants: wants_tx,
                task: task.abort_handle(),
            },
        );
        let orders = state.scheduler.add_peer(peer, tokio::time::Instant::now());
        state.apply(orders);
        self.sessions.send_replace(state.sessions.len());
    }

    /// The wants `peer` was sent and that still stand, for its session catching up.
    fn pending_wants(&self, peer: &PeerId) -> Vec<(Cid, i32, WantType)> {
        self.lock().scheduler.sent_to(peer)
    }

    /// This node's peer id: replicas fetching the same blocks rank themselves with it.
    pub(crate) fn set_local_peer(&self, peer: PeerId) {
        self.lock().scheduler.set_local_peer(peer);
    }

    /// Our stream to `peer` speaks `version`: whether it answers want-haves.
    fn peer_version(&self, peer: PeerId, version: Version) {
        let mut state = self.lock();
        let orders = state.scheduler.set_presences(
            peer,
            version >= Version::V120,
            tokio::time::Instant::now(),
        );
        state.apply(orders);
    }

    /// A session's peer stopped reading: have the swarm disconnect it (its session ends then).
    fn peer_stalled(&self, peer: PeerId) {
        let _ = self.stalled.send(peer);
    }

    /// Counts an inbound stream of `peer`, unless it already has [`MAX_INBOUND_STREAMS`].
    fn admit_inbound(self: &Arc<Self>, peer: PeerId) -> Option<InboundGuard> {
        let mut state = self.lock();
        let open = state.inbound.entry(peer).or_default();
        if *open >= MAX_INBOUND_STREAMS {
            return None;
        }
        *open += 1;
        Some(InboundGuard {
            engine: self.clone(),
            peer,
        })
    }

    /// Ends the session with a peer that has no connection left.
    pub(crate) fn peer_disconnected(&self, peer: &PeerId) {
        let mut state = self.lock();
        if let Some(session) = state.sessions.remove(peer) {
            session.task.abort();
        }
        let orders = state
            .scheduler
            .remove_peer(peer, tokio::time::Instant::now());
        state.apply(orders);
        self.sessions.send_replace(state.sessions.len());
    }

    /// Stops everything: sessions, the accept loop, and pending fetches (which fail).
    pub(crate) fn shutdown(&self) {
        let mut state = self.lock();
        state.closed = true;
        for (_, session) in state.sessions.drain() {
            session.task.abort();
        }
        self.sessions.send_replace(0);
        if let Some(task) = state.accept_task.take() {
            task.abort();
        }
        if let Some(task) = state.tick_task.take() {
            task.abort();
        }
        state.wants.clear();
        state.scheduler = Scheduler::default();
    }

    /// The block from any connected peer, verified and stored; see [`super::P2p::fetch_block`].
    pub(crate) async fn fetch(
        self: &Arc<Self>,
        cid: Cid,
        timeout: Duration,
    ) -> Result<Bytes, P2pError> {
        if !is_supported(&cid) {
            return Err(P2pError::UnsupportedHash {
                cid,
                code: cid.hash().code(),
            });
        }
        if let Some(data) = self.blocks.get(&cid).await? {
            return Ok(data);
        }
        let (mut block, guard) = self.register(cid)?;
        // A concurrent fetch may have stored the block between the look above and registering.
        if let Some(data) = self.blocks.get(&cid).await? {
            return Ok(data);
        }
        let wait = async {
            loop {
                if let Some(data) = block.borrow_and_update().clone() {
                    return Ok(data);
                }
                if block.changed().await.is_err() {
                    // The engine shut down, unless the block arrived just before.
                    return block.borrow().clone().ok_or(P2pError::Shutdown);
                }
            }
        };
        let result = tokio::select! {
            waited = tokio::time::timeout(timeout, wait) => match waited {
                Ok(result) => result,
                Err(_) => Err(P2pError::FetchTimeout { cid, timeout }),
            },
            () = self.alone_for(NO_PEER_GRACE.min(timeout)) => Err(P2pError::NoPeers {
                cid,
                waited: NO_PEER_GRACE.min(timeout),
            }),
            never = self.seek_providers_when_stuck(cid) => match never {},
        };
        drop(guard);
        result
    }

    /// Resolves once no peer has been connected for `grace` without a break: nobody can
    /// answer a want then, and a caller (an HTTP client, say) is better told at once than after
    /// the whole fetch timeout. Peers that connect within `grace` get the want.
    async fn alone_for(&self, grace: Duration) {
        let mut sessions = self.sessions.subscribe();
        loop {
            let changed = if *sessions.borrow_and_update() > 0 {
                sessions.changed().await
            } else {
                match tokio::time::timeout(grace, sessions.changed()).await {
                    Ok(changed) => changed,
                    Err(_) => return,
                }
            };
            // The sender lives as long as `self`, so this is only a guard.
            if changed.is_err() {
                return;
            }
        }
    }

    /// Asks the swarm to find providers of `cid` once its want is stuck: no peer connected,
    /// every connected peer answered DONT_HAVE, or [`PROVIDER_SEARCH_DELAY`] passed and no
    /// connected peer said HAVE or one missed its deadline. Once per
    /// want, however many callers wait for it; then (or if the want is gone) waits forever, for
    /// the caller's other branches to end the fetch.
    async fn seek_providers_when_stuck(&self, cid: Cid) -> std::convert::Infallible {
        let deadline = tokio::time::Instant::now() + PROVIDER_SEARCH_DELAY;
        loop {
            {
                let mut state = self.lock();
                let State {
                    wants,
                    sessions,
                    scheduler,
                    ..
                } = &mut *state;
                let Some(want) = wants.get_mut(&cid) else {
                    break;
                };
                if want.sought {
                    break;
                }
                let nobody_has_it = scheduler.stuck(&cid);
                // Past the delay, a want still waiting for a peer that has the block (its window
                // is full, or a fellow fetcher serves it) needs no providers: with many replicas
                // fetching one blob, almost every want waited that long, and each lookup cost
                // every node DHT queries.
                let overdue =
                    tokio::time::Instant::now() >= deadline && !scheduler.has_holder(&cid);
                if nobody_has_it || overdue {
                    want.sought = true;
                    tracing::debug!(%cid, peers = sessions.len(), "no connected peer delivers: looking for providers");
                    let _ = self.seek.send(cid);
                    break;
                }
            }
            tokio::time::sleep(STUCK_CHECK_INTERVAL).await;
        }
        std::future::pending().await
    }

    /// A peer answered HAVE or DONT_HAVE to a want.
    fn note_presence(&self, peer: PeerId, cid: &Cid, presence: Presence) {
        let mut state = self.lock();
        let orders = state.scheduler.presence(
            peer,
            cid,
            presence == Presence::Have,
            tokio::time::Instant::now(),
        );
        state.apply(orders);
    }

    /// A peer sent data that is no block we want or lately wanted.
    fn note_junk(&self, peer: PeerId) {
        let mut state = self.lock();
        let orders = state.scheduler.junk(peer, tokio::time::Instant::now());
        state.apply(orders);
    }

    /// Joins (or creates and announces) the want for `cid`.
    fn register(
        self: &Arc<Self>,
        cid: Cid,
    ) -> Result<(watch::Receiver<Option<Bytes>>, WantGuard), P2pError> {
        let mut state = self.lock();
        if state.closed {
            return Err(P2pError::Shutdown);
        }
        if let Some(want) = state.wants.get_mut(&cid) {
            want.waiters += 1;
            let guard = WantGuard {
                engine: self.clone(),
                cid,
                id: want.id,
            };
            return Ok((want.block.subscribe(), guard));
        }
        let id = state.next_want_id;
        state.next_want_id += 1;
        let priority = state.next_priority;
        state.next_priority = state.next_priority.saturating_sub(1).max(1);
        let (tx, rx) = watch::channel(None);
        state.wants.insert(
            cid,
            Want {
                id,
                block: tx,
                waiters: 1,
                sought: false,
            },
        );
        let orders = state
            .scheduler
            .add_want(cid, priority, tokio::time::Instant::now());
        state.apply(orders);
        tracing::trace!(%cid, peers = state.sessions.len(), "want");
        let guard = WantGuard {
            engine: self.clone(),
            cid,
            id,
        };
        Ok((rx, guard))
    }

    /// A caller stopped waiting: cancel the want at every peer once nobody waits.
    fn unregister(&self, cid: &Cid, id: u64) {
        let mut state = self.lock();
        let Some(want) = state.wants.get_mut(cid) else {
            return;
        };
        if want.id != id {
            return;
        }
        want.waiters = want.waiters.saturating_sub(1);
        if want.waiters > 0 {
            return;
        }
        state.wants.remove(cid);
        state.remember(*cid);
        for session in state.sessions.values() {
            session.notify(SessionCommand::Cancel(vec![*cid]));
        }
        let orders = state
            .scheduler
            .remove_want(cid, tokio::time::Instant::now());
        state.apply(orders);
    }

    fn is_wanted(&self, cid: &Cid) -> bool {
        self.lock().wants.contains_key(cid)
    }

    /// A verified block is stored: wake its waiters, cancel it elsewhere, serve peers wanting it.
    /// Sessions are told the CID only: one that serves the block reads it from the store when
    /// it can send it, so a peer that does not read holds no copy of anything.
    fn complete(&self, cid: Cid, data: Bytes, from: PeerId) {
        let mut state = self.lock();
        let size = data.len();
        if let Some(want) = state.wants.remove(&cid) {
            want.block.send_replace(Some(data));
        }
        state.remember(cid);
        let orders = state
            .scheduler
            .received(&cid, from, size, tokio::time::Instant::now());
        state.apply(orders);
        for (peer, session) in &state.sessions {
            session.notify(SessionCommand::Received {
                cid,
                from_this_peer: *peer == from,
            });
        }
    }

    fn session_wants(&self, peer: &PeerId) -> Option<mpsc::Sender<PeerWants>> {
        self.lock()
            .sessions
            .get(peer)
            .map(|session| session.peer_wants.clone())
    }

    /// Reads what a peer sends on a stream it opened: its wants (for our session with it to
    /// serve) and blocks and presences answering ours.
    async fn read_inbound(self: Arc<Self>, peer: PeerId, mut stream: Stream) {
        let receiving = Arc::new(Semaphore::new(self.receive_concurrency));
        loop {
            let message = match read_message(&mut stream).await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "inbound bitswap stream ended");
                    break;
                }
            };
            tracing::trace!(
                entries = message.entries.len(),
                blocks = message.payload.len() + message.raw_blocks.len(),
                presences = message.presences.len(),
                "bitswap message"
            );
            if !message.entries.is_empty() || message.full {
                // What it wants tells the scheduler which of our wants it is fetching too.
                self.lock().scheduler.peer_wants(
                    &peer,
                    &message.entries,
                    message.full,
                    tokio::time::Instant::now(),
                );
                self.forward_wants(&peer, message.entries, message.full)
                    .await;
            }
            for presence in &message.presences {
                // A peer that said DONT_HAVE keeps our want-have and says HAVE once it gets
                // the block: the scheduler may then ask it.
                tracing::trace!(cid = %presence.cid, presence = ?presence.presence, "presence");
                self.note_presence(peer, &presence.cid, presence.presence);
            }
            let blocks = message
                .payload
                .into_iter()
                .map(|b| (Some(b.prefix), b.data))
                .chain(message.raw_blocks.into_iter().map(|data| (None, data)));
            for (prefix, data) in blocks {
                let Ok(permit) = receiving.clone().acquire_owned().await else {
                    return;
                };
                let engine = self.clone();
                tokio::spawn(
                    async move {
                        engine.receive_block(peer, prefix, data).await;
                        drop(permit);
                    }
                    .in_current_span(),
                );
            }
        }
    }

    /// Hands a peer's wants to our session with it, waiting while the session is behind (so
    /// the peer's stream is not read meanwhile). The session may not exist yet when the stream
    /// raced ahead of the swarm reporting the connection: wait a little for it.
    async fn forward_wants(&self, peer: &PeerId, entries: Vec<Entry>, full: bool) {
        for _ in 0..50 {
            if let Some(wants) = self.session_wants(peer) {
                let _ = wants.send(PeerWants { entries, full }).await;
                return;
            }
            if self.lock().closed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::debug!("dropping wants from a peer without a session");
    }

    /// Hashes a received block, stores it if it is wanted, and completes the want. The hash
    /// decides the CID, so data that does not match the CID it claims is simply not wanted.
    async fn receive_block(self: Arc<Self>, peer: PeerId, prefix: Option<CidPrefix>, data: Bytes) {
        let engine = self.clone();
        let stored =
            tokio::task::spawn_blocking(move || -> Result<Option<(Cid, Bytes)>, P2pError> {
                let Some(cid) = engine.wanted_cid(peer, prefix, &data) else {
                    return Ok(None);
                };
                engine.blocks.put_blocking(&cid, &data)?;
                Ok(Some((cid, data)))
            })
            .await;
        match stored {
            Ok(Ok(Some((cid, data)))) => {
                tracing::trace!(%cid, size = data.len(), "received block");
                self.metrics.block_received(data.len() as u64);
                self.complete(cid, data, peer);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "dropping a received block"),
            Err(e) => tracing::warn!(error = %e, "block verification task failed"),
        }
    }

    /// The wanted CID `data` from `peer` hashes to, if any (runs on a blocking thread: it
    /// hashes). Data matching no want, now or lately, is junk: the peer loses its want-blocks.
    fn wanted_cid(&self, peer: PeerId, prefix: Option<CidPrefix>, data: &[u8]) -> Option<Cid> {
        let candidates = match prefix {
            Some(prefix) => match prefix.to_cid(data) {
                Ok(cid) => vec![cid],
                Err(e) => {
                    tracing::debug!(error = %e, "unverifiable block");
                    self.note_junk(peer);
                    return None;
                }
            },
            // A 1.0.0 block carries no prefix: it is a CIDv0, but a peer may answer a CIDv1 want
            // that way too, so try the sha2-256 CIDs of both codecs we use.
            None => {
                let Ok(cid) = CidPrefix::v0().to_cid(data) else {
                    return None;
                };
                let hash = *cid.hash();
                vec![
                    cid,
                    Cid::new_v1(crate::tree::DAG_PB, hash),
                    Cid::new_v1(crate::tree::RAW, hash),
                ]
            }
        };
        let wanted = candidates.iter().find(|cid| self.is_wanted(cid)).copied();
        if wanted.is_none() {
            let late = {
                let state = self.lock();
                candidates.iter().any(|cid| state.recent_set.contains(cid))
            };
            if late {
                tracing::debug!(size = data.len(), "ignoring a late copy of a block");
            } else {
                tracing::debug!(
                    size = data.len(),
                    "ignoring data that matches no want: the peer loses its want-blocks"
                );
                self.note_junk(peer);
            }
        }
        wanted
    }
}

/// Counts one open inbound stream of a peer while it lives.
struct InboundGuard {
    engine: Arc<Bitswap>,
    peer: PeerId,
}

impl Drop for InboundGuard {
    fn drop(&mut self) {
        let mut state = self.engine.lock();
        if let Some(open) = state.inbound.get_mut(&self.peer) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                state.inbound.remove(&self.peer);
            }
        }
    }
}

/// Unregisters a caller from a want when its fetch ends, however it ends (even if dropped).
struct WantGuard {
    engine: Arc<Bitswap>,
    cid: Cid,
    id: u64,
}

impl Drop for WantGuard {
    fn drop(&mut self) {
        self.engine.unregister(&self.cid, self.id);
    }
}
