//! Listings: tags of a repository, the catalog of repositories, referrers of a manifest.

use cid::Cid;

use super::digest::{Algorithm, Digest};
use super::error::RegistryError;
use super::layout;
use super::manifest::{self, Descriptor};
use super::reference::RepoName;
use super::{ManifestRef, Registry};
use crate::tree::read_directory;

/// One page of a lexically ordered listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The entries of this page.
    pub entries: Vec<String>,
    /// Whether entries follow after the last one of this page.
    pub more: bool,
}

/// Cuts a sorted list to the entries after `last`, at most `n` of them.
fn paginate(all: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    let mut rest: Vec<String> = match last {
        Some(last) => all.into_iter().filter(|e| e.as_str() > last).collect(),
        None => all,
    };
    let more = n.is_some_and(|n| rest.len() > n);
    if let Some(n) = n {
        rest.truncate(n);
    }
    Page {
        entries: rest,
        more,
    }
}

impl Registry {
    /// A page of the tags of `repo`.
    pub async fn tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, RegistryError> {
        let root = self.view();
        if !self.repository_exists(&root, repo).await? {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        let mut tags = self
            .list_at(&root, &layout::tags(repo))
            .await?
            .unwrap_or_default();
        tags.sort();
        Ok(paginate(tags, n, last))
    }

    /// A page of the names of all repositories.
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, RegistryError> {
        // Merged over every root of the view: a replica lists what any followed name holds.
        let mut names = Vec::new();
        for root in self.view() {
            if let Some(dir) = self.link_at(&[root], &layout::repositories()).await? {
                self.collect_repositories(dir.cid, String::new(), &mut names)
                    .await?;
            }
        }
        names.sort();
        names.dedup();
        Ok(paginate(names, n, last))
    }

    pub(super) async fn collect_repositories(
        &self,
        dir: Cid,
        prefix: String,
        names: &mut Vec<String>,
    ) -> Result<(), RegistryError> {
        let mut pending = vec![(dir, prefix)];
        while let Some((dir, prefix)) = pending.pop() {
            let entries = read_directory(self.source(), &dir).await?;
            if entries.keys().any(|e| layout::is_repository_marker(e)) && !prefix.is_empty() {
                names.push(prefix.clone());
            }
            for (name, link) in entries {
                if name.starts_with('_') {
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
        Ok(())
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`, optionally only those
    /// of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let root = self.view();
        let mut out = Vec::new();
        let dir = layout::referrers(repo, subject);
        for alg_name in self.list_at(&root, &dir).await?.into_iter().flatten() {
            let Some(algorithm) = Algorithm::from_name(&alg_name) else {
                continue;
            };
            let mut alg_dir = dir.clone();
            alg_dir.push(alg_name);
            for hex in self.list_at(&root, &alg_dir).await?.into_iter().flatten() {
                let Ok(digest) = Digest::from_parts(algorithm, &hex) else {
                    continue;
                };
                let stored = match self.manifest(repo, &ManifestRef::Digest(digest)).await {
                    Ok(m) => m,
                    // Deleted since: the index entry goes with it, a race at worst.
                    Err(RegistryError::ManifestUnknown(_)) => continue,
                    Err(e) => return Err(e),
                };
                let Ok(parsed) = manifest::parse(&stored.bytes, None) else {
                    continue;
                };
                if artifact_type.is_some_and(|t| parsed.artifact_type.as_deref() != Some(t)) {
                    continue;
                }
                out.push(Descriptor {
                    media_type: stored.media_type,
                    digest: stored.digest.to_string(),
                    size: stored.bytes.len() as i64,
                    artifact_type: parsed.artifact_type,
                    annotations: parsed.annotations,
                    urls: None,
                    platform: None,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::paginate;

    #[test]
    fn pages() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let p = paginate(all.clone(), Some(2), None);
        assert_eq!(p.entries, ["a", "b"]);
        assert!(p.more);
        let p = paginate(all.clone(), Some(2), Some("b"));
        assert_eq!(p.entries, ["c", "d"]);
        assert!(!p.more);
        let p = paginate(all.clone(), Some(0), None);
        assert!(p.entries.is_empty());
        assert!(p.more);
        let p = paginate(all, None, Some("bb"));
        assert_eq!(p.entries, ["c", "d"]);
    }
}
