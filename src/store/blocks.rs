//! The block store: one file per block under `blocks/<shard>/<cid>`.
//!
//! A block file only ever appears complete: it is written to a temporary name, synced, and renamed
//! into place. Renames become durable when the shard directory is synced, which callers do (through
//! [`BlockStore::sync_dirs`]) before they publish a root that references the blocks.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cid::Cid;

use super::StoreError;

/// Blocks on the local disk, addressed by CID.
#[derive(Debug)]
pub struct BlockStore {
    dir: PathBuf,
    tmp_counter: AtomicU64,
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
        Ok(BlockStore {
            dir,
            tmp_counter: AtomicU64::new(0),
        })
    }

    fn shard_dir(&self, key: &str) -> PathBuf {
        // The last two characters of a base32 CID are effectively random: an even spread.
        let shard = &key[key.len().saturating_sub(2)..];
        self.dir.join(shard)
    }

    fn path_of(&self, cid: &Cid) -> PathBuf {
        let key = cid.to_string();
        self.shard_dir(&key).join(key)
    }

    /// Whether the block is stored locally.
    pub fn has_blocking(&self, cid: &Cid) -> bool {
        self.path_of(cid).is_file()
    }

    /// Reads a block, `None` if it is not stored here.
    pub fn get_blocking(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
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
        if path.is_file() {
            return Ok(());
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
            file.sync_data()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::io(format!("writing block {cid}"), e)
        })
    }

    /// Makes the names of the given blocks durable (syncs their shard directories).
    pub fn sync_dirs_blocking<'a>(
        &self,
        cids: impl IntoIterator<Item = &'a Cid>,
    ) -> Result<(), StoreError> {
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
            if shard.file_name() == "tmp" || !shard.path().is_dir() {
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

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))
}
