//! Blob upload sessions: local state (never part of the tree), one append-only file each.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedMutexGuard;

use super::error::RegistryError;
use super::reference::RepoName;
use crate::store::MetaStore;

#[derive(Serialize, Deserialize)]
struct UploadRecord {
    repository: String,
    started_unix: u64,
}

/// The upload sessions of a node.
pub struct BlobUploads {
    dir: PathBuf,
    meta: MetaStore,
    /// One lock per session: a session's bytes are appended by one request at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Exclusive access to one upload session.
pub struct UploadGuard {
    _guard: OwnedMutexGuard<()>,
    /// The file holding the bytes received so far.
    pub path: PathBuf,
}

impl BlobUploads {
    /// Opens the sessions stored under `dir`, dropping files no session owns.
    pub fn open(dir: PathBuf, meta: MetaStore) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| RegistryError::io(format!("creating {}", dir.display()), e))?;
        let known: std::collections::HashSet<String> = meta.upload_ids()?.into_iter().collect();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(BlobUploads {
            dir,
            meta,
            locks: Mutex::new(HashMap::new()),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Starts a session for `repo`; returns its id.
    pub async fn start(&self, repo: &RepoName) -> Result<String, RegistryError> {
        let id = uuid::Uuid::new_v4().to_string();
        let path = self.path(&id);
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| RegistryError::io(format!("creating {}", path.display()), e))?;
        file.sync_all()
            .await
            .map_err(|e| RegistryError::io("syncing upload file", e))?;
        let record = UploadRecord {
            repository: repo.to_string(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        self.meta.put_upload(&id, &record).await?;
        Ok(id)
    }

    /// Locks the session `id` of `repo`, failing if there is no such session.
    pub async fn lock(&self, repo: &RepoName, id: &str) -> Result<UploadGuard, RegistryError> {
        let unknown = || RegistryError::BlobUploadUnknown(id.to_owned());
        // Ids are UUIDs we made; anything else never names a file (no path tricks).
        uuid::Uuid::parse_str(id).map_err(|_| unknown())?;
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(id.to_owned()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        let record: UploadRecord = self.meta.upload(id)?.ok_or_else(unknown)?;
        if record.repository != repo.as_str() {
            return Err(unknown());
        }
        Ok(UploadGuard {
            _guard: guard,
            path: self.path(id),
        })
    }

    /// Bytes received so far by the locked session.
    pub async fn offset(&self, upload: &UploadGuard) -> Result<u64, RegistryError> {
        tokio::fs::metadata(&upload.path)
            .await
            .map(|m| m.len())
            .map_err(|e| RegistryError::io("reading upload size", e))
    }

    /// Appends a request body to the locked session, streaming it to disk.
    ///
    /// With `start`, the chunk must begin where the upload ends; with `expected_len`, the body
    /// must have exactly that many bytes, else nothing of it is kept.
    pub async fn append<S, E>(
        &self,
        upload: &UploadGuard,
        start: Option<u64>,
        expected_len: Option<u64>,
        mut body: S,
    ) -> Result<u64, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let offset = self.offset(upload).await?;
        if let Some(start) = start {
            if start != offset {
                return Err(RegistryError::RangeInvalid { offset, start });
            }
        }
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&upload.path)
            .await
            .map_err(|e| RegistryError::io("opening upload file", e))?;
        let mut written = 0u64;
        let result: Result<(), RegistryError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    RegistryError::BlobUploadInvalid(format!("reading request body: {e}"))
                })?;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| RegistryError::io("writing upload file", e))?;
                written += chunk.len() as u64;
            }
            if let Some(expected) = expected_len {
                if expected != written {
                    return Err(RegistryError::BlobUploadInvalid(format!(
                        "Content-Range announces {expected} bytes, the body has {written}"
                    )));
                }
            }
            file.sync_data()
                .await
                .map_err(|e| RegistryError::io("syncing upload file", e))
        }
        .await;
        if let Err(e) = result {
            // Keep the session at its last acknowledged size so the client can resume.
            let _ = file.set_len(offset).await;
            return Err(e);
        }
        Ok(offset + written)
    }

    /// Ends the locked session `id` and deletes its bytes.
    pub async fn remove(&self, id: &str, upload: UploadGuard) -> Result<(), RegistryError> {
        self.meta.remove_upload(id).await?;
        let _ = tokio::fs::remove_file(&upload.path).await;
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        drop(upload);
        Ok(())
    }
}
