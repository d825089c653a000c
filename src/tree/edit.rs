//! Copy-on-write edits: a batch of path changes becomes new directory blocks up to a new root.

use std::collections::BTreeMap;

use bytes::Bytes;
use cid::Cid;

use super::directory::{encode_directory, read_directory};
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
        Some(cid) => read_directory(source, &cid).await?,
        None => BTreeMap::new(),
    };
    for (name, edit) in edits {
        match edit {
            Edit::Set(link) => {
                entries.insert(name, link);
            }
            Edit::Remove => {
                entries.remove(&name);
            }
            Edit::Descend(children) => {
                let child = match entries.get(&name) {
                    Some(link) if link.cid.codec() == DAG_PB => Some(link.cid),
                    Some(link) => {
                        return Err(TreeError::WrongKind(format!(
                            "{name} ({}) is a file, not a directory",
                            link.cid
                        )))
                    }
                    None => None,
                };
                match Box::pin(apply_dir(source, child, children, false, blocks)).await? {
                    Some(link) => entries.insert(name, link),
                    None => entries.remove(&name),
                };
            }
        }
    }
    if entries.is_empty() && !is_root {
        return Ok(None);
    }
    let (link, new_blocks) = encode_directory(&entries)?;
    blocks.extend(new_blocks);
    Ok(Some(link))
}
