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
    if node.links.len() != data.blocksizes.len() {
        return Err(TreeError::Decode(format!(
            "{cid}: {} links but {} block sizes",
            node.links.len(),
            data.blocksizes.len()
        )));
    }
    Ok((node, data))
}

/// The size of a file node: its inline data and the sizes it gives its blocks, which must add
/// up to the size it declares. A tree read from the network is untrusted: a declared size is
/// only believed when it agrees with the rest of the node, and never allocates anything.
fn node_size(cid: &Cid, data: &UnixfsData) -> Result<u64, TreeError> {
    let inline = data.data.as_ref().map_or(0, |d| d.len() as u64);
    let summed = data
        .blocksizes
        .iter()
        .try_fold(inline, |total, size| total.checked_add(*size))
        .ok_or_else(|| TreeError::Decode(format!("{cid}: block sizes overflow 64 bits")))?;
    match data.filesize {
        Some(declared) if declared != summed => Err(TreeError::Decode(format!(
            "{cid}: declares {declared} bytes, but its data and blocks hold {summed}"
        ))),
        _ => Ok(summed),
    }
}

/// Size in bytes of the file at `cid`.
pub async fn file_size(source: &dyn BlockSource, cid: &Cid) -> Result<u64, TreeError> {
    let block = source.block(cid).await?;
    match cid.codec() {
        RAW => Ok(block.len() as u64),
        DAG_PB => {
            let (_, data) = file_data(cid, &block)?;
            node_size(cid, &data)
        }
        other => Err(TreeError::WrongKind(format!(
            "{cid} has codec {other:#x}, not a UnixFS file"
        ))),
    }
}

/// Reads a whole file that must not be larger than `limit` bytes. The buffer grows with the
/// bytes read, whatever size the file claims.
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
    let mut reader = FileReader::new(cid, 0..size);
    let mut out = Vec::new();
    while let Some(piece) = reader.next(source).await? {
        out.extend_from_slice(&piece);
    }
    Ok(Bytes::from(out))
}

/// Sends the bytes of `range` of the file at `cid` to `tx`, in order, one block at a time (as
/// [`FileReader`] reads them). Stops early without error if the receiver goes away (the client
/// hung up).
pub async fn read_file_range(
    source: &dyn BlockSource,
    cid: &Cid,
    range: Range<u64>,
    tx: mpsc::Sender<Bytes>,
) -> Result<(), TreeError> {
    let mut reader = FileReader::new(cid, range);
    while let Some(piece) = reader.next(source).await? {
        if tx.send(piece).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The bytes of a range of a file, read in order, one block at a time, as the caller asks for
/// them: a caller that consumes each piece in place (hashing it, say) holds no piece read ahead.
/// Every node must hold exactly the bytes its parent says it does, so a tree that lies about
/// sizes is an error, not a short or overlong read.
pub struct FileReader {
    range: Range<u64>,
    /// Depth-first over the DAG; each entry is a node, the file offset where it starts, and the
    /// size its parent gives it (none for the root).
    stack: Vec<(Cid, u64, Option<u64>)>,
}

impl FileReader {
    pub fn new(cid: &Cid, range: Range<u64>) -> Self {
        FileReader {
            range,
            stack: vec![(*cid, 0, None)],
        }
    }

    /// The next piece of the range, or `None` once it is all read.
    pub async fn next(&mut self, source: &dyn BlockSource) -> Result<Option<Bytes>, TreeError> {
        let overflow =
            |cid: &Cid| TreeError::Decode(format!("{cid}: file offsets overflow 64 bits"));
        let range = self.range.clone();
        while let Some((cid, offset, expected)) = self.stack.pop() {
            if offset >= range.end {
                continue;
            }
            let block = source.block(&cid).await?;
            let (inline, children, size) = match cid.codec() {
                RAW => {
                    let size = block.len() as u64;
                    (block, None, size)
                }
                DAG_PB => {
                    let (node, data) = file_data(&cid, &block)?;
                    let size = node_size(&cid, &data)?;
                    let inline = Bytes::from(data.data.unwrap_or_default());
                    (inline, Some((node.links, data.blocksizes)), size)
                }
                other => {
                    return Err(TreeError::WrongKind(format!(
                        "{cid} has codec {other:#x}, not a UnixFS file"
                    )))
                }
            };
            if let Some(expected) = expected {
                if expected != size {
                    return Err(TreeError::Decode(format!(
                        "{cid}: its parent gives it {expected} bytes, but it holds {size}"
                    )));
                }
            }
            let inline_len = inline.len() as u64;
            let inline_end = offset
                .checked_add(inline_len)
                .ok_or_else(|| overflow(&cid))?;
            if let Some((links, sizes)) = children {
                let mut child_offset = inline_end;
                let mut wanted = Vec::new();
                for (link, size) in links.iter().zip(sizes) {
                    let child_end = child_offset
                        .checked_add(size)
                        .ok_or_else(|| overflow(&cid))?;
                    if child_end > range.start && child_offset < range.end {
                        wanted.push((link.cid, child_offset, Some(size)));
                    }
                    child_offset = child_end;
                }
                self.stack.extend(wanted.into_iter().rev());
            }
            let start = range.start.max(offset);
            let end = range.end.min(inline_end);
            if start < end {
                return Ok(Some(
                    inline.slice((start - offset) as usize..(end - offset) as usize),
                ));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlockStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path().join("blocks")).unwrap();
        (dir, store)
    }

    /// Stores a file node with these links (CID, size given) and declared size.
    fn file_node(
        store: &BlockStore,
        links: &[(Cid, u64)],
        inline: Option<&[u8]>,
        filesize: Option<u64>,
    ) -> Cid {
        let mut data = UnixfsData::new(DataType::File);
        data.blocksizes = links.iter().map(|(_, size)| *size).collect();
        data.data = inline.map(<[u8]>::to_vec);
        data.filesize = filesize;
        let node = PbNode {
            links: links
                .iter()
                .map(|(cid, _)| PbLink {
                    cid: *cid,
                    name: String::new(),
                    tsize: 0,
                })
                .collect(),
            data: Some(data.encode()),
        };
        let (link, bytes) = pb_block(&node);
        store.put_blocking(&link.cid, &bytes).unwrap();
        link.cid
    }

    fn leaf(store: &BlockStore, data: &[u8]) -> Cid {
        let cid = cid_of(RAW, data);
        store.put_blocking(&cid, data).unwrap();
        cid
    }

    async fn read_all(store: &BlockStore, cid: &Cid) -> Result<Vec<u8>, TreeError> {
        let size = file_size(store, cid).await?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(4);
        let mut out = Vec::new();
        let collect = async {
            while let Some(chunk) = rx.recv().await {
                out.extend_from_slice(&chunk);
            }
        };
        let (result, ()) = tokio::join!(read_file_range(store, cid, 0..size, tx), collect);
        result.map(|()| out)
    }

    #[tokio::test]
    async fn a_declared_size_is_checked_not_allocated() {
        let (_dir, store) = store();
        // 2^60 bytes declared, none held: an error, and no 2^60-byte buffer is ever asked for.
        let huge = file_node(&store, &[], None, Some(1 << 60));
        assert!(matches!(
            file_size(&store, &huge).await,
            Err(TreeError::Decode(_))
        ));
        assert!(read_small_file(&store, &huge, u64::MAX).await.is_err());
        // The same lie told through a block size.
        let small = leaf(&store, b"twelve bytes");
        let lying = file_node(&store, &[(small, 1 << 60)], None, Some(1 << 60));
        assert_eq!(file_size(&store, &lying).await.unwrap(), 1 << 60);
        assert!(matches!(
            read_small_file(&store, &lying, 4 << 20).await,
            Err(TreeError::TooLarge { .. })
        ));
        let err = read_small_file(&store, &lying, u64::MAX).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("gives it 1152921504606846976 bytes"),
            "{err}"
        );
        // Sizes that overflow when added up.
        let overflow = file_node(&store, &[(small, u64::MAX), (small, 2)], None, None);
        assert!(matches!(
            file_size(&store, &overflow).await,
            Err(TreeError::Decode(_))
        ));
        // Links and block sizes that do not pair up.
        let mut data = UnixfsData::new(DataType::File);
        data.blocksizes = vec![12];
        let node = PbNode {
            links: Vec::new(),
            data: Some(data.encode()),
        };
        let (link, bytes) = pb_block(&node);
        store.put_blocking(&link.cid, &bytes).unwrap();
        assert!(file_size(&store, &link.cid).await.is_err());
    }

    #[tokio::test]
    async fn honest_files_read_back_whole() {
        let (_dir, store) = store();
        let a = leaf(&store, b"hello ");
        let b = leaf(&store, b"world");
        let inner = file_node(&store, &[(a, 6), (b, 5)], None, Some(11));
        let root = file_node(&store, &[(inner, 11), (a, 6)], Some(b">> "), Some(20));
        assert_eq!(file_size(&store, &root).await.unwrap(), 20);
        assert_eq!(
            read_all(&store, &root).await.unwrap(),
            b">> hello worldhello "
        );
        assert_eq!(
            read_small_file(&store, &root, 20).await.unwrap().as_ref(),
            b">> hello worldhello "
        );
        // An absent filesize is taken from the parts.
        let unsized_root = file_node(&store, &[(a, 6), (b, 5)], None, None);
        assert_eq!(
            read_all(&store, &unsized_root).await.unwrap(),
            b"hello world"
        );
    }
}
