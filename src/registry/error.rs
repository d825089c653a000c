//! Errors of the registry layer, one variant per distinct client-visible outcome.

use crate::store::StoreError;
use crate::tree::TreeError;

use super::digest::Digest;

/// What went wrong in a registry operation.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The blob is not in the repository.
    #[error("blob unknown to registry")]
    BlobUnknown(Digest),
    /// No such upload session.
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown(String),
    /// The upload request is malformed.
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    /// Opening another upload session would exceed a cap (in total or for the client).
    #[error("too many upload sessions: {0}")]
    TooManyUploads(String),
    /// A chunk does not start where the upload ends.
    #[error("chunk out of order: the upload has {offset} bytes, the chunk starts at {start}")]
    RangeInvalid {
        /// Bytes received so far.
        offset: u64,
        /// Where the rejected chunk claimed to start.
        start: u64,
    },
    /// A digest is malformed or does not match the content.
    #[error("{0}")]
    DigestInvalid(String),
    /// A manifest references a blob or manifest the repository does not have.
    #[error("manifest references a blob unknown to the repository")]
    ManifestBlobUnknown(Digest),
    /// The manifest document is invalid.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// No such manifest or tag.
    #[error("manifest unknown to registry")]
    ManifestUnknown(String),
    /// The manifest is larger than the configured limit.
    #[error("manifest of {size} bytes exceeds the limit of {limit} bytes")]
    ManifestTooLarge {
        /// Size of the rejected manifest.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A repository name is invalid.
    #[error("invalid repository name")]
    NameInvalid(String),
    /// The repository does not exist.
    #[error("repository name not known to registry")]
    NameUnknown(String),
    /// A size does not match the content or a parameter is out of range.
    #[error("{0}")]
    SizeInvalid(String),
    /// This node does not accept the operation (e.g. writes on a replica).
    #[error("{0}")]
    Unsupported(String),
    /// This writer refuses writes until an operator acts (e.g. a second writer of its name).
    #[error("{0}")]
    WritesRefused(String),
    /// Content read from the tree does not match its digest (a corrupt or malicious tree).
    #[error("{0}")]
    ContentInvalid(String),
    /// The storage tree failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the request body or an upload file failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error (in the message, so not also a `source`).
        error: std::io::Error,
    },
}

impl RegistryError {
    /// Whether the operation failed because the node's file system is full.
    pub fn is_storage_full(&self) -> bool {
        match self {
            RegistryError::Store(e) | RegistryError::Tree(TreeError::Store(e)) => {
                e.is_storage_full()
            }
            RegistryError::Io { error, .. } => crate::store::is_storage_full_io(error),
            _ => false,
        }
    }

    pub(crate) fn io(context: impl Into<String>, error: std::io::Error) -> Self {
        RegistryError::Io {
            context: context.into(),
            error,
        }
    }
}
