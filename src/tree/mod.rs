//! The registry's storage tree: an immutable UnixFS (dag-pb) directory DAG, changed copy-on-write.
//!
//! Import profile (IPIP-499 `unixfs-v1-2025`): CIDv1, sha2-256, raw leaves, 1 MiB fixed-size
//! chunks, balanced file DAGs with at most 1024 links per node, directories HAMT-sharded
//! (murmur3-x64-64, fanout 256) once a basic directory block would exceed 256 KiB. The same bytes
//! imported by kubo or Helia with that profile get the same CIDs. Changing any of it changes every
//! CID, so it is fixed here, once.

mod cache;
mod dagpb;
mod directory;
mod edit;
mod file;
mod hamt;
mod mark;
mod protobuf;
mod root;
mod select;
mod unixfs;
mod walk;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use sha2::{Digest as _, Sha256};

pub use cache::{ReadCache, ReadCacheStats};
pub use dagpb::{PbLink, PbNode, DAG_PB};
pub use directory::{encode_directory, lookup, read_directory};
pub use edit::{apply_changes, Change};
pub use file::{
    file_size, read_file_range, read_small_file, FileImporter, FileReader, CHUNK_SIZE, MAX_LINKS,
};
pub use mark::{mark_blocking, MarkReport};
pub use root::{Tree, TreeWriter};
pub use select::{
    select_blocks, walk_path, EntityBytes, EntityKind, PathOutcome, Scope, Selection, WalkedPath,
};
pub use unixfs::{DataType, UnixfsData};
pub use walk::fetch_dag;

use crate::store::{BlockStore, StoreError};

/// Multicodec of raw blocks.
pub const RAW: u64 = 0x55;
/// Multihash code of sha2-256.
const SHA2_256: u64 = 0x12;

/// Errors of the tree layer.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A block the tree needs is not available.
    #[error("block {0} is not available")]
    BlockMissing(Cid),
    /// A block could not be decoded as dag-pb / UnixFS.
    #[error("malformed block: {0}")]
    Decode(String),
    /// A path crosses a file where a directory is expected, or the reverse.
    #[error("{0}")]
    WrongKind(String),
    /// A file is larger than the caller allows.
    #[error("file of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Actual size.
        size: u64,
        /// Allowed size.
        limit: u64,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A link to a node of the tree: its CID and the cumulative size of its DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The node.
    pub cid: Cid,
    /// Bytes of all blocks reachable from it (dag-pb `Tsize`).
    pub tsize: u64,
}

/// Where the tree reads blocks from: the local store, later also the network.
#[async_trait]
pub trait BlockSource: Send + Sync {
    /// The block's bytes; [`TreeError::BlockMissing`] if it cannot be had.
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError>;
}

#[async_trait]
impl BlockSource for BlockStore {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        self.get(cid).await?.ok_or(TreeError::BlockMissing(*cid))
    }
}

/// The CIDv1 (sha2-256) of `data` under `codec`.
pub fn cid_of(codec: u64, data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    // A 32-byte digest always fits the 64-byte multihash.
    let hash = cid::multihash::Multihash::<64>::wrap(SHA2_256, &digest)
        .expect("sha2-256 digest fits a multihash");
    Cid::new_v1(codec, hash)
}

/// A dag-pb block ready to store: its CID, bytes and link.
pub(crate) fn pb_block(node: &PbNode) -> (Link, Bytes) {
    let bytes = Bytes::from(node.encode());
    let cid = cid_of(DAG_PB, &bytes);
    let tsize = bytes.len() as u64 + node.links.iter().map(|l| l.tsize).sum::<u64>();
    (Link { cid, tsize }, bytes)
}

/// Splits a slash-separated path into components, ignoring empty ones.
pub fn split_path(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Follows `path` from the directory `root`; `None` if any component is absent.
pub async fn resolve(
    source: &dyn BlockSource,
    root: &Cid,
    path: &[String],
) -> Result<Option<Link>, TreeError> {
    let mut current = Link {
        cid: *root,
        tsize: 0,
    };
    for name in path {
        if current.cid.codec() != DAG_PB {
            return Ok(None);
        }
        match lookup(source, &current.cid, name).await? {
            Some(link) => current = link,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}
