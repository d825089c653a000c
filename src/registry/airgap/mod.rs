//! Air-gapped moves: chosen images written to a CAR file (CARv1) with a tree of just them
//! (`export`), and such a file checked block by block and blob by blob and linked into the own
//! tree in one commit (`import`), so that a node with no network serves them.

mod export;
mod import;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use export::{ExportPlan, ExportReport};
pub use import::{ImportReport, CAR_MEDIA_TYPE};

use super::digest::Digest;
use super::error::RegistryError;
use super::reference::{RepoName, Tag};
use crate::car::CarError;
use crate::tree::TreeError;

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum AirGapError {
    /// A selected image cannot be exported.
    #[error("{image}: {error}")]
    Image {
        /// The image as selected (`REPO`, `REPO:TAG`, `REPO@DIGEST`).
        image: String,
        /// Why (in the message, not a source: callers print whole chains).
        error: RegistryError,
    },
    /// The CAR cannot be read (truncated, malformed, a block not matching its CID).
    #[error("the CAR is refused, nothing was imported: {0}")]
    Car(CarError),
    /// The CAR reads, but what it holds is not a set of valid images.
    #[error("the CAR is refused, nothing was imported: {0}")]
    Refused(String),
    /// Whoever reads the export stopped reading.
    #[error("the export was abandoned by its reader")]
    Abandoned,
    /// The registry or its stores failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<CarError> for AirGapError {
    fn from(e: CarError) -> Self {
        AirGapError::Car(e)
    }
}

impl From<TreeError> for AirGapError {
    fn from(e: TreeError) -> Self {
        AirGapError::Registry(e.into())
    }
}

impl From<crate::store::StoreError> for AirGapError {
    fn from(e: crate::store::StoreError) -> Self {
        AirGapError::Registry(e.into())
    }
}

impl AirGapError {
    /// Whether the error is the caller's (an unknown image, a bad CAR, a read-only node) rather
    /// than the node's.
    pub fn is_client_error(&self) -> bool {
        match self {
            AirGapError::Image { .. } | AirGapError::Refused(_) | AirGapError::Abandoned => true,
            AirGapError::Car(CarError::Io(_)) => false,
            AirGapError::Car(_) => true,
            AirGapError::Registry(e) => matches!(
                e,
                RegistryError::Unsupported(_) | RegistryError::WritesRefused(_)
            ),
        }
    }
}

/// An image as named on the command line: `REPO` (every tag of it), `REPO:TAG` or
/// `REPO@DIGEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSelector {
    /// The repository.
    pub repository: RepoName,
    /// Which of its images.
    pub pick: ImagePick,
}

/// Which images of a repository a selector names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagePick {
    /// Every tag, each with the manifest it points at (untagged manifests are left out).
    EveryTag,
    /// One tag and its manifest.
    Tag(Tag),
    /// One manifest, untagged.
    Digest(Digest),
}

impl FromStr for ImageSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let repository = |name: &str| {
            RepoName::parse(name).ok_or_else(|| {
                format!(
                    "{s}: {name:?} is not a repository name (lower-case components separated by /)"
                )
            })
        };
        if let Some((name, digest)) = s.split_once('@') {
            if name.contains(':') {
                return Err(format!("{s}: give REPO:TAG or REPO@DIGEST, not both"));
            }
            let digest = digest.parse().map_err(|e| format!("{s}: {e}"))?;
            return Ok(ImageSelector {
                repository: repository(name)?,
                pick: ImagePick::Digest(digest),
            });
        }
        if let Some((name, tag)) = s.rsplit_once(':') {
            let tag = Tag::parse(tag).ok_or_else(|| {
                format!("{s}: {tag:?} is not a tag ([a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}})")
            })?;
            return Ok(ImageSelector {
                repository: repository(name)?,
                pick: ImagePick::Tag(tag),
            });
        }
        Ok(ImageSelector {
            repository: repository(s)?,
            pick: ImagePick::EveryTag,
        })
    }
}

impl fmt::Display for ImageSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pick {
            ImagePick::EveryTag => write!(f, "{}", self.repository),
            ImagePick::Tag(tag) => write!(f, "{}:{tag}", self.repository),
            ImagePick::Digest(digest) => write!(f, "{}@{digest}", self.repository),
        }
    }
}

/// One image moved: its repository, the tag it is moved under (if any) and its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedImage {
    /// The repository.
    pub repository: String,
    /// The tag, if the image was moved under one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The manifest's digest.
    pub digest: String,
}

impl fmt::Display for MovedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tag {
            Some(tag) => write!(f, "{}:{tag} ({})", self.repository, self.digest),
            None => write!(f, "{}@{}", self.repository, self.digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let every: ImageSelector = "library/alpine".parse().unwrap();
        assert_eq!(every.pick, ImagePick::EveryTag);
        let tagged: ImageSelector = "library/alpine:3.20".parse().unwrap();
        assert_eq!(tagged.pick, ImagePick::Tag(Tag::parse("3.20").unwrap()));
        assert_eq!(tagged.to_string(), "library/alpine:3.20");
        let pinned: ImageSelector = format!("a/b@{digest}").parse().unwrap();
        assert_eq!(pinned.pick, ImagePick::Digest(digest.parse().unwrap()));
        for bad in [
            "Upper".to_owned(),
            "a:".to_owned(),
            "a:-x".to_owned(),
            "a@sha256:zz".to_owned(),
            format!("a:v1@{digest}"),
            String::new(),
        ] {
            assert!(bad.parse::<ImageSelector>().is_err(), "{bad}");
        }
    }
}
