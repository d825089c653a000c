//! UnixFS directories: basic ones, switching to HAMT shards above the profile's threshold.

use std::collections::BTreeMap;

use bytes::Bytes;
use cid::Cid;

use super::dagpb::{find_link, PbLink, PbNode, DAG_PB};
use super::hamt;
use super::unixfs::{DataType, UnixfsData};
use super::{pb_block, BlockSource, Link, TreeError};

/// A directory whose basic block would be larger than this is written as a HAMT.
pub const SHARD_THRESHOLD: usize = 256 * 1024;

/// Encodes a directory with `entries`; returns its link and every block written for it.
pub fn encode_directory(
    entries: &BTreeMap<String, Link>,
) -> Result<(Link, Vec<(Cid, Bytes)>), TreeError> {
    let (link, bytes) = pb_block(&basic_node(entries));
    if hamt::exceeds_threshold(&bytes) {
        return hamt::encode(entries);
    }
    Ok((link, vec![(link.cid, bytes)]))
}

/// Bytes the entry `name` takes in a basic directory block (nothing for `None`): what a basic
/// block's size changes by when the entry comes, goes or changes.
pub(crate) fn basic_entry_len(name: &str, link: Option<&Link>) -> usize {
    link.map_or(0, |link| {
        PbNode {
            links: vec![PbLink {
                cid: link.cid,
                name: name.to_owned(),
                tsize: link.tsize,
            }],
            data: None,
        }
        .encode()
        .len()
    })
}

fn basic_node(entries: &BTreeMap<String, Link>) -> PbNode {
    // BTreeMap iterates in byte order of the names: the order go-unixfs and js-unixfs sort by.
    PbNode {
        links: entries
            .iter()
            .map(|(name, link)| PbLink {
                cid: link.cid,
                name: name.clone(),
                tsize: link.tsize,
            })
            .collect(),
        data: Some(UnixfsData::new(DataType::Directory).encode()),
    }
}

/// A decoded directory node: either basic or the root of a HAMT.
pub(crate) fn decode_directory(cid: &Cid, block: &[u8]) -> Result<(PbNode, UnixfsData), TreeError> {
    if cid.codec() != DAG_PB {
        return Err(TreeError::WrongKind(format!("{cid} is not a directory")));
    }
    let node = PbNode::decode(block)?;
    let data = UnixfsData::decode(node.data.as_deref().unwrap_or_default())?;
    match data.kind {
        DataType::Directory | DataType::HamtShard => Ok((node, data)),
        _ => Err(TreeError::WrongKind(format!("{cid} is not a directory"))),
    }
}

/// All entries of the directory at `cid`.
pub async fn read_directory(
    source: &dyn BlockSource,
    cid: &Cid,
) -> Result<BTreeMap<String, Link>, TreeError> {
    let block = source.block(cid).await?;
    let (node, data) = decode_directory(cid, &block)?;
    entries_of(source, node, data).await
}

/// All entries of a decoded directory node.
pub(crate) async fn entries_of(
    source: &dyn BlockSource,
    node: PbNode,
    data: UnixfsData,
) -> Result<BTreeMap<String, Link>, TreeError> {
    if data.kind == DataType::HamtShard {
        return hamt::read_all(source, node, data).await;
    }
    Ok(node
        .links
        .into_iter()
        .map(|l| {
            (
                l.name,
                Link {
                    cid: l.cid,
                    tsize: l.tsize,
                },
            )
        })
        .collect())
}

/// The entry `name` of the directory at `cid`, if present.
pub async fn lookup(
    source: &dyn BlockSource,
    cid: &Cid,
    name: &str,
) -> Result<Option<Link>, TreeError> {
    if cid.codec() != DAG_PB {
        return Err(TreeError::WrongKind(format!("{cid} is not a directory")));
    }
    let block = source.block(cid).await?;
    // A basic directory is scanned for the name; only a HAMT's root is decoded whole.
    let (found, data) = find_link(&block, name)?;
    let data = UnixfsData::decode(data.unwrap_or_default())?;
    match data.kind {
        DataType::Directory => Ok(found.map(|l| Link {
            cid: l.cid,
            tsize: l.tsize,
        })),
        DataType::HamtShard => {
            let node = PbNode::decode(&block)?;
            hamt::lookup(source, node, data, name).await
        }
        _ => Err(TreeError::WrongKind(format!("{cid} is not a directory"))),
    }
}
