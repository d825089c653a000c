//! The block store: one file per block under `blocks/<shard>/<cid>`.
//!
//! A block file only ever appears complete: it is written to a temporary name, synced, and renamed
//! into place. Blocks written together (a tree commit's, or a staging area's when it is moved in)
//! are synced with one `syncfs` before any of them is named, not one by one. Renames become durable when the shard directory is synced, which callers do (through
//! [`BlockStore::sync_dirs`]) before they publish a root that references the blocks.
//!
//! Content that may yet be refused (an upload whose digest is checked only at its end) is written
//! to a [`StagedBlocks`] area under `staging/` first and moved in by rename only once accepted,
//! so a refused upload never leaves a block behind.
//!
//! The store keeps a running count of the blocks and bytes it holds (for metrics): one count of
//! what is on disk (see [`BlockStore::count_held_blocking`]), then every block a put or a
//! commit creates and every removal. Staging areas are not held until moved in.
//!
//! Every write goes through the store's [`WriteFence`], which lets a garbage collection's sweep
//! (`sweep.rs`) run while pushes and fetches do.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cid::Cid;

use super::buffers::{read_block_file, ReadBuffers};
use super::recent::{RecentBlocks, RECENT_BLOCKS_BYTES};
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
    held: HeldCount,
    /// Shared by a store and its staging areas: ties writes to a garbage collection's sweep.
    fence: Arc<WriteFence>,
    /// For a staging area: the write session its blocks are noted under.
    session: Option<u64>,
    /// Small blocks recently written or read (none for a staging area).
    recent: RecentBlocks,
    /// Buffers for reading large blocks, shared with the staging areas.
    buffers: Arc<ReadBuffers>,
}

/// Name of the directory (inside a store) holding staging areas.
pub(super) const STAGING: &str = "staging";

/// What a store holds: its blocks, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldBlocks {
    /// Number of blocks.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// How a change to the store's files changed what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// A block of this many bytes appeared.
    Added(u64),
    /// A block of this many bytes went.
    Removed(u64),
    /// Nothing (the block was already there, or already gone).
    Same,
}

/// The running count of what a store holds. Until its first count has covered every shard,
/// changes in shards it has not reached yet are left to it (it will see them), and changes
/// hold `counted` across the file operation, so that no file is both counted and accounted.
#[derive(Debug, Default)]
struct HeldCount {
    blocks: AtomicU64,
    bytes: AtomicU64,
    /// The first count covered every shard: changes update the counts without the lock.
    complete: AtomicBool,
    /// Shards the first count has covered so far.
    counted: Mutex<HashSet<OsString>>,
}

impl Held {
    /// A block of `bytes` bytes was written: added if the write `created` its file.
    fn created(created: bool, bytes: u64) -> Self {
        if created {
            Held::Added(bytes)
        } else {
            Held::Same
        }
    }
}

impl HeldCount {
    fn apply(&self, change: Held) {
        let less = |atomic: &AtomicU64, n: u64| {
            // Never below zero, even if a file vanished behind the store's back.
            let _ = atomic.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
        };
        match change {
            Held::Added(bytes) => {
                self.blocks.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Held::Removed(bytes) => {
                less(&self.blocks, 1);
                less(&self.bytes, bytes);
            }
            Held::Same => {}
        }
    }

    /// Runs `change`, a file operation in `shard`, and accounts what it did to the holdings.
    /// Every change to the store's blocks goes through here.
    fn track<T, E>(
        &self,
        shard: &str,
        change: impl FnOnce() -> Result<(T, Held), E>,
    ) -> Result<T, E> {
        if self.complete.load(Ordering::Acquire) {
            let (value, held) = change()?;
            self.apply(held);
            return Ok(value);
        }
        let counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        let (value, held) = change()?;
        if self.complete.load(Ordering::Acquire) || counted.contains(std::ffi::OsStr::new(shard)) {
            self.apply(held);
        }
        Ok(value)
    }

    fn current(&self) -> Option<HeldBlocks> {
        self.complete.load(Ordering::Acquire).then(|| HeldBlocks {
            blocks: self.blocks.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        })
    }
}

/// Gives the finished file `from` the name `to`, unless a file already has that name; `true`
/// if this created it. A hard link fails atomically when the name exists, so two writers of
/// the same block (the same bytes) never both count it, where a rename would silently replace.
/// File systems without hard links (FAT) fall back to the rename.
fn place(from: &Path, to: &Path) -> std::io::Result<bool> {
    match fs::hard_link(from, to) {
        Ok(()) => {
            let _ = fs::remove_file(from);
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(from);
            Ok(false)
        }
        Err(_) => {
            let existed = to.exists();
            fs::rename(from, to)?;
            Ok(!existed)
        }
    }
}

/// The block file at `path`, `None` if there is none. Blocking.
fn read_stored(buffers: &Arc<ReadBuffers>, path: &Path) -> Result<Option<Bytes>, StoreError> {
    match read_block_file(buffers, path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

/// Blocks and bytes of the block files in one shard directory.
fn count_shard(dir: &Path) -> Result<HeldBlocks, StoreError> {
    let mut held = HeldBlocks::default();
    let entries =
        fs::read_dir(dir).map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        match entry.metadata() {
            Ok(meta) if meta.is_file() => {
                held.blocks += 1;
                held.bytes += meta.len();
            }
            // Gone since the listing (a removal, accounted by it once the shard is counted).
            Ok(_) | Err(_) => {}
        }
    }
    Ok(held)
}

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
            held: HeldCount::default(),
            fence: Arc::new(WriteFence::default()),
            session: None,
            recent: RecentBlocks::new(RECENT_BLOCKS_BYTES),
            buffers: Arc::default(),
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
                held: HeldCount::default(),
                fence: self.fence.clone(),
                session: Some(session.id()),
                recent: RecentBlocks::new(0),
                buffers: self.buffers.clone(),
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
        if let Some(data) = self.recent.get(cid) {
            return Ok(Some(data));
        }
        let data = read_stored(&self.buffers, &self.path_of(cid))?;
        Ok(data.map(|data| self.keep(cid, data)))
    }

    /// A block read from disk, kept among the recent ones if small.
    fn keep(&self, cid: &Cid, data: Bytes) -> Bytes {
        self.recent.insert(cid, &data);
        data
    }

    /// Stores a block; the caller vouches that `cid` is the hash of `data`.
    /// The file content is synced before it becomes visible under its name.
    pub fn put_blocking(&self, cid: &Cid, data: &[u8]) -> Result<(), StoreError> {
        let Some(written) = self.write_unplaced(cid, data)? else {
            return Ok(());
        };
        // A staging area's blocks are synced together when they are moved into the main
        // store (`StagedBlocks::commit_blocking`); a block of the main store is named only once
        // its bytes are on disk.
        if self.main.is_none() {
            if let Err(e) = File::open(&written.tmp).and_then(|f| f.sync_data()) {
                let _ = fs::remove_file(&written.tmp);
                return Err(StoreError::io(format!("writing block {cid}"), e));
            }
        }
        self.place_written(written)
    }

    /// Writes `data` to a temporary file, unsynced, unless the block is held already (then
    /// notes it in the caller's write session and returns `None`). Blocking.
    fn write_unplaced(&self, cid: &Cid, data: &[u8]) -> Result<Option<Unplaced>, StoreError> {
        let path = self.path_of(cid);
        {
            // Held from finding the block present to noting it: a sweep cannot delete it in
            // between, so the caller may rely on it.
            let _writing = self.fence.writing();
            if path.is_file() || self.main_path_of(cid).is_some_and(|p| p.is_file()) {
                self.fence.note_write(self.session, cid);
                return Ok(None);
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
        let written = File::create(&tmp).and_then(|mut file| {
            file.write_all(data)?;
            if self.main.is_some() {
                start_writeback(&file);
            }
            Ok(())
        });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(format!("writing block {cid}"), e));
        }
        Ok(Some(Unplaced {
            cid: *cid,
            tmp,
            path,
            len: data.len() as u64,
        }))
    }

    /// Gives a written block its name, counted and noted in the caller's write session.
    fn place_written(&self, written: Unplaced) -> Result<(), StoreError> {
        let Unplaced {
            cid,
            tmp,
            path,
            len,
        } = written;
        let key = cid.to_string();
        // Only placing the block under its name and its note go together under the fence (a
        // sweep need not wait for a disk). The fence is taken before the running count's
        // lock, as the sweep's deletions take them.
        let _writing = self.fence.writing();
        let placed = || -> std::io::Result<((), Held)> {
            let created = place(&tmp, &path)?;
            Ok(((), Held::created(created, len)))
        };
        self.held
            .track(Self::shard_name(&key), placed)
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                StoreError::io(format!("writing block {cid}"), e)
            })?;
        self.fence.note_write(self.session, &cid);
        Ok(())
    }

    /// Stores `blocks` with one sync of their bytes for all of them (a tree commit writes
    /// several small blocks at once), then makes their names durable. Blocking.
    pub fn put_many_blocking(&self, blocks: &[(Cid, Bytes)]) -> Result<(), StoreError> {
        let mut written = Vec::with_capacity(blocks.len());
        let mut failure = None;
        // A commit may name one block at several paths (the same small directory or link
        // file twice): each is written once.
        let mut seen = HashSet::with_capacity(blocks.len());
        for (cid, data) in blocks {
            if !seen.insert(cid) {
                continue;
            }
            match self.write_unplaced(cid, data) {
                Ok(Some(block)) => written.push(block),
                Ok(None) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let synced = match (failure, written.as_slice()) {
            (Some(e), _) => Err(e),
            (None, []) => Ok(()),
            (None, [one]) => File::open(&one.tmp)
                .and_then(|f| f.sync_data())
                .map_err(|e| StoreError::io(format!("syncing block {}", one.cid), e)),
            (None, _) => sync_filesystem(&self.dir),
        };
        if let Err(e) = synced {
            for block in &written {
                let _ = fs::remove_file(&block.tmp);
            }
            return Err(e);
        }
        for block in written {
            self.place_written(block)?;
        }
        self.sync_dirs_blocking(blocks.iter().map(|(cid, _)| cid))?;
        // A commit's directory blocks are what the next requests read.
        for (cid, data) in blocks {
            self.recent.insert(cid, data);
        }
        Ok(())
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
    /// leave the store (the running count follows): only the garbage collector's sweep calls
    /// it, holding the write fence. Blocking.
    pub(super) fn delete_blocking(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        let key = cid.to_string();
        let path = self.shard_dir(&key).join(&key);
        let remove = || -> std::io::Result<(Option<u64>, Held)> {
            let len = match fs::metadata(&path) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok((None, Held::Same)),
                Err(e) => return Err(e),
            };
            match fs::remove_file(&path) {
                Ok(()) => Ok((Some(len), Held::Removed(len))),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok((None, Held::Same)),
                Err(e) => Err(e),
            }
        };
        let removed = self
            .held
            .track(Self::shard_name(&key), remove)
            .map_err(|e| StoreError::io(format!("deleting block {cid}"), e));
        self.recent.remove(cid);
        removed
    }

    /// Counts the blocks and bytes on disk, once, so that [`Self::held`] can answer from then
    /// on; blocks stored and removed meanwhile are accounted as they come and go. Blocking
    /// (lists every shard: run it on a blocking thread, in the background).
    pub fn count_held_blocking(&self) -> Result<HeldBlocks, StoreError> {
        let skip = |name: &std::ffi::OsStr| name == "tmp" || name == STAGING;
        let shards = |dir: &Path| -> Result<Vec<(OsString, PathBuf)>, StoreError> {
            let entries = fs::read_dir(dir)
                .map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
            Ok(entries
                .flatten()
                .filter(|e| !skip(&e.file_name()) && e.path().is_dir())
                .map(|e| (e.file_name(), e.path()))
                .collect())
        };
        let lock = || self.held.counted.lock().unwrap_or_else(|p| p.into_inner());
        // One shard at a time under the lock: puts into other shards go on meanwhile.
        for (name, path) in shards(&self.dir)? {
            let mut counted = lock();
            if counted.contains(&name) {
                continue;
            }
            let held = count_shard(&path)?;
            self.held.blocks.fetch_add(held.blocks, Ordering::Relaxed);
            self.held.bytes.fetch_add(held.bytes, Ordering::Relaxed);
            counted.insert(name);
        }
        // Shards created since the listing, counted with every change held off, so that none
        // is missed before the counts are declared complete.
        let mut counted = lock();
        for (name, path) in shards(&self.dir)? {
            if !counted.contains(&name) {
                let held = count_shard(&path)?;
                self.held.blocks.fetch_add(held.blocks, Ordering::Relaxed);
                self.held.bytes.fetch_add(held.bytes, Ordering::Relaxed);
                counted.insert(name);
            }
        }
        self.held.complete.store(true, Ordering::Release);
        drop(counted);
        Ok(self.held.current().unwrap_or_default())
    }

    /// What the store holds, from its running count; `None` until
    /// [`Self::count_held_blocking`] has finished. Cheap: reads two counters.
    pub fn held(&self) -> Option<HeldBlocks> {
        self.held.current()
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
        sync_dirs(&self.dir, &dirs.into_iter().collect::<Vec<_>>())
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
        if let Some(data) = self.recent.get(cid) {
            return Ok(Some(data));
        }
        let (buffers, path) = (self.buffers.clone(), self.path_of(cid));
        let data = tokio::task::spawn_blocking(move || read_stored(&buffers, &path)).await??;
        Ok(data.map(|data| self.keep(cid, data)))
    }

    /// Stores blocks and makes them durable, without blocking the async runtime.
    pub async fn put_many_durable(
        self: &std::sync::Arc<Self>,
        blocks: Vec<(Cid, Bytes)>,
    ) -> Result<(), StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.put_many_blocking(&blocks)).await?
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
        // The staged blocks were written unsynced: one sync makes all their bytes durable
        // before any of them gets a name in the main store.
        sync_filesystem(&self.store.dir)?;
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
            let shard_name = shard.file_name();
            let shard_name = shard_name.to_string_lossy();
            for block in blocks.flatten() {
                let target = target_dir.join(block.file_name());
                let len = block.metadata().map(|m| m.len()).unwrap_or_default();
                // A block the main store got meanwhile is the same bytes: keep that one.
                let moved = || -> std::io::Result<((), Held)> {
                    let created = place(&block.path(), &target)?;
                    Ok(((), Held::created(created, len)))
                };
                main.held
                    .track(&shard_name, moved)
                    .map_err(|e| StoreError::io(format!("moving {}", target.display()), e))?;
            }
            moved.push(target_dir);
        }
        sync_dirs(&main.dir, &moved)?;
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

/// A block written to its temporary file, not yet under its name.
struct Unplaced {
    cid: Cid,
    tmp: PathBuf,
    path: PathBuf,
    len: u64,
}

/// Starts writing `file`'s pages to disk without waiting for them. A staging area holds an
/// upload that streams in over seconds and is synced as a whole only when it completes: begun
/// block by block, the disk writes overlap the upload, and the final sync waits for the last
/// few blocks rather than for all of them (a 512 MiB push spent 0.67 s of its final `PUT` in
/// `syncfs`). A hint: if it fails, the final sync still writes everything.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open for the call;
    // offset 0 and length 0 mean the whole file.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Makes every write to the file system holding `dir` durable: one `syncfs`, where syncing
/// many freshly written files one by one would commit the file system's journal once each.
fn sync_filesystem(dir: &Path) -> Result<(), StoreError> {
    use std::os::fd::AsRawFd;
    let handle =
        File::open(dir).map_err(|e| StoreError::io(format!("opening {}", dir.display()), e))?;
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open for the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(StoreError::io(
            format!("syncing the file system of {}", dir.display()),
            e,
        ));
    }
    Ok(())
}

/// Directories synced one by one, at most; past that, one `syncfs` of the file system: each
/// directory sync commits the journal on its own (a tree commit names blocks in a dozen shard
/// directories or more), where one commit of the file system's journal covers them all.
const DIRECTORY_SYNCS: usize = 2;

/// Makes the entries of `dirs` (shard directories under `store`) durable.
fn sync_dirs(store: &Path, dirs: &[PathBuf]) -> Result<(), StoreError> {
    if dirs.len() > DIRECTORY_SYNCS {
        return sync_filesystem(store);
    }
    for dir in dirs {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sha2::{Digest as _, Sha256};

    use super::*;

    fn cid(data: &[u8]) -> Cid {
        let hash = cid::multihash::Multihash::<64>::wrap(0x12, &Sha256::digest(data))
            .expect("sha2-256 fits");
        Cid::new_v1(0x55, hash)
    }

    fn block(i: u32) -> (Cid, Vec<u8>) {
        let data = format!("block number {i}")
            .repeat(i as usize % 7 + 1)
            .into_bytes();
        (cid(&data), data)
    }

    /// What a walk of the directory finds, as the running count should say.
    fn walked(store: &BlockStore) -> HeldBlocks {
        let (bytes, blocks) = store.usage_blocking().expect("walk");
        HeldBlocks { blocks, bytes }
    }

    #[test]
    fn the_count_follows_puts_commits_and_removals() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = BlockStore::open(dir.path()).expect("open");
        for i in 0..20 {
            let (cid, data) = block(i);
            store.put_blocking(&cid, &data).expect("put");
        }
        assert_eq!(
            store.held(),
            None,
            "nothing is known before the first count"
        );
        let first = store.count_held_blocking().expect("count");
        assert_eq!(first.blocks, 20);
        assert_eq!(Some(first), store.held());
        assert_eq!(first, walked(&store));

        // A new block counts, the same block again does not.
        let (cid, data) = block(100);
        store.put_blocking(&cid, &data).expect("put");
        store.put_blocking(&cid, &data).expect("put again");
        assert_eq!(store.held(), Some(walked(&store)));
        assert_eq!(store.held().map(|h| h.blocks), Some(21));

        // Staged blocks count once moved in, and only those the store did not hold.
        let staged = store.staging_blocking().expect("staging");
        for i in 95..110 {
            let (cid, data) = block(i);
            staged.store().put_blocking(&cid, &data).expect("stage");
        }
        assert_eq!(
            store.held().map(|h| h.blocks),
            Some(21),
            "staging is not held"
        );
        let _session = staged.commit_blocking(&store).expect("commit");
        assert_eq!(store.held(), Some(walked(&store)));
        assert_eq!(store.held().map(|h| h.blocks), Some(35));
        let discarded = store.staging_blocking().expect("staging");
        let (cid, data) = block(500);
        discarded.store().put_blocking(&cid, &data).expect("stage");
        discarded.discard_blocking();
        assert_eq!(store.held(), Some(walked(&store)));

        // Removals count down; removing what is not there changes nothing.
        let (cid, _) = block(3);
        assert!(store.delete_blocking(&cid).expect("remove").is_some());
        assert!(store.delete_blocking(&cid).expect("remove again").is_none());
        assert_eq!(store.held(), Some(walked(&store)));
        assert_eq!(store.held().map(|h| h.blocks), Some(34));
    }

    #[test]
    fn blocks_put_together_are_all_stored_named_and_counted_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = BlockStore::open(dir.path()).expect("open");
        store.count_held_blocking().expect("count");
        let (held_cid, held_data) = block(1);
        store.put_blocking(&held_cid, &held_data).expect("put");
        // One new block, one already held, then many new ones (the batch syncs once).
        let batch = |range: std::ops::Range<u32>| -> Vec<(Cid, Bytes)> {
            range
                .map(|i| {
                    let (cid, data) = block(i);
                    (cid, Bytes::from(data))
                })
                .collect()
        };
        store.put_many_blocking(&batch(0..2)).expect("put two");
        store.put_many_blocking(&batch(0..30)).expect("put many");
        store.put_many_blocking(&[]).expect("put none");
        for (cid, data) in batch(0..30) {
            assert_eq!(
                fs::read(store.path_of(&cid)).expect("stored").as_slice(),
                &data[..]
            );
        }
        assert_eq!(store.held().map(|h| h.blocks), Some(30));
        assert_eq!(store.held(), Some(walked(&store)));
        // No temporary file is left behind.
        assert_eq!(
            fs::read_dir(dir.path().join("tmp"))
                .map(|d| d.count())
                .unwrap_or(0),
            0
        );
    }

    #[test]
    fn changes_during_the_first_count_are_counted_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(BlockStore::open(dir.path()).expect("open"));
        for i in 0..800 {
            let (cid, data) = block(i);
            store.put_blocking(&cid, &data).expect("put");
        }
        // Writers add new blocks and remove old ones in every shard while the count runs.
        let writers: Vec<_> = (0..4u32)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let (cid, data) = block(10_000 + w * 1000 + i);
                        store.put_blocking(&cid, &data).expect("put");
                        let (old, _) = block(w * 200 + i);
                        store.delete_blocking(&old).expect("remove");
                    }
                })
            })
            .collect();
        store.count_held_blocking().expect("count");
        for writer in writers {
            writer.join().expect("writer");
        }
        assert_eq!(store.held(), Some(walked(&store)));
        assert_eq!(store.held().map(|h| h.blocks), Some(800));
    }

    #[test]
    fn one_block_written_by_many_at_once_counts_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(BlockStore::open(dir.path()).expect("open"));
        store.count_held_blocking().expect("count");
        for round in 0..50 {
            let (cid, data) = block(round);
            let data = Arc::new(data);
            let writers: Vec<_> = (0..4)
                .map(|_| {
                    let (store, data) = (store.clone(), data.clone());
                    std::thread::spawn(move || store.put_blocking(&cid, &data).expect("put"))
                })
                .collect();
            for writer in writers {
                writer.join().expect("writer");
            }
        }
        assert_eq!(store.held(), Some(walked(&store)));
        assert_eq!(store.held().map(|h| h.blocks), Some(50));
    }
}
