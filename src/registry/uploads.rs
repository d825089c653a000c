//! Blob upload sessions: local state (never part of the tree), one append-only file each.
//!
//! A session is a record in sled and its bytes in `uploads/<id>`. Sessions left idle longer than
//! the expiry (no bytes received: the file's modification time) are removed with their bytes by
//! a periodic sweep and at start-up. Open sessions are capped per client and in total. Only
//! sessions with a request in flight have an entry in memory, so a request for an unknown id
//! costs one metadata lookup and leaves nothing behind.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedMutexGuard;

use super::digest::Algorithm;
use super::error::RegistryError;
use super::reference::RepoName;
use super::streaming::{importer_stopped, Slot, StreamingImport, StreamingImports};
use crate::store::MetaStore;

/// Default idle time after which an upload session is removed: one hour.
pub const DEFAULT_UPLOAD_EXPIRY: Duration = Duration::from_secs(3600);
/// Default cap on open upload sessions.
pub const DEFAULT_MAX_UPLOAD_SESSIONS: usize = 1000;
/// Default cap on open upload sessions of one client address.
pub const DEFAULT_MAX_UPLOAD_SESSIONS_PER_CLIENT: usize = 100;

/// How long upload sessions live and how many there may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimits {
    /// A session that received no bytes for this long is removed, with its bytes.
    pub expiry: Duration,
    /// Most sessions open at once.
    pub max_sessions: usize,
    /// Most sessions open at once for one client address.
    pub max_sessions_per_client: usize,
    /// Most sessions whose bytes are imported as they arrive, at once (the others are
    /// imported from their file when they complete).
    pub streaming_imports: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            expiry: DEFAULT_UPLOAD_EXPIRY,
            max_sessions: DEFAULT_MAX_UPLOAD_SESSIONS,
            max_sessions_per_client: DEFAULT_MAX_UPLOAD_SESSIONS_PER_CLIENT,
            streaming_imports: super::streaming::DEFAULT_STREAMING_IMPORTS,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct UploadRecord {
    repository: String,
    started_unix: u64,
    /// The address that opened the session, for the per-client cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<IpAddr>,
    /// The digest algorithm the client announced (`digest-algorithm`), if not SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest_algorithm: Option<String>,
}

/// Open sessions, in total and per client.
#[derive(Default)]
struct SessionCounts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl SessionCounts {
    fn add(&mut self, client: Option<IpAddr>) {
        self.total += 1;
        if let Some(client) = client {
            *self.per_client.entry(client).or_default() += 1;
        }
    }

    fn remove(&mut self, client: Option<IpAddr>) {
        self.total = self.total.saturating_sub(1);
        if let Some(client) = client {
            if let Some(n) = self.per_client.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    self.per_client.remove(&client);
                }
            }
        }
    }
}

/// What the sessions share with their guards and the expiry sweep.
struct Sessions {
    dir: PathBuf,
    meta: MetaStore,
    limits: UploadLimits,
    /// One lock per session with a request in flight (a session's bytes are appended by one
    /// request at a time); the entry goes when the last request on it does.
    in_use: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    counts: Mutex<SessionCounts>,
    /// Sessions' bytes imported as they arrive (see [`super::streaming`]).
    streaming: StreamingImports,
}

/// The upload sessions of a node.
pub struct BlobUploads {
    sessions: Arc<Sessions>,
}

/// A claim on a session's lock; removes the session's entry from memory when the last claim
/// goes.
struct InUse {
    sessions: Arc<Sessions>,
    id: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl InUse {
    fn claim(sessions: &Arc<Sessions>, id: &str) -> Self {
        let mut in_use = sessions.in_use.lock().unwrap_or_else(|p| p.into_inner());
        let lock = in_use.entry(id.to_owned()).or_default().clone();
        InUse {
            sessions: sessions.clone(),
            id: id.to_owned(),
            lock,
        }
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut in_use = self
            .sessions
            .in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Clones are only made under this mutex: two references (the map's and ours) mean
        // nobody else holds or waits for the lock.
        if Arc::strong_count(&self.lock) == 2
            && in_use
                .get(&self.id)
                .is_some_and(|l| Arc::ptr_eq(l, &self.lock))
        {
            in_use.remove(&self.id);
        }
    }
}

/// Refuses a body of `got` bytes where the client's `Content-Range` announced `expected`.
pub(super) fn check_length(expected: Option<u64>, got: u64) -> Result<(), RegistryError> {
    match expected {
        Some(expected) if expected != got => Err(RegistryError::BlobUploadInvalid(format!(
            "Content-Range announces {expected} bytes, the body has {got}"
        ))),
        _ => Ok(()),
    }
}

/// Exclusive access to one upload session.
pub struct UploadGuard {
    // Field order matters: the lock is released before the claim is dropped.
    _guard: OwnedMutexGuard<()>,
    _claim: InUse,
    id: String,
    client: Option<IpAddr>,
    /// The algorithm of the digest the session is expected to end with (SHA-256 unless the
    /// client announced another).
    pub algorithm: Algorithm,
    /// The file holding the bytes received so far.
    pub path: PathBuf,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// When the session last received bytes: its file's modification time, else its start.
fn last_activity(path: &Path, record: &UploadRecord) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| UNIX_EPOCH + Duration::from_secs(record.started_unix))
}

fn is_expired(last: SystemTime, expiry: Duration) -> bool {
    SystemTime::now()
        .duration_since(last)
        .is_ok_and(|idle| idle >= expiry)
}

impl Sessions {
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, SessionCounts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes every expired session not in use. Blocking (sled and file system).
    fn sweep_blocking(self: &Arc<Self>) -> Result<usize, RegistryError> {
        let mut removed = 0;
        for id in self.meta.upload_ids()? {
            let Some(record) = self.meta.upload::<UploadRecord>(&id)? else {
                continue;
            };
            let path = self.path(&id);
            if !is_expired(last_activity(&path, &record), self.limits.expiry) {
                continue;
            }
            // A session with a request in flight is not idle, whatever its file says.
            let claim = InUse::claim(self, &id);
            let Ok(_guard) = claim.lock.clone().try_lock_owned() else {
                continue;
            };
            // Re-read under the lock: a request may have finished or fed it meanwhile.
            let Some(record) = self.meta.upload::<UploadRecord>(&id)? else {
                continue;
            };
            if !is_expired(last_activity(&path, &record), self.limits.expiry) {
                continue;
            }
            self.meta.remove_upload_blocking(&id)?;
            self.streaming.forget(&id);
            let _ = std::fs::remove_file(&path);
            self.counts().remove(record.client);
            removed += 1;
        }
        Ok(removed)
    }
}

/// Sweeps expired sessions every `interval` until the sessions are dropped.
async fn sweep_periodically(sessions: Weak<Sessions>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(strong) = sessions.upgrade() else {
            return;
        };
        match tokio::task::spawn_blocking(move || strong.sweep_blocking()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "expired idle upload sessions"),
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping expired upload sessions failed"),
            Err(e) => tracing::warn!(error = %e, "the upload session sweep stopped"),
        }
    }
}

impl BlobUploads {
    /// Opens the sessions stored under `dir`: drops expired ones and files no session owns,
    /// and (inside a tokio runtime) starts sweeping expired sessions periodically.
    pub fn open(
        dir: PathBuf,
        meta: MetaStore,
        limits: UploadLimits,
    ) -> Result<Self, RegistryError> {
        let limits_streaming = limits.streaming_imports;
        std::fs::create_dir_all(&dir)
            .map_err(|e| RegistryError::io(format!("creating {}", dir.display()), e))?;
        let sessions = Arc::new(Sessions {
            dir,
            meta,
            limits,
            in_use: Mutex::new(HashMap::new()),
            counts: Mutex::new(SessionCounts::default()),
            streaming: StreamingImports::new(limits_streaming),
        });
        let expired = sessions.sweep_blocking()?;
        if expired > 0 {
            tracing::info!(
                removed = expired,
                "expired idle upload sessions at start-up"
            );
        }
        let mut known = HashSet::new();
        {
            let mut counts = sessions.counts();
            for id in sessions.meta.upload_ids()? {
                if let Some(record) = sessions.meta.upload::<UploadRecord>(&id)? {
                    counts.add(record.client);
                    known.insert(id);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&sessions.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Often enough that a session outlives its expiry by at most a quarter of it.
            let interval =
                (sessions.limits.expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
            runtime.spawn(sweep_periodically(Arc::downgrade(&sessions), interval));
        }
        Ok(BlobUploads { sessions })
    }

    /// Sessions open now (in total).
    pub fn open_sessions(&self) -> usize {
        self.sessions.counts().total
    }

    /// Removes every expired session not in use now (the periodic sweep does the same);
    /// returns how many.
    pub async fn sweep_expired(&self) -> Result<usize, RegistryError> {
        let sessions = self.sessions.clone();
        tokio::task::spawn_blocking(move || sessions.sweep_blocking())
            .await
            .map_err(crate::store::StoreError::from)?
    }

    /// Starts a session for `repo` on behalf of `client`; returns its id. Refused with
    /// [`RegistryError::TooManyUploads`] when the caps are reached.
    pub async fn start(
        &self,
        repo: &RepoName,
        client: Option<IpAddr>,
        algorithm: Algorithm,
    ) -> Result<String, RegistryError> {
        let s = &self.sessions;
        {
            let mut counts = s.counts();
            let limits = &s.limits;
            if counts.total >= limits.max_sessions {
                return Err(RegistryError::TooManyUploads(format!(
                    "{} upload sessions are open, the most this registry keeps; finish or cancel \
                     some (idle ones expire after {} s)",
                    counts.total,
                    limits.expiry.as_secs()
                )));
            }
            if let Some(client) = client {
                let open = counts.per_client.get(&client).copied().unwrap_or(0);
                if open >= limits.max_sessions_per_client {
                    return Err(RegistryError::TooManyUploads(format!(
                        "{client} has {open} upload sessions open, the most one client may; \
                         finish or cancel some (idle ones expire after {} s)",
                        limits.expiry.as_secs()
                    )));
                }
            }
            counts.add(client);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let path = s.path(&id);
        let created = async {
            let file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| RegistryError::io(format!("creating {}", path.display()), e))?;
            file.sync_all()
                .await
                .map_err(|e| RegistryError::io("syncing upload file", e))?;
            let record = UploadRecord {
                repository: repo.to_string(),
                started_unix: unix_now(),
                client,
                digest_algorithm: (algorithm != Algorithm::Sha256)
                    .then(|| algorithm.name().to_owned()),
            };
            s.meta.put_upload(&id, &record).await?;
            Ok::<_, RegistryError>(())
        }
        .await;
        if let Err(e) = created {
            s.counts().remove(client);
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        Ok(id)
    }

    /// Locks the session `id` of `repo`, failing if there is no such session.
    pub async fn lock(&self, repo: &RepoName, id: &str) -> Result<UploadGuard, RegistryError> {
        let unknown = || RegistryError::BlobUploadUnknown(id.to_owned());
        // Ids are UUIDs we made; anything else never names a file (no path tricks).
        uuid::Uuid::parse_str(id).map_err(|_| unknown())?;
        let s = &self.sessions;
        // Only a session that exists gets a lock in memory.
        let record: UploadRecord = s.meta.upload(id)?.ok_or_else(unknown)?;
        if record.repository != repo.as_str() {
            return Err(unknown());
        }
        let claim = InUse::claim(s, id);
        let guard = claim.lock.clone().lock_owned().await;
        // The session may have ended (completed, cancelled, expired) while we waited.
        let record: UploadRecord = s.meta.upload(id)?.ok_or_else(unknown)?;
        Ok(UploadGuard {
            _guard: guard,
            _claim: claim,
            id: id.to_owned(),
            client: record.client,
            // A name this build does not know is only a lost hint: the session's bytes are
            // hashed under the algorithm of the digest it ends with in any case.
            algorithm: record
                .digest_algorithm
                .as_deref()
                .and_then(Algorithm::from_name)
                .unwrap_or(Algorithm::Sha256),
            path: s.path(id),
        })
    }

    /// Bytes received so far by the locked session.
    pub async fn offset(&self, upload: &UploadGuard) -> Result<u64, RegistryError> {
        tokio::fs::metadata(&upload.path)
            .await
            .map(|m| m.len())
            .map_err(|e| RegistryError::io("reading upload size", e))
    }

    /// The locked session's size, where a chunk announced to start at `start` must begin.
    async fn offset_for(
        &self,
        upload: &UploadGuard,
        start: Option<u64>,
    ) -> Result<u64, RegistryError> {
        let offset = self.offset(upload).await?;
        match start {
            Some(start) if start != offset => Err(RegistryError::RangeInvalid { offset, start }),
            _ => Ok(offset),
        }
    }

    /// Appends a request body to the locked session, streaming it to disk and handing it to
    /// `import` too, if given.
    ///
    /// With `start`, the chunk must begin where the upload ends; with `expected_len`, the body
    /// must have exactly that many bytes, else nothing of it is kept.
    pub(super) async fn append<S, E>(
        &self,
        upload: &UploadGuard,
        start: Option<u64>,
        expected_len: Option<u64>,
        mut body: S,
        mut import: Option<&mut StreamingImport>,
    ) -> Result<u64, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let offset = self.offset_for(upload, start).await?;
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&upload.path)
            .await
            .map_err(|e| RegistryError::io("opening upload file", e))?
            .into_std()
            .await;
        // With an import, its thread appends the bytes to the file as it takes them.
        let through = match import.as_deref_mut() {
            Some(import) => match file.try_clone() {
                Ok(clone) => import.write_through(clone).await,
                Err(_) => false,
            },
            None => false,
        };
        let mut file = tokio::fs::File::from_std(file);
        let mut written = 0u64;
        let result: Result<(), RegistryError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    RegistryError::BlobUploadInvalid(format!("reading request body: {e}"))
                })?;
                let len = chunk.len() as u64;
                match import.as_deref_mut() {
                    Some(import) if through => {
                        if !import.feed(chunk).await {
                            return Err(importer_stopped("writing upload file"));
                        }
                    }
                    other => {
                        if let Some(import) = other {
                            // Handed over first, so the import hashes while the file is written.
                            import.feed(chunk.clone()).await;
                        }
                        file.write_all(&chunk)
                            .await
                            .map_err(|e| RegistryError::io("writing upload file", e))?;
                    }
                }
                written += len;
            }
            if through {
                if let Some(import) = import.as_deref_mut() {
                    match import.written().await {
                        Some(Ok(())) => {}
                        Some(Err(e)) => return Err(RegistryError::io("writing upload file", e)),
                        None => return Err(importer_stopped("writing upload file")),
                    }
                }
            }
            check_length(expected_len, written)?;
            // Written, not forced to disk: a session's bytes are only a step towards a blob,
            // which is made durable before it is acknowledged. A process that dies keeps the
            // file's page cache; after a power loss a session may hold less than was
            // acknowledged, which GET on it reports, and bytes that do not match the digest
            // are refused at the end. Syncing here wrote every upload to disk twice and made
            // the client wait for the first time.
            file.flush()
                .await
                .map_err(|e| RegistryError::io("writing upload file", e))
        }
        .await;
        if let Err(e) = result {
            if let (true, Some(import)) = (through, import) {
                // The importer's writes end before the file is cut back (no-op if done).
                let _ = import.written().await;
            }
            // Keep the session at its last acknowledged size so the client can resume.
            let _ = file.set_len(offset).await;
            return Err(e);
        }
        Ok(offset + written)
    }

    /// Hands a request body that ends the locked session to its streaming import only, not to
    /// the upload file: with the rules of [`Self::append`] for `start` and `expected_len`,
    /// and returning the session's size with the body. The import must hold exactly the
    /// session's bytes so far. On an error the import holds bytes the session does not: the
    /// caller drops it, and the session stays as it was, for the client to try again.
    pub(super) async fn feed_import<S, E>(
        &self,
        upload: &UploadGuard,
        start: Option<u64>,
        expected_len: Option<u64>,
        mut body: S,
        import: &mut StreamingImport,
    ) -> Result<u64, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let offset = self.offset_for(upload, start).await?;
        let mut fed = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                RegistryError::BlobUploadInvalid(format!("reading request body: {e}"))
            })?;
            fed += chunk.len() as u64;
            if !import.feed(chunk).await {
                return Err(importer_stopped("importing an upload"));
            }
        }
        check_length(expected_len, fed)?;
        Ok(offset + fed)
    }

    /// A place for a new streaming import, unless as many as allowed are alive.
    pub(super) fn reserve_import(&self) -> Option<Slot> {
        self.sessions.streaming.reserve()
    }

    /// Takes the locked session's streaming import out, if it has one.
    pub(super) fn take_import(&self, upload: &UploadGuard) -> Option<StreamingImport> {
        self.sessions.streaming.take(&upload.id)
    }

    /// Keeps the locked session's streaming import for its next request.
    pub(super) fn keep_import(&self, upload: &UploadGuard, import: StreamingImport) {
        self.sessions.streaming.keep(&upload.id, import);
    }

    /// Streaming imports alive now.
    pub fn streaming_imports(&self) -> usize {
        self.sessions.streaming.alive()
    }

    /// Ends the locked session and deletes its bytes.
    pub async fn remove(&self, upload: UploadGuard) -> Result<(), RegistryError> {
        let s = &self.sessions;
        s.streaming.forget(&upload.id);
        s.meta.remove_upload(&upload.id).await?;
        let _ = tokio::fs::remove_file(&upload.path).await;
        s.counts().remove(upload.client);
        drop(upload);
        Ok(())
    }
}
