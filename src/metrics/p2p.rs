//! The p2p layer's handle: connected peers, and the blocks and bytes Bitswap moves.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// Peers and Bitswap traffic. A handle not taken from [`super::Metrics`] counts into nothing.
#[derive(Clone, Debug, Default)]
pub struct P2pMetrics {
    peers: Gauge,
    sent_blocks: Counter,
    sent_bytes: Counter,
    received_blocks: Counter,
    received_bytes: Counter,
}

impl P2pMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "p2p_peers",
            "Peers with at least one open connection",
            self.peers.clone(),
        );
        registry.register(
            "bitswap_sent_blocks",
            "Blocks sent to peers over Bitswap",
            self.sent_blocks.clone(),
        );
        registry.register_with_unit(
            "bitswap_sent",
            "Block bytes sent to peers over Bitswap",
            Unit::Bytes,
            self.sent_bytes.clone(),
        );
        registry.register(
            "bitswap_received_blocks",
            "Wanted blocks received over Bitswap, verified and stored",
            self.received_blocks.clone(),
        );
        registry.register_with_unit(
            "bitswap_received",
            "Bytes of wanted blocks received over Bitswap, verified and stored",
            Unit::Bytes,
            self.received_bytes.clone(),
        );
    }

    /// The first connection to a peer opened.
    pub fn peer_connected(&self) {
        self.peers.inc();
    }

    /// The last connection to a peer closed.
    pub fn peer_disconnected(&self) {
        self.peers.dec();
    }

    /// A message carrying `blocks` blocks of `bytes` bytes in all went out to a peer.
    pub fn blocks_sent(&self, blocks: u64, bytes: u64) {
        if blocks > 0 {
            self.sent_blocks.inc_by(blocks);
            self.sent_bytes.inc_by(bytes);
        }
    }

    /// Blocks and block bytes sent to peers so far.
    pub fn sent(&self) -> (u64, u64) {
        (self.sent_blocks.get(), self.sent_bytes.get())
    }

    /// A wanted block of `bytes` bytes arrived, verified and stored.
    pub fn block_received(&self, bytes: u64) {
        self.received_blocks.inc();
        self.received_bytes.inc_by(bytes);
    }
}
