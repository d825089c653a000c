//! Upload sessions imported while their bytes arrive.
//!
//! A chunked upload (`POST`, `PATCH`..., `PUT ?digest=`) keeps its bytes in an upload file so a
//! client can resume it, also after a restart. Importing that file only at the final `PUT`
//! would read every byte back and hash and chunk it while the client waits. Instead, a session
//! that starts at offset 0 gets a [`StreamingImport`]: an importer on its own blocking thread
//! that hashes and chunks each `PATCH` body into staged blocks as it is written to the file.
//! The final `PUT` then only finishes it.
//!
//! The upload file stays the record of truth: an import is used only while it has been fed
//! exactly the file's bytes under the digest algorithm the client names at the end. After a
//! restart, a broken-off `PATCH`, or past the cap on imports kept at once, the file is imported
//! at the end as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::content::{import_stream, Imported};
use super::digest::Algorithm;
use super::error::RegistryError;
use crate::store::BlockStore;

/// Default cap on sessions with an import kept between requests. Each holds up to one chunk
/// (1 MiB) of buffered bytes, a blocking thread and a staging area until it completes.
pub const DEFAULT_STREAMING_IMPORTS: usize = 16;

/// Frames handed to an importer ahead of it: one being hashed, one waiting keep it busy. A
/// frame of a fast client is hyper's whole read buffer (up to ~400 KiB), so every further one
/// shows in the peak memory of parallel pushes.
const FRAMES_IN_FLIGHT: usize = 2;

/// An import of one upload session's bytes, running on a blocking thread as they arrive.
/// Dropping it without [`StreamingImport::finish`] discards what it staged.
pub(super) struct StreamingImport {
    chunks: Option<mpsc::Sender<Bytes>>,
    /// Tells the importer to drop what it staged when its input ends.
    aborted: Arc<AtomicBool>,
    importer: Option<JoinHandle<Result<Option<Imported>, RegistryError>>>,
    algorithm: Algorithm,
    /// Bytes handed to the importer.
    fed: u64,
    /// Whether the importer has stopped taking bytes (it failed; its error is not needed:
    /// the upload file is imported instead).
    broken: bool,
    /// Counts it among the imports alive while it lives.
    _slot: Slot,
}

impl StreamingImport {
    /// Starts importing into a staging area of `blocks`, hashing under `algorithm`, in the
    /// place `slot` reserved.
    pub(super) fn start(blocks: Arc<BlockStore>, algorithm: Algorithm, slot: Slot) -> Self {
        let (tx, rx) = mpsc::channel::<Bytes>(FRAMES_IN_FLIGHT);
        let aborted = Arc::new(AtomicBool::new(false));
        let flag = aborted.clone();
        let importer =
            tokio::task::spawn_blocking(move || import_stream(&blocks, rx, algorithm, &flag));
        StreamingImport {
            chunks: Some(tx),
            aborted,
            importer: Some(importer),
            algorithm,
            fed: 0,
            broken: false,
            _slot: slot,
        }
    }

    /// Hands the importer the next bytes of the upload.
    pub(super) async fn feed(&mut self, chunk: Bytes) {
        if self.broken {
            return;
        }
        let len = chunk.len() as u64;
        match &self.chunks {
            Some(tx) if tx.send(chunk).await.is_ok() => self.fed += len,
            _ => self.broken = true,
        }
    }

    /// Whether it holds exactly the first `len` bytes of the upload, hashed under `algorithm`.
    pub(super) fn covers(&self, len: u64, algorithm: Algorithm) -> bool {
        !self.broken && self.fed == len && self.algorithm == algorithm
    }

    /// Whether it holds exactly the first `len` bytes of the upload.
    pub(super) fn is_at(&self, len: u64) -> bool {
        !self.broken && self.fed == len
    }

    /// Ends the input and waits for the import of everything fed. `None` if the importer
    /// failed: the caller imports the upload file instead.
    pub(super) async fn finish(mut self) -> Option<Imported> {
        self.chunks = None;
        let importer = self.importer.take()?;
        match importer.await {
            Ok(Ok(imported)) => imported,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "streaming import failed; importing the upload file");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "streaming import task failed");
                None
            }
        }
    }
}

impl Drop for StreamingImport {
    fn drop(&mut self) {
        if self.importer.is_some() {
            // Unfinished: the importer discards its staging area once its input closes.
            self.aborted.store(true, Ordering::Release);
            self.chunks = None;
        }
    }
}

/// The imports kept between the requests of their sessions, at most a fixed number alive.
pub(super) struct StreamingImports {
    max: usize,
    /// Imports of sessions with no request in flight; a request takes its session's out and
    /// puts it back when it is done, so an import is here or with exactly one request.
    idle: Mutex<HashMap<String, StreamingImport>>,
    /// Imports alive, here or with a request.
    alive: Arc<AtomicUsize>,
}

/// One import's place in the count of imports alive, given back when the import ends.
pub(super) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl StreamingImports {
    /// Keeps at most `max` imports alive at once.
    pub(super) fn new(max: usize) -> Self {
        StreamingImports {
            max,
            idle: Mutex::new(HashMap::new()),
            alive: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn idle(&self) -> MutexGuard<'_, HashMap<String, StreamingImport>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new import, unless `max` are alive.
    pub(super) fn reserve(&self) -> Option<Slot> {
        let mut alive = self.alive.load(Ordering::Acquire);
        loop {
            if alive >= self.max {
                return None;
            }
            match self.alive.compare_exchange_weak(
                alive,
                alive + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Slot(self.alive.clone())),
                Err(now) => alive = now,
            }
        }
    }

    /// Takes session `id`'s import out, for the request that holds the session's lock.
    pub(super) fn take(&self, id: &str) -> Option<StreamingImport> {
        self.idle().remove(id)
    }

    /// Keeps session `id`'s import until its next request.
    pub(super) fn keep(&self, id: &str, import: StreamingImport) {
        self.idle().insert(id.to_owned(), import);
    }

    /// Drops session `id`'s import, if one is kept (the session ended): its staging area goes.
    pub(super) fn forget(&self, id: &str) {
        drop(self.take(id));
    }

    /// Imports alive now (kept, or with a request).
    pub(super) fn alive(&self) -> usize {
        self.alive.load(Ordering::Acquire)
    }
}
