//! Local persistence: content-addressed blocks on disk and the small metadata store (sled).

mod blocks;
mod meta;
mod sweep;

pub use blocks::{BlockStore, HeldBlocks, StagedBlocks};
pub use meta::MetaStore;
pub use sweep::{BlockSet, Collection, SweepReport, WriteSession};

/// Errors from the local stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata store: {0}")]
    Meta(#[from] sled::Error),
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
    Task(#[from] tokio::task::JoinError),
    /// A garbage collection was asked to start while another runs on the same store.
    #[error("a garbage collection is already running on this block store")]
    CollectionRunning,
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}
