//! Small local state in sled: the committed tree root, blob upload sessions, records, notes,
//! and what garbage collection remembers between runs.
//!
//! Every write that a client's success response depends on is flushed before it returns.

use std::path::Path;

use cid::Cid;
use serde::{de::DeserializeOwned, Serialize};

use super::StoreError;

const ROOT_KEY: &[u8] = b"root";

/// The metadata database of one node.
#[derive(Clone)]
pub struct MetaStore {
    db: sled::Db,
    roots: sled::Tree,
    uploads: sled::Tree,
    verified: sled::Tree,
    records: sled::Tree,
    notes: sled::Tree,
    unreferenced: sled::Tree,
}

impl MetaStore {
    /// Opens (creating if needed) the metadata store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::open(dir)?;
        let roots = db.open_tree("roots")?;
        let uploads = db.open_tree("uploads")?;
        let verified = db.open_tree("verified")?;
        let records = db.open_tree("records")?;
        let notes = db.open_tree("notes")?;
        let unreferenced = db.open_tree("unreferenced")?;
        Ok(MetaStore {
            db,
            roots,
            uploads,
            verified,
            records,
            notes,
            unreferenced,
        })
    }

    /// The committed root of the node's own tree, if any was ever committed.
    pub fn root(&self) -> Result<Option<Cid>, StoreError> {
        match self.roots.get(ROOT_KEY)? {
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

    /// Atomically replaces the committed root and waits until the change is durable.
    pub async fn set_root(&self, root: &Cid) -> Result<(), StoreError> {
        self.roots.insert(ROOT_KEY, root.to_bytes())?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Stores an upload session record and waits until it is durable.
    pub async fn put_upload<T: Serialize>(&self, id: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            key: format!("upload {id}"),
            reason: e.to_string(),
        })?;
        self.uploads.insert(id.as_bytes(), bytes)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Reads an upload session record.
    pub fn upload<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, StoreError> {
        match self.uploads.get(id.as_bytes())? {
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
        self.uploads.remove(id.as_bytes())?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Removes an upload session record and waits until that is durable. Blocking.
    pub fn remove_upload_blocking(&self, id: &str) -> Result<(), StoreError> {
        self.uploads.remove(id.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// Ids of all upload sessions.
    pub fn upload_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for key in self.uploads.iter().keys() {
            ids.push(String::from_utf8_lossy(&key?).into_owned());
        }
        Ok(ids)
    }

    /// Whether the file DAG at `cid` was checked against its digest.
    pub fn is_verified(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.verified.contains_key(cid.to_bytes())?)
    }

    /// Records that the file DAG at `cid` matches its digest. Not flushed: losing it in a crash
    /// only means checking again.
    pub fn mark_verified(&self, cid: &Cid) -> Result<(), StoreError> {
        self.verified.insert(cid.to_bytes(), &[])?;
        Ok(())
    }

    /// Stores an IPNS record under `key` (a name, or `self` for the own record) and waits until
    /// it is durable: a sequence number is never handed out twice.
    pub async fn put_record(&self, key: &str, record: &[u8]) -> Result<(), StoreError> {
        self.records.insert(key.as_bytes(), record)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// The IPNS record stored under `key`.
    pub fn record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.records.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Stores a note about the node's state under `key` (e.g. a second writer seen, which
    /// must outlive a restart) and waits until it is durable.
    pub async fn put_note(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.notes.insert(key.as_bytes(), value)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// The note stored under `key`.
    pub fn note(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.notes.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Removes the note under `key` and waits until that is durable.
    pub async fn remove_note(&self, key: &str) -> Result<(), StoreError> {
        self.notes.remove(key.as_bytes())?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Every file DAG recorded as checked against its digest.
    pub fn verified_cids(&self) -> Result<Vec<Cid>, StoreError> {
        let mut cids = Vec::new();
        for key in self.verified.iter().keys() {
            // An unreadable key names nothing that could be served: skip it.
            if let Ok(cid) = Cid::try_from(key?.as_ref()) {
                cids.push(cid);
            }
        }
        Ok(cids)
    }

    /// Forgets that the file DAG at `cid` was checked (its blocks were deleted: if it comes
    /// back, it is fetched and checked again). Not flushed, like [`Self::mark_verified`].
    pub fn forget_verified(&self, cid: &Cid) -> Result<(), StoreError> {
        self.verified.remove(cid.to_bytes())?;
        Ok(())
    }

    /// Since when (unix seconds) the garbage collector has seen the item `key` unreferenced,
    /// if it has.
    pub fn unreferenced_since(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.unreferenced.get(key.as_bytes())? {
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
        self.unreferenced
            .insert(key.as_bytes(), &unix_secs.to_be_bytes())?;
        Ok(())
    }

    /// Forgets that `key` was seen unreferenced (it is in use again). Cheap when it was not.
    pub fn clear_unreferenced(&self, key: &str) -> Result<(), StoreError> {
        if self.unreferenced.contains_key(key.as_bytes())? {
            self.unreferenced.remove(key.as_bytes())?;
        }
        Ok(())
    }

    /// Every key seen unreferenced.
    pub fn unreferenced_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        for key in self.unreferenced.iter().keys() {
            keys.push(String::from_utf8_lossy(&key?).into_owned());
        }
        Ok(keys)
    }
}
