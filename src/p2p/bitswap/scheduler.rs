//! Which peer to ask for each block we want: the client side's scheduling, after the design of
//! boxo's session and peer manager (not its code).
//!
//! Every connected peer that speaks Bitswap 1.2 gets a want-have (with sendDontHave) for each
//! want; it answers HAVE or DONT_HAVE, and one that lacks the block keeps the want-have and says
//! HAVE once it gets the block. The want-block goes to ONE peer at a time: one that said HAVE,
//! chosen by load (want-blocks outstanding against the peer's window), preferring peers that
//! hold fewer of our wants (a replica that just got a block over the writer, which has them
//! all), then by observed throughput; a per-node random tie-break spreads consecutive wants
//! over equal peers, and each node takes its waiting wants in its own random order, so replicas
//! fetch different blocks from the writer and then from each other. A want with no HAVE after
//! [`UNANSWERED_DELAY`] goes to a peer that has not answered (Bitswap 1.0/1.1 peers never do).
//!
//! Replicas fetching the same blocks at once split the work without talking about it: for each
//! want, this node and the peers that want the same block (each sends us its want-haves) rank
//! by a hash of (CID, peer id), the same on every node (rendezvous hashing). The first fetches
//! the block from the source; the others wait for its HAVE and then fetch from it, so the
//! source sends each block about once rather than once per replica. They wait up to
//! [`DEFER_LIMIT`], or a few of the source's latencies where that is longer (a slow uplink
//! shared by many replicas). A peer that wants nothing we want changes nothing.
//!
//! Once a fellow has a block, the block comes from fellows only: a want waits for a busy
//! fellow's window rather than go to the source, whose uplink all fellows share. It waits as
//! long as above, and longer while such a fellow keeps delivering blocks to us: a fellow that
//! is merely busy delivers, and a want sent past it makes the source send a block again.
//!
//! A want-block moves to another peer when its peer answers DONT_HAVE, disconnects, sends data
//! that is no block we want, or does not deliver within a deadline derived from its observed
//! latency; the old peer gets a cancel, so it does not send a late copy. A peer that delivers
//! is busy, not stalled: each block it delivers renews the deadlines of our other want-blocks
//! at it (up to [`MAX_QUEUED_WAIT`]); one that delivers nothing is passed by within the
//! deadline. Once every peer that could have the block failed, the failures are forgotten and
//! the peers asked again.
//!
//! The window of want-blocks in flight per peer is sized from what the peer delivers: about
//! twice its delivery rate times its lowest latency (the bandwidth-delay product), bounded by
//! [`MIN_WINDOW`] and [`MAX_WINDOW`]. It grows while the rate grows, and shrinks on timeouts; a
//! missed deadline also raises the peer's latency estimate to the time it missed, so the next
//! deadline is longer.
//!
//! Everything here is plain state: the engine feeds it events and sends the [`Order`]s it
//! returns, so the choices are tested without a network.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher as _;
use std::time::Duration;

use cid::Cid;
use libp2p::PeerId;
use tokio::time::Instant;

use super::message::{Entry, WantType};

/// How long a want waits for a HAVE before a peer that did not answer gets the want-block.
pub(super) const UNANSWERED_DELAY: Duration = Duration::from_millis(500);
/// Want-blocks a peer gets before anything was measured.
const INITIAL_WINDOW: usize = 4;
/// Want-blocks a peer always may have in flight: one arriving, one on the wire, one being
/// read at the peer.
const MIN_WINDOW: usize = 3;
/// Want-blocks a peer may have in flight at most.
const MAX_WINDOW: usize = 32;
/// Multiple of the bandwidth-delay product kept in flight: one to fill the link, one to cover
/// the time between a block arriving and the next want reaching the peer.
const WINDOW_GAIN: f64 = 2.0;
/// Bounds of the deadline a peer has to deliver a want-block.
const MIN_DEADLINE: Duration = Duration::from_secs(1);
const MAX_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline in multiples of the peer's smoothed latency (which includes its queueing).
const DEADLINE_RTTS: f64 = 3.0;
/// How long a want-block may wait at a peer that keeps delivering other blocks: each delivery
/// renews the deadlines of its other want-blocks, up to this long after each was asked.
const MAX_QUEUED_WAIT: Duration = Duration::from_secs(15);
/// Weight of a new sample in the smoothed latency and rate.
const SMOOTHING: f64 = 0.125;
/// How long a want waits at most for the fellow fetcher that ranks first for it to say HAVE,
/// before it goes to whoever has the block. Long: while replicas share the source's uplink,
/// the fellow gets its blocks only as fast as that uplink divided among them; a fellow that
/// gives up cancels its want and is not waited for any longer. Where the source is slower
/// than that allows, the wait is [`DEFER_RTTS`] of the source's latency instead.
pub(super) const DEFER_LIMIT: Duration = Duration::from_secs(10);
/// The wait for a fellow, in multiples of the source's latency to us (its queue included;
/// see `Scheduler::defer_limit`), when that is longer than [`DEFER_LIMIT`]: the fellow's want
/// waits in a queue like ours at the source, and its HAVE behind a block on its way to us.
/// Waiting a fixed time instead, on a slow uplink shared by many replicas, sent most wants to
/// the source again, which slowed it further (16 replicas at 50 Mbit/s: the source sent 3x
/// the blob).
const DEFER_RTTS: f64 = 3.0;
/// Upper bound of the wait for fellows, however slow the source or busy the fellow: half the
/// default fetch timeout (30 s), so a want that waited this long still has time to come from
/// the source before its fetch gives up.
const MAX_DEFER: Duration = Duration::from_secs(15);
/// How long a want waits for a fellow that has said no HAVE meanwhile: the fellow may have no
/// way to the source (wants reach us from peers the source is not connected to), and one that
/// gets blocks says HAVE for them as they arrive.
const FELLOW_PATIENCE: Duration = Duration::from_secs(3);
/// How long a fellow that cancelled its want still counts: it cancels when it got the block,
/// and its HAVE follows.
const CANCEL_GRACE: Duration = Duration::from_millis(500);
/// How long a new want waits for the answers of fellow fetchers, which decide who ranks first.
/// A fellow whose want-have has not reached us yet is left out of the ranking, and if it ranks
/// first we fetch the block from the source too. With 16 replicas sharing two cores, answers
/// took longer than 150 ms, and the writer sent 1.86-1.88x the blob; waiting 500 ms, 1.44-1.57x
/// with the slowest replica no later (8 replicas: 1.06-1.10x against 1.09-1.12x). It delays only
/// the first wants of a fetch: those of one DAG level start together and wait together.
const GATHER_DELAY: Duration = Duration::from_millis(500);
/// Wants of one peer remembered at most (beyond that, its further wants are not counted: we
/// then fetch those blocks ourselves rather than wait for it).
const MAX_PEER_WANTS: usize = 4096;
/// Block size assumed before any arrived (our chunker's size).
const ASSUMED_BLOCK_SIZE: f64 = 1_048_576.0;
/// Shortest interval a rate sample is computed over, against division by almost zero.
const MIN_SAMPLE_SECS: f64 = 0.001;

/// What the engine is to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Order {
    /// Send `peer` a want of `want_type` (replacing any earlier one for the CID).
    Want {
        /// Who gets it.
        peer: PeerId,
        /// The block.
        cid: Cid,
        /// Priority sent along.
        priority: i32,
        /// Want-have or want-block.
        want_type: WantType,
    },
    /// Cancel our want of `cid` at `peer`.
    Cancel {
        /// Who gets it.
        peer: PeerId,
        /// The block.
        cid: Cid,
    },
}

/// What we know of one connected peer.
#[derive(Debug)]
struct PeerStats {
    /// Speaks Bitswap 1.2 (presences); assumed until its stream says otherwise.
    presences: bool,
    /// Our want-blocks it has not delivered yet.
    outstanding: usize,
    /// Smoothed seconds from want-block to block, queueing included.
    srtt: Option<f64>,
    /// Lowest seconds from want-block to block seen for a block of about the usual size: the
    /// latency without queueing. A small block (a DAG's root) comes back far sooner than a
    /// 1 MiB chunk, which the peer reads and sends and we hash and store: on loopback 0.6 ms
    /// against 7.5 ms or more, and a window sized from the small block's latency held a whole
    /// pull to [`MIN_WINDOW`] want-blocks at the peer (a cold pull on loopback ran 10% slower).
    min_rtt: Option<f64>,
    /// Size of the block whose delivery set `min_rtt`.
    min_rtt_bytes: usize,
    /// Seconds from want-block to block of its latest delivery: its queue now, which the
    /// smoothed latency follows only over several deliveries.
    last_rtt: Option<f64>,
    /// Smoothed bytes per second it delivers to us.
    rate: Option<f64>,
    /// Smoothed size of the blocks it delivers.
    block_size: f64,
    /// When its last block arrived, to measure the rate between deliveries.
    last_delivery: Option<Instant>,
    /// What it wants of us (and has not cancelled): blocks it is fetching too.
    wants: HashSet<Cid>,
    /// When it last said HAVE: as a fellow fetcher, it is getting blocks.
    last_have: Option<Instant>,
}

impl PeerStats {
    fn new() -> Self {
        PeerStats {
            presences: true,
            outstanding: 0,
            srtt: None,
            min_rtt: None,
            min_rtt_bytes: 0,
            last_rtt: None,
            rate: None,
            block_size: ASSUMED_BLOCK_SIZE,
            last_delivery: None,
            wants: HashSet::new(),
            last_have: None,
        }
    }

    /// Want-blocks it may have in flight.
    fn window(&self) -> usize {
        match (self.rate, self.min_rtt) {
            (Some(rate), Some(rtt)) => {
                let bdp = WINDOW_GAIN * rate * rtt / self.block_size.max(1.0);
                // Saturating float-to-int cast; the clamp bounds it anyway.
                (bdp.ceil() as usize + 1).clamp(MIN_WINDOW, MAX_WINDOW)
            }
            _ => INITIAL_WINDOW,
        }
    }

    /// How long it has to deliver a want-block: a few of its latencies, and at least twice
    /// the time it takes to send what we have in flight at it at the rate it delivers. The
    /// latency alone may have been measured on small blocks (a DAG's root and inner nodes come
    /// first) or on a shorter queue: a peer that shares a slow uplink among many fetchers
    /// then missed every deadline, and each miss was a block sent twice.
    fn deadline(&self) -> Duration {
        let Some(srtt) = self.srtt else {
            return MAX_DEADLINE;
        };
        let in_flight = self.outstanding.max(1) as f64 * ASSUMED_BLOCK_SIZE;
        let queued = match self.rate {
            Some(rate) if rate > 0.0 => 2.0 * in_flight / rate,
            _ => 0.0,
        };
        let secs = (DEADLINE_RTTS * srtt + 0.5).max(queued);
        if secs.is_finite() {
            Duration::from_secs_f64(
                secs.clamp(MIN_DEADLINE.as_secs_f64(), MAX_DEADLINE.as_secs_f64()),
            )
        } else {
            MAX_DEADLINE
        }
    }

    fn delivered(&mut self, bytes: usize, asked_at: Instant, now: Instant) {
        let rtt = now.saturating_duration_since(asked_at).as_secs_f64();
        self.srtt = Some(smooth(self.srtt, rtt));
        // A block of the usual size replaces a smaller one's latency, and then only those
        // compete: they are what the window has to keep in flight.
        let usual = |size: usize| size as f64 >= self.block_size / 2.0;
        let lower = match self.min_rtt {
            None => true,
            Some(min) => match (usual(bytes), usual(self.min_rtt_bytes)) {
                (true, false) => true,
                (false, true) => false,
                _ => rtt < min,
            },
        };
        if lower {
            self.min_rtt = Some(rtt);
            self.min_rtt_bytes = bytes;
        }
        self.last_rtt = Some(rtt);
        // The rate over the time since the later of the previous delivery and this want: the
        // link was busy with our blocks in between.
        let since = self
            .last_delivery
            .map_or(asked_at, |last| last.max(asked_at));
        let secs = now
            .saturating_duration_since(since)
            .as_secs_f64()
            .max(MIN_SAMPLE_SECS);
        self.rate = Some(smooth(self.rate, bytes as f64 / secs));
        self.block_size = smooth(Some(self.block_size), bytes as f64);
        self.last_delivery = Some(now);
    }

    /// It failed to deliver: halve its rate, so its window shrinks.
    fn failed(&mut self) {
        if let Some(rate) = self.rate.as_mut() {
            *rate /= 2.0;
        }
    }

    /// A want-block waited `waited` seconds at it without arriving. That is a lower bound on
    /// its latency now, so its smoothed latency becomes at least that: a peer whose queue grew
    /// after its latency was measured (many fetchers sharing it) gets a longer deadline next
    /// time, instead of missing short ones over and over, each miss a block sent twice.
    fn timed_out(&mut self, waited: f64) {
        self.failed();
        self.srtt = Some(self.srtt.map_or(waited, |srtt| srtt.max(waited)));
    }
}

/// Rank of `peer` for fetching `cid` first: the same on every node (FNV-1a, then a 64-bit
/// finaliser to spread it), unlike the per-node random tie-breaks.
///
/// Ranks are taken for every fellow of every want on each dispatch, so the bytes are hashed as
/// the CID and the peer id write them, with no allocation.
fn rendezvous(cid: &Cid, peer: &PeerId) -> u64 {
    let mut fnv = Fnv1a(0xcbf2_9ce4_8422_2325);
    // Writing into a hash state cannot fail.
    let _ = cid.write_bytes(&mut fnv);
    let _ = peer.as_ref().write(&mut fnv);
    let mut hash = fnv.0;
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// FNV-1a over the bytes written to it.
struct Fnv1a(u64);

impl std::io::Write for Fnv1a {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for byte in buf {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn smooth(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(old) => old + SMOOTHING * (sample - old),
        None => sample,
    }
}

/// The want-block in flight for a want.
#[derive(Debug, Clone, Copy)]
struct Asked {
    peer: PeerId,
    at: Instant,
    deadline: Instant,
}

/// One block we want.
#[derive(Debug)]
struct WantState {
    priority: i32,
    since: Instant,
    /// What each peer was sent for it.
    sent: HashMap<PeerId, WantType>,
    have: HashSet<PeerId>,
    dont_have: HashSet<PeerId>,
    /// Peers that got the want-block and did not deliver (timeout, junk): not asked again
    /// while another peer may deliver.
    failed: HashSet<PeerId>,
    /// A peer failed to deliver it at least once (kept when `failed` is cleared).
    missed: bool,
    asked: Option<Asked>,
    /// Peers that want it too (fellow fetchers), with when they cancelled their want.
    fellows: HashMap<PeerId, Option<Instant>>,
}

/// The client's scheduling state: our wants and the connected peers.
pub(super) struct Scheduler {
    wants: HashMap<Cid, WantState>,
    peers: HashMap<PeerId, PeerStats>,
    /// This node, ranked with fellow fetchers; unknown, it fetches everything itself.
    local: Option<PeerId>,
    /// Seeds this node's tie-breaks, so nodes order equal choices differently.
    random: RandomState,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            wants: HashMap::new(),
            peers: HashMap::new(),
            local: None,
            random: RandomState::new(),
        }
    }
}

impl Scheduler {
    /// This node's peer id, for ranking it among fellow fetchers.
    pub(super) fn set_local_peer(&mut self, peer: PeerId) {
        self.local = Some(peer);
    }

    /// `peer` sent us these wantlist entries (`full`: its whole wantlist): the blocks it is
    /// fetching too. A want of ours it shares makes it a fellow fetcher of that block until it
    /// cancels, and briefly after (it cancels when it got the block, just before its HAVE).
    pub(super) fn peer_wants(
        &mut self,
        peer: &PeerId,
        entries: &[Entry],
        full: bool,
        now: Instant,
    ) {
        let Some(stats) = self.peers.get_mut(peer) else {
            return;
        };
        if full {
            // A full wantlist cancels whatever it does not name.
            for cid in stats.wants.drain() {
                if let Some(since) = self
                    .wants
                    .get_mut(&cid)
                    .and_then(|want| want.fellows.get_mut(peer))
                {
                    since.get_or_insert(now);
                }
            }
        }
        for entry in entries {
            let fellow = self
                .wants
                .get_mut(&entry.cid)
                .map(|want| want.fellows.entry(*peer));
            if entry.cancel {
                stats.wants.remove(&entry.cid);
                if let Some(MapEntry::Occupied(mut fellow)) = fellow {
                    fellow.get_mut().get_or_insert(now);
                }
                continue;
            }
            if stats.wants.len() < MAX_PEER_WANTS {
                stats.wants.insert(entry.cid);
            }
            if let Some(fellow) = fellow {
                *fellow.or_default() = None;
            }
        }
    }

    /// A peer connected: it gets a want-have for every want.
    pub(super) fn add_peer(&mut self, peer: PeerId, now: Instant) -> Vec<Order> {
        if self.peers.contains_key(&peer) {
            return Vec::new();
        }
        self.peers.insert(peer, PeerStats::new());
        let mut orders = Vec::new();
        for (cid, want) in &mut self.wants {
            want.sent.insert(peer, WantType::Have);
            orders.push(Order::Want {
                peer,
                cid: *cid,
                priority: want.priority,
                want_type: WantType::Have,
            });
        }
        orders.extend(self.dispatch(now));
        orders
    }

    /// Our stream to `peer` speaks a version with presences (1.2) or without.
    pub(super) fn set_presences(
        &mut self,
        peer: PeerId,
        presences: bool,
        now: Instant,
    ) -> Vec<Order> {
        let Some(stats) = self.peers.get_mut(&peer) else {
            return Vec::new();
        };
        stats.presences = presences;
        if !presences {
            // Want-haves are not encoded for it; it will never answer them.
            for want in self.wants.values_mut() {
                if want.sent.get(&peer) == Some(&WantType::Have) {
                    want.sent.remove(&peer);
                }
            }
        }
        self.dispatch(now)
    }

    /// A peer disconnected: its want-blocks go to other peers.
    pub(super) fn remove_peer(&mut self, peer: &PeerId, now: Instant) -> Vec<Order> {
        if self.peers.remove(peer).is_none() {
            return Vec::new();
        }
        for want in self.wants.values_mut() {
            want.sent.remove(peer);
            want.have.remove(peer);
            want.dont_have.remove(peer);
            want.failed.remove(peer);
            want.fellows.remove(peer);
            if want.asked.is_some_and(|a| a.peer == *peer) {
                want.asked = None;
            }
        }
        self.dispatch(now)
    }

    /// A new want: every peer with presences gets a want-have.
    pub(super) fn add_want(&mut self, cid: Cid, priority: i32, now: Instant) -> Vec<Order> {
        let mut want = WantState {
            priority,
            since: now,
            sent: HashMap::new(),
            have: HashSet::new(),
            dont_have: HashSet::new(),
            failed: HashSet::new(),
            missed: false,
            asked: None,
            fellows: self
                .peers
                .iter()
                .filter(|(_, stats)| stats.wants.contains(&cid))
                .map(|(peer, _)| (*peer, None))
                .collect(),
        };
        let mut orders = Vec::new();
        for (peer, stats) in &self.peers {
            if stats.presences {
                want.sent.insert(*peer, WantType::Have);
                orders.push(Order::Want {
                    peer: *peer,
                    cid,
                    priority,
                    want_type: WantType::Have,
                });
            }
        }
        self.wants.insert(cid, want);
        orders.extend(self.dispatch(now));
        orders
    }

    /// Nobody waits for `cid` any more. The engine cancels it at every peer.
    pub(super) fn remove_want(&mut self, cid: &Cid, now: Instant) -> Vec<Order> {
        let Some(want) = self.wants.remove(cid) else {
            return Vec::new();
        };
        if let Some(asked) = want.asked {
            self.release(&asked.peer);
        }
        self.dispatch(now)
    }

    /// `peer` answered HAVE (`true`) or DONT_HAVE for `cid`.
    pub(super) fn presence(
        &mut self,
        peer: PeerId,
        cid: &Cid,
        have: bool,
        now: Instant,
    ) -> Vec<Order> {
        if !self.peers.contains_key(&peer) {
            return Vec::new();
        }
        let Some(want) = self.wants.get_mut(cid) else {
            return Vec::new();
        };
        let mut orders = Vec::new();
        if have {
            want.dont_have.remove(&peer);
            want.have.insert(peer);
            if let Some(stats) = self.peers.get_mut(&peer) {
                stats.last_have = Some(now);
            }
        } else {
            want.have.remove(&peer);
            want.dont_have.insert(peer);
            if want.asked.is_some_and(|a| a.peer == peer) {
                want.asked = None;
                // Down to a want-have: the peer drops the want-block (so it sends no late copy)
                // and tells us if it gets the block.
                want.sent.insert(peer, WantType::Have);
                orders.push(Order::Want {
                    peer,
                    cid: *cid,
                    priority: want.priority,
                    want_type: WantType::Have,
                });
                self.release(&peer);
            }
        }
        orders.extend(self.dispatch(now));
        orders
    }

    /// The block of `bytes` bytes arrived from `from`, verified. The engine cancels it at
    /// every other peer that was sent the want.
    pub(super) fn received(
        &mut self,
        cid: &Cid,
        from: PeerId,
        bytes: usize,
        now: Instant,
    ) -> Vec<Order> {
        let Some(want) = self.wants.remove(cid) else {
            return Vec::new();
        };
        if let Some(asked) = want.asked {
            if asked.peer == from {
                if let Some(stats) = self.peers.get_mut(&from) {
                    stats.delivered(bytes, asked.at, now);
                }
            }
            self.release(&asked.peer);
        }
        self.extend_deadlines(&from, now);
        self.dispatch(now)
    }

    /// `peer` delivered a block: it is busy, not stalled, and our other want-blocks at it are
    /// queued behind what it is sending. Each gets a fresh deadline from now, up to
    /// [`MAX_QUEUED_WAIT`] after it was asked. Without this, a peer that many fetchers share
    /// misses deadlines measured before its queue grew, and each miss is a block it sends
    /// anyway (the cancel comes too late) and another peer sends again.
    fn extend_deadlines(&mut self, peer: &PeerId, now: Instant) {
        let Some(stats) = self.peers.get(peer) else {
            return;
        };
        let fresh = now + stats.deadline();
        for want in self.wants.values_mut() {
            if let Some(asked) = want.asked.as_mut().filter(|a| a.peer == *peer) {
                asked.deadline = asked.deadline.max(fresh.min(asked.at + MAX_QUEUED_WAIT));
            }
        }
    }

    /// `peer` sent data that is no block we want or wanted lately: its want-blocks move on.
    pub(super) fn junk(&mut self, peer: PeerId, now: Instant) -> Vec<Order> {
        let mut orders = Vec::new();
        let mut moved = 0;
        for (cid, want) in &mut self.wants {
            if want.asked.is_some_and(|a| a.peer == peer) {
                want.asked = None;
                want.failed.insert(peer);
                want.missed = true;
                want.sent.remove(&peer);
                orders.push(Order::Cancel { peer, cid: *cid });
                moved += 1;
            }
        }
        if let Some(stats) = self.peers.get_mut(&peer) {
            stats.outstanding = stats.outstanding.saturating_sub(moved);
            stats.failed();
        }
        if moved > 0 {
            tracing::debug!(%peer, wants = moved, "peer sent data we did not ask for: moving its want-blocks");
        }
        orders.extend(self.dispatch(now));
        orders
    }

    /// Moves want-blocks past their deadline, forgets failures where nobody else is left, and
    /// sends what waited.
    pub(super) fn tick(&mut self, now: Instant) -> Vec<Order> {
        let mut orders = Vec::new();
        let mut late: Vec<(PeerId, f64)> = Vec::new();
        for (cid, want) in &mut self.wants {
            if let Some(asked) = want.asked.filter(|a| a.deadline <= now) {
                want.asked = None;
                want.failed.insert(asked.peer);
                want.missed = true;
                want.sent.remove(&asked.peer);
                orders.push(Order::Cancel {
                    peer: asked.peer,
                    cid: *cid,
                });
                late.push((
                    asked.peer,
                    now.saturating_duration_since(asked.at).as_secs_f64(),
                ));
                tracing::debug!(%cid, peer = %asked.peer, "want-block not delivered in time: moving it");
            }
        }
        for (peer, waited) in late {
            self.release(&peer);
            if let Some(stats) = self.peers.get_mut(&peer) {
                stats.timed_out(waited);
            }
        }
        for want in self.wants.values_mut() {
            if want.asked.is_none() && !want.failed.is_empty() {
                let someone_left = self.peers.keys().any(|p| {
                    !want.failed.contains(p)
                        && (want.have.contains(p) || !want.dont_have.contains(p))
                });
                if !someone_left {
                    want.failed.clear();
                }
            }
        }
        orders.extend(self.dispatch(now));
        orders
    }

    /// Whether a connected peer said HAVE for `cid` and no peer has failed to deliver it yet:
    /// the want waits for a window or a fellow, not for someone who has the block.
    pub(super) fn has_holder(&self, cid: &Cid) -> bool {
        self.wants.get(cid).is_some_and(|want| {
            !want.missed && want.have.iter().any(|p| self.peers.contains_key(p))
        })
    }

    /// Whether no connected peer can deliver `cid` (every one lacks it or failed), or no peer
    /// is connected.
    pub(super) fn stuck(&self, cid: &Cid) -> bool {
        let Some(want) = self.wants.get(cid) else {
            return false;
        };
        self.peers
            .keys()
            .all(|p| want.dont_have.contains(p) || want.failed.contains(p))
    }

    /// What `peer` was sent and still stands, for a session catching up.
    pub(super) fn sent_to(&self, peer: &PeerId) -> Vec<(Cid, i32, WantType)> {
        self.wants
            .iter()
            .filter_map(|(cid, want)| want.sent.get(peer).map(|t| (*cid, want.priority, *t)))
            .collect()
    }

    fn release(&mut self, peer: &PeerId) {
        if let Some(stats) = self.peers.get_mut(peer) {
            stats.outstanding = stats.outstanding.saturating_sub(1);
        }
    }

    /// Whether `cid` waits for a fellow fetcher: one that ranks before us for it lacks it yet
    /// (it will fetch it and say HAVE), or peers that are fetching have not answered yet (their
    /// want of it may be on its way).
    fn defers(&self, cid: &Cid, want: &WantState, limit: Duration, now: Instant) -> bool {
        let Some(local) = self.local else {
            return false;
        };
        let age = now.saturating_duration_since(want.since);
        if age >= limit {
            return false;
        }
        // A fellow has it already: take it from there.
        if want
            .have
            .iter()
            .any(|p| want.fellows.contains_key(p) && !want.failed.contains(p))
        {
            return false;
        }
        // Peers fetching something that have not answered for it yet: their want of it may be
        // on its way, and with it who ranks first.
        if age < GATHER_DELAY
            && self.peers.iter().any(|(p, stats)| {
                stats.presences
                    && !stats.wants.is_empty()
                    && !want.have.contains(p)
                    && !want.dont_have.contains(p)
            })
        {
            return true;
        }
        // Peers still fetching it: connected, not failed us, want not cancelled (or just), and
        // getting blocks (a HAVE from it lately, or our want is recent).
        let fetching = want
            .fellows
            .iter()
            .filter(|(p, cancelled)| {
                let Some(stats) = self.peers.get(*p) else {
                    return false;
                };
                // A fellow that sends us blocks is getting blocks too, even while its HAVEs
                // wait behind those blocks on a slow link.
                let progress = [stats.last_have, stats.last_delivery]
                    .into_iter()
                    .flatten()
                    .fold(want.since, Instant::max);
                !want.failed.contains(*p)
                    && now.saturating_duration_since(progress) < FELLOW_PATIENCE
                    && match cancelled {
                        None => true,
                        Some(at) => now.saturating_duration_since(*at) < CANCEL_GRACE,
                    }
            })
            .map(|(p, _)| p);
        let first = fetching
            .chain(std::iter::once(&local))
            .max_by_key(|p| rendezvous(cid, p));
        first != Some(&local)
    }

    /// How long `want` waits for its fellows at most: [`DEFER_LIMIT`], or [`DEFER_RTTS`] of
    /// the latency of the slowest peer that has the block, if longer (up to [`MAX_DEFER`]).
    /// A peer's latency is the longest of its smoothed one, its latest, and the wait of our
    /// oldest want-block at it (`oldest_ask`): the smoothed one follows a growing queue late,
    /// and a peer may not have delivered a large block to us yet.
    fn defer_limit(
        &self,
        want: &WantState,
        oldest_ask: &HashMap<PeerId, Instant>,
        now: Instant,
    ) -> Duration {
        let slowest = want
            .have
            .iter()
            .filter_map(|p| {
                let stats = self.peers.get(p)?;
                let waiting = oldest_ask
                    .get(p)
                    .map(|at| now.saturating_duration_since(*at).as_secs_f64());
                Some([stats.srtt, stats.last_rtt, waiting])
            })
            .flatten()
            .flatten()
            .fold(0.0, f64::max);
        let secs = (DEFER_RTTS * slowest).min(MAX_DEFER.as_secs_f64());
        if secs.is_finite() && secs > DEFER_LIMIT.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            DEFER_LIMIT
        }
    }

    /// Sends want-blocks for the wants that have none in flight, while peers have room.
    fn dispatch(&mut self, now: Instant) -> Vec<Order> {
        let mut waiting: Vec<(bool, u64, Cid)> = self
            .wants
            .iter()
            .filter(|(_, w)| w.asked.is_none())
            .map(|(cid, w)| {
                // Wants waiting long go first; the others in this node's own random order.
                let young = now.saturating_duration_since(w.since) < MAX_DEADLINE;
                (young, self.random.hash_one(cid), *cid)
            })
            .collect();
        if waiting.is_empty() {
            return Vec::new();
        }
        waiting.sort_unstable();
        // How many of our wants each peer said HAVE to: the original source has them all.
        let mut holds: HashMap<PeerId, usize> = HashMap::new();
        for want in self.wants.values() {
            for peer in &want.have {
                *holds.entry(*peer).or_default() += 1;
            }
        }
        let total = self.wants.len().max(1) as f64;
        // When each peer was asked our oldest want-block still in flight at it.
        let mut oldest_ask: HashMap<PeerId, Instant> = HashMap::new();
        for asked in self.wants.values().filter_map(|w| w.asked) {
            oldest_ask
                .entry(asked.peer)
                .and_modify(|at| *at = (*at).min(asked.at))
                .or_insert(asked.at);
        }
        let mut orders = Vec::new();
        for (_, _, cid) in waiting {
            let Some(want) = self.wants.get(&cid) else {
                continue;
            };
            let limit = self.defer_limit(want, &oldest_ask, now);
            if self.defers(&cid, want, limit, now) {
                continue;
            }
            let usable = |p: &PeerId| !want.failed.contains(p);
            let has_free = |p: &PeerId| {
                self.peers
                    .get(p)
                    .is_some_and(|s| s.outstanding < s.window())
            };
            let any_have = want.have.iter().any(usable);
            // A fellow fetcher that has the block is where it comes from, even while the fellow
            // is busy: the source's uplink is what all fellows share, and a want sent there
            // because a fellow's window is full is a block the source sends twice. Only a want
            // that has waited its defer limit goes past its fellows, and only past fellows
            // that have delivered nothing to us for FELLOW_PATIENCE (or after MAX_DEFER).
            let is_fellow = |p: &PeerId| want.fellows.contains_key(p);
            let young = now.saturating_duration_since(want.since) < limit;
            let delivering = |p: &PeerId| {
                self.peers
                    .get(p)
                    .and_then(|s| s.last_delivery)
                    .is_some_and(|at| now.saturating_duration_since(at) < FELLOW_PATIENCE)
            };
            let patient = young || now.saturating_duration_since(want.since) < MAX_DEFER;
            let fellows_only = want
                .have
                .iter()
                .any(|p| usable(p) && is_fellow(p) && (young || patient && delivering(p)));
            let candidates: Vec<PeerId> = if any_have {
                want.have
                    .iter()
                    .filter(|p| usable(p) && has_free(p) && (!fellows_only || is_fellow(p)))
                    .copied()
                    .collect()
            } else if now.saturating_duration_since(want.since) >= UNANSWERED_DELAY {
                self.peers
                    .keys()
                    .filter(|p| usable(p) && !want.dont_have.contains(p) && has_free(p))
                    .copied()
                    .collect()
            } else {
                Vec::new()
            };
            let best = candidates.into_iter().min_by(|a, b| {
                let key = |p: &PeerId| {
                    let stats = &self.peers[p];
                    let load = (stats.outstanding + 1) as f64 / stats.window() as f64;
                    let share = holds.get(p).copied().unwrap_or(0) as f64 / total;
                    (load * (1.0 + share), -stats.rate.unwrap_or(0.0))
                };
                let (ka, kb) = (key(a), key(b));
                ka.0.total_cmp(&kb.0)
                    .then(ka.1.total_cmp(&kb.1))
                    .then_with(|| {
                        self.random
                            .hash_one((cid, a))
                            .cmp(&self.random.hash_one((cid, b)))
                    })
            });
            let Some(peer) = best else {
                continue;
            };
            let Some(stats) = self.peers.get_mut(&peer) else {
                continue;
            };
            stats.outstanding += 1;
            let deadline = now + stats.deadline();
            let Some(want) = self.wants.get_mut(&cid) else {
                continue;
            };
            want.asked = Some(Asked {
                peer,
                at: now,
                deadline,
            });
            want.sent.insert(peer, WantType::Block);
            orders.push(Order::Want {
                peer,
                cid,
                priority: want.priority,
                want_type: WantType::Block,
            });
        }
        orders
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{cid_of, RAW};

    fn cid(i: u32) -> Cid {
        cid_of(RAW, &i.to_le_bytes())
    }

    /// Every node must rank alike, whatever version it runs: the rank is FNV-1a over the CID's
    /// bytes and then the peer id's, finalised, exactly as first defined.
    #[test]
    fn rendezvous_hashes_the_cid_then_the_peer_id() {
        fn as_defined(cid: &Cid, peer: &PeerId) -> u64 {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in cid.to_bytes().into_iter().chain(peer.to_bytes()) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
            hash ^= hash >> 33;
            hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
            hash ^= hash >> 33;
            hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            hash ^ (hash >> 33)
        }
        let v0 = Cid::new_v0(*cid(7).hash()).unwrap();
        for c in [cid(1), cid(2), v0] {
            for _ in 0..4 {
                let peer = PeerId::random();
                assert_eq!(rendezvous(&c, &peer), as_defined(&c, &peer));
            }
        }
    }

    /// A scheduler of node `local` (if known) with `peers` connected at `now`.
    fn connected(local: Option<PeerId>, peers: &[PeerId], now: Instant) -> Scheduler {
        let mut s = Scheduler::default();
        if let Some(local) = local {
            s.set_local_peer(local);
        }
        for peer in peers {
            s.add_peer(*peer, now);
        }
        s
    }

    /// A test CID that `first` ranks before `second` for, other than `taken`.
    fn ranked_first(first: &PeerId, second: &PeerId, taken: &[Cid]) -> Cid {
        (0..)
            .map(cid)
            .find(|c| !taken.contains(c) && rendezvous(c, first) > rendezvous(c, second))
            .expect("some CID")
    }

    /// The want-blocks among `orders`, as (peer, cid).
    fn blocks(orders: &[Order]) -> Vec<(PeerId, Cid)> {
        orders
            .iter()
            .filter_map(|o| match o {
                Order::Want {
                    peer,
                    cid,
                    want_type: WantType::Block,
                    ..
                } => Some((*peer, *cid)),
                _ => None,
            })
            .collect()
    }

    fn has_cancel(orders: &[Order], peer: PeerId, c: Cid) -> bool {
        orders.contains(&Order::Cancel { peer, cid: c })
    }

    #[test]
    fn want_have_goes_to_every_peer_and_want_block_to_one_that_has_it() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        for p in [a, b, c] {
            assert!(s.add_peer(p, now).is_empty());
        }
        let orders = s.add_want(cid(1), 10, now);
        assert_eq!(orders.len(), 3, "{orders:?}");
        assert!(orders.iter().all(|o| matches!(
            o,
            Order::Want {
                want_type: WantType::Have,
                ..
            }
        )));
        assert!(
            blocks(&orders).is_empty(),
            "no want-block before anyone answered"
        );
        assert!(s.presence(a, &cid(1), false, now).is_empty());
        let orders = s.presence(b, &cid(1), true, now);
        assert_eq!(blocks(&orders), vec![(b, cid(1))]);
        // A later HAVE does not double the request.
        assert!(blocks(&s.presence(c, &cid(1), true, now)).is_empty());
        // A peer connecting later gets the want-have too.
        let d = PeerId::random();
        let orders = s.add_peer(d, now);
        assert!(matches!(
            orders.as_slice(),
            [Order::Want { peer, want_type: WantType::Have, .. }] if *peer == d
        ));
    }

    #[test]
    fn want_blocks_are_spread_over_the_peers_that_have_them() {
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = connected(None, &[a, b], now);
        let mut asked = HashMap::<PeerId, usize>::new();
        for i in 0..8 {
            s.add_want(cid(i), 1, now);
            for p in [a, b] {
                for (peer, _) in blocks(&s.presence(p, &cid(i), true, now)) {
                    *asked.entry(peer).or_default() += 1;
                }
            }
        }
        // Each has a window of INITIAL_WINDOW: both are filled, neither beyond.
        assert_eq!(asked.get(&a), Some(&INITIAL_WINDOW));
        assert_eq!(asked.get(&b), Some(&INITIAL_WINDOW));
    }

    #[test]
    fn a_peer_holding_fewer_of_our_wants_is_preferred_over_the_source() {
        let now = Instant::now();
        let (source, replica) = (PeerId::random(), PeerId::random());
        let mut s = connected(None, &[source, replica], now);
        for i in 0..10 {
            s.add_want(cid(i), 1, now);
        }
        // The source has every block, and is asked for some while the replica has nothing.
        let mut from_source = Vec::new();
        for i in 0..10 {
            from_source.extend(blocks(&s.presence(source, &cid(i), true, now)));
            s.presence(replica, &cid(i), false, now);
        }
        assert_eq!(from_source.len(), INITIAL_WINDOW);
        // The replica gets a block we still wait for: it is asked, not the (busy) source.
        let waiting = (0..10)
            .map(cid)
            .find(|c| !from_source.iter().any(|(_, d)| d == c))
            .unwrap();
        let orders = s.presence(replica, &waiting, true, now);
        assert_eq!(blocks(&orders), vec![(replica, waiting)]);
    }

    #[test]
    fn dont_have_from_the_asked_peer_moves_the_want_block() {
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = connected(None, &[a, b], now);
        s.add_want(cid(1), 1, now);
        let first = blocks(&s.presence(a, &cid(1), true, now));
        assert_eq!(first, vec![(a, cid(1))]);
        // b has it too, but a is asked already.
        assert!(blocks(&s.presence(b, &cid(1), true, now)).is_empty());
        // a lost it after all: its want goes back to a want-have, and b gets the want-block.
        let orders = s.presence(a, &cid(1), false, now);
        assert!(orders.contains(&Order::Want {
            peer: a,
            cid: cid(1),
            priority: 1,
            want_type: WantType::Have
        }));
        assert_eq!(blocks(&orders), vec![(b, cid(1))]);
    }

    #[test]
    fn a_want_block_not_delivered_in_time_moves_with_a_cancel() {
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = connected(None, &[a, b], now);
        s.add_want(cid(1), 1, now);
        let first = blocks(&s.presence(a, &cid(1), true, now));
        let second = blocks(&s.presence(b, &cid(1), true, now));
        assert_eq!(first.len() + second.len(), 1);
        let (slow, other) = if first.is_empty() { (b, a) } else { (a, b) };
        assert!(s.tick(now + MIN_DEADLINE / 2).is_empty(), "not yet");
        let orders = s.tick(now + MAX_DEADLINE);
        assert!(has_cancel(&orders, slow, cid(1)), "{orders:?}");
        assert_eq!(blocks(&orders), vec![(other, cid(1))]);
        // The other one is late too: nobody else is left, so the failures are forgotten and
        // one of them is asked again, rather than the want waiting forever.
        let orders = s.tick(now + 2 * MAX_DEADLINE);
        assert!(has_cancel(&orders, other, cid(1)), "{orders:?}");
        assert_eq!(blocks(&orders).len(), 1, "{orders:?}");
    }

    #[test]
    fn a_missed_deadline_lengthens_the_next_one() {
        let now = Instant::now();
        let a = PeerId::random();
        let mut s = connected(None, &[a], now);
        s.add_want(cid(1), 1, now);
        assert_eq!(
            blocks(&s.presence(a, &cid(1), true, now)),
            vec![(a, cid(1))]
        );
        // Fast at first: its deadline is the shortest.
        s.received(&cid(1), a, 1 << 20, now + Duration::from_millis(50));
        let t = now + Duration::from_millis(100);
        s.add_want(cid(2), 1, t);
        assert_eq!(blocks(&s.presence(a, &cid(2), true, t)), vec![(a, cid(2))]);
        let missed = t + MIN_DEADLINE;
        let orders = s.tick(missed);
        assert!(has_cancel(&orders, a, cid(2)), "{orders:?}");
        // Nobody else has it, so it is asked again, now with 3 x the wait it missed + 0.5 s.
        assert_eq!(blocks(&orders), vec![(a, cid(2))]);
        let orders = s.tick(missed + Duration::from_secs(3));
        assert!(!has_cancel(&orders, a, cid(2)), "{orders:?}");
        let orders = s.tick(missed + Duration::from_millis(3500));
        assert!(has_cancel(&orders, a, cid(2)), "{orders:?}");
    }

    #[test]
    fn a_peer_that_keeps_delivering_keeps_its_want_blocks() {
        let now = Instant::now();
        let (busy, other) = (PeerId::random(), PeerId::random());
        let mut s = connected(None, &[busy, other], now);
        let wanted: Vec<Cid> = (0..INITIAL_WINDOW as u32).map(cid).collect();
        for c in &wanted {
            s.add_want(*c, 1, now);
            s.presence(busy, c, true, now);
            s.presence(other, c, true, now);
        }
        let at_busy: Vec<Cid> = wanted
            .iter()
            .copied()
            .filter(|c| s.wants[c].asked.is_some_and(|a| a.peer == busy))
            .collect();
        assert!(at_busy.len() >= 2, "{at_busy:?}");
        // It delivers one block shortly before the others' deadline: they stay with it.
        let t = now + MAX_DEADLINE - Duration::from_millis(100);
        s.received(&at_busy[0], busy, 1 << 20, t);
        let orders = s.tick(now + MAX_DEADLINE);
        assert!(
            !at_busy[1..].iter().any(|c| has_cancel(&orders, busy, *c)),
            "{orders:?}"
        );
        // Silent from then on, it loses them within its deadline.
        let orders = s.tick(t + MAX_DEADLINE);
        assert!(
            at_busy[1..].iter().all(|c| has_cancel(&orders, busy, *c)),
            "{orders:?}"
        );
    }

    #[test]
    fn a_peer_delivering_others_waits_at_most_max_queued_wait() {
        let now = Instant::now();
        let (busy, other) = (PeerId::random(), PeerId::random());
        let mut s = connected(None, &[busy, other], now);
        s.add_want(cid(1), 1, now);
        assert_eq!(
            blocks(&s.presence(busy, &cid(1), true, now)),
            vec![(busy, cid(1))]
        );
        s.presence(other, &cid(1), true, now);
        // It delivers other blocks every second (asked of someone else), never ours.
        let mut t = now;
        let mut moved = None;
        for i in 2..40u32 {
            t += Duration::from_secs(1);
            s.add_want(cid(i), 1, t);
            let orders = s.received(&cid(i), busy, 1 << 20, t);
            let orders = [orders, s.tick(t)].concat();
            if has_cancel(&orders, busy, cid(1)) {
                moved = Some(t);
                break;
            }
        }
        let moved = moved.expect("the want-block moved");
        assert!(
            moved >= now + MAX_QUEUED_WAIT - Duration::from_secs(1),
            "{moved:?}"
        );
        assert!(
            moved <= now + MAX_QUEUED_WAIT + Duration::from_secs(1),
            "{moved:?}"
        );
    }

    #[test]
    fn a_disconnected_peer_s_want_blocks_go_elsewhere() {
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = connected(None, &[a, b], now);
        s.add_want(cid(1), 1, now);
        let asked = blocks(&s.presence(a, &cid(1), true, now));
        assert_eq!(asked, vec![(a, cid(1))]);
        s.presence(b, &cid(1), true, now);
        let orders = s.remove_peer(&a, now);
        assert_eq!(blocks(&orders), vec![(b, cid(1))]);
        assert!(s.sent_to(&a).is_empty());
    }

    #[test]
    fn junk_moves_every_want_block_of_the_peer() {
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = connected(None, &[a, b], now);
        s.add_want(cid(1), 1, now);
        s.add_want(cid(2), 1, now);
        // Only a says HAVE at first: it gets both want-blocks.
        let mut asked = blocks(&s.presence(a, &cid(1), true, now));
        asked.extend(blocks(&s.presence(a, &cid(2), true, now)));
        assert_eq!(asked.len(), 2);
        s.presence(b, &cid(1), true, now);
        s.presence(b, &cid(2), true, now);
        let orders = s.junk(a, now);
        assert!(has_cancel(&orders, a, cid(1)) && has_cancel(&orders, a, cid(2)));
        let mut moved = blocks(&orders);
        moved.sort();
        let mut expected = vec![(b, cid(1)), (b, cid(2))];
        expected.sort();
        assert_eq!(moved, expected);
    }

    #[test]
    fn arrival_frees_the_slot_for_the_next_want() {
        let now = Instant::now();
        let a = PeerId::random();
        let mut s = connected(None, &[a], now);
        let n = 2 * INITIAL_WINDOW as u32;
        let mut asked = Vec::new();
        for i in 0..n {
            s.add_want(cid(i), 1, now);
            asked.extend(blocks(&s.presence(a, &cid(i), true, now)));
        }
        assert_eq!(asked.len(), INITIAL_WINDOW);
        // Two blocks arrive back to back: slots free up (and the measured rate widens the
        // window), so waiting wants go out.
        let mut more = Vec::new();
        for (k, (_, done)) in asked.iter().take(2).enumerate() {
            let at = now + Duration::from_millis(10 + k as u64);
            more.extend(blocks(&s.received(done, a, 1 << 20, at)));
            assert!(s.sent_to(&a).iter().all(|(c, _, _)| c != done));
        }
        assert!(!more.is_empty(), "the waiting wants take the freed slots");
        assert!(more.iter().all(|(_, c)| !asked.iter().any(|(_, d)| d == c)));
    }

    #[test]
    fn unanswered_peers_get_the_want_block_after_a_delay() {
        let now = Instant::now();
        let (legacy, silent) = (PeerId::random(), PeerId::random());
        let mut s = connected(None, &[legacy, silent], now);
        s.set_presences(legacy, false, now);
        let orders = s.add_want(cid(1), 1, now);
        assert_eq!(
            orders.len(),
            1,
            "a 1.0/1.1 peer gets no want-have: {orders:?}"
        );
        assert!(blocks(&s.tick(now + UNANSWERED_DELAY / 2)).is_empty());
        let orders = s.tick(now + UNANSWERED_DELAY);
        assert_eq!(blocks(&orders).len(), 1);
    }

    #[test]
    fn the_window_grows_with_throughput_and_is_bounded() {
        let now = Instant::now();
        let mut stats = PeerStats::new();
        assert_eq!(stats.window(), INITIAL_WINDOW);
        // 1 MiB blocks, 10 ms apart, 20 ms latency: about 100 MiB/s.
        let mut t = now;
        for _ in 0..50 {
            let asked = t;
            t += Duration::from_millis(10);
            stats.delivered(1 << 20, asked - Duration::from_millis(10), t);
        }
        let fast = stats.window();
        assert!(fast > MIN_WINDOW && fast <= MAX_WINDOW, "{fast}");
        // Far more throughput at the same latency: more in flight, but bounded.
        for _ in 0..50 {
            let asked = t;
            t += Duration::from_millis(1);
            stats.delivered(1 << 20, asked - Duration::from_millis(19), t);
        }
        assert!(stats.window() > fast);
        assert!(stats.window() <= MAX_WINDOW);
        for _ in 0..20 {
            stats.failed();
        }
        assert_eq!(stats.window(), MIN_WINDOW);
        assert!(stats.deadline() >= MIN_DEADLINE && stats.deadline() <= MAX_DEADLINE);
    }

    #[test]
    fn a_small_blocks_latency_does_not_size_the_window_for_large_ones() {
        let mut stats = PeerStats::new();
        let mut t = Instant::now();
        // A DAG's root: a few bytes, back in 0.6 ms.
        stats.delivered(58, t, t + Duration::from_micros(600));
        t += Duration::from_millis(1);
        // Then its 1 MiB chunks, 2 ms apart (about 500 MB/s), each 10 ms after it was asked:
        // keeping that rate up takes about five in flight, twice that with the window's gain.
        for _ in 0..50 {
            t += Duration::from_millis(2);
            stats.delivered(1 << 20, t - Duration::from_millis(10), t);
        }
        let window = stats.window();
        assert!((10..=MAX_WINDOW).contains(&window), "{window}");
        // Another small block, however fast, leaves the window to the chunks' latency.
        stats.delivered(58, t, t + Duration::from_micros(300));
        assert_eq!(stats.window(), window);
        // A chunk faster than any before lowers it.
        t += Duration::from_millis(2);
        stats.delivered(1 << 20, t - Duration::from_millis(5), t);
        assert!(stats.window() < window, "{}", stats.window());
    }

    #[test]
    fn the_deadline_covers_what_is_in_flight_at_the_rate_the_peer_delivers() {
        // Small blocks came back fast (10 ms): by latency alone, the shortest deadline.
        let mut stats = PeerStats::new();
        let mut t = Instant::now();
        for _ in 0..40 {
            let asked = t;
            t += Duration::from_millis(10);
            stats.delivered(64 << 10, asked, t);
        }
        stats.outstanding = 1;
        assert_eq!(stats.deadline(), MIN_DEADLINE);
        // Four of our 1 MiB chunks in flight at its 6.5 MB/s take 0.65 s; twice that is
        // longer than the latency-based deadline, and still bounded.
        stats.outstanding = 4;
        let deadline = stats.deadline();
        assert!(deadline > Duration::from_millis(1200), "{deadline:?}");
        assert!(deadline < MAX_DEADLINE, "{deadline:?}");
        stats.outstanding = 32;
        assert_eq!(stats.deadline(), MAX_DEADLINE);
        // A peer that delivered nothing but empty blocks has no usable rate.
        let mut empty = PeerStats::new();
        empty.delivered(0, t, t + Duration::from_millis(10));
        empty.outstanding = 4;
        assert_eq!(empty.deadline(), MIN_DEADLINE);
    }

    /// A want-have entry, as a fetching peer sends them.
    fn want_have(c: Cid) -> Entry {
        Entry {
            cid: c,
            priority: 1,
            cancel: false,
            want_type: WantType::Have,
            send_dont_have: true,
        }
    }

    #[test]
    fn fellow_fetchers_split_the_blocks_and_take_the_rest_from_each_other() {
        let now = Instant::now();
        let (local, source, fellow) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut s = connected(Some(local), &[source, fellow], now);
        // One CID we rank first for, one the fellow ranks first for.
        let ours = ranked_first(&local, &fellow, &[]);
        let theirs = ranked_first(&fellow, &local, &[]);
        // The fellow's want of `ours` arrives before we want it, of `theirs` after.
        s.peer_wants(&fellow, &[want_have(ours)], false, now);
        for c in [ours, theirs] {
            s.add_want(c, 1, now);
            assert!(
                blocks(&s.presence(source, &c, true, now)).is_empty(),
                "the fellow has not answered yet"
            );
        }
        s.peer_wants(&fellow, &[want_have(theirs)], false, now);
        let t = now + GATHER_DELAY / 2;
        let mut asked = blocks(&s.presence(fellow, &ours, false, t));
        asked.extend(blocks(&s.presence(fellow, &theirs, false, t)));
        assert_eq!(asked, vec![(source, ours)], "we fetch ours from the source");
        // The fellow got its block from the source (cancel, then HAVE): we take it from it.
        let t = t + Duration::from_millis(100);
        let mut cancel = want_have(theirs);
        cancel.cancel = true;
        s.peer_wants(&fellow, &[cancel], false, t);
        assert!(blocks(&s.tick(t)).is_empty(), "still the fellow's to fetch");
        assert_eq!(
            blocks(&s.presence(fellow, &theirs, true, t)),
            vec![(fellow, theirs)]
        );

        s.received(&ours, source, 1, t);
        s.received(&theirs, fellow, 1, t);

        // A fellow that says no HAVE delays a want by FELLOW_PATIENCE; one that keeps saying
        // HAVE for other blocks (it is getting them) keeps it waiting longer.
        let late = ranked_first(&fellow, &local, &[theirs]);
        let other = ranked_first(&fellow, &local, &[theirs, late]);
        s.peer_wants(&fellow, &[want_have(late), want_have(other)], false, t);
        for c in [late, other] {
            s.add_want(c, 1, t);
            s.presence(source, &c, true, t);
            assert!(blocks(&s.presence(fellow, &c, false, t)).is_empty());
        }
        let t2 = t + FELLOW_PATIENCE / 2;
        assert!(blocks(&s.tick(t2)).is_empty());
        let mut cancel = want_have(other);
        cancel.cancel = true;
        s.peer_wants(&fellow, &[cancel], false, t2);
        assert_eq!(
            blocks(&s.presence(fellow, &other, true, t2)),
            vec![(fellow, other)]
        );
        s.received(&other, fellow, 1, t2);
        assert!(blocks(&s.tick(t + FELLOW_PATIENCE)).is_empty());
        assert_eq!(blocks(&s.tick(t2 + FELLOW_PATIENCE)), vec![(source, late)]);
        s.received(&late, source, 1, t2 + FELLOW_PATIENCE);

        // However busy the fellow, a want waits DEFER_LIMIT at most.
        let t = t2 + FELLOW_PATIENCE;
        let slow = ranked_first(&fellow, &local, &[theirs, late, other]);
        s.peer_wants(&fellow, &[want_have(slow)], false, t);
        s.add_want(slow, 1, t);
        s.presence(source, &slow, true, t);
        assert!(blocks(&s.presence(fellow, &slow, false, t)).is_empty());
        let mut at = t;
        while at + FELLOW_PATIENCE / 2 < t + DEFER_LIMIT {
            at += FELLOW_PATIENCE / 2;
            // It says HAVE for blocks we do not want (any more): it is getting blocks.
            s.peers.get_mut(&fellow).unwrap().last_have = Some(at);
            assert!(blocks(&s.tick(at)).is_empty());
        }
        assert_eq!(blocks(&s.tick(t + DEFER_LIMIT)), vec![(source, slow)]);
        s.received(&slow, source, 1, t + DEFER_LIMIT);

        let gave_up = ranked_first(&fellow, &local, &[theirs, late, other, slow]);
        let t = t + DEFER_LIMIT;
        s.peer_wants(&fellow, &[want_have(gave_up)], false, t);
        s.add_want(gave_up, 1, t);
        s.presence(source, &gave_up, true, t);
        assert!(blocks(&s.presence(fellow, &gave_up, false, t)).is_empty());
        let mut cancel = want_have(gave_up);
        cancel.cancel = true;
        s.peer_wants(&fellow, &[cancel], false, t);
        assert!(blocks(&s.tick(t + CANCEL_GRACE / 2)).is_empty());
        assert_eq!(blocks(&s.tick(t + CANCEL_GRACE)), vec![(source, gave_up)]);
    }

    #[test]
    fn a_fellow_that_keeps_delivering_is_waited_for_while_its_haves_lag() {
        let now = Instant::now();
        let (local, source, fellow) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut s = connected(Some(local), &[source, fellow], now);
        let c = ranked_first(&fellow, &local, &[]);
        s.peer_wants(&fellow, &[want_have(c)], false, now);
        s.add_want(c, 1, now);
        s.presence(source, &c, true, now);
        assert!(blocks(&s.presence(fellow, &c, false, now)).is_empty());
        // On a slow link its HAVEs queue behind the blocks it sends us: no HAVE comes for
        // twice FELLOW_PATIENCE, but blocks do.
        let mut at = now;
        while at < now + 2 * FELLOW_PATIENCE {
            at += FELLOW_PATIENCE / 2;
            s.peers.get_mut(&fellow).unwrap().last_delivery = Some(at);
            assert!(blocks(&s.tick(at)).is_empty(), "the fellow is fetching it");
        }
        // Once it delivers nothing for FELLOW_PATIENCE, we fetch the block ourselves.
        assert!(blocks(&s.tick(at + FELLOW_PATIENCE / 2)).is_empty());
        assert!(at + FELLOW_PATIENCE < now + DEFER_LIMIT);
        assert_eq!(blocks(&s.tick(at + FELLOW_PATIENCE)), vec![(source, c)]);
    }

    #[test]
    fn a_busy_fellow_that_has_the_block_is_waited_for_rather_than_the_source() {
        let now = Instant::now();
        let (local, source, fellow) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut s = connected(Some(local), &[source, fellow], now);
        let wanted: Vec<Cid> = (0..=INITIAL_WINDOW as u32).map(cid).collect();
        let entries: Vec<Entry> = wanted.iter().map(|c| want_have(*c)).collect();
        s.peer_wants(&fellow, &entries, false, now);
        let mut asked = Vec::new();
        for c in &wanted {
            s.add_want(*c, 1, now);
            asked.extend(blocks(&s.presence(fellow, c, true, now)));
            asked.extend(blocks(&s.presence(source, c, true, now)));
        }
        // The fellow's window is full; the source, idle and holding every block, is not asked.
        assert_eq!(asked.len(), INITIAL_WINDOW, "{asked:?}");
        assert!(asked.iter().all(|(p, _)| *p == fellow), "{asked:?}");
        let waiting = *wanted
            .iter()
            .find(|c| !asked.iter().any(|(_, d)| d == *c))
            .unwrap();
        let t = now + Duration::from_millis(200);
        assert!(blocks(&s.tick(t)).is_empty());
        // Deliveries free slots at the fellow (its window, measured now, is MIN_WINDOW): the
        // waiting want goes there.
        let mut orders = s.received(&asked[0].1, fellow, 1 << 20, t);
        orders.extend(s.received(&asked[1].1, fellow, 1 << 20, t));
        assert_eq!(blocks(&orders), vec![(fellow, waiting)]);
    }

    /// A want of `late` from `now` that neither the source nor the fellow has at first;
    /// shortly before DEFER_LIMIT the fellow has it, but its window is full of our other wants
    /// (`busy`). Returns the scheduler, source, fellow, `late` and `busy`.
    fn a_fellow_has_it_behind_a_full_window(
        now: Instant,
    ) -> (Scheduler, PeerId, PeerId, Cid, Vec<Cid>) {
        let (local, source, fellow) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut s = connected(Some(local), &[source, fellow], now);
        let late = cid(1000);
        s.peer_wants(&fellow, &[want_have(late)], false, now);
        s.add_want(late, 1, now);
        assert!(blocks(&s.presence(fellow, &late, false, now)).is_empty());
        assert!(blocks(&s.presence(source, &late, false, now)).is_empty());
        let t = now + DEFER_LIMIT - Duration::from_secs(1);
        let busy: Vec<Cid> = (0..INITIAL_WINDOW as u32).map(cid).collect();
        let entries: Vec<Entry> = busy.iter().map(|c| want_have(*c)).collect();
        s.peer_wants(&fellow, &entries, false, t);
        for c in &busy {
            s.add_want(*c, 1, t);
            assert_eq!(blocks(&s.presence(fellow, c, true, t)), vec![(fellow, *c)]);
        }
        assert!(blocks(&s.presence(fellow, &late, true, t)).is_empty());
        assert!(blocks(&s.presence(source, &late, true, t)).is_empty());
        (s, source, fellow, late, busy)
    }

    #[test]
    fn a_want_goes_past_its_busy_fellows_after_defer_limit() {
        let now = Instant::now();
        let (mut s, source, _, late, _) = a_fellow_has_it_behind_a_full_window(now);
        // Once it has waited DEFER_LIMIT, whoever has room gets it.
        assert_eq!(blocks(&s.tick(now + DEFER_LIMIT)), vec![(source, late)]);
    }

    #[test]
    fn a_slow_source_makes_the_wait_for_a_fellow_longer() {
        let now = Instant::now();
        let (local, source, fellow) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut s = connected(Some(local), &[source, fellow], now);
        // The source takes 4.5 s per want-block: many share its uplink.
        s.peers.get_mut(&source).unwrap().srtt = Some(4.5);
        let c = ranked_first(&fellow, &local, &[]);
        s.peer_wants(&fellow, &[want_have(c)], false, now);
        s.add_want(c, 1, now);
        s.presence(source, &c, true, now);
        assert!(blocks(&s.presence(fellow, &c, false, now)).is_empty());
        let limit = Duration::from_secs_f64(DEFER_RTTS * 4.5);
        assert!(limit > DEFER_LIMIT + FELLOW_PATIENCE && limit < MAX_DEFER);
        let mut at = now;
        while at + FELLOW_PATIENCE / 2 < now + limit {
            at += FELLOW_PATIENCE / 2;
            // The fellow says HAVE for other blocks: it is getting them.
            s.peers.get_mut(&fellow).unwrap().last_have = Some(at);
            assert!(blocks(&s.tick(at)).is_empty(), "at {:?}", at - now);
        }
        s.peers.get_mut(&fellow).unwrap().last_have = Some(now + limit);
        assert_eq!(blocks(&s.tick(now + limit)), vec![(source, c)]);

        // However slow the source, the wait ends at MAX_DEFER.
        let mut s = connected(Some(local), &[source, fellow], now);
        s.peers.get_mut(&source).unwrap().srtt = Some(100.0);
        s.peer_wants(&fellow, &[want_have(c)], false, now);
        s.add_want(c, 1, now);
        s.presence(source, &c, true, now);
        assert!(blocks(&s.presence(fellow, &c, false, now)).is_empty());
        s.peers.get_mut(&fellow).unwrap().last_have = Some(now + MAX_DEFER);
        assert!(blocks(&s.tick(now + MAX_DEFER - Duration::from_millis(1))).is_empty());
        assert_eq!(blocks(&s.tick(now + MAX_DEFER)), vec![(source, c)]);

        // A source that answered only small blocks quickly, while a large one of ours has
        // waited there for long: that wait is its latency now.
        let mut s = connected(Some(local), &[source, fellow], now);
        let large = cid(5000);
        s.add_want(large, 1, now);
        assert_eq!(
            blocks(&s.presence(source, &large, true, now)),
            vec![(source, large)]
        );
        let c = ranked_first(&fellow, &local, &[large]);
        s.peer_wants(&fellow, &[want_have(c)], false, now);
        s.add_want(c, 1, now);
        s.presence(source, &c, true, now);
        assert!(blocks(&s.presence(fellow, &c, false, now)).is_empty());
        let mut at = now;
        for i in 0..6 {
            at += Duration::from_secs(2);
            // A small block asked and delivered at once; it renews the large one's deadline.
            let small = cid(6000 + i);
            s.peers.get_mut(&fellow).unwrap().last_have = Some(at);
            let mut orders = s.add_want(small, 1, at);
            orders.extend(s.presence(fellow, &small, false, at));
            orders.extend(s.presence(source, &small, true, at));
            assert!(blocks(&orders).contains(&(source, small)));
            let done = at + Duration::from_millis(10);
            orders.extend(s.received(&small, source, 100, done));
            orders.extend(s.tick(done));
            assert!(!blocks(&orders).contains(&(source, c)), "at {:?}", at - now);
        }
        assert!(at > now + DEFER_LIMIT);
    }

    #[test]
    fn a_want_waits_past_defer_limit_for_a_fellow_that_keeps_delivering() {
        let now = Instant::now();
        let (mut s, _, fellow, late, busy) = a_fellow_has_it_behind_a_full_window(now);
        // It delivers one of them; its window (measured now) still has no room.
        let t1 = now + DEFER_LIMIT - Duration::from_millis(500);
        assert!(blocks(&s.received(&busy[0], fellow, 1 << 20, t1)).is_empty());
        // Past DEFER_LIMIT, `late` still waits for the fellow, which is delivering, rather
        // than go to the source.
        let t2 = now + DEFER_LIMIT + Duration::from_secs(1);
        assert!(blocks(&s.tick(t2)).is_empty());
        // Its next delivery makes room: `late` goes there.
        let t3 = t2 + Duration::from_millis(500);
        assert_eq!(
            blocks(&s.received(&busy[1], fellow, 1 << 20, t3)),
            vec![(fellow, late)]
        );
    }

    #[test]
    fn a_peer_fetching_other_blocks_does_not_hold_ours_back() {
        let now = Instant::now();
        let [local, source, other, idle] = [(); 4].map(|_| PeerId::random());
        let mut s = connected(Some(local), &[source, other, idle], now);
        // `other` fetches blocks we do not want; `idle` fetches nothing.
        s.peer_wants(
            &other,
            &[want_have(cid(1000)), want_have(cid(1001))],
            false,
            now,
        );
        // (Three: the source's first window.)
        for i in 0..3 {
            s.add_want(cid(i), 1, now);
            s.presence(idle, &cid(i), false, now);
            s.presence(source, &cid(i), true, now);
            // It waits for `other`'s answer only, which could have been a want of the same.
            assert_eq!(
                blocks(&s.presence(other, &cid(i), false, now)),
                vec![(source, cid(i))]
            );
        }
    }

    #[test]
    fn a_lone_fetcher_does_not_wait() {
        let now = Instant::now();
        let (local, source, idle) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut s = connected(Some(local), &[source, idle], now);
        for i in 0..3 {
            s.add_want(cid(i), 1, now);
            assert_eq!(
                blocks(&s.presence(source, &cid(i), true, now)),
                vec![(source, cid(i))]
            );
        }
    }

    #[test]
    fn a_peer_that_has_the_block_holds_it_until_it_fails() {
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = connected(None, &[a, b], now);
        s.add_want(cid(1), 1, now);
        assert!(!s.has_holder(&cid(1)));
        assert_eq!(
            blocks(&s.presence(a, &cid(1), true, now)),
            vec![(a, cid(1))]
        );
        assert!(s.has_holder(&cid(1)));
        s.presence(b, &cid(1), false, now);
        // It never delivers: once it missed its deadline, it holds the block no more, even
        // when it is asked again (nobody else is left).
        let orders = s.tick(now + MAX_DEADLINE);
        assert_eq!(blocks(&orders), vec![(a, cid(1))]);
        assert!(!s.has_holder(&cid(1)));
    }

    #[test]
    fn stuck_once_every_peer_lacks_the_block() {
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = connected(None, &[a, b], now);
        s.add_want(cid(1), 1, now);
        assert!(!s.stuck(&cid(1)));
        s.presence(a, &cid(1), false, now);
        assert!(!s.stuck(&cid(1)));
        s.presence(b, &cid(1), false, now);
        assert!(s.stuck(&cid(1)));
    }
}
