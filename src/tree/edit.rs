//! Copy-on-write edits: a batch of path changes becomes new directory blocks up to a new root.

use std::collections::BTreeMap;

use bytes::Bytes;
use cid::Cid;

use super::dagpb::{put_data, put_link, scan_canonical, PbNode, ScannedNode};
use super::directory::{basic_entry_len, decode_directory, encode_directory, entries_of};
use super::hamt::{exceeds_threshold, HamtEdit};
use super::unixfs::{DataType, UnixfsData};
use super::{cid_of, BlockSource, Link, TreeError, DAG_PB};

/// One change to the tree.
#[derive(Debug, Clone)]
pub enum Change {
    /// Make `path` point at `link`, creating directories on the way.
    Put {
        /// Path components from the root.
        path: Vec<String>,
        /// What the path points at afterwards.
        link: Link,
    },
    /// Remove `path` (if present); directories left empty are removed too.
    Remove {
        /// Path components from the root.
        path: Vec<String>,
    },
}

enum Edit {
    Set(Link),
    Remove,
    Descend(BTreeMap<String, Edit>),
}

fn insert(edits: &mut BTreeMap<String, Edit>, path: &[String], leaf: Edit) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        edits.insert(first.clone(), leaf);
        return;
    }
    let entry = edits
        .entry(first.clone())
        .or_insert_with(|| Edit::Descend(BTreeMap::new()));
    if !matches!(entry, Edit::Descend(_)) {
        *entry = Edit::Descend(BTreeMap::new());
    }
    if let Edit::Descend(children) = entry {
        insert(children, rest, leaf);
    }
}

/// Applies `changes` (later ones win) to the tree at `root`.
/// Returns the new root and the new blocks, which the caller must store before using the root.
pub async fn apply_changes(
    source: &dyn BlockSource,
    root: &Cid,
    changes: Vec<Change>,
) -> Result<(Link, Vec<(Cid, Bytes)>), TreeError> {
    let mut edits = BTreeMap::new();
    for change in changes {
        match change {
            Change::Put { path, link } => insert(&mut edits, &path, Edit::Set(link)),
            Change::Remove { path } => insert(&mut edits, &path, Edit::Remove),
        }
    }
    let mut blocks = Vec::new();
    let link = apply_dir(source, Some(*root), edits, true, &mut blocks)
        .await?
        .expect("the root directory is always written");
    Ok((link, blocks))
}

async fn apply_dir(
    source: &dyn BlockSource,
    dir: Option<Cid>,
    edits: BTreeMap<String, Edit>,
    is_root: bool,
    blocks: &mut Vec<(Cid, Bytes)>,
) -> Result<Option<Link>, TreeError> {
    let mut entries = match dir {
        Some(cid) => {
            let block = source.block(&cid).await?;
            if cid.codec() == DAG_PB {
                if let Some(node) = scan_canonical(&block)? {
                    let data = UnixfsData::decode(node.data.unwrap_or_default())?;
                    let ascending = node.links.windows(2).all(|w| w[0].name < w[1].name);
                    if data.kind == DataType::Directory && ascending {
                        return apply_basic(source, node, edits, is_root, blocks).await;
                    }
                }
            }
            let (node, data) = decode_directory(&cid, &block)?;
            if data.kind == DataType::HamtShard && HamtEdit::can_edit(&data) {
                let hamt = HamtEdit::new(node, &data)?;
                return apply_sharded(source, hamt, edits, is_root, blocks).await;
            }
            entries_of(source, node, data).await?
        }
        None => BTreeMap::new(),
    };
    for (name, edit) in edits {
        let current = entries.get(&name).copied();
        match edit_entry(source, &name, current, edit, blocks).await? {
            Some(link) => entries.insert(name, link),
            None => entries.remove(&name),
        };
    }
    finish_directory(entries, is_root, blocks)
}

/// A basic directory written canonically is edited in its encoded form: the links the edits
/// leave alone are copied byte for byte, so a commit into a directory of thousands of entries
/// does not decode and encode each of them. The block is what encoding the edited entries gives.
async fn apply_basic(
    source: &dyn BlockSource,
    node: ScannedNode<'_>,
    edits: BTreeMap<String, Edit>,
    is_root: bool,
    blocks: &mut Vec<(Cid, Bytes)>,
) -> Result<Option<Link>, TreeError> {
    let kept: usize = node.links.iter().map(|l| l.encoded.len()).sum();
    let mut out = Vec::with_capacity(kept + 16 + 96 * edits.len());
    let mut scratch = Vec::with_capacity(96);
    // Wrapping, as the sum in `pb_block` does in release builds.
    let mut tsize: u64 = 0;
    let mut count = 0usize;
    let mut links = node.links.iter().peekable();
    for (name, edit) in edits {
        while let Some(link) = links.next_if(|l| l.name < name.as_bytes()) {
            out.extend_from_slice(link.encoded);
            tsize = tsize.wrapping_add(link.tsize);
            count += 1;
        }
        let current = match links.next_if(|l| l.name == name.as_bytes()) {
            Some(link) => {
                let link = link.decode()?;
                Some(Link {
                    cid: link.cid,
                    tsize: link.tsize,
                })
            }
            None => None,
        };
        if let Some(new) = edit_entry(source, &name, current, edit, blocks).await? {
            put_link(&mut out, &mut scratch, &new.cid, name.as_bytes(), new.tsize);
            tsize = tsize.wrapping_add(new.tsize);
            count += 1;
        }
    }
    for link in links {
        out.extend_from_slice(link.encoded);
        tsize = tsize.wrapping_add(link.tsize);
        count += 1;
    }
    if count == 0 && !is_root {
        return Ok(None);
    }
    put_data(&mut out, &UnixfsData::new(DataType::Directory).encode());
    if exceeds_threshold(&out) {
        // It grew past the threshold: sharded from now on, built from all its entries once.
        let node = PbNode::decode(&out)?;
        let entries = node
            .links
            .into_iter()
            .map(|l| {
                let link = Link {
                    cid: l.cid,
                    tsize: l.tsize,
                };
                (l.name, link)
            })
            .collect();
        return finish_directory(entries, is_root, blocks);
    }
    let cid = cid_of(DAG_PB, &out);
    let link = Link {
        cid,
        tsize: (out.len() as u64).wrapping_add(tsize),
    };
    blocks.push((cid, Bytes::from(out)));
    Ok(Some(link))
}

/// What the entry `name` (now `current`) becomes under `edit`.
async fn edit_entry(
    source: &dyn BlockSource,
    name: &str,
    current: Option<Link>,
    edit: Edit,
    blocks: &mut Vec<(Cid, Bytes)>,
) -> Result<Option<Link>, TreeError> {
    match edit {
        Edit::Set(link) => Ok(Some(link)),
        Edit::Remove => Ok(None),
        Edit::Descend(children) => {
            let child = match current {
                Some(link) if link.cid.codec() == DAG_PB => Some(link.cid),
                Some(link) => {
                    return Err(TreeError::WrongKind(format!(
                        "{name} ({}) is a file, not a directory",
                        link.cid
                    )))
                }
                None => None,
            };
            Box::pin(apply_dir(source, child, children, false, blocks)).await
        }
    }
}

/// A sharded directory is edited in place: a commit reads and writes only the shards on the
/// changed names' hash paths, so its cost does not grow with the directory. The result must
/// still be what a fresh import of the entries gives, which is basic again once a basic block
/// would fit the threshold. A directory that is sharded is over it (every tree here is written
/// canonically), so it stays sharded while the edits do not shrink its basic size; only
/// shrinking edits read the whole directory to decide.
async fn apply_sharded(
    source: &dyn BlockSource,
    mut hamt: HamtEdit,
    edits: BTreeMap<String, Edit>,
    is_root: bool,
    blocks: &mut Vec<(Cid, Bytes)>,
) -> Result<Option<Link>, TreeError> {
    let mut growth: i64 = 0;
    for (name, edit) in edits {
        let current = match edit {
            Edit::Descend(_) => hamt.get(source, &name).await?,
            Edit::Set(_) | Edit::Remove => None,
        };
        let new = edit_entry(source, &name, current, edit, blocks).await?;
        let added = basic_entry_len(&name, new.as_ref());
        let previous = hamt.set(source, name.clone(), new).await?;
        let removed = basic_entry_len(&name, previous.as_ref());
        growth += added as i64 - removed as i64;
    }
    if growth < 0 {
        let entries = hamt.into_entries(source).await?;
        return finish_directory(entries, is_root, blocks);
    }
    let (link, new_blocks) = hamt.encode();
    blocks.extend(new_blocks);
    Ok(Some(link))
}

fn finish_directory(
    entries: BTreeMap<String, Link>,
    is_root: bool,
    blocks: &mut Vec<(Cid, Bytes)>,
) -> Result<Option<Link>, TreeError> {
    if entries.is_empty() && !is_root {
        return Ok(None);
    }
    let (link, new_blocks) = encode_directory(&entries)?;
    blocks.extend(new_blocks);
    Ok(Some(link))
}
