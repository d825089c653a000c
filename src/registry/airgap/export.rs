//! Export: a new tree in the registry's layout holding only the chosen images (their tags,
//! manifests, child manifests of indexes, layer and revision links, blob data), written as a
//! CARv1 whose root is that tree's root. The tree is never committed: its new blocks (a few
//! directories and link files) live in memory and go straight into the CAR.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{AirGapError, ImagePick, ImageSelector, MovedImage};
use crate::car::{encode_header, section_prefix};
use crate::registry::content::link_file;
use crate::registry::digest::Digest;
use crate::registry::error::RegistryError;
use crate::registry::layout;
use crate::registry::manifest;
use crate::registry::reference::{ManifestRef, RepoName, Tag};
use crate::registry::Registry;
use crate::tree::{
    apply_changes, encode_directory, BlockSource, Change, PbNode, TreeError, DAG_PB,
};

/// Blocks read ahead while writing (a replica may fetch them from peers).
const READ_AHEAD: usize = 8;

/// What an export holds. Sent before the CAR's bytes, so a reader knows the size to expect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReport {
    /// The root CID of the exported tree (the CAR's only root).
    pub root: String,
    /// The images, as selected and resolved.
    pub images: Vec<MovedImage>,
    /// Blocks in the CAR, each once.
    pub blocks: u64,
    /// Length of the CAR in bytes.
    pub bytes: u64,
}

/// An export ready to be written: the tree's root, every block in depth-first order, and the
/// blocks that are not in the store (the export tree's own) or were read while planning.
pub struct ExportPlan {
    root: Cid,
    images: Vec<MovedImage>,
    /// Each block once, parents before children, with its length (for leaves, the length
    /// its parent's link declares: they are read only when written).
    order: Vec<(Cid, u64)>,
    /// The dag-pb blocks: directories and file nodes, metadata-sized.
    held: HashMap<Cid, Bytes>,
    bytes: u64,
}

/// Reads blocks of the export tree from memory first, then from the registry's source.
struct HeldThenSource<'a> {
    held: &'a HashMap<Cid, Bytes>,
    source: &'a dyn BlockSource,
}

#[async_trait]
impl BlockSource for HeldThenSource<'_> {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        match self.held.get(cid) {
            Some(bytes) => Ok(bytes.clone()),
            None => self.source.block(cid).await,
        }
    }
}

/// The changes that build the export tree from an empty one, each path once.
#[derive(Default)]
struct ExportTree {
    changes: Vec<Change>,
    blobs: HashSet<Digest>,
    links: HashMap<Cid, Bytes>,
}

impl ExportTree {
    fn link(&mut self, path: Vec<String>, digest: &Digest) {
        let (link, (cid, bytes)) = link_file(digest);
        self.links.insert(cid, bytes);
        self.changes.push(Change::Put { path, link });
    }
}

impl Registry {
    /// Resolves `selectors` in what this node serves (its own tree, then followed trees) and
    /// plans a CAR of those images.
    pub async fn plan_export(
        &self,
        selectors: &[ImageSelector],
    ) -> Result<ExportPlan, AirGapError> {
        let view = self.view();
        let mut images: Vec<(RepoName, Option<Tag>, Digest)> = Vec::new();
        for selector in selectors {
            let repo = &selector.repository;
            let wrap = |error| AirGapError::Image {
                image: selector.to_string(),
                error,
            };
            let view = &view;
            let resolve = |tag: Tag| async move {
                let reference = ManifestRef::Tag(tag.clone());
                let digest = self.resolve_manifest(view, repo, &reference).await?;
                Ok::<_, RegistryError>((repo.clone(), Some(tag), digest))
            };
            match &selector.pick {
                ImagePick::EveryTag => {
                    let tags = self
                        .list_at(view, &layout::tags(repo))
                        .await
                        .map_err(wrap)?
                        .unwrap_or_default();
                    let tags: Vec<Tag> = tags.iter().filter_map(|t| Tag::parse(t)).collect();
                    if tags.is_empty() {
                        return Err(wrap(RegistryError::NameUnknown(format!(
                            "{repo} (no tagged images)"
                        ))));
                    }
                    for tag in tags {
                        images.push(resolve(tag).await.map_err(wrap)?);
                    }
                }
                ImagePick::Tag(tag) => images.push(resolve(tag.clone()).await.map_err(wrap)?),
                ImagePick::Digest(digest) => {
                    let reference = ManifestRef::Digest(digest.clone());
                    let digest = self
                        .resolve_manifest(view, repo, &reference)
                        .await
                        .map_err(wrap)?;
                    images.push((repo.clone(), None, digest));
                }
            }
        }

        let mut tree = ExportTree::default();
        let mut done = HashSet::new();
        for (repo, tag, digest) in &images {
            let label = match tag {
                Some(tag) => format!("{repo}:{tag}"),
                None => format!("{repo}@{digest}"),
            };
            self.add_image(&view, repo, digest, &mut tree, &mut done)
                .await
                .map_err(|error| AirGapError::Image {
                    image: label,
                    error,
                })?;
            if let Some(tag) = tag {
                tree.link(layout::tag_current(repo, tag), digest);
                tree.link(layout::tag_index(repo, tag, digest), digest);
            }
        }

        let (empty, empty_blocks) = encode_directory(&BTreeMap::new())?;
        let mut held: HashMap<Cid, Bytes> = empty_blocks.into_iter().collect();
        held.extend(tree.links);
        let (root, dir_blocks) = {
            let overlay = HeldThenSource {
                held: &held,
                source: self.source(),
            };
            apply_changes(&overlay, &empty.cid, tree.changes).await?
        };
        held.extend(dir_blocks);

        // Depth-first, parents first: a reader can check each block's place as it comes.
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        let mut planned = HashMap::new();
        let mut pending = vec![(root.cid, root.tsize)];
        while let Some((cid, declared)) = pending.pop() {
            if !seen.insert(cid) {
                continue;
            }
            if cid.codec() != DAG_PB {
                order.push((cid, declared));
                continue;
            }
            let bytes = match held.get(&cid) {
                Some(bytes) => bytes.clone(),
                None => self.source().block(&cid).await?,
            };
            let node = PbNode::decode(&bytes)?;
            order.push((cid, bytes.len() as u64));
            pending.extend(node.links.iter().rev().map(|l| (l.cid, l.tsize)));
            planned.insert(cid, bytes);
        }
        let bytes = encode_header(&[root.cid]).len() as u64
            + order
                .iter()
                .map(|(cid, len)| section_prefix(cid, *len as usize).len() as u64 + len)
                .sum::<u64>();
        Ok(ExportPlan {
            root: root.cid,
            images: images
                .into_iter()
                .map(|(repo, tag, digest)| MovedImage {
                    repository: repo.to_string(),
                    tag: tag.map(|t| t.to_string()),
                    digest: digest.to_string(),
                })
                .collect(),
            order,
            held: planned,
            bytes,
        })
    }

    /// Adds a manifest, its blobs and (for an index) its child manifests with theirs.
    async fn add_image(
        &self,
        view: &[Cid],
        repo: &RepoName,
        digest: &Digest,
        tree: &mut ExportTree,
        done: &mut HashSet<(RepoName, Digest)>,
    ) -> Result<(), RegistryError> {
        let mut pending = vec![digest.clone()];
        while let Some(digest) = pending.pop() {
            if !done.insert((repo.clone(), digest.clone())) {
                continue;
            }
            self.link_at(view, &layout::revision_link(repo, &digest))
                .await?
                .ok_or_else(|| RegistryError::ManifestUnknown(digest.to_string()))?;
            let bytes = self.read_manifest(view, &digest).await?;
            let parsed = manifest::parse(&bytes, None)?;
            self.add_blob(view, &digest, tree).await?;
            tree.link(layout::revision_link(repo, &digest), &digest);
            if let Some(subject) = &parsed.subject {
                tree.link(layout::referrer_link(repo, subject, &digest), &digest);
            }
            for blob in &parsed.blobs {
                self.add_blob(view, &blob.digest, tree).await?;
                tree.link(layout::layer_link(repo, &blob.digest), &blob.digest);
            }
            pending.extend(parsed.manifests.into_iter().map(|m| m.digest));
        }
        Ok(())
    }

    async fn add_blob(
        &self,
        view: &[Cid],
        digest: &Digest,
        tree: &mut ExportTree,
    ) -> Result<(), RegistryError> {
        if !tree.blobs.insert(digest.clone()) {
            return Ok(());
        }
        let link = self
            .link_at(view, &layout::blob_data(digest))
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))?;
        tree.changes.push(Change::Put {
            path: layout::blob_data(digest),
            link,
        });
        Ok(())
    }
}

impl ExportPlan {
    /// The root of the exported tree.
    pub fn root(&self) -> Cid {
        self.root
    }

    /// What the CAR will hold.
    pub fn report(&self) -> ExportReport {
        ExportReport {
            root: self.root.to_string(),
            images: self.images.clone(),
            blocks: self.order.len() as u64,
            bytes: self.bytes,
        }
    }

    /// Writes the CAR as chunks into `out`, reading blobs' blocks through `registry` (a few
    /// ahead). Returns what was written; fails if `out` is closed before the end.
    pub async fn write(
        self,
        registry: &Registry,
        out: mpsc::Sender<Bytes>,
    ) -> Result<ExportReport, AirGapError> {
        let mut report = self.report();
        let header = Bytes::from(encode_header(&[self.root]));
        let mut written = header.len() as u64;
        send(&out, header).await?;
        let held = &self.held;
        let source = registry.source();
        let cids: Vec<Cid> = self.order.iter().map(|(cid, _)| *cid).collect();
        let mut blocks = stream::iter(cids)
            .map(|cid| fetch(held, source, cid))
            .buffered(READ_AHEAD);
        let mut count = 0;
        while let Some((cid, bytes)) = blocks.try_next().await? {
            let prefix = Bytes::from(section_prefix(&cid, bytes.len()));
            written += (prefix.len() + bytes.len()) as u64;
            send(&out, prefix).await?;
            send(&out, bytes).await?;
            count += 1;
        }
        report.blocks = count;
        report.bytes = written;
        Ok(report)
    }
}

async fn send(out: &mpsc::Sender<Bytes>, chunk: Bytes) -> Result<(), AirGapError> {
    out.send(chunk).await.map_err(|_| AirGapError::Abandoned)
}

/// A block of the export: held in memory, or read through the registry's source.
async fn fetch(
    held: &HashMap<Cid, Bytes>,
    source: &dyn BlockSource,
    cid: Cid,
) -> Result<(Cid, Bytes), TreeError> {
    match held.get(&cid) {
        Some(bytes) => Ok((cid, bytes.clone())),
        None => source.block(&cid).await.map(|bytes| (cid, bytes)),
    }
}
