//! A full consistency check of the tree: every block present, every blob hashing to its digest,
//! every link pointing at content that exists.

use tokio::sync::mpsc;

use super::digest::{Digest, Hasher};
use super::error::RegistryError;
use super::layout;
use super::reference::{RepoName, Tag};
use super::Registry;
use crate::tree::{file_size, read_file_range, TreeError};

/// What a check found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CheckReport {
    /// Repositories seen.
    pub repositories: usize,
    /// Blobs (including manifests) verified against their digests.
    pub blobs: usize,
    /// Bytes hashed.
    pub bytes: u64,
    /// Manifest revisions seen.
    pub manifests: usize,
    /// Tags seen.
    pub tags: usize,
    /// Every inconsistency, one line each. Empty means the store is consistent.
    pub problems: Vec<String>,
}

impl Registry {
    /// Walks the whole tree and verifies it. Reads every block: as slow as reading the store.
    pub async fn check(&self) -> Result<CheckReport, RegistryError> {
        let root = [self.root()];
        let mut report = CheckReport::default();
        let blobs = self.blob_digests(&root).await?;
        report.problems.extend(blobs.odd.into_iter().map(|o| o.0));
        for digest in blobs.found {
            self.check_blob(&root, &digest, &mut report).await?;
        }
        let repos = self.repositories_at(self.root()).await?;
        report.repositories = repos.len();
        for name in repos {
            let Some(repo) = RepoName::parse(&name) else {
                report
                    .problems
                    .push(format!("invalid repository name {name:?}"));
                continue;
            };
            self.check_repository(&root, &repo, &mut report).await?;
        }
        Ok(report)
    }

    async fn check_blob(
        &self,
        root: &[cid::Cid],
        digest: &Digest,
        report: &mut CheckReport,
    ) -> Result<(), RegistryError> {
        let Some(data) = self.link_at(root, &layout::blob_data(digest)).await? else {
            report.problems.push(format!("blob {digest} has no data"));
            return Ok(());
        };
        let size = match file_size(self.source(), &data.cid).await {
            Ok(size) => size,
            Err(e) => {
                report.problems.push(format!("blob {digest}: {e}"));
                return Ok(());
            }
        };
        let (tx, mut rx) = mpsc::channel(4);
        let mut hasher = Hasher::new(digest.algorithm());
        let mut hashed = 0u64;
        let read = read_file_range(self.source(), &data.cid, 0..size, tx);
        let hash = async {
            while let Some(chunk) = rx.recv().await {
                hashed += chunk.len() as u64;
                hasher.update(&chunk);
            }
        };
        let (result, ()) = tokio::join!(read, hash);
        match result {
            Err(TreeError::Store(e)) => return Err(e.into()),
            Err(e) => report.problems.push(format!("blob {digest}: {e}")),
            Ok(()) if hashed != size => report
                .problems
                .push(format!("blob {digest}: {hashed} bytes readable of {size}")),
            Ok(()) => {
                let actual = hasher.finish();
                if &actual != digest {
                    report
                        .problems
                        .push(format!("blob {digest}: content hashes to {actual}"));
                }
            }
        }
        report.blobs += 1;
        report.bytes += hashed;
        Ok(())
    }

    async fn check_repository(
        &self,
        root: &[cid::Cid],
        repo: &RepoName,
        report: &mut CheckReport,
    ) -> Result<(), RegistryError> {
        let mut links = Vec::new();
        for (kind, dir) in [
            ("layer", layout::layers(repo)),
            ("revision", layout::revisions(repo)),
        ] {
            let digests = self.linked_digests(root, repo, &dir).await?;
            report.problems.extend(digests.odd.into_iter().map(|o| o.0));
            links.extend(digests.found.into_iter().map(|d| (kind, d)));
        }
        for (kind, digest) in links {
            let path = if kind == "layer" {
                layout::layer_link(repo, &digest)
            } else {
                report.manifests += 1;
                layout::revision_link(repo, &digest)
            };
            match self.digest_at(root, &path).await {
                Ok(Some(target)) if target == digest => {}
                Ok(other) => report
                    .problems
                    .push(format!("{repo}: {kind} link {digest} names {other:?}")),
                Err(e) => report
                    .problems
                    .push(format!("{repo}: {kind} link {digest}: {e}")),
            }
            if self
                .link_at(root, &layout::blob_data(&digest))
                .await?
                .is_none()
            {
                report
                    .problems
                    .push(format!("{repo}: {kind} {digest} has no blob data"));
            }
        }
        for name in self
            .list_at(root, &layout::tags(repo))
            .await?
            .into_iter()
            .flatten()
        {
            report.tags += 1;
            let Some(tag) = Tag::parse(&name) else {
                report
                    .problems
                    .push(format!("{repo}: invalid tag {name:?}"));
                continue;
            };
            match self.digest_at(root, &layout::tag_current(repo, &tag)).await {
                Ok(Some(digest)) => {
                    if self
                        .link_at(root, &layout::revision_link(repo, &digest))
                        .await?
                        .is_none()
                    {
                        report
                            .problems
                            .push(format!("{repo}:{tag} points at missing manifest {digest}"));
                    }
                }
                Ok(None) => report
                    .problems
                    .push(format!("{repo}:{tag} has no current link")),
                Err(e) => report.problems.push(format!("{repo}:{tag}: {e}")),
            }
        }
        Ok(())
    }
}
