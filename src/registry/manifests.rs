//! Manifest reads, pushes and deletes.

use bytes::Bytes;
use cid::Cid;

use super::content::{import_bytes, link_file, one_block_file};
use super::digest::{Algorithm, Digest};
use super::error::RegistryError;
use super::layout;
use super::manifest::{self, stored_media_type};
use super::reference::{ManifestRef, RepoName, Tag};
use super::{Registry, Unreadable};
use crate::tree::{file_size, Change, TreeError};

/// A manifest as stored.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Its digest.
    pub digest: Digest,
    /// The media type to serve it with.
    pub media_type: String,
    /// The document.
    pub bytes: Bytes,
}

/// The outcome of a manifest push.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    /// Digest of the stored document.
    pub digest: Digest,
    /// Its subject, if it has one.
    pub subject: Option<Digest>,
    /// The tags that now point at it: the reference's, if a tag, then the extra ones asked for,
    /// each once.
    pub tags: Vec<Tag>,
}

impl Registry {
    pub(super) async fn resolve_manifest(
        &self,
        root: &[Cid],
        repo: &RepoName,
        reference: &ManifestRef,
    ) -> Result<Digest, RegistryError> {
        let unknown = || RegistryError::ManifestUnknown(reference.to_string());
        let digest = match reference {
            ManifestRef::Digest(d) => d.clone(),
            ManifestRef::Tag(tag) => self
                .digest_at(root, &layout::tag_current(repo, tag))
                .await?
                .ok_or_else(unknown)?,
        };
        self.link_at(root, &layout::revision_link(repo, &digest))
            .await?
            .ok_or_else(unknown)?;
        Ok(digest)
    }

    pub(super) async fn read_manifest(
        &self,
        root: &[Cid],
        digest: &Digest,
    ) -> Result<Bytes, RegistryError> {
        let (index, data) = self
            .find(root, &layout::blob_data(digest), Unreadable::Skip)
            .await?
            .ok_or_else(|| RegistryError::ManifestUnknown(digest.to_string()))?;
        // The own tree's manifests passed the limit when pushed, and a lowered limit must not
        // hide them. A followed tree is untrusted: its manifests obey the limit of a push.
        let own = self.options.writable && index == 0;
        let limit = if own {
            u64::MAX
        } else {
            self.max_manifest_bytes()
        };
        let bytes = match self.reads.small_file(self.source(), &data.cid, limit).await {
            Ok(bytes) => bytes,
            Err(TreeError::TooLarge { size, limit }) => {
                return Err(RegistryError::ContentInvalid(format!(
                    "manifest {digest} in a followed tree is {size} bytes, over this registry's \
                     limit of {limit} bytes (registry.max_manifest_bytes)"
                )))
            }
            Err(TreeError::Decode(why)) if !own => {
                return Err(RegistryError::ContentInvalid(format!(
                    "manifest {digest} in a followed tree is malformed: {why}"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        // Cheap enough to do on every read, and it covers manifests from followed trees.
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(RegistryError::ContentInvalid(format!(
                "manifest {digest} hashes to {actual}"
            )));
        }
        Ok(bytes)
    }

    /// The manifest `reference` names in `repo`.
    pub async fn manifest(
        &self,
        repo: &RepoName,
        reference: &ManifestRef,
    ) -> Result<StoredManifest, RegistryError> {
        let root = self.view();
        let digest = match self.resolve_manifest(&root, repo, reference).await {
            Err(RegistryError::ManifestUnknown(_))
                if !self.repository_exists(&root, repo).await? =>
            {
                // Tells a client with a mistyped repository name what is wrong.
                return Err(RegistryError::NameUnknown(repo.to_string()));
            }
            other => other?,
        };
        let bytes = self.read_manifest(&root, &digest).await?;
        Ok(StoredManifest {
            media_type: stored_media_type(&bytes),
            digest,
            bytes,
        })
    }

    /// Checks that `repo` holds, in the tree at `root`, every blob and child manifest the
    /// manifest references, each with the size its descriptor declares. Each distinct digest
    /// is looked up once.
    async fn check_references(
        &self,
        root: Cid,
        repo: &RepoName,
        parsed: &manifest::Manifest,
    ) -> Result<(), RegistryError> {
        let root = [root];
        let blobs = parsed
            .blobs
            .iter()
            .map(|r| (r, layout::layer_link(repo, &r.digest)));
        let children = parsed
            .manifests
            .iter()
            .map(|r| (r, layout::revision_link(repo, &r.digest)));
        for (referenced, link) in blobs.chain(children) {
            let digest = &referenced.digest;
            if self.link_at(&root, &link).await?.is_none() {
                return Err(RegistryError::ManifestBlobUnknown(digest.clone()));
            }
            let data = self
                .link_at(&root, &layout::blob_data(digest))
                .await?
                .ok_or_else(|| RegistryError::ManifestBlobUnknown(digest.clone()))?;
            let size = file_size(self.source(), &data.cid).await?;
            if size != referenced.size {
                return Err(RegistryError::ManifestInvalid(format!(
                    "descriptor {digest} declares {} bytes, the registry holds {size}",
                    referenced.size
                )));
            }
        }
        Ok(())
    }

    /// Validates and stores a manifest pushed with `content_type`, tagging it if `reference` is a
    /// tag and with each of `extra_tags` (a push's `tag` parameters), all in one commit. Durable
    /// and visible when this returns.
    ///
    /// Validation runs against the last committed tree without the write lock, so a large
    /// manifest never holds up other pushes; the lock is taken only to link, and the references
    /// are checked again under it only if another change was committed in between (a delete
    /// may have removed what the manifest needs).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &ManifestRef,
        extra_tags: &[Tag],
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PushedManifest, RegistryError> {
        self.ensure_writable()?;
        let mut tags: Vec<Tag> = Vec::with_capacity(extra_tags.len() + 1);
        if let ManifestRef::Tag(tag) = reference {
            tags.push(tag.clone());
        }
        for tag in extra_tags {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        let limit = self.options.max_manifest_bytes;
        if bytes.len() as u64 > limit {
            return Err(RegistryError::ManifestTooLarge {
                size: bytes.len() as u64,
                limit,
            });
        }
        // Hashing and parsing megabytes of JSON is CPU work: off the runtime's threads.
        let (digest, parsed) = {
            let bytes = bytes.clone();
            let reference = reference.clone();
            let content_type = content_type.map(str::to_owned);
            tokio::task::spawn_blocking(move || {
                let digest = match &reference {
                    ManifestRef::Digest(expected) => {
                        let actual = Digest::of(expected.algorithm(), &bytes);
                        if &actual != expected {
                            return Err(RegistryError::DigestInvalid(format!(
                                "the manifest has digest {actual}, not {expected}"
                            )));
                        }
                        actual
                    }
                    ManifestRef::Tag(_) => Digest::of(Algorithm::Sha256, &bytes),
                };
                Ok((digest, manifest::parse(&bytes, content_type.as_deref())?))
            })
            .await
            .map_err(crate::store::StoreError::from)??
        };

        let validated = self.tree().root();
        self.check_references(validated, repo, &parsed).await?;

        // A manifest of one chunk is one raw block, as the importer would make it: it goes
        // into the tree commit with the link files, synced once with them. A bigger one is
        // imported into a staging area first.
        let (data, mut new_blocks, staged) = if let Some((link, block)) =
            one_block_file(bytes.clone())
        {
            (link, vec![block], None)
        } else {
            let blocks = self.tree().blocks().clone();
            let bytes = bytes.clone();
            let (link, staged) = tokio::task::spawn_blocking(move || import_bytes(&blocks, &bytes))
                .await
                .map_err(crate::store::StoreError::from)??;
            (link, Vec::new(), Some(staged))
        };

        let mut writer = self.tree().writer().await;
        if writer.root() != validated {
            if let Err(e) = self.check_references(writer.root(), repo, &parsed).await {
                drop(writer);
                if let Some(staged) = staged {
                    tokio::task::spawn_blocking(move || staged.discard_blocking())
                        .await
                        .map_err(crate::store::StoreError::from)?;
                }
                return Err(e);
            }
        }
        // Held until the commit below links the blocks: a garbage collection keeps them.
        let session = match staged {
            Some(staged) => {
                let blocks = self.tree().blocks().clone();
                Some(
                    tokio::task::spawn_blocking(move || staged.commit_blocking(&blocks))
                        .await
                        .map_err(crate::store::StoreError::from)??,
                )
            }
            None => None,
        };
        let (link, link_block) = link_file(&digest);
        let mut changes = vec![
            Change::Put {
                path: layout::blob_data(&digest),
                link: data,
            },
            Change::Put {
                path: layout::revision_link(repo, &digest),
                link,
            },
        ];
        for tag in &tags {
            changes.push(Change::Put {
                path: layout::tag_current(repo, tag),
                link,
            });
            changes.push(Change::Put {
                path: layout::tag_index(repo, tag, &digest),
                link,
            });
        }
        if let Some(subject) = &parsed.subject {
            changes.push(Change::Put {
                path: layout::referrer_link(repo, subject, &digest),
                link,
            });
        }
        new_blocks.push(link_block);
        writer.commit(changes, new_blocks).await?;
        drop(session);
        Ok(PushedManifest {
            digest,
            subject: parsed.subject,
            tags,
        })
    }

    /// Deletes a tag, or a manifest by digest together with every tag pointing at it.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &ManifestRef,
    ) -> Result<(), RegistryError> {
        self.ensure_writable()?;
        let mut writer = self.tree().writer().await;
        let root = [writer.root()];
        let unknown = || RegistryError::ManifestUnknown(reference.to_string());
        let changes = match reference {
            ManifestRef::Tag(tag) => {
                self.link_at(&root, &layout::tag_current(repo, tag))
                    .await?
                    .ok_or_else(unknown)?;
                vec![Change::Remove {
                    path: layout::tag(repo, tag),
                }]
            }
            ManifestRef::Digest(digest) => {
                self.link_at(&root, &layout::revision_link(repo, digest))
                    .await?
                    .ok_or_else(unknown)?;
                let mut changes = vec![Change::Remove {
                    path: layout::revision_link(repo, digest),
                }];
                for name in self
                    .list_at(&root, &layout::tags(repo))
                    .await?
                    .into_iter()
                    .flatten()
                {
                    let Some(tag) = Tag::parse(&name) else {
                        continue;
                    };
                    let current = self
                        .digest_at(&root, &layout::tag_current(repo, &tag))
                        .await?;
                    if current.as_ref() == Some(digest) {
                        changes.push(Change::Remove {
                            path: layout::tag(repo, &tag),
                        });
                    } else {
                        changes.push(Change::Remove {
                            path: layout::tag_index(repo, &tag, digest),
                        });
                    }
                }
                let bytes = self.read_manifest(&root, digest).await?;
                if let Ok(parsed) = manifest::parse(&bytes, None) {
                    if let Some(subject) = parsed.subject {
                        changes.push(Change::Remove {
                            path: layout::referrer_link(repo, &subject, digest),
                        });
                    }
                }
                changes
            }
        };
        writer.commit(changes, Vec::new()).await?;
        Ok(())
    }
}
