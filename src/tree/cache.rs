//! A bounded cache of reads from immutable trees: `(root, path) → link` and `CID → small file`.
//!
//! A root CID names one tree forever and a CID names one content, so an answer never goes
//! stale and nothing is invalidated: a commit makes a new root, whose paths are new keys. The
//! cache only bounds memory, evicting the least recently used entries.

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use cid::Cid;
use hashlink::LruCache;

use super::{read_small_file, resolve, BlockSource, Link, TreeError};

/// Bytes an entry is counted with beyond its key and value bytes: two CIDs (about 80 bytes
/// each in memory), the map's node and the allocations' headers.
const ENTRY_OVERHEAD: usize = 256;

/// Cached reads of immutable trees, bounded by an estimate of the bytes they hold.
pub struct ReadCache {
    budget: usize,
    state: Mutex<CacheState>,
}

struct CacheState {
    /// `(root, path joined by '/')` → what the path names in that tree (`None`: nothing).
    paths: LruCache<(Cid, String), Option<Link>>,
    /// Whole small files (manifests, link files) by CID.
    files: LruCache<Cid, Bytes>,
    /// Estimated bytes held by `paths` and `files` together.
    held: usize,
}

/// What a [`ReadCache`] has answered and held, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCacheStats {
    /// Path lookups cached.
    pub paths: usize,
    /// Files cached.
    pub files: usize,
    /// Estimated bytes held.
    pub bytes: usize,
}

impl ReadCache {
    /// A cache holding about `budget` bytes at most; `0` caches nothing.
    pub fn new(budget: usize) -> Self {
        ReadCache {
            budget,
            state: Mutex::new(CacheState {
                paths: LruCache::new_unbounded(),
                files: LruCache::new_unbounded(),
                held: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, CacheState> {
        // The state is consistent after every statement that changes it: a panic elsewhere
        // cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the cache holds now.
    pub fn stats(&self) -> ReadCacheStats {
        let state = self.state();
        ReadCacheStats {
            paths: state.paths.len(),
            files: state.files.len(),
            bytes: state.held,
        }
    }

    /// [`resolve`], answered from the cache when this `(root, path)` was resolved before.
    /// Failures (a block that cannot be had) are not cached: they may pass.
    pub async fn resolve(
        &self,
        source: &dyn BlockSource,
        root: &Cid,
        path: &[String],
    ) -> Result<Option<Link>, TreeError> {
        if self.budget == 0 {
            return resolve(source, root, path).await;
        }
        let key = (*root, path.join("/"));
        if let Some(hit) = self.state().paths.get(&key) {
            return Ok(*hit);
        }
        let found = resolve(source, root, path).await?;
        let cost = key.1.len() + ENTRY_OVERHEAD;
        self.insert(cost, |state| state.paths.insert(key, found).is_some());
        Ok(found)
    }

    /// [`read_small_file`], answered from the cache when the file was read before. Files
    /// over an eighth of the budget are not kept, so one cannot push out everything else.
    pub async fn small_file(
        &self,
        source: &dyn BlockSource,
        cid: &Cid,
        limit: u64,
    ) -> Result<Bytes, TreeError> {
        let cached = self.state().files.get(cid).cloned();
        if let Some(bytes) = cached {
            let size = bytes.len() as u64;
            if size > limit {
                return Err(TreeError::TooLarge { size, limit });
            }
            return Ok(bytes);
        }
        let bytes = read_small_file(source, cid, limit).await?;
        let cost = bytes.len() + ENTRY_OVERHEAD;
        if cost <= self.budget / 8 {
            let kept = bytes.clone();
            self.insert(cost, |state| state.files.insert(*cid, kept).is_some());
        }
        Ok(bytes)
    }

    /// Inserts with `insert` (which says whether the key was there already: two readers may
    /// race to fill the same entry), then evicts least recently used entries, oldest kind
    /// first, until the estimate fits the budget.
    fn insert(&self, cost: usize, insert: impl FnOnce(&mut CacheState) -> bool) {
        let mut state = self.state();
        if !insert(&mut state) {
            state.held += cost;
        }
        while state.held > self.budget {
            // Evict from whichever map is larger by entries: path entries are small and
            // many, files few and large; either way the least recently used of that map goes.
            let freed = if !state.files.is_empty() && state.files.len() * 8 >= state.paths.len() {
                state
                    .files
                    .remove_lru()
                    .map(|(_, bytes)| bytes.len() + ENTRY_OVERHEAD)
            } else {
                state
                    .paths
                    .remove_lru()
                    .map(|((_, path), _)| path.len() + ENTRY_OVERHEAD)
            };
            match freed {
                Some(bytes) => state.held = state.held.saturating_sub(bytes),
                None => {
                    state.held = 0;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::tree::{cid_of, encode_directory, RAW};

    /// Blocks in memory, counting reads.
    #[derive(Default)]
    struct CountingBlocks {
        blocks: HashMap<Cid, Bytes>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl BlockSource for CountingBlocks {
        async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.blocks
                .get(cid)
                .cloned()
                .ok_or(TreeError::BlockMissing(*cid))
        }
    }

    impl CountingBlocks {
        fn put_raw(&mut self, data: &[u8]) -> Link {
            let cid = cid_of(RAW, data);
            self.blocks.insert(cid, Bytes::copy_from_slice(data));
            Link {
                cid,
                tsize: data.len() as u64,
            }
        }

        /// A directory `names[0]/names[1]/.../file` holding `data`; returns its root.
        fn put_path(&mut self, names: &[&str], data: &[u8]) -> Cid {
            let mut link = self.put_raw(data);
            for name in names.iter().rev() {
                let entries = [(name.to_string(), link)].into_iter().collect();
                let (dir, blocks) = encode_directory(&entries).expect("small directory");
                self.blocks.extend(blocks);
                link = dir;
            }
            link.cid
        }

        fn reads(&self) -> usize {
            self.reads.load(Ordering::Relaxed)
        }
    }

    fn path(s: &str) -> Vec<String> {
        crate::tree::split_path(s)
    }

    #[tokio::test]
    async fn a_path_resolved_once_is_answered_without_reading_blocks() {
        let mut blocks = CountingBlocks::default();
        let root = blocks.put_path(&["a", "b", "c"], b"hello");
        let cache = ReadCache::new(64 * 1024);

        let first = cache.resolve(&blocks, &root, &path("a/b/c")).await.unwrap();
        let reads = blocks.reads();
        assert_eq!(reads, 3, "three directories walked");
        let second = cache.resolve(&blocks, &root, &path("a/b/c")).await.unwrap();
        assert_eq!(first, second);
        assert!(first.is_some());
        assert_eq!(blocks.reads(), reads, "the second lookup read no block");

        // An absent path is an answer too, and a different root is a different key.
        assert_eq!(
            cache.resolve(&blocks, &root, &path("a/x")).await.unwrap(),
            None
        );
        let reads = blocks.reads();
        assert_eq!(
            cache.resolve(&blocks, &root, &path("a/x")).await.unwrap(),
            None
        );
        assert_eq!(blocks.reads(), reads);
        let other = blocks.put_path(&["a", "b", "c"], b"other");
        let theirs = cache
            .resolve(&blocks, &other, &path("a/b/c"))
            .await
            .unwrap();
        assert_ne!(theirs, first, "each root answers for its own tree");
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let mut blocks = CountingBlocks::default();
        let root = blocks.put_path(&["a", "b"], b"x");
        let cache = ReadCache::new(64 * 1024);
        let missing = blocks.blocks.remove(&root).unwrap();
        assert!(matches!(
            cache.resolve(&blocks, &root, &path("a/b")).await,
            Err(TreeError::BlockMissing(_))
        ));
        blocks.blocks.insert(root, missing);
        assert!(cache
            .resolve(&blocks, &root, &path("a/b"))
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn small_files_are_cached_and_still_obey_the_callers_limit() {
        let mut blocks = CountingBlocks::default();
        let file = blocks.put_raw(&[7u8; 100]);
        let cache = ReadCache::new(64 * 1024);
        let mut reads = Vec::new();
        for _ in 0..2 {
            let bytes = cache.small_file(&blocks, &file.cid, 1000).await.unwrap();
            assert_eq!(bytes.len(), 100);
            reads.push(blocks.reads());
        }
        assert_eq!(reads[0], reads[1], "the second read read no block");
        assert!(matches!(
            cache.small_file(&blocks, &file.cid, 10).await,
            Err(TreeError::TooLarge {
                size: 100,
                limit: 10
            })
        ));
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_budget() {
        let mut blocks = CountingBlocks::default();
        let budget = 16 * 1024;
        let cache = ReadCache::new(budget);
        let root = blocks.put_path(&["d"], b"x");
        for i in 0..2000 {
            let _ = cache
                .resolve(&blocks, &root, &path(&format!("d/{i}")))
                .await
                .unwrap();
            let file = blocks.put_raw(format!("file {i}").repeat(20).as_bytes());
            cache
                .small_file(&blocks, &file.cid, u64::MAX)
                .await
                .unwrap();
            assert!(cache.stats().bytes <= budget);
        }
        let stats = cache.stats();
        assert!(stats.paths > 0 && stats.files > 0, "{stats:?}");
        assert!(stats.paths + stats.files < 2 * budget / ENTRY_OVERHEAD);

        // The most recently used entry survived; the first ones were evicted.
        let reads = blocks.reads();
        cache
            .resolve(&blocks, &root, &path("d/1999"))
            .await
            .unwrap();
        assert_eq!(blocks.reads(), reads);
        cache.resolve(&blocks, &root, &path("d/0")).await.unwrap();
        assert!(blocks.reads() > reads);
    }

    #[tokio::test]
    async fn a_zero_budget_caches_nothing() {
        let mut blocks = CountingBlocks::default();
        let root = blocks.put_path(&["a"], b"x");
        let cache = ReadCache::new(0);
        cache.resolve(&blocks, &root, &path("a")).await.unwrap();
        let reads = blocks.reads();
        cache.resolve(&blocks, &root, &path("a")).await.unwrap();
        assert!(blocks.reads() > reads);
        assert_eq!(cache.stats(), ReadCacheStats::default());
    }
}
