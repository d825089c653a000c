//! Which blocks of a DAG a verifiable answer holds, and in which order: a content path walked
//! from its root (every block a client needs to check each step, HAMT shards included), then
//! the DAG at its end, depth-first in link order, limited to one block, to the UnixFS entity
//! (a whole file or a directory's own nodes) or to the blocks of a byte range of a file.
//! Used by the trustless gateway for CAR responses (IPIP-402 `dag-scope` and `entity-bytes`).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::dagpb::{PbNode, DAG_PB};
use super::directory::lookup;
use super::unixfs::{DataType, UnixfsData};
use super::{BlockSource, TreeError, RAW};

/// Multihash code of the identity "hash": such a CID carries its block, which no answer
/// sends separately.
const IDENTITY: u64 = 0x00;
/// Blocks fetched ahead of the one being sent, so a DAG held by peers streams at the speed of
/// many fetches in flight rather than one round trip per block.
const LOOKAHEAD: usize = 16;

/// How much of the DAG at the end of a path an answer holds (`dag-scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only the block at the end of the path.
    Block,
    /// The UnixFS entity there: a file's whole DAG, a directory's own node (a HAMT's shards),
    /// the block itself for anything else.
    Entity,
    /// Everything reachable from it.
    All,
}

impl Scope {
    /// The `dag-scope` value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Block => "block",
            Scope::Entity => "entity",
            Scope::All => "all",
        }
    }
}

/// What the block at the end of a path is, as far as selecting blocks goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    /// A UnixFS file (dag-pb) or a raw block, of this many bytes.
    File {
        /// The file's size.
        size: u64,
    },
    /// A basic UnixFS directory.
    Directory,
    /// The root of a HAMT-sharded UnixFS directory.
    ShardedDirectory,
    /// Anything else (a symlink, another codec).
    Other,
}

impl EntityKind {
    /// Classifies the block `cid` holding `block`.
    pub fn of(cid: &Cid, block: &[u8]) -> Result<Self, TreeError> {
        match cid.codec() {
            RAW => Ok(EntityKind::File {
                size: block.len() as u64,
            }),
            DAG_PB => {
                let node = PbNode::decode(block)?;
                let Some(data) = node.data.as_deref() else {
                    return Ok(EntityKind::Other);
                };
                let data = UnixfsData::decode(data)?;
                Ok(match data.kind {
                    DataType::File | DataType::Raw => EntityKind::File {
                        size: declared_size(cid, &data)?,
                    },
                    DataType::Directory => EntityKind::Directory,
                    DataType::HamtShard => EntityKind::ShardedDirectory,
                    DataType::Metadata | DataType::Symlink => EntityKind::Other,
                })
            }
            _ => Ok(EntityKind::Other),
        }
    }
}

/// A file node's size: its declared size, else its inline data and block sizes added up.
fn declared_size(cid: &Cid, data: &UnixfsData) -> Result<u64, TreeError> {
    if let Some(size) = data.filesize {
        return Ok(size);
    }
    let inline = data.data.as_ref().map_or(0, |d| d.len() as u64);
    data.blocksizes
        .iter()
        .try_fold(inline, |total, size| total.checked_add(*size))
        .ok_or_else(|| TreeError::Decode(format!("{cid}: block sizes overflow 64 bits")))
}

/// A content path walked from its root.
#[derive(Debug, Clone)]
pub struct WalkedPath {
    /// Every block read on the way, in the order read: the root, each directory, every HAMT
    /// shard between them. The block at the end is not among them (unless the path is empty:
    /// then nothing was read).
    pub blocks: Vec<(Cid, Bytes)>,
    /// One CID per logical step: the root, then what each path segment names (as
    /// `X-Ipfs-Roots` lists them).
    pub roots: Vec<Cid>,
}

impl WalkedPath {
    /// The CID at the end of the path.
    pub fn terminus(&self) -> Cid {
        // `roots` always holds at least the root.
        self.roots[self.roots.len() - 1]
    }
}

/// Where a path leads.
#[derive(Debug, Clone)]
pub enum PathOutcome {
    /// To a CID.
    Found(WalkedPath),
    /// Segment `index` (from 0) names nothing: the DAG lacks it, or a file stands where a
    /// directory should.
    Missing {
        /// Which segment.
        index: usize,
    },
}

/// Records every block read through it, in order.
struct Recording<'a> {
    inner: &'a dyn BlockSource,
    read: Mutex<Vec<(Cid, Bytes)>>,
}

#[async_trait]
impl BlockSource for Recording<'_> {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        let block = self.inner.block(cid).await?;
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((*cid, block.clone()));
        Ok(block)
    }
}

/// Walks `path` (UnixFS names) from `root`, keeping every block read.
pub async fn walk_path(
    source: &dyn BlockSource,
    root: &Cid,
    path: &[String],
) -> Result<PathOutcome, TreeError> {
    let recording = Recording {
        inner: source,
        read: Mutex::new(Vec::new()),
    };
    let mut roots = vec![*root];
    for (index, name) in path.iter().enumerate() {
        let current = roots[roots.len() - 1];
        if current.codec() != DAG_PB {
            return Ok(PathOutcome::Missing { index });
        }
        match lookup(&recording, &current, name).await {
            Ok(Some(link)) => roots.push(link.cid),
            Ok(None) | Err(TreeError::WrongKind(_)) => return Ok(PathOutcome::Missing { index }),
            Err(e) => return Err(e),
        }
    }
    let blocks = recording
        .read
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    Ok(PathOutcome::Found(WalkedPath { blocks, roots }))
}

/// `entity-bytes=from:to`: a byte range of a file, each end possibly counted from the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityBytes {
    /// First byte; negative counts back from the end.
    pub from: i64,
    /// Last byte (inclusive); negative counts back from the end; `None` is the end (`*`).
    pub to: Option<i64>,
}

impl EntityBytes {
    /// Parses `from:to` (`to` may be `*`). A range whose ends are both counted from the
    /// start must not end before it starts.
    pub fn parse(s: &str) -> Option<Self> {
        let (from, to) = s.split_once(':')?;
        let from: i64 = from.parse().ok()?;
        let to = match to {
            "*" => None,
            n => Some(n.parse::<i64>().ok()?),
        };
        if let Some(to) = to {
            if from >= 0 && to >= 0 && to < from {
                return None;
            }
        }
        Some(EntityBytes { from, to })
    }

    /// The bytes of a file of `size` bytes this names (end exclusive, possibly empty).
    pub fn resolve(self, size: u64) -> Range<u64> {
        let at = |n: i64| {
            if n >= 0 {
                (n as u64).min(size)
            } else {
                size.saturating_sub(n.unsigned_abs())
            }
        };
        let start = at(self.from);
        let end = match self.to {
            None => size,
            Some(to) if to >= 0 => (to as u64).saturating_add(1).min(size),
            Some(to) => at(to).saturating_add(1).min(size),
        };
        start..end.max(start)
    }

    /// Whether it names no byte of a file of `size` bytes because it starts past the end.
    pub fn starts_past_end(self, size: u64) -> bool {
        self.from >= 0 && self.from as u64 >= size
    }
}

/// What to send of the DAG at the end of a path.
#[derive(Debug, Clone)]
pub struct Selection {
    /// How much.
    pub scope: Scope,
    /// For a file with [`Scope::Entity`]: only the blocks holding these bytes.
    pub bytes: Option<Range<u64>>,
    /// Send a block each time it occurs (`dups=y`) rather than once.
    pub duplicates: bool,
}

/// How a block's children are chosen.
#[derive(Debug, Clone)]
enum Descend {
    /// Not at all.
    No,
    /// Every dag-pb link.
    All,
    /// The children of a file node holding bytes in the range, which starts at `offset` in
    /// the file.
    File { offset: u64 },
    /// The child shards of a HAMT node, not its entries.
    Shards,
}

/// A block fetched ahead, cancelled if the walk ends before it is needed.
struct Prefetch(JoinHandle<Result<Bytes, TreeError>>);

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the blocks `selection` picks from the DAG at `terminus` to `tx`, depth-first in link
/// order. `first` is the terminus block, already read; `sent` holds blocks already sent (the
/// path's), which are not sent again unless duplicates are asked for. Stops quietly when the
/// receiver goes away. A block that cannot be had ends the walk with its error.
pub async fn select_blocks(
    source: Arc<dyn BlockSource>,
    terminus: Cid,
    first: Bytes,
    kind: EntityKind,
    selection: &Selection,
    mut sent: HashSet<Cid>,
    tx: mpsc::Sender<(Cid, Bytes)>,
) -> Result<(), TreeError> {
    let top = match (selection.scope, kind) {
        (Scope::Block, _) => Descend::No,
        (Scope::All, _) => Descend::All,
        (Scope::Entity, EntityKind::File { .. }) => Descend::File { offset: 0 },
        (Scope::Entity, EntityKind::ShardedDirectory) => Descend::Shards,
        (Scope::Entity, _) => Descend::No,
    };
    let range = match (&selection.bytes, selection.scope, kind) {
        (Some(range), Scope::Entity, EntityKind::File { .. }) => {
            if range.is_empty() {
                // Nothing of the file: the root block alone, which tells its size.
                return send(&tx, terminus, first, &mut sent, true)
                    .await
                    .map(|_| ());
            }
            Some(range.clone())
        }
        _ => None,
    };
    // Stack of (cid, how to descend, block if already at hand); the top is the next to send.
    let mut stack: Vec<(Cid, Descend, Option<Bytes>)> = vec![(terminus, top, Some(first))];
    let mut ahead: HashMap<Cid, Prefetch> = HashMap::new();
    while let Some((cid, descend, block)) = stack.pop() {
        if cid.hash().code() == IDENTITY
            || (!selection.duplicates && sent.contains(&cid) && cid != terminus)
        {
            continue;
        }
        // Start fetching what comes next before waiting for this one.
        for (next, _, held) in stack.iter().rev().take(LOOKAHEAD) {
            if held.is_none() && !ahead.contains_key(next) && next.hash().code() != IDENTITY {
                let source = source.clone();
                let next = *next;
                ahead.insert(
                    next,
                    Prefetch(tokio::spawn(async move { source.block(&next).await })),
                );
            }
        }
        let block = match block {
            Some(block) => block,
            None => match ahead.remove(&cid) {
                Some(mut prefetch) => match (&mut prefetch.0).await {
                    Ok(result) => result?,
                    Err(e) => return Err(TreeError::Decode(format!("fetching {cid}: {e}"))),
                },
                None => source.block(&cid).await?,
            },
        };
        let children = children(&cid, &block, &descend, range.as_ref())?;
        if !send(&tx, cid, block, &mut sent, selection.duplicates).await? {
            return Ok(());
        }
        stack.extend(children.into_iter().rev().map(|(c, d)| (c, d, None)));
    }
    Ok(())
}

/// Sends a block unless it was sent before (and duplicates are not wanted); `false` once the
/// receiver is gone.
async fn send(
    tx: &mpsc::Sender<(Cid, Bytes)>,
    cid: Cid,
    block: Bytes,
    sent: &mut HashSet<Cid>,
    duplicates: bool,
) -> Result<bool, TreeError> {
    if !sent.insert(cid) && !duplicates {
        return Ok(true);
    }
    Ok(tx.send((cid, block)).await.is_ok())
}

/// The children of a block to visit, in link order.
fn children(
    cid: &Cid,
    block: &[u8],
    descend: &Descend,
    range: Option<&Range<u64>>,
) -> Result<Vec<(Cid, Descend)>, TreeError> {
    if cid.codec() != DAG_PB {
        return Ok(Vec::new());
    }
    match descend {
        Descend::No => Ok(Vec::new()),
        Descend::All => Ok(PbNode::decode(block)?
            .links
            .into_iter()
            .map(|l| (l.cid, Descend::All))
            .collect()),
        Descend::Shards => {
            let node = PbNode::decode(block)?;
            let data = UnixfsData::decode(node.data.as_deref().unwrap_or_default())?;
            let fanout = data
                .fanout
                .filter(|f| f.is_power_of_two() && *f >= 2)
                .ok_or_else(|| TreeError::Decode(format!("HAMT shard {cid} without fanout")))?;
            // A slot's name is its index in hex, followed by the entry name for entries; a
            // link with the bare index leads to a child shard.
            let prefix_len = format!("{:X}", fanout - 1).len();
            Ok(node
                .links
                .into_iter()
                .filter(|l| l.name.len() == prefix_len)
                .map(|l| (l.cid, Descend::Shards))
                .collect())
        }
        Descend::File { offset } => {
            let node = PbNode::decode(block)?;
            let data = UnixfsData::decode(node.data.as_deref().unwrap_or_default())?;
            if node.links.len() != data.blocksizes.len() {
                return Err(TreeError::Decode(format!(
                    "{cid}: {} links but {} block sizes",
                    node.links.len(),
                    data.blocksizes.len()
                )));
            }
            let inline = data.data.as_ref().map_or(0, |d| d.len() as u64);
            let mut child_offset = offset.saturating_add(inline);
            let mut out = Vec::with_capacity(node.links.len());
            for (link, size) in node.links.into_iter().zip(data.blocksizes) {
                let child_end = child_offset.saturating_add(size);
                let wanted = range.is_none_or(|r| child_end > r.start && child_offset < r.end);
                if wanted {
                    out.push((
                        link.cid,
                        Descend::File {
                            offset: child_offset,
                        },
                    ));
                }
                child_offset = child_end;
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_bytes_parse_and_resolve() {
        let r = |s: &str| EntityBytes::parse(s);
        assert_eq!(r("0:*").unwrap().resolve(100), 0..100);
        assert_eq!(r("0:9").unwrap().resolve(100), 0..10);
        assert_eq!(r("10:10").unwrap().resolve(100), 10..11);
        assert_eq!(r("-10:*").unwrap().resolve(100), 90..100);
        assert_eq!(r("-1000:*").unwrap().resolve(100), 0..100);
        assert_eq!(r("5:-10").unwrap().resolve(100), 5..91);
        assert_eq!(r("50:-80").unwrap().resolve(100), 50..50);
        assert_eq!(r("90:1000").unwrap().resolve(100), 90..100);
        assert_eq!(r("200:*").unwrap().resolve(100), 100..100);
        assert!(r("200:*").unwrap().starts_past_end(100));
        assert!(!r("-200:*").unwrap().starts_past_end(100));
        for bad in ["", "1", "a:b", "5:4", "1:2:3", "*:5", "1.5:2", ":"] {
            assert!(r(bad).is_none(), "{bad:?} parsed");
        }
    }
}
