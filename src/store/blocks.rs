//! The block store: one file per block under `blocks/<shard>/<cid>`.
//!
//! A block file only ever appears complete: it is written to a temporary name, synced, and renamed
//! into place. Renames become durable when the shard directory is synced, which callers do (through
//! [`BlockStore::sync_dirs`]) before they publish a root that references the blocks.
//!
//! Content that may yet be refused (an upload whose digest is checked only at its end) is written
//! to a [`StagedBlocks`] area under `staging/` first and moved in by rename only once accepted,
//! so a refused upload never leaves a block behind.
//!
//! Every write goes through the store's [`WriteFence`], which lets a garbage collection's sweep
//! (`sweep.rs`) run while pushes and fetches do.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;

use super::sweep::{WriteFence, WriteSession};
use super::StoreError;

/// Blocks on the local disk, addressed by CID.
#[derive(Debug)]
pub struct BlockStore {
    dir: PathBuf,
    tmp_counter: AtomicU64,
    /// For a staging area: the store it feeds. Blocks that store already holds are not written
    /// again, and directory syncs are left to the move into it.
    main: Option<PathBuf>,
    /// Shared by a store and its staging areas: ties writes to a garbage collection's sweep.
    fence: Arc<WriteFence>,
    /// For a staging area: the write session its blocks are noted under.
    session: Option<u64>,
}

/// Name of the directory (inside a store) holding staging areas.
pub(super) const STAGING: &str = "staging";

impl BlockStore {
    /// Opens (creating if needed) the block store rooted at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(dir.join("tmp"))
            .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        // Leftovers of writes interrupted by a crash: never referenced, safe to drop.
        if let Ok(entries) = fs::read_dir(dir.join("tmp")) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        // Staging areas of uploads that a crash interrupted: never accepted, safe to drop.
        let _ = fs::remove_dir_all(dir.join(STAGING));
        Ok(BlockStore {
            dir,
            tmp_counter: AtomicU64::new(0),
            main: None,
            fence: Arc::new(WriteFence::default()),
            session: None,
        })
    }

    /// The directory the store lives in.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// What ties this store's writes to a garbage collection.
    pub(super) fn fence(&self) -> &Arc<WriteFence> {
        &self.fence
    }

    /// Opens a fresh staging area: blocks written to it stay out of this store until
    /// [`StagedBlocks::commit_blocking`] moves them in. Blocking (creates directories).
    pub fn staging_blocking(&self) -> Result<StagedBlocks, StoreError> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .dir
            .join(STAGING)
            .join(format!("{}-{n}", std::process::id()));
        fs::create_dir_all(dir.join("tmp"))
            .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        let session = self.fence.open_session();
        Ok(StagedBlocks {
            store: BlockStore {
                dir,
                tmp_counter: AtomicU64::new(0),
                main: Some(self.dir.clone()),
                fence: self.fence.clone(),
                session: Some(session.id()),
            },
            session: Some(session),
            done: false,
        })
    }

    fn shard_name(key: &str) -> &str {
        // The last two characters of a base32 CID are effectively random: an even spread.
        &key[key.len().saturating_sub(2)..]
    }

    fn shard_dir(&self, key: &str) -> PathBuf {
        self.dir.join(Self::shard_name(key))
    }

    fn path_of(&self, cid: &Cid) -> PathBuf {
        let key = cid.to_string();
        self.shard_dir(&key).join(key)
    }

    /// Where `cid` lives in the store a staging area feeds, if this is one.
    fn main_path_of(&self, cid: &Cid) -> Option<PathBuf> {
        let key = cid.to_string();
        let main = self.main.as_ref()?;
        Some(main.join(Self::shard_name(&key)).join(key))
    }

    /// Whether the block is stored locally.
    pub fn has_blocking(&self, cid: &Cid) -> bool {
        self.path_of(cid).is_file()
    }

    /// Reads a block, `None` if it is not stored here.
    pub fn get_blocking(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        self.fence.note_read(cid);
        self.peek_blocking(cid)
    }

    /// Reads a block without counting as a use of it: for the garbage collector's mark, whose
    /// reads must not keep what it finds unreachable.
    pub fn peek_blocking(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        let path = self.path_of(cid);
        match fs::read(&path) {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Stores a block; the caller vouches that `cid` is the hash of `data`.
    /// The file content is synced before it becomes visible under its name.
    pub fn put_blocking(&self, cid: &Cid, data: &[u8]) -> Result<(), StoreError> {
        let path = self.path_of(cid);
        {
            // Held from finding the block present to noting it: a sweep cannot delete it in
            // between, so the caller may rely on it.
            let _writing = self.fence.writing();
            if path.is_file() || self.main_path_of(cid).is_some_and(|p| p.is_file()) {
                self.fence.note_write(self.session, cid);
                return Ok(());
            }
        }
        let shard = path.parent().unwrap_or(&self.dir).to_path_buf();
        fs::create_dir_all(&shard)
            .map_err(|e| StoreError::io(format!("creating {}", shard.display()), e))?;
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{}-{}-{n}", std::process::id(), cid));
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(data)?;
            file.sync_data()
        };
        // The bytes are written and synced outside the fence (a sweep need not wait for a
        // disk); only the rename that makes the block visible and its note go together.
        let result = write().and_then(|()| {
            let _writing = self.fence.writing();
            fs::rename(&tmp, &path)?;
            self.fence.note_write(self.session, cid);
            Ok(())
        });
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::io(format!("writing block {cid}"), e)
        })
    }

    /// Size of a stored block, `None` if it is not stored here. Blocking.
    pub(super) fn block_size_blocking(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        let path = self.path_of(cid);
        match fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Deletes a block; returns its size, `None` if it was not stored. The one place blocks
    /// leave the store: only the garbage collector's sweep calls it, holding the write fence.
    /// Blocking.
    pub(super) fn delete_blocking(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        let Some(size) = self.block_size_blocking(cid)? else {
            return Ok(None);
        };
        let path = self.path_of(cid);
        match fs::remove_file(&path) {
            Ok(()) => Ok(Some(size)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(format!("deleting {}", path.display()), e)),
        }
    }

    /// Makes the names of the given blocks durable (syncs their shard directories).
    pub fn sync_dirs_blocking<'a>(
        &self,
        cids: impl IntoIterator<Item = &'a Cid>,
    ) -> Result<(), StoreError> {
        if self.main.is_some() {
            // A staging area: its names need not survive a crash (start-up drops them anyway);
            // the move into the main store syncs the directories that count.
            return Ok(());
        }
        let dirs: BTreeSet<PathBuf> = cids
            .into_iter()
            .map(|cid| self.shard_dir(&cid.to_string()))
            .collect();
        for dir in dirs {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Total bytes and number of blocks stored (walks the directory; for status and tests).
    pub fn usage_blocking(&self) -> Result<(u64, u64), StoreError> {
        let mut bytes = 0;
        let mut count = 0;
        let shards = fs::read_dir(&self.dir)
            .map_err(|e| StoreError::io(format!("listing {}", self.dir.display()), e))?;
        for shard in shards.flatten() {
            if shard.file_name() == "tmp" || shard.file_name() == STAGING || !shard.path().is_dir()
            {
                continue;
            }
            for block in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                if let Ok(meta) = block.metadata() {
                    bytes += meta.len();
                    count += 1;
                }
            }
        }
        Ok((bytes, count))
    }

    /// Reads a block without blocking the async runtime.
    pub async fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        self.fence.note_read(cid);
        let path = self.path_of(cid);
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Stores blocks and makes them durable, without blocking the async runtime.
    pub async fn put_many_durable(
        self: &std::sync::Arc<Self>,
        blocks: Vec<(Cid, Bytes)>,
    ) -> Result<(), StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            for (cid, data) in &blocks {
                this.put_blocking(cid, data)?;
            }
            this.sync_dirs_blocking(blocks.iter().map(|(cid, _)| cid))
        })
        .await?
    }
}

/// Blocks written aside, to be moved into their store only if the content they make up is
/// accepted. Dropping it without [`StagedBlocks::commit_blocking`] deletes them.
#[derive(Debug)]
pub struct StagedBlocks {
    store: BlockStore,
    /// Keeps a garbage collection from sweeping what this content consists of.
    session: Option<WriteSession>,
    done: bool,
}

impl StagedBlocks {
    /// The staging area as a block store to write into (blocks the main store already holds
    /// are skipped).
    pub fn store(&self) -> &BlockStore {
        &self.store
    }

    /// Moves every staged block into `main` (renames on the same file system) and makes their
    /// names durable there. Blocking.
    ///
    /// Returns the write session the blocks were noted under: hold it until the tree commit
    /// that links them is done, so that a garbage collection running meanwhile keeps them.
    pub fn commit_blocking(mut self, main: &BlockStore) -> Result<WriteSession, StoreError> {
        let mut moved = Vec::new();
        let shards = fs::read_dir(&self.store.dir)
            .map_err(|e| StoreError::io(format!("listing {}", self.store.dir.display()), e))?;
        for shard in shards.flatten() {
            if shard.file_name() == "tmp" || !shard.path().is_dir() {
                continue;
            }
            let target_dir = main.dir.join(shard.file_name());
            fs::create_dir_all(&target_dir)
                .map_err(|e| StoreError::io(format!("creating {}", target_dir.display()), e))?;
            let blocks = fs::read_dir(shard.path())
                .map_err(|e| StoreError::io(format!("listing {}", shard.path().display()), e))?;
            for block in blocks.flatten() {
                let target = target_dir.join(block.file_name());
                // A block the main store got meanwhile is the same bytes: keep either.
                fs::rename(block.path(), &target)
                    .map_err(|e| StoreError::io(format!("moving {}", target.display()), e))?;
            }
            moved.push(target_dir);
        }
        for dir in &moved {
            sync_dir(dir)?;
        }
        self.done = true;
        let _ = fs::remove_dir_all(&self.store.dir);
        match self.session.take() {
            Some(session) => Ok(session),
            // Only a staging area made by `staging_blocking` exists, and it always has one.
            None => Ok(main.fence.open_session()),
        }
    }

    /// Deletes the staged blocks. Blocking; dropping does the same.
    pub fn discard_blocking(mut self) {
        self.done = true;
        let _ = fs::remove_dir_all(&self.store.dir);
    }
}

impl Drop for StagedBlocks {
    fn drop(&mut self) {
        if !self.done {
            // Normally discarded explicitly off the async runtime; this covers early returns.
            let _ = fs::remove_dir_all(&self.store.dir);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))
}
