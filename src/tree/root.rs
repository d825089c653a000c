//! The node's own tree: the committed root and its single writer.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use tokio::sync::{watch, Mutex, MutexGuard};

use super::directory::encode_directory;
use super::edit::{apply_changes, Change};
use super::TreeError;
use crate::metrics::CommitMetrics;
use crate::store::{BlockStore, MetaStore};

/// The node's own tree. Reads see the last committed root; writes go through [`Tree::writer`].
pub struct Tree {
    blocks: Arc<BlockStore>,
    meta: MetaStore,
    root: watch::Sender<Cid>,
    writer: Mutex<()>,
    commits: CommitMetrics,
}

impl Tree {
    /// Opens the tree at the committed root, creating an empty one on first start.
    pub async fn open(blocks: Arc<BlockStore>, meta: MetaStore) -> Result<Self, TreeError> {
        let root = match meta.root()? {
            Some(root) => root,
            None => {
                let (link, new_blocks) = encode_directory(&BTreeMap::new())?;
                blocks.put_many_durable(new_blocks).await?;
                meta.set_root(&link.cid).await?;
                link.cid
            }
        };
        Ok(Tree {
            blocks,
            meta,
            root: watch::Sender::new(root),
            writer: Mutex::new(()),
            commits: CommitMetrics::default(),
        })
    }

    /// Counts commits (and their latency) into `commits`.
    pub fn with_commit_metrics(mut self, commits: CommitMetrics) -> Self {
        self.commits = commits;
        self
    }

    /// The last committed root.
    pub fn root(&self) -> Cid {
        *self.root.borrow()
    }

    /// Notified with every newly committed root.
    pub fn subscribe(&self) -> watch::Receiver<Cid> {
        self.root.subscribe()
    }

    /// The local block store the tree lives in.
    pub fn blocks(&self) -> &Arc<BlockStore> {
        &self.blocks
    }

    /// Takes the tree's single write lock. Hold it only for reading and changing tree
    /// metadata, never across blob transfers.
    pub async fn writer(&self) -> TreeWriter<'_> {
        TreeWriter {
            tree: self,
            _guard: self.writer.lock().await,
        }
    }
}

/// Exclusive right to change the tree; reads through it see its own commits.
pub struct TreeWriter<'t> {
    tree: &'t Tree,
    _guard: MutexGuard<'t, ()>,
}

impl TreeWriter<'_> {
    /// The current root (the last commit, possibly this writer's own).
    pub fn root(&self) -> Cid {
        self.tree.root()
    }

    /// Applies `changes` and commits the new root: new blocks are durable first, then the root
    /// pointer is swapped atomically and made durable, then readers see it.
    /// `blocks` are new blocks the changes link to that are not stored yet (small files).
    pub async fn commit(
        &mut self,
        changes: Vec<Change>,
        mut blocks: Vec<(Cid, Bytes)>,
    ) -> Result<Cid, TreeError> {
        if changes.is_empty() {
            return Ok(self.root());
        }
        let started = std::time::Instant::now();
        let source: &BlockStore = &self.tree.blocks;
        let (link, dir_blocks) = apply_changes(source, &self.root(), changes).await?;
        blocks.extend(dir_blocks);
        self.tree.blocks.put_many_durable(blocks).await?;
        self.tree.meta.set_root(&link.cid).await?;
        self.tree.root.send_replace(link.cid);
        self.tree.commits.committed(started.elapsed());
        Ok(link.cid)
    }
}
