//! The block source of a networked node: the local store first, then any peer over Bitswap.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;

use crate::p2p::P2p;
use crate::store::BlockStore;
use crate::tree::{BlockSource, TreeError};

/// Local blocks, with missing ones fetched from peers (and then kept locally).
pub struct NetworkBlocks {
    local: Arc<BlockStore>,
    p2p: P2p,
}

impl NetworkBlocks {
    /// Reads `local`, falling back to `p2p`.
    pub fn new(local: Arc<BlockStore>, p2p: P2p) -> Self {
        NetworkBlocks { local, p2p }
    }
}

#[async_trait]
impl BlockSource for NetworkBlocks {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        if let Some(block) = self.local.get(cid).await? {
            return Ok(block);
        }
        match self.p2p.fetch_block(cid).await {
            Ok(block) => Ok(block),
            Err(e) => {
                tracing::debug!(%cid, error = %e, "no peer provided the block");
                Err(TreeError::BlockMissing(*cid))
            }
        }
    }
}
