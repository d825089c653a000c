//! What `/_status` and `/_health` report: peers, the own name and record, followed names with
//! sequence, root and age, and mirror progress.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::replication::Replication;
use crate::config::Role;
use crate::http::NodeStatus;
use crate::p2p::P2p;
use crate::registry::Registry;

/// The status report of a running node.
pub struct NodeReport {
    role: Role,
    p2p: P2p,
    replication: Arc<Replication>,
    registry: Arc<Registry>,
}

impl NodeReport {
    /// A report over the node's parts.
    pub fn new(
        role: Role,
        p2p: P2p,
        replication: Arc<Replication>,
        registry: Arc<Registry>,
    ) -> Self {
        NodeReport {
            role,
            p2p,
            replication,
            registry,
        }
    }
}

#[async_trait]
impl NodeStatus for NodeReport {
    async fn status(&self) -> Value {
        let peer_id = self.p2p.peer_id();
        let peers: Vec<String> = self
            .p2p
            .connected_peers()
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        let listen: Vec<String> = self
            .p2p
            .listen_addrs()
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        let own = self.replication.publisher().map(|p| {
            let record = p.current();
            json!({
                "root": self.registry.root().to_string(),
                "sequence": record.as_ref().map(|r| r.sequence()),
                "published_root": record.as_ref().and_then(|r| r.root().ok()).map(|c| c.to_string()),
                "conflict": p.conflict(),
            })
        });
        let follower = self.replication.follower();
        let followed: Vec<Value> = follower
            .names()
            .iter()
            .map(|f| {
                let held = follower.held(&f.name);
                json!({
                    "name": f.name.to_string(),
                    "mirror": f.mirror.to_string(),
                    "sequence": held.as_ref().map(|h| h.record.sequence()),
                    "root": held.as_ref().map(|h| h.root.to_string()),
                    "age_secs": follower.age(&f.name).map(|a| a.as_secs()),
                    "mirror_progress": self.replication.mirror_state(&f.name),
                })
            })
            .collect();
        json!({
            "role": self.role.to_string(),
            "peer_id": peer_id.to_string(),
            "ipns_name": crate::names::IpnsName::from_peer_id(peer_id).to_string(),
            "listen": listen,
            "peers": peers,
            "own": own,
            "followed": followed,
            "writes_refused": self.registry.write_refusal(),
            "problem": self.problem(),
        })
    }

    fn problem(&self) -> Option<String> {
        self.replication
            .publisher()
            .and_then(|p| p.conflict())
            .map(|c| {
                format!(
                    "second writer detected: publishing stopped and writes refused until a \
                     restart with `serve --take-over-name`: {c}"
                )
            })
    }
}
