//! What a tree holds, read through the layout: the digests whose blob data is stored, and the
//! digests linked into a repository. Used by check, mirror and garbage collection, so that none
//! of them builds a path by hand.

use cid::Cid;

use super::digest::{Algorithm, Digest};
use super::error::RegistryError;
use super::layout;
use super::reference::RepoName;
use super::Registry;

/// An entry of a listing that names no digest: what a check reports, and what a garbage
/// collection leaves alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OddEntry(pub String);

/// Digests found under a directory, and entries that named none.
#[derive(Debug, Default)]
pub(super) struct Digests {
    /// The digests, in listing order.
    pub found: Vec<Digest>,
    /// What was not a digest (an unknown algorithm, a malformed hex string).
    pub odd: Vec<OddEntry>,
}

impl Registry {
    /// The digests whose data is stored under `blobs/` in any of `roots`.
    pub(super) async fn blob_digests(&self, roots: &[Cid]) -> Result<Digests, RegistryError> {
        let mut digests = Digests::default();
        let blobs = layout::blobs();
        for alg in self.list_at(roots, &blobs).await?.into_iter().flatten() {
            let Some(algorithm) = Algorithm::from_name(&alg) else {
                digests.odd.push(OddEntry(format!(
                    "unknown digest algorithm directory {alg}"
                )));
                continue;
            };
            let alg_dir = layout::blobs_of(algorithm);
            for prefix in self.list_at(roots, &alg_dir).await?.into_iter().flatten() {
                let prefix_dir = layout::child(&alg_dir, &prefix);
                for hex in self
                    .list_at(roots, &prefix_dir)
                    .await?
                    .into_iter()
                    .flatten()
                {
                    match Digest::from_parts(algorithm, &hex) {
                        Ok(digest) => digests.found.push(digest),
                        Err(e) => digests
                            .odd
                            .push(OddEntry(format!("blob directory {hex}: {e}"))),
                    }
                }
            }
        }
        Ok(digests)
    }

    /// The digests linked under `dir` (`<alg>/<hex>/link`: a repository's `_layers` or
    /// manifest revisions) in any of `roots`.
    pub(super) async fn linked_digests(
        &self,
        roots: &[Cid],
        repo: &RepoName,
        dir: &[String],
    ) -> Result<Digests, RegistryError> {
        let mut digests = Digests::default();
        for alg in self.list_at(roots, dir).await?.into_iter().flatten() {
            let Some(algorithm) = Algorithm::from_name(&alg) else {
                digests
                    .odd
                    .push(OddEntry(format!("{repo}: unknown algorithm {alg}")));
                continue;
            };
            let alg_dir = layout::algorithm_dir(dir, algorithm);
            for hex in self.list_at(roots, &alg_dir).await?.into_iter().flatten() {
                match Digest::from_parts(algorithm, &hex) {
                    Ok(digest) => digests.found.push(digest),
                    Err(e) => digests.odd.push(OddEntry(format!("{repo}: {e}"))),
                }
            }
        }
        Ok(digests)
    }

    /// The names of the repositories in the tree at `root`.
    pub(super) async fn repositories_at(&self, root: Cid) -> Result<Vec<String>, RegistryError> {
        let mut names = Vec::new();
        if let Some(dir) = self.link_at(&[root], &layout::repositories()).await? {
            self.collect_repositories(dir.cid, String::new(), &mut names)
                .await?;
        }
        names.sort();
        Ok(names)
    }
}
