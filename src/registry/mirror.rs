//! Mirroring a followed tree: fetching it (or chosen repositories) ahead of requests and
//! checking every blob against its digest, so images stay pullable when all peers are gone.

use std::sync::atomic::{AtomicU64, Ordering};

use cid::Cid;
use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use super::layout;
use super::reference::RepoName;
use super::Registry;
use crate::tree::fetch_dag;

/// Counters of a mirror run, readable while it goes on.
#[derive(Debug, Default)]
pub struct MirrorProgress {
    /// Blocks fetched or found.
    pub blocks: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// Blobs checked against their digests.
    pub blobs_verified: AtomicU64,
    /// Blobs to check.
    pub blobs_total: AtomicU64,
}

/// A snapshot of [`MirrorProgress`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorCounts {
    /// Blocks fetched or found.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs checked against their digests.
    pub blobs_verified: u64,
    /// Blobs to check.
    pub blobs_total: u64,
}

impl MirrorProgress {
    /// The current counts.
    pub fn counts(&self) -> MirrorCounts {
        MirrorCounts {
            blocks: self.blocks.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            blobs_verified: self.blobs_verified.load(Ordering::Relaxed),
            blobs_total: self.blobs_total.load(Ordering::Relaxed),
        }
    }
}

impl Registry {
    /// Fetches the tree at `root` (all of it, or only `repositories` and their blobs) into the
    /// local store and checks every blob. Blobs checked before are not fetched again.
    pub async fn mirror(
        &self,
        root: Cid,
        repositories: Option<&[RepoName]>,
        progress: &MirrorProgress,
    ) -> Result<(), RegistryError> {
        let roots = [root];
        let on_block = |size| {
            progress.blocks.fetch_add(1, Ordering::Relaxed);
            progress.bytes.fetch_add(size, Ordering::Relaxed);
        };
        let skip = |cid: &Cid| self.meta.is_verified(cid).unwrap_or(false);
        let mut digests = Vec::new();
        match repositories {
            None => {
                fetch_dag(
                    self.source(),
                    root,
                    self.options.fetch_concurrency,
                    skip,
                    on_block,
                )
                .await?;
                digests.extend(self.blob_digests(&roots).await?.found);
            }
            Some(repos) => {
                for repo in repos {
                    let Some(dir) = self.link_at(&roots, &layout::repository(repo)).await? else {
                        tracing::warn!(%repo, "repository to mirror is not in the followed tree");
                        continue;
                    };
                    fetch_dag(
                        self.source(),
                        dir.cid,
                        self.options.fetch_concurrency,
                        skip,
                        on_block,
                    )
                    .await?;
                    for dir in [layout::layers(repo), layout::revisions(repo)] {
                        digests.extend(self.linked_digests(&roots, repo, &dir).await?.found);
                    }
                }
            }
        }
        progress
            .blobs_total
            .store(digests.len() as u64, Ordering::Relaxed);
        for digest in digests {
            if let Some(data) = self.link_at(&roots, &layout::blob_data(&digest)).await? {
                if !self.meta.is_verified(&data.cid)? {
                    self.verify_blob(&digest, &data.cid).await?;
                }
            }
            progress.blobs_verified.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
