//! Garbage collection. First the own tree is pruned: blob data that no repository links or
//! needs, and layer links no manifest of their repository has referenced for a grace period,
//! leave the tree in one commit. Then `tree` marks every block reachable from the roots that
//! must survive (the own root, every followed root held; there are no pins yet) and `store`
//! sweeps the rest, keeping whatever a write in flight touched (see `store::sweep`).
//!
//! Why a grace period for layer links: a client uploads an image's blobs (each answered 201 and
//! linked into the repository) before it pushes the manifest that references them. A layer link
//! no manifest references may be one of those, so it is removed only after it has been seen
//! unreferenced, and not asked for or linked again, for the grace period (default a day).
//! Blob data no repository links at all is removed at once: every write that links blob data
//! does so under the tree's write lock, in the same commit that stores or checks it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cid::Cid;
use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::error::RegistryError;
use super::layout;
use super::manifest;
use super::reference::RepoName;
use super::Registry;
use crate::store::{BlockSet, StoreError, SweepReport};
use crate::tree::{apply_changes, mark_blocking, Change, MarkReport, TreeWriter};

/// Default time a layer link may stay unreferenced by any manifest of its repository before
/// garbage collection removes it: a day, far longer than any push between a blob and its
/// manifest.
pub const DEFAULT_LAYER_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Followed roots that arrive while a mark runs are marked too, this many rounds at most.
const FOLLOWED_ROUNDS: usize = 3;

/// How a garbage collection runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// Only report what would be removed.
    pub dry_run: bool,
    /// How long a layer link must have been unreferenced before it is removed. Zero removes
    /// unreferenced layer links at once: only safe while no pushes run.
    pub layer_grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            layer_grace: DEFAULT_LAYER_GRACE,
        }
    }
}

/// What pruning the own tree did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Layer links removed: referenced by no manifest of their repository for the grace period.
    pub layer_links_removed: u64,
    /// Layer links referenced by no manifest that wait for their grace period to end.
    pub layer_links_waiting: u64,
    /// Blobs (data directories) removed: no repository links or needs them.
    pub blobs_removed: u64,
    /// The root committed (with `dry_run`: that would be), if the tree changed.
    pub root: Option<String>,
    /// Why the own tree was left as it is, if it was (a replica, writes refused).
    pub skipped: Option<String>,
}

/// Expired upload sessions removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadsReport {
    /// Sessions that received nothing for the upload expiry, removed with their bytes.
    pub sessions_expired: u64,
}

/// What one garbage collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Nothing was changed: the counts say what would have been.
    pub dry_run: bool,
    /// When it started (unix seconds).
    pub started_unix: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Pruning the own tree.
    pub tree: PruneReport,
    /// Marking the blocks to keep.
    pub mark: MarkReport,
    /// Sweeping the others.
    pub sweep: SweepReport,
    /// Expired upload sessions.
    pub uploads: UploadsReport,
    /// Things that made the collection keep more than it might have (unreadable manifests,
    /// odd directory entries), one line each.
    pub notes: Vec<String>,
}

/// The key under which the metadata store remembers since when a layer link is unreferenced.
pub(super) fn layer_key(repo: &RepoName, digest: &Digest) -> String {
    // `@` never occurs in a repository name.
    format!("{repo}@{digest}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A pruned root not committed (a dry run): its new blocks, for the mark to read.
struct Pending {
    root: Cid,
    blocks: HashMap<Cid, Bytes>,
}

impl Registry {
    /// Runs a garbage collection (one at a time: a second call waits for the first).
    pub async fn collect_garbage(&self, options: &GcOptions) -> Result<GcReport, RegistryError> {
        let _one_at_a_time = self.collecting.lock().await;
        let clock = Instant::now();
        let mut report = GcReport {
            dry_run: options.dry_run,
            started_unix: unix_now(),
            ..GcReport::default()
        };
        if !options.dry_run {
            report.uploads.sessions_expired = self.uploads.sweep_expired().await? as u64;
        }

        let blocks = self.tree().blocks().clone();
        let mut writer = self.tree().writer().await;
        let pending = match self.prune_refusal() {
            Some(why) => {
                report.tree.skipped = Some(why);
                None
            }
            None => self.prune(&mut writer, options, &mut report).await?,
        };
        // Under the write lock: every commit after this point notes the blocks it writes or
        // relies on, and every commit before it is in the root read here.
        let collection = blocks.begin_collection()?;
        let own = pending.as_ref().map_or(writer.root(), |p| p.root);
        let followed = self.followed_roots();
        drop(writer);

        let mut walked: HashSet<Cid> = HashSet::new();
        let mut marked = BlockSet::new();
        let mut roots: Vec<Cid> = std::iter::once(own).chain(followed).collect();
        let pending = Arc::new(pending);
        for _ in 0..FOLLOWED_ROUNDS {
            roots.retain(|root| walked.insert(*root));
            if roots.is_empty() {
                break;
            }
            let (store, pending) = (blocks.clone(), pending.clone());
            let mut mark = std::mem::take(&mut report.mark);
            let walk = std::mem::take(&mut roots);
            marked = tokio::task::spawn_blocking(move || {
                let read = |cid: &Cid| -> Result<Option<Bytes>, StoreError> {
                    if let Some(block) = pending.as_ref().as_ref().and_then(|p| p.blocks.get(cid)) {
                        return Ok(Some(block.clone()));
                    }
                    store.peek_blocking(cid)
                };
                mark_blocking(&read, &walk, &mut marked, &mut mark).map(|()| (marked, mark))
            })
            .await
            .map_err(StoreError::from)?
            .map(|(marked, mark)| {
                report.mark = mark;
                marked
            })?;
            // A followed name may have moved on while the mark ran.
            roots = self.followed_roots();
        }

        let dry_run = options.dry_run;
        let (sweep, marked) = tokio::task::spawn_blocking(move || {
            let sweep = collection.sweep_blocking(&marked, dry_run);
            drop(collection);
            sweep.map(|s| (s, marked))
        })
        .await
        .map_err(StoreError::from)??;
        report.sweep = sweep;
        if !dry_run && report.sweep.blocks_freed > 0 {
            self.forget_swept_verifications(marked).await?;
        }
        report.duration_ms = clock.elapsed().as_millis() as u64;
        *self.last_gc.write().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        Ok(report)
    }

    /// The report of the last garbage collection since the registry was opened.
    pub fn last_gc(&self) -> Option<GcReport> {
        self.last_gc
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the own tree must not be pruned now, if it must not.
    fn prune_refusal(&self) -> Option<String> {
        if !self.options.writable {
            return Some("a replica has no tree of its own".into());
        }
        self.write_refusal()
            .map(|why| format!("the tree is left as it is while writes are refused: {why}"))
    }

    fn followed_roots(&self) -> Vec<Cid> {
        self.followed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .to_vec()
    }

    /// Removes from the own tree what no repository needs (see the module comment). Returns the
    /// uncommitted root of a dry run.
    async fn prune(
        &self,
        writer: &mut TreeWriter<'_>,
        options: &GcOptions,
        report: &mut GcReport,
    ) -> Result<Option<Pending>, RegistryError> {
        let root = writer.root();
        let roots = [root];
        let now = unix_now();
        let dry_run = options.dry_run;
        let grace = options.layer_grace.as_secs();
        let mut changes = Vec::new();
        // Blob data any repository links or needs; `None` once something could not be read,
        // which keeps every blob.
        let mut needed: Option<HashSet<Digest>> = Some(HashSet::new());
        let mut waiting_keys = HashSet::new();
        for name in self.repositories_at(root).await? {
            let Some(repo) = RepoName::parse(&name) else {
                report.notes.push(format!(
                    "repository {name:?} has an invalid name: every blob is kept"
                ));
                needed = None;
                continue;
            };
            let layers = self
                .linked_digests(&roots, &repo, &layout::layers(&repo))
                .await?;
            let revisions = self
                .linked_digests(&roots, &repo, &layout::revisions(&repo))
                .await?;
            if !layers.odd.is_empty() || !revisions.odd.is_empty() {
                report.notes.extend(
                    layers
                        .odd
                        .iter()
                        .chain(&revisions.odd)
                        .map(|o| format!("{} (kept)", o.0)),
                );
                needed = None;
            }
            // What the repository's manifests reference; `None` if one could not be read.
            let mut referenced: Option<HashSet<Digest>> = Some(HashSet::new());
            for digest in &revisions.found {
                let parsed = match self.read_manifest(&roots, digest).await {
                    Ok(bytes) => manifest::parse(&bytes, None),
                    Err(e) => Err(e),
                };
                match parsed {
                    Ok(parsed) => {
                        if let Some(set) = &mut referenced {
                            set.extend(parsed.blobs.into_iter().map(|r| r.digest));
                            set.extend(parsed.manifests.into_iter().map(|r| r.digest));
                        }
                    }
                    Err(e) => {
                        report.notes.push(format!(
                            "{repo}: manifest {digest} cannot be read ({e}): its layers are kept"
                        ));
                        referenced = None;
                    }
                }
            }
            if let Some(needed) = &mut needed {
                needed.extend(revisions.found.iter().cloned());
                needed.extend(referenced.iter().flatten().cloned());
            }
            for digest in layers.found {
                let key = layer_key(&repo, &digest);
                if referenced.as_ref().is_none_or(|r| r.contains(&digest)) {
                    if !dry_run {
                        self.meta.clear_unreferenced(&key)?;
                    }
                    if let Some(needed) = &mut needed {
                        needed.insert(digest);
                    }
                    continue;
                }
                let since = self.meta.unreferenced_since(&key)?;
                let expired = match since {
                    Some(since) => now.saturating_sub(since) >= grace,
                    None => grace == 0,
                };
                if expired {
                    report.tree.layer_links_removed += 1;
                    changes.push(Change::Remove {
                        path: layout::layer_link(&repo, &digest),
                    });
                    continue;
                }
                report.tree.layer_links_waiting += 1;
                if since.is_none() && !dry_run {
                    self.meta.set_unreferenced_since(&key, now)?;
                }
                waiting_keys.insert(key);
                if let Some(needed) = &mut needed {
                    needed.insert(digest);
                }
            }
        }
        if let Some(needed) = &needed {
            let blobs = self.blob_digests(&roots).await?;
            report
                .notes
                .extend(blobs.odd.into_iter().map(|o| format!("{} (kept)", o.0)));
            for digest in blobs.found {
                if !needed.contains(&digest) {
                    report.tree.blobs_removed += 1;
                    changes.push(Change::Remove {
                        path: layout::blob_dir(&digest),
                    });
                }
            }
        }
        if !dry_run {
            // Links that are gone, or in use again, need no clock.
            for key in self.meta.unreferenced_keys()? {
                if !waiting_keys.contains(&key) {
                    self.meta.clear_unreferenced(&key)?;
                }
            }
        }
        if changes.is_empty() {
            return Ok(None);
        }
        if dry_run {
            let (link, blocks) =
                apply_changes(self.tree().blocks().as_ref(), &root, changes).await?;
            report.tree.root = Some(link.cid.to_string());
            return Ok(Some(Pending {
                root: link.cid,
                blocks: blocks.into_iter().collect(),
            }));
        }
        let new_root = writer.commit(changes, Vec::new()).await?;
        tracing::info!(
            %new_root,
            layer_links = report.tree.layer_links_removed,
            blobs = report.tree.blobs_removed,
            "garbage collection pruned the tree"
        );
        report.tree.root = Some(new_root.to_string());
        Ok(None)
    }

    /// Forgets the verification of file DAGs whose root block the sweep deleted, so that a
    /// tree bringing them back gets them fetched and checked again rather than skipped.
    async fn forget_swept_verifications(&self, marked: BlockSet) -> Result<(), RegistryError> {
        let meta = self.meta.clone();
        let blocks = self.tree().blocks().clone();
        tokio::task::spawn_blocking(move || {
            for cid in meta.verified_cids()? {
                if !marked.contains(&cid) && !blocks.has_blocking(&cid) {
                    meta.forget_verified(&cid)?;
                }
            }
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(StoreError::from)??;
        Ok(())
    }
}
