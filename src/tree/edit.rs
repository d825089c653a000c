//! Copy-on-write edits: a batch of path changes becomes new directory blocks up to a new root.

use std::collections::BTreeMap;

use bytes::Bytes;
use cid::Cid;

use super::directory::{basic_entry_len, decode_directory, encode_directory, entries_of};
use super::hamt::HamtEdit;
use super::unixfs::DataType;
use super::{BlockSource, Link, TreeError, DAG_PB};

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
