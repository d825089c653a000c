//! UnixFS files: the importer (fixed-size raw leaves under a balanced DAG) and range reads.

use std::mem;
use std::ops::Range;

use bytes::Bytes;
use cid::Cid;
use tokio::sync::mpsc;

use super::dagpb::{PbLink, PbNode, DAG_PB};
use super::unixfs::{DataType, UnixfsData};
use super::{cid_of, pb_block, BlockSource, Link, TreeError, RAW};
use crate::store::BlockStore;

/// Leaf size of the import profile.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Most links in one file node of the import profile.
pub const MAX_LINKS: usize = 1024;

/// A finished subtree of a file being imported.
struct Child {
    link: Link,
    filesize: u64,
}

/// Chunks a byte stream into blocks as it arrives and builds the balanced DAG over them.
///
/// Synchronous by design: it hashes and writes, so it runs on a blocking thread.
pub struct FileImporter<'s> {
    store: &'s BlockStore,
    chunk: Vec<u8>,
    /// `levels[0]` holds leaves, `levels[n]` nodes of depth `n`, each at most `MAX_LINKS`.
    levels: Vec<Vec<Child>>,
    written: Vec<Cid>,
    leaves: u64,
}

impl<'s> FileImporter<'s> {
    /// Starts a file that will be stored in `store`.
    pub fn new(store: &'s BlockStore) -> Self {
        FileImporter {
            store,
            chunk: Vec::with_capacity(CHUNK_SIZE),
            levels: Vec::new(),
            written: Vec::new(),
            leaves: 0,
        }
    }

    /// Appends bytes to the file.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), TreeError> {
        while !data.is_empty() {
            let take = (CHUNK_SIZE - self.chunk.len()).min(data.len());
            self.chunk.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.chunk.len() == CHUNK_SIZE {
                self.emit_leaf()?;
            }
        }
        Ok(())
    }

    fn emit_leaf(&mut self) -> Result<(), TreeError> {
        let cid = cid_of(RAW, &self.chunk);
        self.store.put_blocking(&cid, &self.chunk)?;
        self.written.push(cid);
        let size = self.chunk.len() as u64;
        self.chunk.clear();
        self.leaves += 1;
        self.push(
            0,
            Child {
                link: Link { cid, tsize: size },
                filesize: size,
            },
        )
    }

    fn push(&mut self, level: usize, child: Child) -> Result<(), TreeError> {
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        // A full level becomes one node of the level above only once more data arrives, so a
        // file of exactly MAX_LINKS leaves has a single root over them (as kubo builds it).
        if self.levels[level].len() == MAX_LINKS {
            let full = mem::take(&mut self.levels[level]);
            let node = self.file_node(full)?;
            self.push(level + 1, node)?;
        }
        self.levels[level].push(child);
        Ok(())
    }

    fn file_node(&mut self, children: Vec<Child>) -> Result<Child, TreeError> {
        let mut data = UnixfsData::new(DataType::File);
        data.blocksizes = children.iter().map(|c| c.filesize).collect();
        let filesize = data.blocksizes.iter().sum();
        data.filesize = Some(filesize);
        let node = PbNode {
            links: children
                .iter()
                .map(|c| PbLink {
                    cid: c.link.cid,
                    name: String::new(),
                    tsize: c.link.tsize,
                })
                .collect(),
            data: Some(data.encode()),
        };
        let (link, bytes) = pb_block(&node);
        self.store.put_blocking(&link.cid, &bytes)?;
        self.written.push(link.cid);
        Ok(Child { link, filesize })
    }

    /// Finishes the file: returns its root link and size, with every block durable.
    pub fn finish(mut self) -> Result<(Link, u64), TreeError> {
        if !self.chunk.is_empty() || self.leaves == 0 {
            self.emit_leaf()?;
        }
        let mut carry: Option<Child> = None;
        let top = self.levels.len() - 1;
        let mut root = None;
        for level in 0..=top {
            let mut children = mem::take(&mut self.levels[level]);
            children.extend(carry.take());
            if level == top {
                root = Some(if level == 0 && children.len() == 1 {
                    children.pop().expect("one child")
                } else {
                    self.file_node(children)?
                });
            } else if !children.is_empty() {
                carry = Some(self.file_node(children)?);
            }
        }
        let root = root.expect("at least one level");
        self.store.sync_dirs_blocking(self.written.iter())?;
        Ok((root.link, root.filesize))
    }
}

fn file_data(cid: &Cid, block: &[u8]) -> Result<(PbNode, UnixfsData), TreeError> {
    let node = PbNode::decode(block)?;
    let data = UnixfsData::decode(node.data.as_deref().unwrap_or_default())?;
    if !matches!(data.kind, DataType::File | DataType::Raw) {
        return Err(TreeError::WrongKind(format!("{cid} is not a file")));
    }
    Ok((node, data))
}

/// Size in bytes of the file at `cid`.
pub async fn file_size(source: &dyn BlockSource, cid: &Cid) -> Result<u64, TreeError> {
    let block = source.block(cid).await?;
    match cid.codec() {
        RAW => Ok(block.len() as u64),
        DAG_PB => {
            let (_, data) = file_data(cid, &block)?;
            Ok(data
                .filesize
                .unwrap_or_else(|| data.data.as_ref().map_or(0, |d| d.len() as u64)))
        }
        other => Err(TreeError::WrongKind(format!(
            "{cid} has codec {other:#x}, not a UnixFS file"
        ))),
    }
}

/// Reads a whole file that must not be larger than `limit` bytes.
pub async fn read_small_file(
    source: &dyn BlockSource,
    cid: &Cid,
    limit: u64,
) -> Result<Bytes, TreeError> {
    let size = file_size(source, cid).await?;
    if size > limit {
        return Err(TreeError::TooLarge { size, limit });
    }
    if cid.codec() == RAW {
        return source.block(cid).await;
    }
    let (tx, mut rx) = mpsc::channel(4);
    let mut out = Vec::with_capacity(size as usize);
    let read = read_file_range(source, cid, 0..size, tx);
    let collect = async {
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk);
        }
    };
    let (result, ()) = tokio::join!(read, collect);
    result?;
    Ok(Bytes::from(out))
}

/// Sends the bytes of `range` of the file at `cid` to `tx`, in order, one block at a time.
///
/// Stops early without error if the receiver goes away (the client hung up).
pub async fn read_file_range(
    source: &dyn BlockSource,
    cid: &Cid,
    range: Range<u64>,
    tx: mpsc::Sender<Bytes>,
) -> Result<(), TreeError> {
    // Depth-first over the DAG; each entry is a node and the file offset where it starts.
    let mut stack = vec![(*cid, 0u64)];
    while let Some((cid, offset)) = stack.pop() {
        if offset >= range.end {
            continue;
        }
        let block = source.block(&cid).await?;
        let (inline, children) = match cid.codec() {
            RAW => (block, None),
            DAG_PB => {
                let (node, data) = file_data(&cid, &block)?;
                let inline = Bytes::from(data.data.unwrap_or_default());
                if node.links.len() != data.blocksizes.len() && !node.links.is_empty() {
                    return Err(TreeError::Decode(format!(
                        "{cid}: {} links but {} block sizes",
                        node.links.len(),
                        data.blocksizes.len()
                    )));
                }
                (inline, Some((node.links, data.blocksizes)))
            }
            other => {
                return Err(TreeError::WrongKind(format!(
                    "{cid} has codec {other:#x}, not a UnixFS file"
                )))
            }
        };
        let inline_len = inline.len() as u64;
        let start = range.start.max(offset);
        let end = range.end.min(offset + inline_len);
        if start < end {
            let piece = inline.slice((start - offset) as usize..(end - offset) as usize);
            if tx.send(piece).await.is_err() {
                return Ok(());
            }
        }
        if let Some((links, sizes)) = children {
            let mut child_offset = offset + inline_len;
            let mut wanted = Vec::new();
            for (link, size) in links.iter().zip(sizes) {
                if child_offset + size > range.start && child_offset < range.end {
                    wanted.push((link.cid, child_offset));
                }
                child_offset += size;
            }
            stack.extend(wanted.into_iter().rev());
        }
    }
    Ok(())
}
