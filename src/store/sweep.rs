//! Garbage collection's side of the block store: sets of blocks, the sweep, and the fence that
//! keeps the sweep from deleting a block an in-flight write relies on.
//!
//! The rule that makes a sweep safe while pushes and fetches run: a block survives if it was
//! marked (reachable from a root that must survive, read when the collection began), or if any
//! write touched it since the collection began (wrote it, or found it present and relied on
//! it), or if a write session open when the collection began touched it at any time. Writers
//! note a block under the fence's gate (shared) and the sweep checks and deletes under the same
//! gate (exclusive), so a block is either noted before the sweep looks at it, or deleted before
//! the writer looks, in which case the writer finds it absent and writes it again.
//!
//! Only the shard directories are swept: `tmp/` and `staging/` hold writes in flight.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use cid::Cid;
use serde::{Deserialize, Serialize};

use super::blocks::{BlockStore, STAGING};
use super::StoreError;

/// A compact key for a block: 16 bytes of its multihash digest. Two blocks sharing a key (a
/// 2^-64 chance per pair for sha2-256) only means the sweep keeps one it could have deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BlockKey([u8; 16]);

impl BlockKey {
    fn of(cid: &Cid) -> Self {
        let digest = cid.hash().digest();
        let mut key = [0u8; 16];
        let n = digest.len().min(16);
        key[..n].copy_from_slice(&digest[..n]);
        // Digests shorter than the key (identity hashes of tiny blocks) keep their length apart.
        if digest.len() < 16 {
            key[15] ^= digest.len() as u8;
        }
        BlockKey(key)
    }
}

/// A set of blocks, kept compactly (16 bytes a block): what a mark reached, or what writes
/// touched.
#[derive(Debug, Default, Clone)]
pub struct BlockSet {
    keys: HashSet<BlockKey>,
}

impl BlockSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `cid`; `false` if it was in the set already.
    pub fn insert(&mut self, cid: &Cid) -> bool {
        self.keys.insert(BlockKey::of(cid))
    }

    /// Whether `cid` is in the set.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.keys.contains(&BlockKey::of(cid))
    }

    /// Number of blocks in the set.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn extend(&mut self, other: &BlockSet) {
        self.keys.extend(other.keys.iter().copied());
    }
}

/// What a sweep found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Block files looked at.
    pub blocks_scanned: u64,
    /// Kept because a mark reached them.
    pub blocks_marked: u64,
    /// Kept because a write in flight touched them (written, or relied on, during the
    /// collection, or by an upload open when it began).
    pub blocks_in_flight: u64,
    /// Deleted (with `dry_run`: that would have been deleted).
    pub blocks_freed: u64,
    /// Their bytes.
    pub bytes_freed: u64,
}

/// Coordinates block writes with the sweep of a garbage collection.
#[derive(Debug, Default)]
pub(crate) struct WriteFence {
    /// Writers hold it shared while they look for, write and note one block; the sweep holds it
    /// exclusively while it checks and deletes a batch.
    gate: RwLock<()>,
    /// Whether a collection runs (reads note blocks only then).
    collecting: AtomicBool,
    state: Mutex<FenceState>,
}

#[derive(Debug, Default)]
struct FenceState {
    next_session: u64,
    /// The blocks each open write session wrote or relies on.
    sessions: HashMap<u64, BlockSet>,
    /// While a collection runs: the blocks it must keep whatever the mark says.
    protected: Option<BlockSet>,
}

impl WriteFence {
    fn state(&self) -> MutexGuard<'_, FenceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Held (shared) by a writer while it decides about a block and notes it.
    pub(crate) fn writing(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that a write (of `session`, if any) wrote `cid` or relies on it being present.
    /// Call with [`WriteFence::writing`] held.
    pub(crate) fn note_write(&self, session: Option<u64>, cid: &Cid) {
        let mut state = self.state();
        if let Some(id) = session {
            if let Some(set) = state.sessions.get_mut(&id) {
                set.insert(cid);
            }
        }
        if let Some(protected) = &mut state.protected {
            protected.insert(cid);
        }
    }

    /// Notes a block read while a collection runs: whoever read it may be about to rely on it
    /// (a mirror walking a root that arrived after the mark began).
    pub(crate) fn note_read(&self, cid: &Cid) {
        if self.collecting.load(Ordering::Acquire) {
            if let Some(protected) = &mut self.state().protected {
                protected.insert(cid);
            }
        }
    }

    pub(crate) fn open_session(self: &Arc<Self>) -> WriteSession {
        let mut state = self.state();
        let id = state.next_session;
        state.next_session += 1;
        state.sessions.insert(id, BlockSet::new());
        WriteSession {
            fence: self.clone(),
            id,
        }
    }
}

/// A write whose blocks the committed root does not link yet (an upload being imported, a
/// manifest being staged): while it lives, a garbage collection keeps every block it wrote or
/// found present. Drop it once the tree commit that links its content is done (or failed).
#[derive(Debug)]
#[must_use = "hold the session until the tree commit that links its blocks is done"]
pub struct WriteSession {
    fence: Arc<WriteFence>,
    id: u64,
}

impl WriteSession {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for WriteSession {
    fn drop(&mut self) {
        self.fence.state().sessions.remove(&self.id);
    }
}

/// A garbage collection in progress on a block store. From its start until it is dropped,
/// every block written, relied on or read is kept by its sweep, and so is every block the
/// write sessions open at its start touched.
#[derive(Debug)]
pub struct Collection {
    store: Arc<BlockStore>,
}

impl BlockStore {
    /// Starts a garbage collection. Read the roots to mark only after this returns (and, for a
    /// tree, under its write lock), so that every write not yet linked from them is noted.
    pub fn begin_collection(self: &Arc<Self>) -> Result<Collection, StoreError> {
        let fence = self.fence();
        let mut state = fence.state();
        if state.protected.is_some() {
            return Err(StoreError::CollectionRunning);
        }
        let mut protected = BlockSet::new();
        for set in state.sessions.values() {
            protected.extend(set);
        }
        state.protected = Some(protected);
        fence.collecting.store(true, Ordering::Release);
        Ok(Collection {
            store: self.clone(),
        })
    }
}

impl Drop for Collection {
    fn drop(&mut self) {
        let fence = self.store.fence();
        let mut state = fence.state();
        fence.collecting.store(false, Ordering::Release);
        state.protected = None;
    }
}

/// Candidates are checked and deleted in batches this large, each under the gate: writers wait
/// at most one batch.
const SWEEP_BATCH: usize = 256;

impl Collection {
    /// Deletes every block file that `marked` does not hold and no write touched; with
    /// `dry_run`, only counts them. Blocking (lists and deletes files).
    pub fn sweep_blocking(
        &self,
        marked: &BlockSet,
        dry_run: bool,
    ) -> Result<SweepReport, StoreError> {
        let store = &self.store;
        let mut report = SweepReport::default();
        let shards = fs::read_dir(store.dir())
            .map_err(|e| StoreError::io(format!("listing {}", store.dir().display()), e))?;
        for shard in shards.flatten() {
            let name = shard.file_name();
            if name == "tmp" || name == STAGING || !shard.path().is_dir() {
                continue;
            }
            let entries = fs::read_dir(shard.path())
                .map_err(|e| StoreError::io(format!("listing {}", shard.path().display()), e))?;
            let mut candidates = Vec::new();
            for entry in entries.flatten() {
                // Files that are not named by a CID are not ours to judge.
                let Some(cid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| Cid::try_from(n).ok())
                else {
                    continue;
                };
                report.blocks_scanned += 1;
                if marked.contains(&cid) {
                    report.blocks_marked += 1;
                } else {
                    candidates.push(cid);
                }
            }
            for batch in candidates.chunks(SWEEP_BATCH) {
                self.sweep_batch(batch, dry_run, &mut report)?;
            }
        }
        Ok(report)
    }

    fn sweep_batch(
        &self,
        batch: &[Cid],
        dry_run: bool,
        report: &mut SweepReport,
    ) -> Result<(), StoreError> {
        let fence = self.store.fence();
        let _gate = fence.gate.write().unwrap_or_else(|p| p.into_inner());
        let state = fence.state();
        let protected = state.protected.as_ref();
        for cid in batch {
            if protected.is_some_and(|p| p.contains(cid)) {
                report.blocks_in_flight += 1;
                continue;
            }
            let freed = if dry_run {
                self.store.block_size_blocking(cid)?
            } else {
                self.store.delete_blocking(cid)?
            };
            if let Some(bytes) = freed {
                report.blocks_freed += 1;
                report.bytes_freed += bytes;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{cid_of, RAW};

    fn block(n: u32) -> (Cid, Vec<u8>) {
        let data = format!("block {n}").into_bytes();
        (cid_of(RAW, &data), data)
    }

    #[test]
    fn sweeps_unmarked_blocks_and_keeps_marked_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlockStore::open(dir.path()).unwrap());
        let blocks: Vec<_> = (0..10).map(block).collect();
        for (cid, data) in &blocks {
            store.put_blocking(cid, data).unwrap();
        }
        let mut marked = BlockSet::new();
        for (cid, _) in &blocks[..4] {
            marked.insert(cid);
        }
        let collection = store.begin_collection().unwrap();
        let dry = collection.sweep_blocking(&marked, true).unwrap();
        assert_eq!((dry.blocks_scanned, dry.blocks_freed), (10, 6));
        assert_eq!(
            store.usage_blocking().unwrap().1,
            10,
            "a dry run deletes nothing"
        );
        let report = collection.sweep_blocking(&marked, false).unwrap();
        assert_eq!(report, dry);
        drop(collection);
        for (i, (cid, _)) in blocks.iter().enumerate() {
            assert_eq!(store.has_blocking(cid), i < 4, "block {i}");
        }
        let expected: u64 = blocks[4..].iter().map(|(_, d)| d.len() as u64).sum();
        assert_eq!(report.bytes_freed, expected);
    }

    #[test]
    fn keeps_blocks_written_during_a_collection_or_by_open_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlockStore::open(dir.path()).unwrap());
        let (old, old_data) = block(1);
        let (staged, staged_data) = block(2);
        let (rewritten, rewritten_data) = block(3);
        let (garbage, garbage_data) = block(4);
        store.put_blocking(&old, &old_data).unwrap();
        store.put_blocking(&rewritten, &rewritten_data).unwrap();
        store.put_blocking(&garbage, &garbage_data).unwrap();

        // An upload open before the collection relies on a block the main store holds.
        let area = store.staging_blocking().unwrap();
        area.store().put_blocking(&old, &old_data).unwrap();
        area.store().put_blocking(&staged, &staged_data).unwrap();
        let session = area.commit_blocking(&store).unwrap();

        let collection = store.begin_collection().unwrap();
        // A commit during the collection finds a block present and relies on it.
        store.put_blocking(&rewritten, &rewritten_data).unwrap();
        let report = collection.sweep_blocking(&BlockSet::new(), false).unwrap();
        drop(collection);
        drop(session);
        assert_eq!(report.blocks_in_flight, 3, "{report:?}");
        assert_eq!(report.blocks_freed, 1, "{report:?}");
        assert!(store.has_blocking(&old));
        assert!(store.has_blocking(&staged));
        assert!(store.has_blocking(&rewritten));
        assert!(!store.has_blocking(&garbage));

        // With the session closed and nothing written, the next collection frees them all.
        let collection = store.begin_collection().unwrap();
        let report = collection.sweep_blocking(&BlockSet::new(), false).unwrap();
        assert_eq!(report.blocks_freed, 3);
        assert!(matches!(
            store.begin_collection(),
            Err(StoreError::CollectionRunning)
        ));
    }
}
