//! Checking blobs of followed trees against their digests. The blocks of a followed tree match
//! their CIDs (the block layer checks that), but only hashing the whole blob shows that the tree
//! files the right bytes under a digest. A blob is checked once, and the outcome remembered:
//! either on its own (a mirror walk, a range request), or while it streams to a client that
//! asked for all of it, holding back the last piece until the digest matches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cid::Cid;
use tokio::sync::{mpsc, oneshot};

use super::blobs::BlobInfo;
use super::digest::{Digest, Hasher};
use super::error::RegistryError;
use super::Registry;
use crate::store::MetaStore;
use crate::tree::{fetch_dag, file_size, BlockSource, FileReader, TreeError};

/// Blobs whose bytes were seen not to match their digest, remembered in memory so that the next
/// request for one is refused before any byte goes out. Bounded: past this many it starts over.
const MAX_REFUTED: usize = 4096;

/// Roots of blob files that hashed to something other than their digest, with what they hashed
/// to: a blob refused once is refused again without fetching and hashing it again.
#[derive(Debug, Default)]
pub(super) struct Refuted(Mutex<HashMap<Cid, Digest>>);

impl Refuted {
    fn insert(&self, cid: Cid, actual: Digest) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_REFUTED {
            map.clear();
        }
        map.insert(cid, actual);
    }

    fn get(&self, cid: &Cid) -> Option<Digest> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cid)
            .cloned()
    }
}

/// The error of a blob whose bytes hash to `actual`, not to its `digest`.
fn mismatch(digest: &Digest, actual: &Digest) -> RegistryError {
    RegistryError::ContentInvalid(format!(
        "blob {digest} fetched from peers hashes to {actual}"
    ))
}

impl Registry {
    /// Fetches every block of a blob that is not local and checks the whole against its digest;
    /// remembers the outcome so it is done once per blob.
    pub async fn verify_blob(&self, digest: &Digest, cid: &Cid) -> Result<(), RegistryError> {
        if let Some(actual) = self.refuted.get(cid) {
            return Err(mismatch(digest, &actual));
        }
        let size = file_size(self.source(), cid).await?;
        let check = self.blob_check(digest, cid, size);
        let actual = check.fetch_and_hash(None).await?;
        check.conclude(&actual)
    }

    /// A check of the blob `digest` whose file is `cid`, `size` bytes.
    fn blob_check(&self, digest: &Digest, cid: &Cid, size: u64) -> BlobCheck {
        BlobCheck {
            source: self.source.clone(),
            meta: self.meta.clone(),
            refuted: self.refuted.clone(),
            concurrency: self.options.fetch_concurrency,
            digest: digest.clone(),
            cid: *cid,
            size,
        }
    }

    /// The whole of a blob not yet checked, as it is fetched and hashed. Waits until the first
    /// piece can go out, so that a blob that cannot be had, or a one-piece blob that fails its
    /// digest, is still an error status. Later failures end the stream early (logged): the client
    /// sees a short body, and never the last piece of bytes that miss their digest.
    pub(super) async fn stream_unchecked_blob(
        &self,
        blob: &BlobInfo,
    ) -> Result<mpsc::Receiver<Bytes>, RegistryError> {
        if let Some(actual) = self.refuted.get(&blob.cid) {
            // Refused as a whole, before any byte, as long as this node remembers.
            return Err(mismatch(&blob.digest, &actual));
        }
        let check = self.blob_check(&blob.digest, &blob.cid, blob.size);
        // Pieces are up to a block (1 MiB) each, the hashing loop and the client each hold one
        // already, and a pull streams several blobs at once: one queued piece keeps the client
        // busy without multiplying the memory held.
        let (tx, rx) = mpsc::channel(1);
        let (started_tx, started) = oneshot::channel();
        tokio::spawn(check.stream(tx, started_tx));
        match started.await {
            Ok(Ok(())) => Ok(rx),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RegistryError::io(
                format!("streaming blob {}", blob.digest),
                std::io::Error::other("the streaming task ended without an answer"),
            )),
        }
    }
}

/// One check of a blob's bytes against its digest, owning what it needs to run on its own task.
struct BlobCheck {
    source: Arc<dyn BlockSource>,
    meta: MetaStore,
    refuted: Arc<Refuted>,
    concurrency: usize,
    digest: Digest,
    cid: Cid,
    size: u64,
}

impl BlobCheck {
    /// Fetches the blob's blocks, many at a time, while its bytes are hashed in order: the check
    /// takes about as long as the fetch, not the fetch and then a read of the whole blob (a want
    /// for a block the fetch already wants is shared). Each hashed piece goes on to `forward`, if
    /// given. Returns the digest of the bytes.
    async fn fetch_and_hash(
        &self,
        mut forward: Option<&mut Forward>,
    ) -> Result<Digest, RegistryError> {
        let source = self.source.as_ref();
        let fetch = fetch_dag(source, self.cid, self.concurrency, |_| false, |_| {});
        let hash = async {
            // Read in the loop that hashes, not ahead of it: a piece read ahead (1 MiB per blob)
            // would only wait, as the fetch, not the local read, is what the loop waits for.
            let mut hasher = Hasher::new(self.digest.algorithm());
            let mut reader = FileReader::new(&self.cid, 0..self.size);
            while let Some(piece) = reader.next(source).await? {
                hasher.update(&piece);
                if let Some(forward) = forward.as_deref_mut() {
                    forward.pass(piece).await;
                }
            }
            Ok::<_, TreeError>(hasher.finish())
        };
        let (_, actual) = tokio::try_join!(fetch, hash)?;
        Ok(actual)
    }

    /// Remembers the outcome of a check that hashed the bytes to `actual`.
    fn conclude(&self, actual: &Digest) -> Result<(), RegistryError> {
        if actual != &self.digest {
            self.refuted.insert(self.cid, actual.clone());
            return Err(mismatch(&self.digest, actual));
        }
        // The bytes are good whether or not this is remembered: on a full disk, serve them
        // anyway, and check again next time.
        if let Err(e) = self.meta.mark_verified(&self.cid) {
            tracing::warn!(digest = %self.digest, error = %e, "could not record that a blob was verified");
        }
        Ok(())
    }

    /// Sends the blob to `client` one piece behind the hash, the last piece only once the
    /// digest matches. `started` hears when the first piece goes out, or the outcome if the
    /// check ends before that. Stops when the client hangs up.
    async fn stream(
        self,
        client: mpsc::Sender<Bytes>,
        started: oneshot::Sender<Result<(), RegistryError>>,
    ) {
        let hangup = client.clone();
        let mut forward = Forward {
            client,
            started: Some(started),
            held: None,
        };
        let actual = tokio::select! {
            actual = self.fetch_and_hash(Some(&mut forward)) => actual,
            // The client went away: stop fetching for it.
            () = hangup.closed() => return,
        };
        let outcome = actual.and_then(|actual| self.conclude(&actual));
        match (outcome, forward.started.take()) {
            (Ok(()), started) => {
                if let Some(started) = started {
                    let _ = started.send(Ok(()));
                }
                if let Some(last) = forward.held.take() {
                    let _ = forward.client.send(last).await;
                }
            }
            (Err(e), Some(started)) => {
                let _ = started.send(Err(e));
            }
            (Err(e), None) => {
                tracing::error!(digest = %self.digest, error = %e, "streaming a followed blob failed: the response ends early");
            }
        }
    }
}

/// The client end of a blob streamed while it is checked: each hashed piece goes out once the
/// next one has been hashed, so the last is held until the check concludes. Passing pieces on in
/// the hashing loop, not through a stage of its own, keeps one piece fewer per blob in memory.
struct Forward {
    client: mpsc::Sender<Bytes>,
    /// Hears when the first piece goes out; taken then.
    started: Option<oneshot::Sender<Result<(), RegistryError>>>,
    held: Option<Bytes>,
}

impl Forward {
    /// Holds `piece` and sends the one held before it. A client that hung up is noticed by the
    /// caller (`Sender::closed`); until then, sends to it fail quietly.
    async fn pass(&mut self, piece: Bytes) {
        if let Some(previous) = self.held.replace(piece) {
            if let Some(started) = self.started.take() {
                let _ = started.send(Ok(()));
            }
            let _ = self.client.send(previous).await;
        }
    }
}
