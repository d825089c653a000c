//! The status report: one typed document, built by the node, printed by `ipns-registry status`,
//! read by the tests.

use serde::{Deserialize, Serialize};

use crate::config::Role;
use crate::registry::{GcReport, MirrorCounts};

/// What a running node reports about itself (`status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Writer or replica.
    pub role: Role,
    /// The node's libp2p peer id.
    pub peer_id: String,
    /// Its IPNS name (base36 `libp2p-key` CID).
    pub ipns_name: String,
    /// The p2p addresses it listens on.
    pub listen: Vec<String>,
    /// Peers connected now.
    pub peers: Vec<String>,
    /// How each connected peer is connected.
    #[serde(default)]
    pub connections: Vec<PeerStatus>,
    /// How other networks reach this node.
    #[serde(default)]
    pub reachability: ReachabilityStatus,
    /// The own tree and record (writers).
    pub own: Option<OwnStatus>,
    /// Each followed name, in lookup order.
    pub followed: Vec<FollowedStatus>,
    /// Why writes are refused, if they are.
    pub writes_refused: Option<String>,
    /// Whether the node should get traffic (what `/readyz` says).
    pub ready: bool,
    /// Why not, one line each; `ipns-registry status` exits 1 when there is one.
    pub problems: Vec<String>,
    /// Space on the data directory's file system, if it could be read.
    pub disk: Option<DiskStatus>,
    /// Garbage collection.
    pub gc: GcStatus,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its peer id.
    pub peer: String,
    /// `direct` when at least one connection is direct, else `relayed`.
    pub connection: String,
    /// Remote addresses of its connections.
    pub addresses: Vec<String>,
    /// Whether blocks move with it (not over a relay, unless `p2p.blocks_over_relay`).
    pub blocks: bool,
}

/// How other networks reach the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReachabilityStatus {
    /// Public addresses confirmed reachable (AutoNAT, UPnP).
    pub public: Vec<String>,
    /// Addresses through relays that hold a reservation for it.
    pub relayed: Vec<String>,
    /// The public DHT's mode here: `server` or `client`.
    pub dht: String,
}

/// The own tree and record of a writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnStatus {
    /// The committed root.
    pub root: String,
    /// The sequence number of the newest own record.
    pub sequence: Option<u64>,
    /// The root that record names (behind `root` until the next publish).
    pub published_root: Option<String>,
    /// A second writer of the own name, if one was seen.
    pub conflict: Option<String>,
}

/// One followed name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowedStatus {
    /// The IPNS name.
    pub name: String,
    /// What is mirrored of it (`none`, `all`, or repositories).
    pub mirror: String,
    /// Sequence number of the record held.
    pub sequence: Option<u64>,
    /// The root it names.
    pub root: Option<String>,
    /// Seconds since it was accepted (`None`: loaded from disk at start, or none held).
    pub age_secs: Option<u64>,
    /// The mirror of the held root, if one ran.
    pub mirror_progress: Option<MirrorStatus>,
}

/// A mirror run of a followed root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorStatus {
    /// The root being or last mirrored.
    pub root: String,
    /// `running`, `complete`, or `failed: <why>`.
    pub state: String,
    /// Counters.
    pub progress: MirrorCounts,
}

/// Space on the data directory's file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    /// Bytes available to the node (unprivileged users).
    pub available_bytes: u64,
    /// Size of the file system.
    pub total_bytes: u64,
    /// Below this many available bytes the node is not ready (`health.min_free_bytes`).
    pub min_free_bytes: u64,
}

/// Garbage collection on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcStatus {
    /// Seconds between periodic collections (0: off).
    pub interval_secs: u64,
    /// The configured grace period of unreferenced layer links.
    pub layer_grace_secs: u64,
    /// The last collection since the node started.
    pub last: Option<GcReport>,
    /// Why the last periodic collection failed, if it did.
    pub last_error: Option<String>,
}
