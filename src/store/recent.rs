//! Small blocks recently written or read, kept in memory: the directory blocks every request
//! walks through (the root, `repositories/`, a repository's directories) and that every commit
//! replaces. Each read of one from disk is a file open and read on a blocking thread, and a
//! tiny push made dozens of them; the thread hand-offs cost more CPU than the reads.
//!
//! A CID names one content forever, so an entry never goes stale; the garbage collector's
//! deletions drop theirs. The cache only bounds memory, evicting the least recently used.

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use cid::Cid;
use hashlink::LruCache;

/// Bytes of blocks kept at most.
pub(super) const RECENT_BLOCKS_BYTES: usize = 4 << 20;
/// Largest block kept: a basic directory block (at most 256 KiB; larger ones are sharded).
/// File chunks (1 MiB) stay out, so a pull does not churn the cache.
pub(super) const MAX_RECENT_BLOCK: usize = 256 << 10;

/// The cache; a budget of 0 keeps nothing.
#[derive(Debug)]
pub(super) struct RecentBlocks {
    budget: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    blocks: LruCache<Cid, Bytes>,
    /// Bytes of the blocks held.
    held: usize,
}

impl RecentBlocks {
    pub(super) fn new(budget: usize) -> Self {
        RecentBlocks {
            budget,
            state: Mutex::new(State {
                blocks: LruCache::new_unbounded(),
                held: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every statement that changes the state leaves it consistent: a panic elsewhere
        // cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The block, if held (it becomes the most recently used).
    pub(super) fn get(&self, cid: &Cid) -> Option<Bytes> {
        if self.budget == 0 {
            return None;
        }
        self.state().blocks.get(cid).cloned()
    }

    /// Keeps `data` as the block `cid`, if it is small enough.
    pub(super) fn insert(&self, cid: &Cid, data: &Bytes) {
        if data.len() > MAX_RECENT_BLOCK || data.len() > self.budget {
            return;
        }
        let mut state = self.state();
        if let Some(old) = state.blocks.insert(*cid, data.clone()) {
            state.held -= old.len();
        }
        state.held += data.len();
        while state.held > self.budget {
            match state.blocks.remove_lru() {
                Some((_, evicted)) => state.held -= evicted.len(),
                None => break,
            }
        }
    }

    /// Forgets the block (it left the store).
    pub(super) fn remove(&self, cid: &Cid) {
        let mut state = self.state();
        if let Some(old) = state.blocks.remove(cid) {
            state.held -= old.len();
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.state().held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(i: u8, len: usize) -> (Cid, Bytes) {
        let data = Bytes::from(vec![i; len]);
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&data);
        let hash = cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("fits");
        (Cid::new_v1(0x55, hash), data)
    }

    #[test]
    fn keeps_small_blocks_within_its_budget_evicting_the_least_recently_used() {
        let recent = RecentBlocks::new(100 << 10);
        let blocks: Vec<_> = (0..4).map(|i| block(i, 30 << 10)).collect();
        for (cid, data) in &blocks[..3] {
            recent.insert(cid, data);
        }
        // The first is used again, so the second is the one the fourth evicts.
        assert_eq!(recent.get(&blocks[0].0), Some(blocks[0].1.clone()));
        recent.insert(&blocks[3].0, &blocks[3].1);
        assert_eq!(recent.held(), 90 << 10);
        assert!(recent.get(&blocks[1].0).is_none());
        for i in [0, 2, 3] {
            assert_eq!(recent.get(&blocks[i].0), Some(blocks[i].1.clone()), "{i}");
        }
        // Removed blocks are gone; the same block twice is held once.
        recent.remove(&blocks[2].0);
        recent.insert(&blocks[3].0, &blocks[3].1);
        assert_eq!(recent.held(), 60 << 10);
        assert!(recent.get(&blocks[2].0).is_none());
        // A file chunk is never kept, nor anything by a cache of no budget.
        let (chunk, data) = block(9, MAX_RECENT_BLOCK + 1);
        recent.insert(&chunk, &data);
        assert!(recent.get(&chunk).is_none());
        let none = RecentBlocks::new(0);
        none.insert(&blocks[0].0, &blocks[0].1);
        assert!(none.get(&blocks[0].0).is_none());
    }
}
