//! The block source of a networked node: the local store first, then any peer over Bitswap,
//! then the configured gateways.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;

use super::gateway::GatewayClient;
use crate::p2p::P2p;
use crate::store::BlockStore;
use crate::tree::{BlockSource, TreeError};

/// Local blocks, with missing ones fetched from peers or gateways (and then kept locally).
pub struct NetworkBlocks {
    local: Arc<BlockStore>,
    p2p: P2p,
    gateways: Option<Arc<GatewayClient>>,
}

impl NetworkBlocks {
    /// Reads `local`, falling back to `p2p`.
    pub fn new(local: Arc<BlockStore>, p2p: P2p) -> Self {
        NetworkBlocks {
            local,
            p2p,
            gateways: None,
        }
    }

    /// Also asks `gateways` for blocks that no peer provides.
    pub fn with_gateways(mut self, gateways: Arc<GatewayClient>) -> Self {
        self.gateways = Some(gateways);
        self
    }

    /// A block from the gateways, verified by the client, then kept locally like one from a
    /// peer.
    async fn fetch_from_gateways(&self, gateways: &GatewayClient, cid: &Cid) -> Option<Bytes> {
        let block = gateways.block(cid).await?;
        let store = self.local.clone();
        let (cid, data) = (*cid, block.clone());
        match tokio::task::spawn_blocking(move || store.put_blocking(&cid, &data)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(%cid, error = %e, "keeping a block from a gateway failed"),
            Err(e) => tracing::warn!(%cid, error = %e, "keeping a block from a gateway failed"),
        }
        Some(block)
    }
}

#[async_trait]
impl BlockSource for NetworkBlocks {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        if let Some(block) = self.local.get(cid).await? {
            return Ok(block);
        }
        // With no peer connected, Bitswap could only wait for one to appear: where gateways
        // are configured (libp2p blocked), ask them first instead of after that wait.
        let gateways = self.gateways.as_deref().filter(|g| !g.is_empty());
        let mut gateways_asked = false;
        if let Some(gateways) = gateways {
            if self.p2p.connected_peers().await.is_empty() {
                gateways_asked = true;
                if let Some(block) = self.fetch_from_gateways(gateways, cid).await {
                    return Ok(block);
                }
            }
        }
        match self.p2p.fetch_block(cid).await {
            Ok(block) => return Ok(block),
            Err(e) => {
                let relayed_only: Vec<String> = self
                    .p2p
                    .relayed_only_peers()
                    .await
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                if relayed_only.is_empty() {
                    tracing::debug!(%cid, error = %e, "no peer provided the block");
                } else {
                    // The likely reason a replica behind a NAT cannot fetch: say it where the
                    // operator looks.
                    tracing::warn!(%cid, error = %e, peers = ?relayed_only, "block not fetched: these peers are (or were, until the relay closed the circuit) connected only through a relay, which carries no blocks (hole punching did not succeed; behind a symmetric NAT it cannot): open a port, enable UPnP, or allow p2p.blocks_over_relay between your own nodes");
                }
            }
        }
        if let Some(gateways) = gateways.filter(|_| !gateways_asked) {
            if let Some(block) = self.fetch_from_gateways(gateways, cid).await {
                return Ok(block);
            }
        }
        Err(TreeError::BlockMissing(*cid))
    }
}
