//! Small local state in sled: the committed tree root, blob upload sessions, records, notes,
//! and what garbage collection remembers between runs.
//!
//! Every write that a client's success response depends on is flushed before it returns.
//!
//! After an I/O error (a full disk) sled refuses every further write until the database is
//! opened again, while what it had made durable stays intact. So the store reopens its
//! database after such an error, on the next use: once space is freed, writes work again
//! without a restart. Reopening is sled's crash recovery, which keeps exactly the flushed
//! state. Recovery itself writes, so while the disk stays full the reopening fails and reads
//! of the metadata fail with it (a writer's pulls do not need them: its root is in memory).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use cid::Cid;
use serde::{de::DeserializeOwned, Serialize};

use super::StoreError;

const ROOT_KEY: &[u8] = b"root";

/// Default size of sled's page cache. sled's own default (1 GiB) lets the cache grow with use;
/// the metadata is a few records per upload, blob and followed name, so a few MiB hold all of
/// it on a small registry and the hot part of it on a large one.
pub const DEFAULT_META_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// How long a reopening waits for the failed opening's file lock to be let go.
const REOPEN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether sled's open failed because another opening still holds its file lock (sled
/// reports it only as an I/O error with this message, wrapping the lock's `WouldBlock`).
fn is_lock_held(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::WouldBlock
        || error.to_string().contains("could not acquire lock")
}

/// The metadata database of one node (clones share it).
#[derive(Clone)]
pub struct MetaStore {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    cache_bytes: u64,
    /// The open database; `None` after an I/O error until the next use reopens it.
    current: RwLock<Option<Arc<Trees>>>,
}

/// One opening of the database.
struct Trees {
    db: sled::Db,
    roots: sled::Tree,
    uploads: sled::Tree,
    verified: sled::Tree,
    records: sled::Tree,
    notes: sled::Tree,
    unreferenced: sled::Tree,
}

impl Trees {
    fn open(dir: &Path, cache_bytes: u64) -> Result<Self, sled::Error> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        Ok(Trees {
            roots: db.open_tree("roots")?,
            uploads: db.open_tree("uploads")?,
            verified: db.open_tree("verified")?,
            records: db.open_tree("records")?,
            notes: db.open_tree("notes")?,
            unreferenced: db.open_tree("unreferenced")?,
            db,
        })
    }
}

impl MetaStore {
    /// Opens (creating if needed) the metadata store in `dir`, with the default cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_META_CACHE_BYTES)
    }

    /// Opens (creating if needed) the metadata store in `dir`, caching at most `cache_bytes`
    /// of it in memory.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let trees = Trees::open(dir, cache_bytes)?;
        Ok(MetaStore {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                cache_bytes,
                current: RwLock::new(Some(Arc::new(trees))),
            }),
        })
    }

    /// The open database, reopening it if an I/O error closed it.
    fn trees(&self) -> Result<Arc<Trees>, StoreError> {
        let slot = self
            .shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(trees) = slot.as_ref() {
            return Ok(trees.clone());
        }
        drop(slot);
        let mut slot = self
            .shared
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(trees) = slot.as_ref() {
            return Ok(trees.clone());
        }
        // Short and rare (once after a disk-full error): sled reads its log back. It fails
        // (and the next use tries again) while the disk is still too full to recover.
        let trees = Arc::new(self.reopen()?);
        tracing::info!(dir = %self.shared.dir.display(), "metadata store reopened after an I/O error");
        *slot = Some(trees.clone());
        Ok(trees)
    }

    /// Opens the database again after an I/O error closed it. sled locks its files, and the
    /// failed opening lets go of them only when its last background job (a flush or a log
    /// write sled started before the error) has ended, which takes a moment: while the lock
    /// is still held, this waits a bounded while for it.
    fn reopen(&self) -> Result<Trees, StoreError> {
        let deadline = std::time::Instant::now() + REOPEN_LOCK_WAIT;
        loop {
            match Trees::open(&self.shared.dir, self.shared.cache_bytes) {
                Err(sled::Error::Io(e))
                    if is_lock_held(&e) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                result => return result.map_err(StoreError::from),
            }
        }
    }

    /// Notes the outcome of an operation on `trees`: after an I/O error sled takes no more
    /// writes, so this opening is let go, to be reopened on the next use.
    fn checked<T>(&self, trees: &Arc<Trees>, result: sled::Result<T>) -> Result<T, StoreError> {
        if let Err(sled::Error::Io(e)) = &result {
            let mut slot = self
                .shared
                .current
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_some_and(|t| Arc::ptr_eq(t, trees)) {
                tracing::warn!(error = %e, "metadata store: I/O error; it reopens on next use");
                *slot = None;
            }
        }
        result.map_err(StoreError::from)
    }

    /// Waits until every write so far on `trees` is durable.
    async fn flush(&self, trees: &Arc<Trees>) -> Result<(), StoreError> {
        let result = trees.db.flush_async().await.map(|_| ());
        self.checked(trees, result)
    }

    /// The committed root of the node's own tree, if any was ever committed.
    pub fn root(&self) -> Result<Option<Cid>, StoreError> {
        let t = self.trees()?;
        match self.checked(&t, t.roots.get(ROOT_KEY))? {
            None => Ok(None),
            Some(bytes) => {
                Cid::try_from(bytes.as_ref())
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        key: "root".into(),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Atomically replaces the committed root and waits until the change is durable. If it
    /// cannot be made durable (a full disk), the previous root is put back, so a later flush
    /// cannot make a commit its client was told failed appear after all.
    pub async fn set_root(&self, root: &Cid) -> Result<(), StoreError> {
        let t = self.trees()?;
        let previous = self.checked(&t, t.roots.insert(ROOT_KEY, root.to_bytes()))?;
        if let Err(e) = self.flush(&t).await {
            // In memory only: the failed opening is reopened from its last durable state
            // anyway; this covers an error that did not close it.
            let restored = match previous {
                Some(previous) => t.roots.insert(ROOT_KEY, previous).map(|_| ()),
                None => t.roots.remove(ROOT_KEY).map(|_| ()),
            };
            if let Err(restore) = restored {
                tracing::debug!(error = %restore, "putting the previous root back after a failed flush");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Stores an upload session record and waits until it is durable.
    pub async fn put_upload<T: Serialize>(&self, id: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            key: format!("upload {id}"),
            reason: e.to_string(),
        })?;
        let t = self.trees()?;
        self.checked(&t, t.uploads.insert(id.as_bytes(), bytes))?;
        self.flush(&t).await
    }

    /// Reads an upload session record.
    pub fn upload<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, StoreError> {
        let t = self.trees()?;
        match self.checked(&t, t.uploads.get(id.as_bytes()))? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        key: format!("upload {id}"),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Removes an upload session record.
    pub async fn remove_upload(&self, id: &str) -> Result<(), StoreError> {
        let t = self.trees()?;
        self.checked(&t, t.uploads.remove(id.as_bytes()))?;
        self.flush(&t).await
    }

    /// Removes an upload session record and waits until that is durable. Blocking.
    pub fn remove_upload_blocking(&self, id: &str) -> Result<(), StoreError> {
        let t = self.trees()?;
        self.checked(&t, t.uploads.remove(id.as_bytes()))?;
        let flushed = t.db.flush().map(|_| ());
        self.checked(&t, flushed)
    }

    /// Ids of all upload sessions.
    pub fn upload_ids(&self) -> Result<Vec<String>, StoreError> {
        let t = self.trees()?;
        let mut ids = Vec::new();
        for key in t.uploads.iter().keys() {
            let key = self.checked(&t, key)?;
            ids.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(ids)
    }

    /// Whether the file DAG at `cid` was checked against its digest.
    pub fn is_verified(&self, cid: &Cid) -> Result<bool, StoreError> {
        let t = self.trees()?;
        self.checked(&t, t.verified.contains_key(cid.to_bytes()))
    }

    /// Records that the file DAG at `cid` matches its digest. Not flushed: losing it in a crash
    /// only means checking again.
    pub fn mark_verified(&self, cid: &Cid) -> Result<(), StoreError> {
        let t = self.trees()?;
        self.checked(&t, t.verified.insert(cid.to_bytes(), &[]))
            .map(|_| ())
    }

    /// Stores an IPNS record under `key` (a name, or `self` for the own record) and waits until
    /// it is durable: a sequence number is never handed out twice.
    pub async fn put_record(&self, key: &str, record: &[u8]) -> Result<(), StoreError> {
        let t = self.trees()?;
        self.checked(&t, t.records.insert(key.as_bytes(), record))?;
        self.flush(&t).await
    }

    /// The IPNS record stored under `key`.
    pub fn record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.trees()?;
        Ok(self
            .checked(&t, t.records.get(key.as_bytes()))?
            .map(|v| v.to_vec()))
    }

    /// Stores a note about the node's state under `key` (e.g. a second writer seen, which
    /// must outlive a restart) and waits until it is durable.
    pub async fn put_note(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let t = self.trees()?;
        self.checked(&t, t.notes.insert(key.as_bytes(), value))?;
        self.flush(&t).await
    }

    /// The note stored under `key`.
    pub fn note(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.trees()?;
        Ok(self
            .checked(&t, t.notes.get(key.as_bytes()))?
            .map(|v| v.to_vec()))
    }

    /// Removes the note under `key` and waits until that is durable.
    pub async fn remove_note(&self, key: &str) -> Result<(), StoreError> {
        let t = self.trees()?;
        self.checked(&t, t.notes.remove(key.as_bytes()))?;
        self.flush(&t).await
    }

    /// Every file DAG recorded as checked against its digest.
    pub fn verified_cids(&self) -> Result<Vec<Cid>, StoreError> {
        let t = self.trees()?;
        let mut cids = Vec::new();
        for key in t.verified.iter().keys() {
            let key = self.checked(&t, key)?;
            // An unreadable key names nothing that could be served: skip it.
            if let Ok(cid) = Cid::try_from(key.as_ref()) {
                cids.push(cid);
            }
        }
        Ok(cids)
    }

    /// Forgets that the file DAG at `cid` was checked (its blocks were deleted: if it comes
    /// back, it is fetched and checked again). Not flushed, like [`Self::mark_verified`].
    pub fn forget_verified(&self, cid: &Cid) -> Result<(), StoreError> {
        let t = self.trees()?;
        self.checked(&t, t.verified.remove(cid.to_bytes()))?;
        Ok(())
    }

    /// Since when (unix seconds) the garbage collector has seen the item `key` unreferenced,
    /// if it has.
    pub fn unreferenced_since(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let t = self.trees()?;
        match self.checked(&t, t.unreferenced.get(key.as_bytes()))? {
            None => Ok(None),
            Some(bytes) => {
                let secs: [u8; 8] = bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    key: format!("unreferenced {key}"),
                    reason: format!("{} bytes, not 8", bytes.len()),
                })?;
                Ok(Some(u64::from_be_bytes(secs)))
            }
        }
    }

    /// Records that `key` is unreferenced since `unix_secs`. Not flushed: a record lost in a
    /// crash only restarts its grace period.
    pub fn set_unreferenced_since(&self, key: &str, unix_secs: u64) -> Result<(), StoreError> {
        let t = self.trees()?;
        self.checked(
            &t,
            t.unreferenced
                .insert(key.as_bytes(), &unix_secs.to_be_bytes()),
        )?;
        Ok(())
    }

    /// Forgets that `key` was seen unreferenced (it is in use again). Cheap when it was not.
    pub fn clear_unreferenced(&self, key: &str) -> Result<(), StoreError> {
        let t = self.trees()?;
        if self.checked(&t, t.unreferenced.contains_key(key.as_bytes()))? {
            self.checked(&t, t.unreferenced.remove(key.as_bytes()))?;
        }
        Ok(())
    }

    /// Every key seen unreferenced.
    pub fn unreferenced_keys(&self) -> Result<Vec<String>, StoreError> {
        let t = self.trees()?;
        let mut keys = Vec::new();
        for key in t.unreferenced.iter().keys() {
            let key = self.checked(&t, key)?;
            keys.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(keys)
    }
}
