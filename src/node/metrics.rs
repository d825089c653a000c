//! What the node's state says at each scrape of `/metrics`: blocks held, open upload sessions,
//! the own published sequence, and each followed name's sequence, root age and mirror
//! progress. Reads memory only; the block counts come from the store's running count, never
//! from a walk of the disk.

use std::sync::Arc;

use super::replication::Replication;
use crate::metrics::{FollowedSample, MirrorSample, NodeSample, NodeSampler, StoreSample};
use crate::registry::Registry;
use crate::store::BlockStore;

/// Samples a running node for the metrics registry.
pub(super) struct NodeGauges {
    pub(super) blocks: Arc<BlockStore>,
    pub(super) registry: Arc<Registry>,
    pub(super) replication: Arc<Replication>,
}

impl NodeSampler for NodeGauges {
    fn sample(&self) -> NodeSample {
        let follower = self.replication.follower();
        let followed = follower
            .names()
            .iter()
            .map(|f| {
                let held = follower.held(&f.name);
                let mirror = self.replication.mirror_state(&f.name).map(|run| {
                    let counts = run.progress;
                    MirrorSample {
                        blocks: counts.blocks,
                        bytes: counts.bytes,
                        blobs_verified: counts.blobs_verified,
                        blobs_total: counts.blobs_total,
                        // A run of an older root says nothing about the one held now.
                        complete: run.state == "complete"
                            && held
                                .as_ref()
                                .is_some_and(|h| h.root.to_string() == run.root),
                    }
                });
                FollowedSample {
                    name: f.name.to_string(),
                    sequence: held.as_ref().map(|h| h.record.sequence()),
                    root_age: follower.age(&f.name),
                    mirror,
                }
            })
            .collect();
        NodeSample {
            store: self.blocks.held().map(|held| StoreSample {
                blocks: held.blocks,
                bytes: held.bytes,
            }),
            upload_sessions: self.registry.open_upload_sessions() as u64,
            published_sequence: self
                .replication
                .publisher()
                .and_then(|p| p.current())
                .map(|record| record.sequence()),
            followed,
        }
    }
}
