//! Local persistence: content-addressed blocks on disk and the small metadata store (sled).

mod blocks;
mod buffers;
mod meta;
mod recent;
mod sweep;

pub use blocks::{BlockStore, HeldBlocks, StagedBlocks};
pub use meta::{MetaStore, DEFAULT_META_CACHE_BYTES};
pub use sweep::{BlockSet, Collection, SweepReport, WriteSession};

/// Errors from the local stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error (in the message, so not also a `source`).
        error: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata store: {0}")]
    Meta(sled::Error),
    /// A value in the metadata store could not be decoded.
    #[error("metadata store holds a corrupt value under {key}: {reason}")]
    Corrupt {
        /// The key whose value is unreadable.
        key: String,
        /// Why it could not be read.
        reason: String,
    },
    /// A blocking task was cancelled or panicked.
    #[error("background task failed: {0}")]
    Task(tokio::task::JoinError),
    /// A garbage collection was asked to start while another runs on the same store.
    #[error("a garbage collection is already running on this block store")]
    CollectionRunning,
}

/// Whether `e` says the file system is out of space (or the user out of quota).
pub fn is_storage_full_io(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
}

impl StoreError {
    /// Whether the store failed because its file system is full: a push can succeed again
    /// once space is freed, and what was committed before is intact.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Io { error, .. } => is_storage_full_io(error),
            StoreError::Meta(sled::Error::Io(error)) => is_storage_full_io(error),
            _ => false,
        }
    }

    pub(crate) fn io(context: impl Into<String>, error: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            error,
        }
    }
}

// Written out rather than `#[from]`, which would also make the inner error the `source`: its
// text is already in the message, and error-chain printers (anyhow's `{:#}`) would repeat it.
impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Meta(e)
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError::Task(e)
    }
}
