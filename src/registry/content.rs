//! Moving content into the tree: importing blob bytes as UnixFS files and writing link files.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use cid::Cid;

use super::digest::{Algorithm, Digest, ParallelHasher};
use super::error::RegistryError;
use crate::store::{BlockStore, StagedBlocks};
use crate::tree::{cid_of, read_small_file, BlockSource, FileImporter, Link, CHUNK_SIZE, RAW};

/// Longest link file read (a sha512 digest string is 135 bytes).
pub(super) const MAX_LINK_FILE: u64 = 1024;

/// Content imported into a staging area: not part of the block store until accepted.
pub struct Imported {
    /// Root of the UnixFS file.
    pub link: Link,
    /// Digest of the bytes under the requested algorithm.
    pub digest: Digest,
    /// The blocks, waiting to be moved into the store (or dropped).
    pub staged: StagedBlocks,
}

/// Imports the file at `path` into a staging area of `store` in one pass that also hashes it.
/// Blocking.
pub fn import_file(
    store: &BlockStore,
    path: &Path,
    algorithm: Algorithm,
) -> Result<Imported, RegistryError> {
    let mut file = File::open(path)
        .map_err(|e| RegistryError::io(format!("opening {}", path.display()), e))?;
    let staged = store.staging_blocking()?;
    let mut hasher = ParallelHasher::new(algorithm);
    let mut importer = FileImporter::new(staged.store());
    loop {
        // A buffer per read: the digest thread may still hash the previous one.
        let mut buf = BytesMut::zeroed(CHUNK_SIZE);
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(RegistryError::io(format!("reading {}", path.display()), e)),
        };
        buf.truncate(n);
        let chunk = buf.freeze();
        importer.write(&chunk)?;
        hasher.update(chunk);
    }
    let (link, _size) = importer.finish()?;
    Ok(Imported {
        link,
        digest: hasher.finish(),
        staged,
    })
}

/// Imports bytes as `next_chunk` hands them over (`None`: the end) into a staging area of
/// `store`, hashing each byte once on the way: nothing is written twice and nothing is read
/// back. Returns `None`, with nothing left behind, if `aborted` is set when the input ends (the
/// sender gave up on a broken request body). Blocking.
pub fn import_stream(
    store: &BlockStore,
    mut next_chunk: impl FnMut() -> Option<Bytes>,
    algorithm: Algorithm,
    aborted: &AtomicBool,
) -> Result<Option<Imported>, RegistryError> {
    let staged = store.staging_blocking()?;
    let mut hasher = ParallelHasher::new(algorithm);
    let mut importer = FileImporter::new(staged.store());
    while let Some(chunk) = next_chunk() {
        importer.write(&chunk)?;
        hasher.update(chunk);
    }
    if aborted.load(Ordering::Acquire) {
        drop(importer);
        staged.discard_blocking();
        return Ok(None);
    }
    let (link, _size) = importer.finish()?;
    Ok(Some(Imported {
        link,
        digest: hasher.finish(),
        staged,
    }))
}

/// Imports bytes held in memory (manifests) into a staging area of `store`. Blocking.
pub fn import_bytes(
    store: &BlockStore,
    bytes: &[u8],
) -> Result<(Link, StagedBlocks), RegistryError> {
    let staged = store.staging_blocking()?;
    let mut importer = FileImporter::new(staged.store());
    importer.write(bytes)?;
    let (link, _size) = importer.finish()?;
    Ok((link, staged))
}

/// A file of at most one chunk as the import profile makes it, without the importer: a single
/// raw block. `None` for more bytes than a chunk.
pub fn one_block_file(bytes: Bytes) -> Option<(Link, (Cid, Bytes))> {
    if bytes.len() > CHUNK_SIZE {
        return None;
    }
    let cid = cid_of(RAW, &bytes);
    let link = Link {
        cid,
        tsize: bytes.len() as u64,
    };
    Some((link, (cid, bytes)))
}

/// A link file naming `digest`: a single raw block, as the import profile makes small files.
pub fn link_file(digest: &Digest) -> (Link, (Cid, Bytes)) {
    one_block_file(Bytes::from(digest.to_string())).expect("a digest is shorter than a chunk")
}

/// Reads the digest stored in a link file.
pub async fn read_link_file(
    source: &dyn BlockSource,
    link: &Link,
) -> Result<Digest, RegistryError> {
    let bytes = read_small_file(source, &link.cid, MAX_LINK_FILE).await?;
    parse_link_file(link, &bytes)
}

/// The digest in the bytes of the link file at `link`.
pub fn parse_link_file(link: &Link, bytes: &[u8]) -> Result<Digest, RegistryError> {
    let text = String::from_utf8_lossy(bytes);
    text.trim().parse().map_err(|e| {
        RegistryError::Tree(crate::tree::TreeError::Decode(format!(
            "link file {}: {e}",
            link.cid
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Manifests of one chunk skip the importer (see `Registry::put_manifest`) on the grounds
    /// that it makes them a single raw block: the same CID either way.
    #[test]
    fn content_of_one_chunk_imports_as_one_raw_block() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = BlockStore::open(dir.path().join("blocks")).expect("open");
        for len in [0, 1, 4096, CHUNK_SIZE - 1, CHUNK_SIZE] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (link, staged) = import_bytes(&store, &bytes).expect("import");
            staged.discard_blocking();
            assert_eq!(link.cid, cid_of(RAW, &bytes), "{len} bytes");
            assert_eq!(link.tsize, len as u64);
            let (one, _) = one_block_file(Bytes::from(bytes)).expect("one chunk");
            assert_eq!(one, link, "{len} bytes without the importer");
        }
        let bigger = vec![7u8; CHUNK_SIZE + 1];
        let (link, _staged) = import_bytes(&store, &bigger).expect("import");
        assert_ne!(link.cid.codec(), RAW, "more than a chunk is a file node");
        assert!(one_block_file(Bytes::from(bigger)).is_none());
    }
}
