//! One Bitswap session per connected peer: owns our outbound stream to it, sends our wants and
//! cancels, and serves its wants from the block store.
//!
//! Everything the session sends goes through one loop, so wants, cancels, presences and blocks
//! to a peer are ordered and batched into messages of at most 4 MiB. The loop never waits on
//! another peer: it only awaits its own stream and block-store reads, so two peers serving each
//! other cannot deadlock.
//!
//! A peer is untrusted, including one that simply stops reading. Everything queued for it is
//! bounded: its wantlist, the blocks read for it (about [`QUEUED_BYTES`]), presences, and the
//! notices from the engine (which carry CIDs, never block data; a session that falls behind
//! catches up from the engine's state instead). A write that makes no progress for
//! [`write_timeout`] ends the stream, drops what was queued, and has the peer disconnected.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use libp2p::futures::stream::FuturesUnordered;
use libp2p::futures::{FutureExt as _, StreamExt as _};
use libp2p::{PeerId, Stream};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::message::{
    BlockPresence, Entry, Message, PayloadBlock, Presence, Version, WantType, MAX_MESSAGE_SIZE,
};
use super::{write_message, Bitswap, CidPrefix, PROTOCOLS};
use crate::store::{BlockStore, StoreError};

/// Block-store reads in flight per peer.
const READ_AHEAD: usize = 8;
/// Block bytes read and queued for the peer before reads pause.
const QUEUED_BYTES: usize = 8 << 20;
/// Block bytes after which a message takes no further block. The peer handles a message only
/// once it has read all of it, so blocks batched into one large message reach it all at once,
/// late: a message of about one block lets the peer verify each block, and send its next want,
/// while the following ones are on the wire (boxo aims at small messages too).
const TARGET_BLOCK_BYTES: usize = 256 << 10;
/// Room kept in each message for wantlist entries, presences and framing.
const MESSAGE_HEADROOM: usize = 64 << 10;
/// Entries or presences per message.
const MAX_ITEMS: usize = 1024;
/// Wants of one peer we track at most (a misbehaving peer cannot grow it without bound).
const MAX_PEER_WANTS: usize = 65_536;
/// HAVE / DONT_HAVE answers queued for a peer at most; further ones are dropped (the peer's
/// wants stand, and it asks again).
const MAX_QUEUED_PRESENCES: usize = 8 * MAX_ITEMS;
/// A write may take this long plus [`MIN_SEND_RATE`]'s worth per byte before the peer counts
/// as not reading (as boxo bounds its message sends).
const WRITE_LATENCY: Duration = Duration::from_secs(10);
/// Slowest throughput, in bytes per second, a peer must read a message at.
const MIN_SEND_RATE: u64 = 128 << 10;
/// Upper bound of [`write_timeout`].
const MAX_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before opening a stream again after a failure.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// Consecutive failures to send before pending output is dropped.
const MAX_SEND_FAILURES: u32 = 3;

/// How long writing `len` bytes to a peer may take.
pub(super) fn write_timeout(len: usize) -> Duration {
    let transfer = Duration::from_millis((len as u64).saturating_mul(1000) / MIN_SEND_RATE);
    (WRITE_LATENCY + transfer).min(MAX_WRITE_TIMEOUT)
}

/// What the engine tells a session.
pub(super) enum SessionCommand {
    /// Send these wants (CID, priority, want-have or want-block), replacing earlier ones.
    Want(Vec<(Cid, i32, WantType)>),
    /// We no longer want these blocks.
    Cancel(Vec<Cid>),
    /// We stored this block (from `from_this_peer` or another one).
    Received {
        /// The block.
        cid: Cid,
        /// Whether this session's peer sent it.
        from_this_peer: bool,
    },
}

/// A wantlist update from the peer, to serve.
pub(super) struct PeerWants {
    /// Wants and cancels.
    pub(super) entries: Vec<Entry>,
    /// The entries replace the peer's whole wantlist.
    pub(super) full: bool,
}

/// What a session receives.
pub(super) struct Inbox {
    /// Notices from the engine.
    pub(super) notices: mpsc::Receiver<SessionCommand>,
    /// Set by the engine when it dropped a notice because `notices` was full.
    pub(super) behind: Arc<AtomicBool>,
    /// The peer's wantlist updates.
    pub(super) peer_wants: mpsc::Receiver<PeerWants>,
}

/// Where a want of the peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for a store read.
    Queued,
    /// Being read.
    Reading,
    /// We do not have the block; served if we get it while the want stands.
    Waiting,
}

#[derive(Clone, Copy)]
struct PeerWant {
    want_type: WantType,
    send_dont_have: bool,
    stage: Stage,
}

enum Lookup {
    Block(Bytes),
    Have,
    Missing,
}

type Read = JoinHandle<(Cid, Result<Lookup, StoreError>)>;

struct Session {
    peer: PeerId,
    control: libp2p_stream::Control,
    blocks: Arc<BlockStore>,
    engine: Weak<Bitswap>,
    stream: Option<(Stream, Version)>,
    /// The peer speaks no Bitswap version: nothing is ever sent.
    unsupported: bool,
    retry_at: Option<Instant>,
    send_failures: u32,

    /// Our wants the peer knows of (or will with the next message), with their priority and type.
    /// A want lost in transit is not resent from here: the engine's scheduler moves a
    /// want-block that is not delivered in time, and sends it again.
    our_wants: HashMap<Cid, (i32, WantType)>,
    /// Wants and cancels not sent yet.
    out_entries: Vec<Entry>,
    /// The next message carries our whole wantlist (a fresh stream starts from scratch).
    send_full: bool,

    /// The peer's wantlist.
    peer_wants: HashMap<Cid, PeerWant>,
    queue: VecDeque<Cid>,
    reads: FuturesUnordered<Read>,
    out_blocks: VecDeque<(Cid, Bytes)>,
    out_bytes: usize,
    out_presences: Vec<BlockPresence>,
}

/// Runs the session until the engine drops it (the peer disconnected or the node stopped).
pub(super) async fn run(
    peer: PeerId,
    control: libp2p_stream::Control,
    blocks: Arc<BlockStore>,
    engine: Weak<Bitswap>,
    inbox: Inbox,
) {
    tracing::debug!("bitswap session started");
    let Inbox {
        notices: mut commands,
        behind,
        mut peer_wants,
    } = inbox;
    let mut session = Session::new(peer, control, blocks, engine);
    loop {
        // Take in everything already there, so it is batched into the next message.
        loop {
            match commands.try_recv() {
                Ok(command) => session.handle(command),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if behind.swap(false, Ordering::Relaxed) {
            session.catch_up();
        }
        while let Ok(wants) = peer_wants.try_recv() {
            session.serve(wants.entries, wants.full);
        }
        while let Some(Some(read)) = session.reads.next().now_or_never() {
            session.finish_read(read);
        }
        session.start_reads();

        let backing_off = session.retry_at.is_some_and(|at| at > Instant::now());
        if session.has_output() && !backing_off {
            session.send_one().await;
            continue;
        }
        let retry_at = session.retry_at;
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => session.handle(command),
                None => return,
            },
            Some(wants) = peer_wants.recv() => session.serve(wants.entries, wants.full),
            Some(read) = session.reads.next(), if !session.reads.is_empty() => {
                session.finish_read(read);
            }
            _ = sleep_until(retry_at), if backing_off && session.has_output() => {
                session.retry_at = None;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn new(
        peer: PeerId,
        control: libp2p_stream::Control,
        blocks: Arc<BlockStore>,
        engine: Weak<Bitswap>,
    ) -> Self {
        Session {
            peer,
            control,
            blocks,
            engine,
            stream: None,
            unsupported: false,
            retry_at: None,
            send_failures: 0,
            our_wants: HashMap::new(),
            out_entries: Vec::new(),
            send_full: false,
            peer_wants: HashMap::new(),
            queue: VecDeque::new(),
            reads: FuturesUnordered::new(),
            out_blocks: VecDeque::new(),
            out_bytes: 0,
            out_presences: Vec::new(),
        }
    }

    fn handle(&mut self, command: SessionCommand) {
        if self.unsupported {
            return;
        }
        match command {
            SessionCommand::Want(wants) => {
                for (cid, priority, want_type) in wants {
                    let before = self.our_wants.insert(cid, (priority, want_type));
                    if before.map(|(_, t)| t) == Some(want_type) {
                        continue;
                    }
                    // A want not sent yet is replaced rather than followed by the new one.
                    self.out_entries.retain(|e| e.cid != cid || e.cancel);
                    self.out_entries.push(Entry {
                        cid,
                        priority,
                        cancel: false,
                        want_type,
                        send_dont_have: true,
                    });
                }
            }
            SessionCommand::Cancel(cids) => {
                for cid in cids {
                    self.cancel_ours(cid, true);
                }
            }
            SessionCommand::Received {
                cid,
                from_this_peer,
            } => {
                // The peer that sent the block already dropped our want; others get a cancel.
                self.cancel_ours(cid, !from_this_peer);
                self.look_again(cid);
            }
        }
    }

    /// A want of the peer we could not answer may be answerable now: queue a store read.
    fn look_again(&mut self, cid: Cid) {
        if let Some(want) = self.peer_wants.get_mut(&cid) {
            if want.stage == Stage::Waiting {
                want.stage = Stage::Queued;
                self.queue.push_back(cid);
            }
        }
    }

    /// The engine dropped notices while we were stuck: take its wants as they are now (sent
    /// as a full wantlist, which also cancels the rest at the peer), and look again for every
    /// block the peer waits for, since any of them may have arrived.
    fn catch_up(&mut self) {
        let Some(engine) = self.engine.upgrade() else {
            return;
        };
        tracing::debug!("catching up after dropped notices");
        self.our_wants = engine
            .pending_wants(&self.peer)
            .into_iter()
            .map(|(cid, priority, want_type)| (cid, (priority, want_type)))
            .collect();
        self.out_entries.clear();
        self.send_full = true;
        let waiting: Vec<Cid> = self
            .peer_wants
            .iter()
            .filter(|(_, w)| w.stage == Stage::Waiting)
            .map(|(cid, _)| *cid)
            .collect();
        for cid in waiting {
            self.look_again(cid);
        }
    }

    fn cancel_ours(&mut self, cid: Cid, tell_peer: bool) {
        if self.our_wants.remove(&cid).is_none() {
            return;
        }
        let before = self.out_entries.len();
        self.out_entries.retain(|e| e.cid != cid || e.cancel);
        // A want still queued here never reached the peer: dropping it is enough. (A replaced
        // want leaves the older, sent one behind only if it was sent: then nothing is queued.)
        let was_sent = self.out_entries.len() == before;
        if tell_peer && was_sent && !self.send_full {
            self.out_entries.push(Entry::cancel(cid));
        }
    }

    fn serve(&mut self, entries: Vec<Entry>, full: bool) {
        if self.unsupported {
            return;
        }
        if full {
            self.peer_wants.clear();
            self.queue.clear();
        }
        let mut wants: Vec<Entry> = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.cancel {
                self.peer_wants.remove(&entry.cid);
            } else {
                wants.push(entry);
            }
        }
        // Higher priority first, as the spec asks; the sort is stable, so ties keep their order.
        wants.sort_by_key(|e| std::cmp::Reverse(e.priority));
        for entry in wants {
            if self.peer_wants.len() >= MAX_PEER_WANTS {
                tracing::debug!("peer wantlist full, ignoring further wants");
                break;
            }
            let stage = self.peer_wants.get(&entry.cid).map(|w| w.stage);
            match stage {
                // Already being looked at: just take the newer want type (block beats have).
                Some(Stage::Queued) | Some(Stage::Reading) => {
                    if let Some(want) = self.peer_wants.get_mut(&entry.cid) {
                        if entry.want_type == WantType::Block {
                            want.want_type = WantType::Block;
                        }
                        want.send_dont_have |= entry.send_dont_have;
                    }
                }
                // Asked again: look again (we may have the block by now).
                Some(Stage::Waiting) | None => {
                    self.peer_wants.insert(
                        entry.cid,
                        PeerWant {
                            want_type: entry.want_type,
                            send_dont_have: entry.send_dont_have,
                            stage: Stage::Queued,
                        },
                    );
                    self.queue.push_back(entry.cid);
                }
            }
        }
        self.compact_queue();
    }

    /// Drops queue entries that no longer stand for a queued want (cancelled, or queued twice
    /// after a cancel and a new want), once they outnumber the wants: a peer cycling wants and
    /// cancels cannot grow the queue.
    fn compact_queue(&mut self) {
        if self.queue.len() <= 2 * self.peer_wants.len() + MAX_ITEMS {
            return;
        }
        let mut seen = HashSet::new();
        let peer_wants = &self.peer_wants;
        self.queue.retain(|cid| {
            peer_wants
                .get(cid)
                .is_some_and(|w| w.stage == Stage::Queued)
                && seen.insert(*cid)
        });
    }

    fn start_reads(&mut self) {
        while self.reads.len() < READ_AHEAD && self.out_bytes < QUEUED_BYTES {
            let Some(cid) = self.queue.pop_front() else {
                return;
            };
            let Some(want) = self.peer_wants.get_mut(&cid) else {
                continue;
            };
            if want.stage != Stage::Queued {
                continue;
            }
            want.stage = Stage::Reading;
            let blocks = self.blocks.clone();
            let want_type = want.want_type;
            self.reads.push(tokio::task::spawn_blocking(move || {
                let lookup = match want_type {
                    WantType::Block => blocks.get_blocking(&cid).map(|found| match found {
                        Some(data) => Lookup::Block(data),
                        None => Lookup::Missing,
                    }),
                    WantType::Have => Ok(if blocks.has_blocking(&cid) {
                        Lookup::Have
                    } else {
                        Lookup::Missing
                    }),
                };
                (cid, lookup)
            }));
        }
    }

    fn finish_read(
        &mut self,
        read: Result<(Cid, Result<Lookup, StoreError>), tokio::task::JoinError>,
    ) {
        let (cid, lookup) = match read {
            Ok(result) => result,
            Err(e) => {
                tracing::warn!(error = %e, "block read task failed");
                return;
            }
        };
        let lookup = lookup.unwrap_or_else(|e| {
            tracing::warn!(%cid, error = %e, "reading a block to serve");
            Lookup::Missing
        });
        // The want may have been cancelled (or replaced by a full wantlist) meanwhile.
        if let Some(want) = self.peer_wants.get(&cid).copied() {
            self.answer(cid, want, lookup);
        }
    }

    fn answer(&mut self, cid: Cid, want: PeerWant, lookup: Lookup) {
        match (lookup, want.want_type) {
            (Lookup::Block(data), WantType::Block) => {
                self.peer_wants.remove(&cid);
                self.out_bytes += data.len();
                self.out_blocks.push_back((cid, data));
            }
            // The peer turned its want-have into a want-block while we looked the block up
            // for the want-have: read it now, ahead of the queue (the peer waits for it, and
            // answering HAVE would drop the want-block it is waiting for until its deadline).
            (Lookup::Have, WantType::Block) => {
                if let Some(w) = self.peer_wants.get_mut(&cid) {
                    w.stage = Stage::Queued;
                    self.queue.push_front(cid);
                }
            }
            (Lookup::Block(_) | Lookup::Have, _) => {
                self.peer_wants.remove(&cid);
                self.queue_presence(cid, Presence::Have);
            }
            (Lookup::Missing, _) => {
                if want.send_dont_have && want.stage != Stage::Waiting {
                    self.queue_presence(cid, Presence::DontHave);
                }
                if let Some(w) = self.peer_wants.get_mut(&cid) {
                    w.stage = Stage::Waiting;
                }
            }
        }
    }

    fn queue_presence(&mut self, cid: Cid, presence: Presence) {
        if self.out_presences.len() < MAX_QUEUED_PRESENCES {
            self.out_presences.push(BlockPresence { cid, presence });
        }
    }

    fn has_output(&self) -> bool {
        !self.out_entries.is_empty()
            || (self.send_full && (!self.our_wants.is_empty() || self.stream.is_some()))
            || !self.out_blocks.is_empty()
            || !self.out_presences.is_empty()
    }

    /// Opens our stream to the peer with the newest Bitswap version it speaks.
    async fn open_stream(&mut self) -> Option<()> {
        for (protocol, version) in PROTOCOLS {
            match self.control.open_stream(self.peer, protocol.clone()).await {
                Ok(stream) => {
                    tracing::debug!(%protocol, "opened bitswap stream");
                    self.stream = Some((stream, version));
                    if let Some(engine) = self.engine.upgrade() {
                        engine.peer_version(self.peer, version);
                    }
                    // Whatever the peer knew of our wants went with the old stream, if any.
                    self.send_full = true;
                    return Some(());
                }
                Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "opening a bitswap stream failed");
                    self.failed();
                    return None;
                }
            }
        }
        tracing::debug!("peer speaks no bitswap version");
        self.unsupported = true;
        self.our_wants.clear();
        self.out_entries.clear();
        self.out_blocks.clear();
        self.out_bytes = 0;
        self.out_presences.clear();
        self.peer_wants.clear();
        None
    }

    /// The peer has not read a message for `waited`: it is gone or hostile. Drop everything
    /// queued for it and have it disconnected; if it connects again, it starts afresh.
    fn stalled(&mut self, waited: Duration) {
        tracing::warn!(peer = %self.peer, ?waited, "peer stopped reading its bitswap stream: dropping what was queued for it and disconnecting");
        self.stream = None;
        self.out_blocks.clear();
        self.out_bytes = 0;
        self.out_presences.clear();
        self.peer_wants.clear();
        self.queue.clear();
        self.retry_at = Some(Instant::now() + RETRY_DELAY);
        if let Some(engine) = self.engine.upgrade() {
            engine.peer_stalled(self.peer);
        }
    }

    fn failed(&mut self) {
        self.stream = None;
        self.send_failures += 1;
        self.retry_at = Some(Instant::now() + RETRY_DELAY);
        if self.send_failures >= MAX_SEND_FAILURES {
            tracing::debug!("giving up on pending output after repeated failures");
            self.out_blocks.clear();
            self.out_bytes = 0;
            self.out_presences.clear();
            self.send_failures = 0;
        }
    }

    fn next_message(&mut self) -> (Message, Vec<(Cid, Bytes)>) {
        let mut message = Message::default();
        if self.send_full {
            self.send_full = false;
            message.full = true;
            message.entries = self
                .our_wants
                .iter()
                .map(|(cid, (priority, want_type))| Entry {
                    cid: *cid,
                    priority: *priority,
                    cancel: false,
                    want_type: *want_type,
                    send_dont_have: true,
                })
                .collect();
            // A full wantlist supersedes pending wants and cancels alike.
            self.out_entries.clear();
        } else {
            let n = self.out_entries.len().min(MAX_ITEMS);
            message.entries = self.out_entries.drain(..n).collect();
        }
        let n = self.out_presences.len().min(MAX_ITEMS);
        message.presences = self.out_presences.drain(..n).collect();

        let mut size = 0;
        let mut sent = Vec::new();
        while let Some((_, data)) = self.out_blocks.front() {
            let len = data.len();
            if len + MESSAGE_HEADROOM > MAX_MESSAGE_SIZE {
                if let Some((cid, _)) = self.out_blocks.pop_front() {
                    tracing::warn!(%cid, len, "block too large for a bitswap message, not sent");
                }
                self.out_bytes -= len;
                continue;
            }
            if size + len + MESSAGE_HEADROOM > MAX_MESSAGE_SIZE || size >= TARGET_BLOCK_BYTES {
                break;
            }
            let Some((cid, data)) = self.out_blocks.pop_front() else {
                break;
            };
            size += len;
            self.out_bytes -= len;
            message.payload.push(PayloadBlock {
                prefix: CidPrefix::of(&cid),
                data: data.clone(),
            });
            sent.push((cid, data));
        }
        message.pending_bytes = i32::try_from(self.out_bytes).unwrap_or(i32::MAX);
        (message, sent)
    }

    async fn send_one(&mut self) {
        if self.stream.is_none() && self.open_stream().await.is_none() {
            return;
        }
        let (message, sent) = self.next_message();
        if message.is_empty() {
            return;
        }
        let Some((stream, version)) = self.stream.as_mut() else {
            return;
        };
        let size = sent.iter().map(|(_, data)| data.len()).sum::<usize>() + MESSAGE_HEADROOM;
        let limit = write_timeout(size);
        let written =
            match tokio::time::timeout(limit, write_message(stream, &message, *version)).await {
                Ok(written) => written,
                Err(_) => {
                    self.stalled(limit);
                    return;
                }
            };
        match written {
            Ok(()) => {
                self.send_failures = 0;
                if let Some(engine) = self.engine.upgrade() {
                    let bytes = sent.iter().map(|(_, data)| data.len() as u64).sum();
                    engine.metrics.blocks_sent(sent.len() as u64, bytes);
                }
                tracing::trace!(
                    entries = message.entries.len(),
                    blocks = sent.len(),
                    presences = message.presences.len(),
                    "sent bitswap message"
                );
            }
            Err(e) => {
                tracing::debug!(error = %e, "writing to the bitswap stream failed");
                // Put the message back: blocks and presences first in line again; the wantlist
                // is resent in full on the next stream.
                for (cid, data) in sent.into_iter().rev() {
                    self.out_bytes += data.len();
                    self.out_blocks.push_front((cid, data));
                }
                let mut presences = message.presences;
                presences.append(&mut self.out_presences);
                self.out_presences = presences;
                self.failed();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{cid_of, RAW};

    fn session(dir: &tempfile::TempDir) -> Session {
        let blocks = Arc::new(BlockStore::open(dir.path().join("blocks")).unwrap());
        let control = libp2p_stream::Behaviour::new().new_control();
        Session::new(PeerId::random(), control, blocks, Weak::new())
    }

    fn wants(from: u32, count: u32) -> Vec<Entry> {
        (from..from + count)
            .map(|i| Entry::want_block(cid_of(RAW, &i.to_le_bytes()), 1))
            .collect()
    }

    #[tokio::test]
    async fn a_peer_cannot_grow_its_wantlist_or_our_queue_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut session = session(&dir);
        let over = MAX_PEER_WANTS as u32 + 1000;
        // Full wantlists replace each other: neither the wantlist nor the read queue grows.
        for round in 0..3 {
            session.serve(wants(round * over, over), true);
            assert_eq!(session.peer_wants.len(), MAX_PEER_WANTS);
            assert_eq!(session.queue.len(), MAX_PEER_WANTS);
        }
        // Partial updates stop at the cap too.
        session.serve(wants(10 * over, 100), false);
        assert_eq!(session.peer_wants.len(), MAX_PEER_WANTS);

        // Cancelling and wanting again over and over leaves stale queue entries, which are
        // compacted away instead of piling up.
        let mut session = self::session(&dir);
        let few = wants(0, 10);
        for _ in 0..10_000 {
            let cancels = few.iter().map(|e| Entry::cancel(e.cid)).collect();
            session.serve(cancels, false);
            session.serve(few.clone(), false);
        }
        assert_eq!(session.peer_wants.len(), 10);
        assert!(
            session.queue.len() <= 2 * 10 + MAX_ITEMS,
            "{}",
            session.queue.len()
        );
    }

    /// Runs the session's store reads until none is left, as its loop does.
    async fn finish_reads(session: &mut Session) {
        session.start_reads();
        while let Some(read) = session.reads.next().await {
            session.finish_read(read);
            session.start_reads();
        }
    }

    #[tokio::test]
    async fn a_want_block_that_arrives_while_its_want_have_is_looked_up_gets_the_block() {
        let dir = tempfile::tempdir().unwrap();
        let mut session = session(&dir);
        let data = b"a block the peer first asks about, then asks for";
        let cid = cid_of(RAW, data);
        session.blocks.put_blocking(&cid, data).unwrap();
        let mut have = Entry::want_block(cid, 1);
        have.want_type = WantType::Have;
        session.serve(vec![have], false);
        // The lookup for the want-have is under way when the want-block comes in.
        session.start_reads();
        assert_eq!(session.peer_wants[&cid].stage, Stage::Reading);
        session.serve(vec![Entry::want_block(cid, 1)], false);
        finish_reads(&mut session).await;
        let sent: Vec<Cid> = session.out_blocks.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            sent,
            vec![cid],
            "the want-block was answered with the block"
        );
        assert!(session.out_presences.is_empty());
        assert!(session.peer_wants.is_empty());

        // A want-have alone is still answered HAVE, without the block.
        let mut session = self::session(&dir);
        let mut have = Entry::want_block(cid, 1);
        have.want_type = WantType::Have;
        session.serve(vec![have], false);
        finish_reads(&mut session).await;
        assert!(session.out_blocks.is_empty());
        assert_eq!(session.out_presences.len(), 1);
        assert_eq!(session.out_presences[0].presence, Presence::Have);
    }

    #[tokio::test]
    async fn presences_queued_for_a_peer_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut session = session(&dir);
        for i in 0..(2 * MAX_QUEUED_PRESENCES) as u32 {
            session.queue_presence(cid_of(RAW, &i.to_le_bytes()), Presence::DontHave);
        }
        assert_eq!(session.out_presences.len(), MAX_QUEUED_PRESENCES);
    }

    #[test]
    fn write_timeout_grows_with_size_and_is_capped() {
        assert_eq!(write_timeout(0), WRITE_LATENCY);
        assert!(write_timeout(4 << 20) > write_timeout(1 << 20));
        assert_eq!(write_timeout(usize::MAX), MAX_WRITE_TIMEOUT);
    }
}
