//! Import: a CAR read as a stream into a staging area (each block checked against its CID),
//! its root walked as a registry tree using local blocks only (every blob hashed against its
//! digest, every manifest validated as a push would be), and only then linked into the own
//! tree in one commit. Any failure discards the staging area: nothing is imported.
//!
//! The CAR's own directory blocks are moved into the store with the rest but are not linked
//! (the own tree gets new directories): garbage collection removes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

use async_trait::async_trait;
use bytes::{Buf, Bytes};
use cid::Cid;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{AirGapError, MovedImage};
use crate::car::CarReader;
use crate::registry::content::{link_file, read_link_file};
use crate::registry::digest::{Algorithm, Digest, Hasher};
use crate::registry::error::RegistryError;
use crate::registry::layout;
use crate::registry::manifest;
use crate::registry::reference::{RepoName, Tag};
use crate::registry::Registry;
use crate::store::{BlockStore, StagedBlocks, StoreError};
use crate::tree::{
    file_size, read_directory, read_file_range, read_small_file, resolve, BlockSource, Change,
    Link, TreeError, DAG_PB, RAW,
};

/// The media type of a CAR file (version 1).
pub const CAR_MEDIA_TYPE: &str = "application/vnd.ipld.car";

/// What an import linked into the own tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// The root CID the CAR names (the exported tree).
    pub root: String,
    /// The new root of the own tree.
    pub new_root: String,
    /// The tags imported, with the manifests they point at.
    pub tags: Vec<MovedImage>,
    /// Repositories imported.
    pub repositories: u64,
    /// Manifests (revisions) imported, children of indexes included.
    pub manifests: u64,
    /// Blobs (layers, configs and manifests) verified against their digests.
    pub blobs: u64,
    /// Blocks in the CAR.
    pub blocks: u64,
    /// Blocks this node did not hold before.
    pub blocks_new: u64,
    /// Length of the CAR in bytes.
    pub bytes: u64,
}

/// A CAR received into a staging area.
struct Received {
    staged: StagedBlocks,
    root: Cid,
    blocks: u64,
    blocks_new: u64,
    bytes: u64,
}

/// The tree changes a verified CAR makes, and the link files they need.
struct Verified {
    changes: Vec<Change>,
    links: Vec<(Cid, Bytes)>,
    tags: Vec<MovedImage>,
    repositories: u64,
    manifests: u64,
    blobs: u64,
}

/// Reads the staging area first, then the store: never the network.
struct StagedOrStored<'a> {
    staged: &'a BlockStore,
    stored: &'a BlockStore,
}

#[async_trait]
impl BlockSource for StagedOrStored<'_> {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        if let Some(bytes) = self.staged.get(cid).await? {
            return Ok(bytes);
        }
        self.stored.block(cid).await
    }
}

/// A blocking reader over chunks arriving on a channel (a request body).
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

fn refused(why: impl Into<String>) -> AirGapError {
    AirGapError::Refused(why.into())
}

/// What a tree error while walking the CAR's tree means for the import.
fn tree_refusal(e: TreeError) -> AirGapError {
    match e {
        TreeError::BlockMissing(cid) => refused(format!(
            "block {cid} is linked from the CAR's tree but is neither in the CAR nor on this node"
        )),
        TreeError::Decode(why) => refused(format!("malformed block: {why}")),
        TreeError::WrongKind(why) => refused(why),
        TreeError::TooLarge { size, limit } => refused(format!(
            "a file of {size} bytes exceeds the limit of {limit} bytes"
        )),
        e @ TreeError::Store(_) => e.into(),
    }
}

fn registry_refusal(e: RegistryError) -> AirGapError {
    match e {
        RegistryError::Tree(e) => tree_refusal(e),
        RegistryError::Store(e) => AirGapError::Registry(e.into()),
        RegistryError::Io { .. } => AirGapError::Registry(e),
        other => refused(other.to_string()),
    }
}

/// Reads the CAR into a staging area of `store`, checking each block against its CID.
/// Blocking.
fn receive(store: &BlockStore, input: impl Read) -> Result<Received, AirGapError> {
    let staged = store.staging_blocking()?;
    let mut reader = CarReader::new(input)?;
    let root = match reader.roots() {
        [root] => *root,
        roots => {
            return Err(refused(format!(
                "the CAR names {} roots; an export names exactly one, its tree",
                roots.len()
            )))
        }
    };
    if root.codec() != DAG_PB {
        return Err(refused(format!(
            "the CAR's root {root} is not a dag-pb directory"
        )));
    }
    let (mut blocks, mut blocks_new) = (0, 0);
    while let Some((cid, data)) = reader.next_block()? {
        if cid.codec() != DAG_PB && cid.codec() != RAW {
            return Err(refused(format!(
                "block {cid} has codec 0x{:x}; an export holds only dag-pb and raw blocks",
                cid.codec()
            )));
        }
        if !store.has_blocking(&cid) {
            blocks_new += 1;
        }
        staged.store().put_blocking(&cid, &data)?;
        blocks += 1;
    }
    Ok(Received {
        staged,
        root,
        blocks,
        blocks_new,
        bytes: reader.offset(),
    })
}

impl Registry {
    /// Imports a CAR arriving as a stream of chunks (an admin request's body).
    pub async fn import_car_stream<S>(&self, body: S) -> Result<ImportReport, AirGapError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(8);
        let pump = tokio::spawn(async move {
            let mut body = Box::pin(body);
            while let Some(chunk) = body.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        let result = self
            .import_car(ChannelReader {
                rx,
                current: Bytes::new(),
            })
            .await;
        pump.abort();
        result
    }

    /// Imports the CAR `input` (read on a blocking thread): verifies everything, then links
    /// its images into the own tree in one commit. Refused on a node that takes no writes.
    pub async fn import_car<R: Read + Send + 'static>(
        &self,
        input: R,
    ) -> Result<ImportReport, AirGapError> {
        self.ensure_writable()?;
        let store = self.tree().blocks().clone();
        let received = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || receive(&store, input))
                .await
                .map_err(StoreError::from)??
        };
        let verified = {
            let source = StagedOrStored {
                staged: received.staged.store(),
                stored: &store,
            };
            self.verify_import(&source, received.root).await
        };
        let Received {
            staged,
            root,
            blocks,
            blocks_new,
            bytes,
        } = received;
        let verified = match verified {
            Ok(verified) => verified,
            Err(e) => {
                discard(staged).await;
                return Err(e);
            }
        };
        let mut writer = self.tree().writer().await;
        if let Err(e) = self.ensure_writable() {
            drop(writer);
            discard(staged).await;
            return Err(e.into());
        }
        // Held until the commit below links the blocks: a garbage collection keeps them.
        let session = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || staged.commit_blocking(&store))
                .await
                .map_err(StoreError::from)??
        };
        let new_root = writer.commit(verified.changes, verified.links).await?;
        drop(session);
        tracing::info!(%root, %new_root, blocks, blocks_new, bytes, "imported a CAR");
        Ok(ImportReport {
            root: root.to_string(),
            new_root: new_root.to_string(),
            tags: verified.tags,
            repositories: verified.repositories,
            manifests: verified.manifests,
            blobs: verified.blobs,
            blocks,
            blocks_new,
            bytes,
        })
    }

    /// Walks the CAR's tree at `root` and checks it holds valid images; returns the changes
    /// that link them into the own tree.
    async fn verify_import(
        &self,
        source: &dyn BlockSource,
        root: Cid,
    ) -> Result<Verified, AirGapError> {
        let Some(repositories) = resolve(source, &root, &layout::repositories())
            .await
            .map_err(tree_refusal)?
        else {
            return Err(refused(format!(
                "its root {root} holds no {} directory: not an export of a registry",
                layout::repositories().join("/")
            )));
        };
        let names = repository_names(source, repositories.cid).await?;
        if names.is_empty() {
            return Err(refused("its tree holds no repository"));
        }
        let mut repos = Vec::new();
        let mut data: BTreeMap<Digest, Link> = BTreeMap::new();
        for name in names {
            let repo = RepoName::parse(&name)
                .ok_or_else(|| refused(format!("{name:?} is not a repository name")))?;
            let revisions = digests_under(source, &root, &layout::revisions(&repo)).await?;
            let layers = digests_under(source, &root, &layout::layers(&repo)).await?;
            for digest in revisions.iter().chain(&layers) {
                if data.contains_key(digest) {
                    continue;
                }
                let link = resolve(source, &root, &layout::blob_data(digest))
                    .await
                    .map_err(tree_refusal)?
                    .ok_or_else(|| {
                        refused(format!(
                            "{repo} links {digest}, whose data is not in the CAR"
                        ))
                    })?;
                data.insert(digest.clone(), link);
            }
            let mut tags = Vec::new();
            if let Some(dir) = resolve(source, &root, &layout::tags(&repo))
                .await
                .map_err(tree_refusal)?
            {
                for name in read_directory(source, &dir.cid)
                    .await
                    .map_err(tree_refusal)?
                    .into_keys()
                {
                    let tag = Tag::parse(&name)
                        .ok_or_else(|| refused(format!("{repo}: {name:?} is not a tag")))?;
                    let current = resolve(source, &root, &layout::tag_current(&repo, &tag))
                        .await
                        .map_err(tree_refusal)?
                        .ok_or_else(|| refused(format!("{repo}:{tag} has no current link")))?;
                    let digest = read_link_file(source, &current)
                        .await
                        .map_err(registry_refusal)?;
                    if !revisions.contains(&digest) {
                        return Err(refused(format!(
                            "{repo}:{tag} points at {digest}, which is not a manifest of {repo} in the CAR"
                        )));
                    }
                    tags.push((tag, digest));
                }
            }
            repos.push((repo, revisions, layers, tags));
        }

        // Every blob, manifests included, hashed against its digest from local blocks.
        let mut sizes = HashMap::new();
        for (digest, link) in &data {
            let size = verify_blob(source, digest, link).await?;
            sizes.insert(digest.clone(), size);
        }

        let mut changes = Vec::new();
        let mut links = BTreeMap::new();
        let mut link = |path: Vec<String>, digest: &Digest| {
            let (link, block) = link_file(digest);
            links.insert(block.0, block.1);
            changes.push(Change::Put { path, link });
        };
        let mut report_tags = Vec::new();
        let mut manifests = 0;
        for (repo, revisions, layers, tags) in &repos {
            for digest in revisions {
                let bytes = read_small_file(source, &data[digest].cid, self.max_manifest_bytes())
                    .await
                    .map_err(|e| match e {
                        TreeError::TooLarge { size, limit } => refused(format!(
                            "manifest {digest} of {repo} is {size} bytes, over this registry's limit of {limit} (registry.max_manifest_bytes)"
                        )),
                        e => tree_refusal(e),
                    })?;
                let parsed = manifest::parse(&bytes, None)
                    .map_err(|e| refused(format!("manifest {digest} of {repo}: {e}")))?;
                let needed = parsed
                    .blobs
                    .iter()
                    .map(|r| (r, layers.contains(&r.digest), "blob"))
                    .chain(
                        parsed
                            .manifests
                            .iter()
                            .map(|r| (r, revisions.contains(&r.digest), "manifest")),
                    );
                for (referenced, linked, kind) in needed {
                    if !linked {
                        return Err(refused(format!(
                            "manifest {digest} of {repo} references {kind} {}, which the CAR does not hold in {repo}",
                            referenced.digest
                        )));
                    }
                    let held = sizes.get(&referenced.digest).copied().unwrap_or_default();
                    if held != referenced.size {
                        return Err(refused(format!(
                            "manifest {digest} of {repo} declares {} bytes for {}, the CAR holds {held}",
                            referenced.size, referenced.digest
                        )));
                    }
                }
                link(layout::revision_link(repo, digest), digest);
                if let Some(subject) = &parsed.subject {
                    link(layout::referrer_link(repo, subject, digest), digest);
                }
                manifests += 1;
            }
            for digest in layers {
                link(layout::layer_link(repo, digest), digest);
            }
            for (tag, digest) in tags {
                link(layout::tag_current(repo, tag), digest);
                link(layout::tag_index(repo, tag, digest), digest);
                report_tags.push(MovedImage {
                    repository: repo.to_string(),
                    tag: Some(tag.to_string()),
                    digest: digest.to_string(),
                });
            }
        }
        for (digest, link) in &data {
            changes.push(Change::Put {
                path: layout::blob_data(digest),
                link: *link,
            });
        }
        Ok(Verified {
            changes,
            links: links.into_iter().collect(),
            tags: report_tags,
            repositories: repos.len() as u64,
            manifests,
            blobs: data.len() as u64,
        })
    }
}

async fn discard(staged: StagedBlocks) {
    let _ = tokio::task::spawn_blocking(move || staged.discard_blocking()).await;
}

/// The repository names under the `repositories` directory `dir` (nested names included).
async fn repository_names(source: &dyn BlockSource, dir: Cid) -> Result<Vec<String>, AirGapError> {
    let mut names = Vec::new();
    let mut pending = vec![(dir, String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let entries = read_directory(source, &dir).await.map_err(tree_refusal)?;
        if entries.keys().any(|e| layout::is_repository_marker(e)) && !prefix.is_empty() {
            names.push(prefix.clone());
        }
        for (name, link) in entries {
            if name.starts_with('_') || link.cid.codec() != DAG_PB {
                continue;
            }
            let full = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            pending.push((link.cid, full));
        }
    }
    names.sort();
    Ok(names)
}

/// The digests linked under `dir` (`<alg>/<hex>/link`), refusing entries that name none.
async fn digests_under(
    source: &dyn BlockSource,
    root: &Cid,
    dir: &[String],
) -> Result<BTreeSet<Digest>, AirGapError> {
    let mut digests = BTreeSet::new();
    let Some(link) = resolve(source, root, dir).await.map_err(tree_refusal)? else {
        return Ok(digests);
    };
    for alg in read_directory(source, &link.cid)
        .await
        .map_err(tree_refusal)?
        .into_keys()
    {
        let algorithm = Algorithm::from_name(&alg).ok_or_else(|| {
            refused(format!(
                "unknown digest algorithm {alg:?} in {}",
                dir.join("/")
            ))
        })?;
        let alg_dir = layout::algorithm_dir(dir, algorithm);
        let Some(alg_link) = resolve(source, root, &alg_dir)
            .await
            .map_err(tree_refusal)?
        else {
            continue;
        };
        for hex in read_directory(source, &alg_link.cid)
            .await
            .map_err(tree_refusal)?
            .into_keys()
        {
            let digest = Digest::from_parts(algorithm, &hex)
                .map_err(|e| refused(format!("{}/{alg}/{hex}: {e}", dir.join("/"))))?;
            digests.insert(digest);
        }
    }
    Ok(digests)
}

/// Hashes the file `link` holds and checks it against `digest`; returns its size.
async fn verify_blob(
    source: &dyn BlockSource,
    digest: &Digest,
    link: &Link,
) -> Result<u64, AirGapError> {
    let size = file_size(source, &link.cid).await.map_err(tree_refusal)?;
    let (tx, mut rx) = mpsc::channel(4);
    let mut hasher = Hasher::new(digest.algorithm());
    let mut hashed = 0u64;
    let read = read_file_range(source, &link.cid, 0..size, tx);
    let hash = async {
        while let Some(chunk) = rx.recv().await {
            hashed += chunk.len() as u64;
            hasher.update(&chunk);
        }
    };
    let (result, ()) = tokio::join!(read, hash);
    result.map_err(tree_refusal)?;
    if hashed != size {
        return Err(refused(format!(
            "blob {digest}: {hashed} bytes readable of the {size} its file declares"
        )));
    }
    let actual = hasher.finish();
    if &actual != digest {
        return Err(refused(format!(
            "blob {digest} in the CAR hashes to {actual}"
        )));
    }
    Ok(size)
}
