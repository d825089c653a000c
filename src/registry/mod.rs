//! The registry: blobs, manifests, tags, uploads and referrers, over the storage tree.
//! It knows repositories, paths and digests; nothing of HTTP or of peers.

mod blobs;
mod check;
mod content;
mod digest;
mod error;
pub mod layout;
mod listing;
mod manifest;
mod manifests;
mod reference;
mod uploads;

use std::path::Path;
use std::sync::Arc;

use cid::Cid;

pub use blobs::BlobInfo;
pub use check::CheckReport;
pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::RegistryError;
pub use listing::Page;
pub use manifest::{Descriptor, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
pub use manifests::{PushedManifest, StoredManifest};
pub use reference::{ManifestRef, RepoName, Tag};

use crate::store::{BlockStore, MetaStore};
use crate::tree::{read_directory, resolve, Link, Tree};
use content::read_link_file;
use uploads::BlobUploads;

/// Default largest manifest accepted: 4 MiB, as the reference registry.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Settings of the registry layer.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Largest manifest accepted on push.
    pub max_manifest_bytes: u64,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
        }
    }
}

/// One registry over one storage tree.
pub struct Registry {
    tree: Tree,
    uploads: BlobUploads,
    options: RegistryOptions,
}

impl Registry {
    /// Opens the registry stored in `data_dir` (blocks, metadata and upload sessions).
    pub async fn open(data_dir: &Path, options: RegistryOptions) -> Result<Self, RegistryError> {
        let blocks = Arc::new(BlockStore::open(data_dir.join("blocks"))?);
        let meta = MetaStore::open(&data_dir.join("meta"))?;
        let tree = Tree::open(blocks, meta.clone()).await?;
        let uploads = BlobUploads::open(data_dir.join("uploads"), meta)?;
        Ok(Registry {
            tree,
            uploads,
            options,
        })
    }

    /// Largest manifest accepted on push.
    pub fn max_manifest_bytes(&self) -> u64 {
        self.options.max_manifest_bytes
    }

    /// The storage tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The current root of the storage tree.
    pub fn root(&self) -> Cid {
        self.tree.root()
    }

    fn blocks(&self) -> &BlockStore {
        self.tree.blocks()
    }

    async fn link_at(&self, root: &Cid, path: &[String]) -> Result<Option<Link>, RegistryError> {
        Ok(resolve(self.blocks(), root, path).await?)
    }

    async fn digest_at(
        &self,
        root: &Cid,
        path: &[String],
    ) -> Result<Option<Digest>, RegistryError> {
        match self.link_at(root, path).await? {
            Some(link) => Ok(Some(read_link_file(self.blocks(), &link).await?)),
            None => Ok(None),
        }
    }

    async fn list_at(
        &self,
        root: &Cid,
        path: &[String],
    ) -> Result<Option<Vec<String>>, RegistryError> {
        match self.link_at(root, path).await? {
            Some(link) => Ok(Some(
                read_directory(self.blocks(), &link.cid)
                    .await?
                    .into_keys()
                    .collect(),
            )),
            None => Ok(None),
        }
    }

    async fn repository_exists(&self, root: &Cid, repo: &RepoName) -> Result<bool, RegistryError> {
        let Some(entries) = self.list_at(root, &layout::repository(repo)).await? else {
            return Ok(false);
        };
        Ok(entries.iter().any(|e| layout::is_repository_marker(e)))
    }
}
