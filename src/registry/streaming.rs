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
//! at the end as before. The one exception is a body sent with the final `PUT` to an import
//! that holds the session's bytes under the digest's algorithm: those bytes end the session and
//! are never resumed from, so they go to the import alone (see `Registry::finish_upload`).
//!
//! The importer's thread also appends each body's bytes to the upload file, as it takes them:
//! a frame then crosses from the request's task to one thread, not to two (the importer and a
//! blocking write), and the request waits for the file only once, at the end of its body.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use std::io::Write;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
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

/// What a request hands an importer.
enum Input {
    /// Append the frames that follow to this file (the session's upload file) too.
    File(std::fs::File),
    /// The next bytes of the upload.
    Frame(Bytes),
    /// Close the file, and report whether every frame since it came reached it.
    Written(oneshot::Sender<std::io::Result<()>>),
}

/// The upload file an importer appends frames to, and the first error doing so.
#[derive(Default)]
struct UploadFileSink {
    file: Option<std::fs::File>,
    error: Option<std::io::Error>,
}

impl UploadFileSink {
    /// Carries out `input`; gives back the bytes of a frame, for the import.
    fn take(&mut self, input: Input) -> Option<Bytes> {
        match input {
            Input::File(file) => {
                self.file = Some(file);
                self.error = None;
                None
            }
            Input::Frame(bytes) => {
                if let (Some(file), None) = (&mut self.file, &self.error) {
                    if let Err(e) = file.write_all(&bytes) {
                        self.error = Some(e);
                    }
                }
                Some(bytes)
            }
            Input::Written(report) => {
                self.file = None;
                let _ = report.send(self.error.take().map_or(Ok(()), Err));
                None
            }
        }
    }
}

/// An import of one upload session's bytes, running on a blocking thread as they arrive.
/// Dropping it without [`StreamingImport::finish`] discards what it staged.
pub(super) struct StreamingImport {
    chunks: Option<mpsc::Sender<Input>>,
    /// Tells the importer to drop what it staged when its input ends.
    aborted: Arc<AtomicBool>,
    importer: Option<JoinHandle<Result<Option<Imported>, RegistryError>>>,
    algorithm: Algorithm,
    /// Bytes handed to the importer.
    fed: u64,
    /// Whether the importer has stopped taking bytes (its thread is gone; the upload file is
    /// imported instead).
    broken: bool,
    /// Counts it among the imports alive while it lives.
    _slot: Slot,
}

impl StreamingImport {
    /// Starts importing into a staging area of `blocks`, hashing under `algorithm`, in the
    /// place `slot` reserved.
    pub(super) fn start(blocks: Arc<BlockStore>, algorithm: Algorithm, slot: Slot) -> Self {
        let (tx, mut rx) = mpsc::channel::<Input>(FRAMES_IN_FLIGHT);
        let aborted = Arc::new(AtomicBool::new(false));
        let flag = aborted.clone();
        let importer = tokio::task::spawn_blocking(move || {
            let mut sink = UploadFileSink::default();
            let next_frame = || loop {
                if let Some(frame) = sink.take(rx.blocking_recv()?) {
                    return Some(frame);
                }
            };
            let imported = import_stream(&blocks, next_frame, algorithm, &flag);
            // An import that failed stops early; the upload file still gets every frame, and
            // is imported at the end instead.
            while let Some(input) = rx.blocking_recv() {
                sink.take(input);
            }
            imported
        });
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

    /// Hands the importer `input`; false if it is gone (it is broken from then on).
    async fn send(&mut self, input: Input) -> bool {
        if self.broken {
            return false;
        }
        match &self.chunks {
            Some(tx) if tx.send(input).await.is_ok() => true,
            _ => {
                self.broken = true;
                false
            }
        }
    }

    /// Hands the importer the next bytes of the upload; false if it is gone.
    pub(super) async fn feed(&mut self, chunk: Bytes) -> bool {
        let len = chunk.len() as u64;
        let taken = self.send(Input::Frame(chunk)).await;
        if taken {
            self.fed += len;
        }
        taken
    }

    /// Has the importer append the bytes fed from now on to `file` as well, until
    /// [`Self::written`]; false if it is gone.
    pub(super) async fn write_through(&mut self, file: std::fs::File) -> bool {
        self.send(Input::File(file)).await
    }

    /// Waits until the bytes fed since [`Self::write_through`] are in the file (or failed to
    /// get there), and closes it there. `None` if the importer is gone: it writes no more.
    pub(super) async fn written(&mut self) -> Option<std::io::Result<()>> {
        let (report, written) = oneshot::channel();
        if !self.send(Input::Written(report)).await {
            return None;
        }
        written.await.ok()
    }

    /// Whether it holds exactly the first `len` bytes of the upload, hashed under `algorithm`.
    pub(super) fn covers(&self, len: u64, algorithm: Algorithm) -> bool {
        !self.broken && self.fed == len && self.algorithm == algorithm
    }

    /// Whether it holds exactly the first `len` bytes of the upload.
    pub(super) fn is_at(&self, len: u64) -> bool {
        !self.broken && self.fed == len
    }

    /// Ends the input and waits for the import of everything fed; the importer's error if it
    /// failed (the caller imports the upload file instead, where that holds every byte).
    pub(super) async fn finish(mut self) -> Result<Imported, RegistryError> {
        self.chunks = None;
        let importer = self
            .importer
            .take()
            .ok_or_else(|| importer_stopped("importing an upload"))?;
        let imported = importer.await.map_err(|e| {
            tracing::warn!(error = %e, "streaming import task failed");
            crate::store::StoreError::from(e)
        })?;
        imported?.ok_or_else(|| importer_stopped("importing an upload"))
    }
}

/// The error of a request whose bytes went to an importer that is gone (its thread panicked
/// or was abandoned) while `doing` something with them.
pub(super) fn importer_stopped(doing: &str) -> RegistryError {
    RegistryError::io(
        doing,
        std::io::Error::other("the upload's importer stopped"),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::content::import_bytes;
    use crate::registry::digest::Digest;

    fn data(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    }

    /// An import into `blocks`, in a place of its own.
    fn start_import(blocks: &Arc<BlockStore>) -> StreamingImport {
        let slot = StreamingImports::new(1).reserve().expect("slot");
        StreamingImport::start(blocks.clone(), Algorithm::Sha256, slot)
    }

    /// Feeds `data` in frames of every size through `import`, writing through to a new file
    /// at `path`; returns what `written` reported.
    async fn feed_through(
        import: &mut StreamingImport,
        path: &std::path::Path,
        data: &[u8],
    ) -> std::io::Result<()> {
        let file = std::fs::File::create(path).expect("upload file");
        assert!(import.write_through(file).await);
        let (mut rest, mut size) = (data, 1);
        while !rest.is_empty() {
            let n = size.min(rest.len());
            assert!(import.feed(Bytes::copy_from_slice(&rest[..n])).await);
            rest = &rest[n..];
            size = size * 5 + 3;
        }
        import.written().await.expect("the importer is there")
    }

    #[tokio::test]
    async fn the_importer_writes_the_upload_file_and_imports_the_same_bytes() {
        let dir = tempfile::tempdir().expect("tmp");
        let blocks = Arc::new(BlockStore::open(dir.path().join("blocks")).expect("store"));
        let mut import = start_import(&blocks);
        let data = data((3 << 20) + 777);
        let path = dir.path().join("upload");
        feed_through(&mut import, &path, &data)
            .await
            .expect("written");
        // By the time `written` answers, every byte is in the file.
        assert_eq!(std::fs::read(&path).expect("read"), data);
        assert!(import.covers(data.len() as u64, Algorithm::Sha256));
        let imported = import.finish().await.expect("imported");
        assert_eq!(imported.digest, Digest::of(Algorithm::Sha256, &data));
        let (link, staged) = import_bytes(&blocks, &data).expect("import in one go");
        assert_eq!(imported.link.cid, link.cid);
        staged.discard_blocking();
        imported.staged.discard_blocking();
    }

    #[tokio::test]
    async fn an_import_that_fails_still_writes_every_byte_to_the_upload_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let blocks_dir = dir.path().join("blocks");
        let blocks = Arc::new(BlockStore::open(&blocks_dir).expect("store"));
        // A file where the store makes its staging areas: the import fails at once.
        let _ = std::fs::remove_dir_all(blocks_dir.join("staging"));
        std::fs::write(blocks_dir.join("staging"), b"in the way").expect("block");
        let mut import = start_import(&blocks);
        let data = data((2 << 20) + 5);
        let path = dir.path().join("upload");
        feed_through(&mut import, &path, &data)
            .await
            .expect("written");
        assert_eq!(std::fs::read(&path).expect("read"), data);
        // The next request's bytes reach its file too.
        let more = data[..12345].to_vec();
        let path2 = dir.path().join("upload-2");
        feed_through(&mut import, &path2, &more)
            .await
            .expect("written");
        assert_eq!(std::fs::read(&path2).expect("read"), more);
        assert!(import.finish().await.is_err(), "the import failed");
    }

    #[tokio::test]
    async fn a_failed_write_of_the_upload_file_is_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        let blocks = Arc::new(BlockStore::open(dir.path().join("blocks")).expect("store"));
        let mut import = start_import(&blocks);
        let path = dir.path().join("upload");
        std::fs::write(&path, b"").expect("create");
        // Opened for reading only: every write fails.
        let file = std::fs::File::open(&path).expect("open");
        assert!(import.write_through(file).await);
        assert!(import.feed(Bytes::from_static(b"some bytes")).await);
        assert!(import
            .written()
            .await
            .expect("the importer is there")
            .is_err());
        // The next request starts afresh.
        let data = data(1000);
        feed_through(&mut import, &dir.path().join("upload-2"), &data)
            .await
            .expect("written");
    }
}
