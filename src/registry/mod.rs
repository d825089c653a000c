//! The registry: blobs, manifests, tags, uploads and referrers, over the storage tree.
//! It knows repositories, paths and digests; nothing of HTTP or of peers.

mod airgap;
mod blobs;
mod check;
mod collect;
mod content;
mod digest;
mod error;
mod inventory;
pub mod layout;
mod listing;
mod manifest;
mod manifests;
mod mirror;
mod reference;
mod streaming;
mod uploads;
mod verify;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, RwLock};

use cid::Cid;

pub use airgap::{
    AirGapError, ExportPlan, ExportReport, ImagePick, ImageSelector, ImportReport, MovedImage,
    CAR_MEDIA_TYPE,
};
pub use blobs::BlobInfo;
pub use check::CheckReport;
pub use collect::{GcOptions, GcReport, PruneReport, UploadsReport, DEFAULT_LAYER_GRACE};
pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::RegistryError;
pub use listing::Page;
pub use manifest::{
    parse as parse_manifest, Descriptor, Manifest, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX,
    OCI_MANIFEST,
};
pub use manifests::{PushedManifest, StoredManifest};
pub use mirror::{MirrorCounts, MirrorProgress};
pub use reference::{ManifestRef, RepoName, Tag};
pub use uploads::{
    UploadLimits, DEFAULT_MAX_UPLOAD_SESSIONS, DEFAULT_MAX_UPLOAD_SESSIONS_PER_CLIENT,
    DEFAULT_UPLOAD_EXPIRY,
};

use crate::metrics::CommitMetrics;
use crate::store::{BlockStore, MetaStore};
use crate::tree::{read_directory, BlockSource, Link, ReadCache, Tree, TreeError};
use content::{parse_link_file, MAX_LINK_FILE};
use uploads::BlobUploads;

/// Default of blocks fetched at once when pulling a DAG from peers.
pub const DEFAULT_FETCH_CONCURRENCY: usize = 32;

/// Default bytes of path lookups and small files (manifests, tag links) cached: about 8,000
/// lookups, or all the manifests of a small registry.
pub const DEFAULT_READ_CACHE_BYTES: usize = 2 * 1024 * 1024;

/// Default largest manifest accepted: 4 MiB, as the reference registry.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Settings of the registry layer.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Largest manifest accepted on push.
    pub max_manifest_bytes: u64,
    /// Whether this node accepts pushes into its own tree (a writer) or only serves followed
    /// trees (a replica).
    pub writable: bool,
    /// Expiry and caps of upload sessions.
    pub uploads: UploadLimits,
    /// Blocks one pull or mirror walk fetches from peers at once (each up to 1 MiB in flight).
    pub fetch_concurrency: usize,
    /// Where commits of the own tree are counted.
    pub commits: CommitMetrics,
    /// Bytes of path lookups and small files (manifests, tag links) kept in memory; 0: none.
    pub read_cache_bytes: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            writable: true,
            uploads: UploadLimits::default(),
            fetch_concurrency: DEFAULT_FETCH_CONCURRENCY,
            commits: CommitMetrics::default(),
            read_cache_bytes: DEFAULT_READ_CACHE_BYTES,
        }
    }
}

/// The local stores of a data directory.
#[derive(Clone)]
pub struct Stores {
    /// Blocks on disk.
    pub blocks: Arc<BlockStore>,
    /// Metadata in sled.
    pub meta: MetaStore,
}

impl Stores {
    /// Opens (creating if needed) the stores of `data_dir`, with the default metadata cache.
    pub fn open(data_dir: &Path) -> Result<Self, RegistryError> {
        Self::open_with_cache(data_dir, crate::store::DEFAULT_META_CACHE_BYTES)
    }

    /// Opens the stores of `data_dir`, caching at most `meta_cache_bytes` of the metadata.
    pub fn open_with_cache(data_dir: &Path, meta_cache_bytes: u64) -> Result<Self, RegistryError> {
        Ok(Stores {
            blocks: Arc::new(BlockStore::open(data_dir.join("blocks"))?),
            meta: MetaStore::open_with_cache(&data_dir.join("meta"), meta_cache_bytes)?,
        })
    }
}

/// One registry: the node's own tree (searched first, if it is a writer) and the roots of the
/// trees it follows, in order.
pub struct Registry {
    tree: Tree,
    uploads: BlobUploads,
    options: RegistryOptions,
    meta: MetaStore,
    /// Where reads get blocks: the local store, and for a networked node, peers.
    source: Arc<dyn BlockSource>,
    /// Lookups and small files of the trees read, which never change under a root CID.
    reads: ReadCache,
    followed: RwLock<Arc<Vec<Cid>>>,
    /// Why this writer refuses writes for now (a second writer of its name), if it does.
    write_refusal: RwLock<Option<String>>,
    /// Followed blobs seen to miss their digests.
    refuted: Arc<verify::Refuted>,
    /// Held by the garbage collection that runs (one at a time).
    collecting: tokio::sync::Mutex<()>,
    /// The report of the last garbage collection.
    last_gc: RwLock<Option<GcReport>>,
}

impl Registry {
    /// Opens the registry of `data_dir` reading only local blocks.
    pub async fn open(data_dir: &Path, options: RegistryOptions) -> Result<Self, RegistryError> {
        let stores = Stores::open(data_dir)?;
        let source = stores.blocks.clone();
        Self::new(&stores, data_dir, options, source).await
    }

    /// A registry over `stores` whose reads fetch blocks through `source`.
    pub async fn new(
        stores: &Stores,
        data_dir: &Path,
        options: RegistryOptions,
        source: Arc<dyn BlockSource>,
    ) -> Result<Self, RegistryError> {
        let tree = Tree::open(stores.blocks.clone(), stores.meta.clone())
            .await?
            .with_commit_metrics(options.commits.clone());
        let uploads = BlobUploads::open(
            data_dir.join("uploads"),
            stores.meta.clone(),
            options.uploads.clone(),
        )?;
        Ok(Registry {
            reads: ReadCache::new(options.read_cache_bytes),
            tree,
            uploads,
            options,
            meta: stores.meta.clone(),
            source,
            followed: RwLock::new(Arc::new(Vec::new())),
            write_refusal: RwLock::new(None),
            refuted: Arc::default(),
            collecting: tokio::sync::Mutex::new(()),
            last_gc: RwLock::new(None),
        })
    }

    /// Replaces the roots of the followed trees (in lookup order).
    pub fn set_followed_roots(&self, roots: Vec<Cid>) {
        *self.followed.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(roots);
    }

    /// The roots a read searches, in order: the own tree (writers), then the followed trees.
    pub fn view(&self) -> Vec<Cid> {
        let followed = self
            .followed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let own = self.options.writable.then(|| self.tree.root());
        own.into_iter().chain(followed.iter().copied()).collect()
    }

    /// Whether writes (pushes, mounts, deletes) would be accepted now: refused on a replica,
    /// and on a writer whose gate is closed (see [`Self::refuse_writes`]). Every write checks
    /// it; callers may ask first to refuse a request before reading its body.
    pub fn ensure_writable(&self) -> Result<(), RegistryError> {
        if !self.options.writable {
            return Err(RegistryError::Unsupported(
                "this node is a read-only replica: push to the writer of the names it follows"
                    .into(),
            ));
        }
        match &*self.write_refusal.read().unwrap_or_else(|p| p.into_inner()) {
            Some(reason) => Err(RegistryError::WritesRefused(reason.clone())),
            None => Ok(()),
        }
    }

    /// Closes the write gate: from now on every write fails with
    /// [`RegistryError::WritesRefused`] carrying `reason`, until the registry is reopened.
    /// Reads go on as before.
    pub fn refuse_writes(&self, reason: impl Into<String>) {
        let mut refusal = self
            .write_refusal
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if refusal.is_none() {
            *refusal = Some(reason.into());
        }
    }

    /// Why the write gate is closed, if it is.
    pub fn write_refusal(&self) -> Option<String> {
        self.write_refusal
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Largest manifest accepted on push.
    pub fn max_manifest_bytes(&self) -> u64 {
        self.options.max_manifest_bytes
    }

    /// Upload sessions open now.
    pub fn open_upload_sessions(&self) -> usize {
        self.uploads.open_sessions()
    }

    /// Upload sessions whose bytes are being imported as they arrive, now.
    pub fn streaming_imports(&self) -> usize {
        self.uploads.streaming_imports()
    }

    /// The storage tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The current root of the storage tree.
    pub fn root(&self) -> Cid {
        self.tree.root()
    }

    /// Where reads get blocks from.
    fn source(&self) -> &dyn BlockSource {
        self.source.as_ref()
    }

    /// The first hit for `path` in `roots`, in order. Meant for content-addressed paths (blob
    /// data, a digest's link in a repository), where any root's answer is the same content: a
    /// root whose blocks cannot be had is skipped, and if no later root has the path, that
    /// failure is the answer (not a false 404).
    async fn link_at(&self, roots: &[Cid], path: &[String]) -> Result<Option<Link>, RegistryError> {
        Ok(self
            .find(roots, path, Unreadable::Skip)
            .await?
            .map(|(_, link)| link))
    }

    /// Like [`Self::link_at`], also telling which of `roots` held the path.
    async fn find(
        &self,
        roots: &[Cid],
        path: &[String],
        unreadable: Unreadable,
    ) -> Result<Option<(usize, Link)>, RegistryError> {
        let mut failure = None;
        for (i, root) in roots.iter().enumerate() {
            match self.reads.resolve(self.source(), root, path).await {
                Ok(Some(link)) => return Ok(Some((i, link))),
                Ok(None) => {}
                Err(e @ TreeError::BlockMissing(_)) if unreadable == Unreadable::Skip => {
                    tracing::warn!(%root, error = %e, "skipping a root whose blocks are unavailable");
                    failure.get_or_insert(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(None),
        }
    }

    /// The digest a link file names, from the first root that has it. Link files that matter
    /// across roots are tags, which differ between trees: if an earlier root cannot be read,
    /// a later root's tag of the same name would silently stand in for an image the earlier
    /// one may hold, so that is an error, not a fall-through.
    async fn digest_at(
        &self,
        roots: &[Cid],
        path: &[String],
    ) -> Result<Option<Digest>, RegistryError> {
        match self.find(roots, path, Unreadable::Fail).await? {
            Some((_, link)) => {
                let bytes = self
                    .reads
                    .small_file(self.source(), &link.cid, MAX_LINK_FILE)
                    .await?;
                Ok(Some(parse_link_file(&link, &bytes)?))
            }
            None => Ok(None),
        }
    }

    /// The entry names of the directory at `path`, merged over all `roots` (sorted, unique);
    /// `None` if no root has the directory.
    async fn list_at(
        &self,
        roots: &[Cid],
        path: &[String],
    ) -> Result<Option<Vec<String>>, RegistryError> {
        let mut merged: Option<BTreeSet<String>> = None;
        for root in roots {
            let Some(link) = self.reads.resolve(self.source(), root, path).await? else {
                continue;
            };
            let entries = read_directory(self.source(), &link.cid).await?;
            merged
                .get_or_insert_with(BTreeSet::new)
                .extend(entries.into_keys());
        }
        Ok(merged.map(|m| m.into_iter().collect()))
    }

    async fn repository_exists(
        &self,
        roots: &[Cid],
        repo: &RepoName,
    ) -> Result<bool, RegistryError> {
        let Some(entries) = self.list_at(roots, &layout::repository(repo)).await? else {
            return Ok(false);
        };
        Ok(entries.iter().any(|e| layout::is_repository_marker(e)))
    }
}

/// What a lookup over several roots does with a root whose blocks cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unreadable {
    /// Go on with the next root (the path names content, the same in every root).
    Skip,
    /// Fail the lookup (the answer could differ between roots).
    Fail,
}
