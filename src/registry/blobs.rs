//! Blob reads, deletes, mounts and uploads.

use std::net::IpAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures_util::{stream, Stream, StreamExt};
use tokio::sync::mpsc;

use super::content::{import_file, import_stream, link_file, one_block_file, Imported};
use super::digest::{Algorithm, Digest};
use super::error::RegistryError;
use super::layout;
use super::reference::RepoName;
use super::streaming::StreamingImport;
use super::uploads::{check_length, UploadGuard};
use super::{Registry, Unreadable};
use crate::store::WriteSession;
use crate::tree::{file_size, read_file_range, BlockSource, Change, Link, CHUNK_SIZE};

/// A blob present in a repository.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Root of its UnixFS file.
    pub cid: Cid,
    /// Whether its bytes are known to hash to its digest (pushed here, or checked once).
    verified: bool,
}

impl Registry {
    /// The blob `digest` of `repo`, if the repository has it.
    pub async fn blob(&self, repo: &RepoName, digest: &Digest) -> Result<BlobInfo, RegistryError> {
        let roots = self.view();
        let unknown = || RegistryError::BlobUnknown(digest.clone());
        self.link_at(&roots, &layout::layer_link(repo, digest))
            .await?
            .ok_or_else(unknown)?;
        let (index, data) = self
            .find(&roots, &layout::blob_data(digest), Unreadable::Skip)
            .await?
            .ok_or_else(unknown)?;
        let size = file_size(self.source(), &data.cid).await?;
        // Bytes in the own tree were hashed on push; others are checked once before serving.
        let own = self.options.writable && index == 0;
        if own {
            // A client that finds the blob here may be about to push a manifest that needs it:
            // garbage collection's grace period for an unreferenced layer starts again.
            self.meta
                .clear_unreferenced(&super::collect::layer_key(repo, digest))?;
        }
        let verified = own || self.meta.is_verified(&data.cid)?;
        Ok(BlobInfo {
            digest: digest.clone(),
            size,
            cid: data.cid,
            verified,
        })
    }

    /// Streams `range` of a blob, one block at a time. A blob from another tree is checked
    /// against its digest first, or, when the whole of it is asked for, while it streams. A read
    /// error after the first byte ends the stream early (and is logged): the client sees a short
    /// body, never a whole blob of wrong bytes.
    pub async fn read_blob(
        &self,
        blob: &BlobInfo,
        range: Range<u64>,
    ) -> Result<mpsc::Receiver<Bytes>, RegistryError> {
        if !blob.verified {
            if range.start == 0 && range.end == blob.size {
                return self.stream_unchecked_blob(blob).await;
            }
            self.verify_blob(&blob.digest, &blob.cid).await?;
        }
        let (tx, rx) = mpsc::channel(4);
        let blocks: Arc<dyn BlockSource> = self.source.clone();
        let cid = blob.cid;
        let digest = blob.digest.clone();
        tokio::spawn(async move {
            if let Err(e) = read_file_range(blocks.as_ref(), &cid, range, tx).await {
                tracing::error!(%digest, error = %e, "reading blob failed");
            }
        });
        Ok(rx)
    }

    /// Removes the blob from `repo` (its bytes stay while any repository links them).
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), RegistryError> {
        self.ensure_writable()?;
        let mut writer = self.tree().writer().await;
        let path = layout::layer_link(repo, digest);
        if self.link_at(&[writer.root()], &path).await?.is_none() {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        writer
            .commit(vec![Change::Remove { path }], Vec::new())
            .await?;
        Ok(())
    }

    /// Links an existing blob into `repo`: from `from` if given, else from anywhere in the
    /// registry. Returns `false` if there is nothing to mount.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<bool, RegistryError> {
        self.ensure_writable()?;
        let mut writer = self.tree().writer().await;
        let root = [writer.root()];
        if let Some(from) = from {
            if self
                .link_at(&root, &layout::layer_link(from, digest))
                .await?
                .is_none()
            {
                return Ok(false);
            }
        }
        if self
            .link_at(&root, &layout::blob_data(digest))
            .await?
            .is_none()
        {
            return Ok(false);
        }
        let (link, block) = link_file(digest);
        writer
            .commit(
                vec![Change::Put {
                    path: layout::layer_link(repo, digest),
                    link,
                }],
                vec![block],
            )
            .await?;
        self.meta
            .clear_unreferenced(&super::collect::layer_key(repo, digest))?;
        Ok(true)
    }

    /// Links freshly imported blob bytes into `repo`: already in the block store, where
    /// `session` keeps a garbage collection from sweeping them until they are linked, or the
    /// one block `data_block`, written with the commit.
    async fn commit_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        data: Link,
        data_block: Option<(Cid, Bytes)>,
        session: Option<WriteSession>,
    ) -> Result<(), RegistryError> {
        // The gate may have closed while the upload streamed in.
        self.ensure_writable()?;
        let (link, block) = link_file(digest);
        let mut blocks = vec![block];
        blocks.extend(data_block);
        let mut writer = self.tree().writer().await;
        writer
            .commit(
                vec![
                    Change::Put {
                        path: layout::blob_data(digest),
                        link: data,
                    },
                    Change::Put {
                        path: layout::layer_link(repo, digest),
                        link,
                    },
                ],
                blocks,
            )
            .await?;
        drop(writer);
        drop(session);
        self.meta
            .clear_unreferenced(&super::collect::layer_key(repo, digest))?;
        Ok(())
    }

    /// Checks imported content against the digest the client named: on a match its blocks
    /// move into the block store and its root is returned, with the write session to hold
    /// until it is linked; otherwise they are deleted and nothing of it is kept.
    async fn accept_import(
        &self,
        expected: &Digest,
        imported: Imported,
    ) -> Result<(Link, WriteSession), RegistryError> {
        let Imported {
            link,
            digest,
            staged,
        } = imported;
        if &digest != expected {
            tokio::task::spawn_blocking(move || staged.discard_blocking())
                .await
                .map_err(crate::store::StoreError::from)?;
            return Err(RegistryError::DigestInvalid(format!(
                "the uploaded content has digest {digest}, not {expected}"
            )));
        }
        let blocks = self.tree().blocks().clone();
        let session = tokio::task::spawn_blocking(move || staged.commit_blocking(&blocks))
            .await
            .map_err(crate::store::StoreError::from)??;
        Ok((link, session))
    }

    /// Stores a whole blob sent as one request body (`POST ?digest=`), linked into `repo`.
    /// No session is opened: the bytes are hashed and chunked into staged blocks as they
    /// arrive, and enter the block store only if they hash to `digest`. A body that breaks
    /// off leaves nothing behind.
    pub async fn upload_blob<S, E>(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: S,
    ) -> Result<(), RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.ensure_writable()?;
        let mut body = match read_first_chunk(body).await? {
            BodyStart::Whole(bytes) => return self.store_small_blob(repo, digest, bytes).await,
            BodyStart::Longer(read, rest) => prepend(read, rest),
        };
        let blocks = self.tree().blocks().clone();
        let algorithm = digest.algorithm();
        // A few frames in flight keep the importer busy while memory stays flat.
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        let aborted = Arc::new(AtomicBool::new(false));
        // Until defused, tells the importer to drop what it got (also if this future is
        // dropped because the client went away).
        let abort = AbortOnDrop(Some(aborted.clone()));
        let importer = tokio::task::spawn_blocking(move || {
            import_stream(&blocks, || rx.blocking_recv(), algorithm, aborted.as_ref())
        });
        let mut failure = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        // The importer stopped: its error is the answer.
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(RegistryError::BlobUploadInvalid(format!(
                        "reading request body: {e}"
                    )));
                    break;
                }
            }
        }
        if failure.is_none() {
            abort.defuse();
        } else {
            drop(abort);
        }
        drop(tx);
        let imported = importer.await.map_err(crate::store::StoreError::from)??;
        if let Some(failure) = failure {
            return Err(failure);
        }
        let imported = imported
            .ok_or_else(|| RegistryError::BlobUploadInvalid("the request body broke off".into()))?;
        let (link, session) = self.accept_import(digest, imported).await?;
        self.commit_blob(repo, digest, link, None, Some(session))
            .await
    }

    /// Stores a blob of at most one chunk, held whole, linked into `repo`. Such a file is one
    /// raw block (as the importer would make it), which goes into the tree commit with the
    /// link file and is synced once with it, as a small manifest is: no staging area, no
    /// importer thread, and no separate sync and move of the one block. Bytes that do not
    /// hash to `digest` are refused before anything is written.
    async fn store_small_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        bytes: Bytes,
    ) -> Result<(), RegistryError> {
        let algorithm = digest.algorithm();
        let (actual, file) = tokio::task::spawn_blocking(move || {
            (Digest::of(algorithm, &bytes), one_block_file(bytes))
        })
        .await
        .map_err(crate::store::StoreError::from)?;
        if &actual != digest {
            return Err(RegistryError::DigestInvalid(format!(
                "the uploaded content has digest {actual}, not {digest}"
            )));
        }
        let (link, block) = file.ok_or_else(|| {
            RegistryError::io(
                "storing a small blob",
                std::io::Error::other("more than one chunk"),
            )
        })?;
        self.commit_blob(repo, digest, link, Some(block), None)
            .await
    }

    /// Starts an upload session in `repo` for `client` (counted against the per-client cap),
    /// whose bytes are hashed under `algorithm` as they arrive (the digest it ends with decides;
    /// another algorithm then costs a second pass over the bytes); returns its id.
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        client: Option<IpAddr>,
        algorithm: Algorithm,
    ) -> Result<String, RegistryError> {
        self.ensure_writable()?;
        self.uploads.start(repo, client, algorithm).await
    }

    /// Bytes received so far by an upload session.
    pub async fn upload_offset(&self, repo: &RepoName, id: &str) -> Result<u64, RegistryError> {
        let upload = self.uploads.lock(repo, id).await?;
        self.uploads.offset(&upload).await
    }

    /// Appends a chunk to an upload session; returns the new size.
    /// `range` is the chunk's `(start, length)` when the client announced one.
    pub async fn append_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<(u64, u64)>,
        body: S,
    ) -> Result<u64, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let upload = self.uploads.lock(repo, id).await?;
        let offset = self.uploads.offset(&upload).await?;
        let mut import = self.streaming_import(&upload, offset);
        let appended = self
            .uploads
            .append(
                &upload,
                range.map(|r| r.0),
                range.map(|r| r.1),
                body,
                import.as_mut(),
            )
            .await;
        if let (Ok(size), Some(import)) = (&appended, import) {
            // An import that missed bytes (or got some the file did not keep) is dropped; the
            // file is imported when the session completes.
            if import.is_at(*size) {
                self.uploads.keep_import(&upload, import);
            }
        }
        appended
    }

    /// The import to feed the locked session's next bytes (at `offset`) into: the one kept
    /// from its earlier requests if it holds exactly the bytes before, or a new one for a
    /// session that has received nothing yet (if not too many run). It hashes under the
    /// session's announced algorithm (SHA-256 by default); another one named at the end falls
    /// back to importing the file.
    fn streaming_import(&self, upload: &UploadGuard, offset: u64) -> Option<StreamingImport> {
        if let Some(import) = self.uploads.take_import(upload) {
            if import.is_at(offset) {
                return Some(import);
            }
        }
        if offset != 0 {
            return None;
        }
        let slot = self.uploads.reserve_import()?;
        Some(StreamingImport::start(
            self.tree().blocks().clone(),
            upload.algorithm,
            slot,
        ))
    }

    /// Completes an upload session with an optional last chunk (whose `(start, length)` is
    /// `range` when the client announced one); the bytes must hash to `digest`. The blob is
    /// durable and linked into `repo` when this returns. Content that does not match is
    /// refused before any of it enters the block store, and the session ends.
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<(u64, u64)>,
        last_chunk: Option<S>,
    ) -> Result<(), RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let upload = self.uploads.lock(repo, id).await?;
        let offset = self.uploads.offset(&upload).await?;
        let (start, expected_len) = (range.map(|r| r.0), range.map(|r| r.1));
        // A session whose every byte comes with this `PUT` (the small blobs of clients that
        // `POST`, then send the blob in the `PUT`): if they make at most a chunk, they need
        // neither the upload file nor an import.
        let last_chunk = match last_chunk {
            Some(body) if offset == 0 && start.unwrap_or(0) == 0 => {
                match read_first_chunk(body).await? {
                    BodyStart::Whole(bytes) => {
                        check_length(expected_len, bytes.len() as u64)?;
                        // As below: the session has served whatever follows.
                        self.uploads.remove(upload).await?;
                        return self.store_small_blob(repo, digest, bytes).await;
                    }
                    BodyStart::Longer(read, rest) => Some(prepend(read, rest)),
                }
            }
            other => other.map(|body| prepend(Vec::new(), body)),
        };
        let mut import = self.streaming_import(&upload, offset);
        let algorithm = digest.algorithm();
        // The last chunk goes to the upload file only if the file may still be imported: with
        // an import that holds the session's bytes under the digest's algorithm, it goes to
        // the import alone (clients that send a whole blob in the `PUT` after a `POST`,
        // containerd and BuildKit among them, then have it written to disk once, as blocks).
        let (size, file_complete) = match (last_chunk, import.as_mut()) {
            (Some(body), Some(streaming)) if streaming.covers(offset, algorithm) => {
                let size = self
                    .uploads
                    .feed_import(&upload, start, expected_len, body, streaming)
                    .await?;
                (size, false)
            }
            (Some(body), streaming) => {
                let size = self
                    .uploads
                    .append(&upload, start, expected_len, body, streaming)
                    .await?;
                (size, true)
            }
            (None, _) => (offset, true),
        };
        let streamed = match import {
            Some(import) if import.covers(size, algorithm) => import.finish().await,
            _ => Err(RegistryError::BlobUploadInvalid(
                "the upload's bytes were not imported as they arrived".into(),
            )),
        };
        let imported = match streamed {
            Ok(imported) => imported,
            // The last chunk is nowhere else: the session stays as it was before it.
            Err(e) if !file_complete => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "importing the upload file instead");
                let blocks = self.tree().blocks().clone();
                let path = upload.path.clone();
                tokio::task::spawn_blocking(move || import_file(&blocks, &path, algorithm))
                    .await
                    .map_err(crate::store::StoreError::from)??
            }
        };
        // The session has served whatever follows: a mismatch ends it, and should the commit
        // fail the client starts the upload again. Removed before the blocks are synced, the
        // file's unwritten pages are dropped instead of written to disk.
        self.uploads.remove(upload).await?;
        let (link, session) = self.accept_import(digest, imported).await?;
        self.commit_blob(repo, digest, link, None, Some(session))
            .await
    }

    /// Abandons an upload session.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<(), RegistryError> {
        let upload = self.uploads.lock(repo, id).await?;
        self.uploads.remove(upload).await
    }
}

/// The start of a request body: all of it, if it is at most one chunk ([`CHUNK_SIZE`]), else
/// the frames read so far and the rest.
enum BodyStart<S> {
    Whole(Bytes),
    Longer(Vec<Bytes>, S),
}

/// Reads `body` until it ends or passes one chunk.
async fn read_first_chunk<S, E>(mut body: S) -> Result<BodyStart<S>, RegistryError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut frames = Vec::new();
    let mut len = 0;
    while let Some(frame) = body.next().await {
        let frame = frame
            .map_err(|e| RegistryError::BlobUploadInvalid(format!("reading request body: {e}")))?;
        len += frame.len();
        frames.push(frame);
        if len > CHUNK_SIZE {
            return Ok(BodyStart::Longer(frames, body));
        }
    }
    Ok(BodyStart::Whole(match frames.len() {
        1 => frames.swap_remove(0),
        _ => {
            let mut whole = BytesMut::with_capacity(len);
            for frame in frames {
                whole.extend_from_slice(&frame);
            }
            whole.freeze()
        }
    }))
}

/// `rest` with the frames `read` from it put back in front.
fn prepend<S, E>(read: Vec<Bytes>, rest: S) -> impl Stream<Item = Result<Bytes, E>> + Unpin
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    stream::iter(read.into_iter().map(Ok)).chain(rest)
}

/// Sets an abort flag when dropped, unless defused.
struct AbortOnDrop(Option<Arc<AtomicBool>>);

impl AbortOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(true, Ordering::Release);
        }
    }
}
