//! Moving content into the tree: importing blob bytes as UnixFS files and writing link files.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;

use bytes::Bytes;
use cid::Cid;

use super::digest::{Algorithm, Digest, Hasher};
use super::error::RegistryError;
use crate::store::BlockStore;
use crate::tree::{cid_of, read_small_file, BlockSource, FileImporter, Link, CHUNK_SIZE, RAW};

/// Longest link file read (a sha512 digest string is 135 bytes).
const MAX_LINK_FILE: u64 = 1024;

/// A blob imported into the block store.
pub struct Imported {
    /// Root of the UnixFS file.
    pub link: Link,
    /// Digest of the bytes under the requested algorithm.
    pub digest: Digest,
}

/// Imports the file at `path` into `store` in one pass that also hashes it. Blocking.
pub fn import_file(
    store: &BlockStore,
    path: &Path,
    algorithm: Algorithm,
) -> Result<Imported, RegistryError> {
    let mut file = File::open(path)
        .map_err(|e| RegistryError::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Hasher::new(algorithm);
    let mut importer = FileImporter::new(store);
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(RegistryError::io(format!("reading {}", path.display()), e)),
        };
        hasher.update(&buf[..n]);
        importer.write(&buf[..n])?;
    }
    let (link, _size) = importer.finish()?;
    Ok(Imported {
        link,
        digest: hasher.finish(),
    })
}

/// Imports bytes held in memory (manifests). Blocking.
pub fn import_bytes(store: &BlockStore, bytes: &[u8]) -> Result<Link, RegistryError> {
    let mut importer = FileImporter::new(store);
    importer.write(bytes)?;
    Ok(importer.finish()?.0)
}

/// A link file naming `digest`: a single raw block, as the import profile makes small files.
pub fn link_file(digest: &Digest) -> (Link, (Cid, Bytes)) {
    let bytes = Bytes::from(digest.to_string());
    let cid = cid_of(RAW, &bytes);
    (
        Link {
            cid,
            tsize: bytes.len() as u64,
        },
        (cid, bytes),
    )
}

/// Reads the digest stored in a link file.
pub async fn read_link_file(
    source: &dyn BlockSource,
    link: &Link,
) -> Result<Digest, RegistryError> {
    let bytes = read_small_file(source, &link.cid, MAX_LINK_FILE).await?;
    let text = String::from_utf8_lossy(&bytes);
    text.trim().parse().map_err(|e| {
        RegistryError::Tree(crate::tree::TreeError::Decode(format!(
            "link file {}: {e}",
            link.cid
        )))
    })
}
