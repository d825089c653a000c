//! HAMT-sharded UnixFS directories (murmur3-x64-64, fanout 256), as go-unixfs and Helia write them.

use std::collections::BTreeMap;

use bytes::Bytes;
use cid::Cid;

use super::dagpb::PbNode;
use super::directory::SHARD_THRESHOLD;
use super::unixfs::UnixfsData;
use super::{BlockSource, Link, TreeError};

/// Whether a basic directory node is too large and must be sharded.
pub fn exceeds_threshold(node: &PbNode) -> bool {
    node.encode().len() > SHARD_THRESHOLD
}

/// Encodes `entries` as a HAMT; returns the root link and all blocks.
pub fn encode(_entries: &BTreeMap<String, Link>) -> Result<(Link, Vec<(Cid, Bytes)>), TreeError> {
    Err(TreeError::Decode(
        "HAMT directories are not written yet".into(),
    ))
}

/// Every entry under the HAMT whose root node is given.
pub async fn read_all(
    _source: &dyn BlockSource,
    _root: PbNode,
    _data: UnixfsData,
) -> Result<BTreeMap<String, Link>, TreeError> {
    Err(TreeError::Decode(
        "HAMT directories are not read yet".into(),
    ))
}

/// One entry of the HAMT whose root node is given.
pub async fn lookup(
    _source: &dyn BlockSource,
    _root: PbNode,
    _data: UnixfsData,
    _name: &str,
) -> Result<Option<Link>, TreeError> {
    Err(TreeError::Decode(
        "HAMT directories are not read yet".into(),
    ))
}
