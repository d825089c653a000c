//! What a running node reports about itself: the typed status report of the admin API
//! (peers, the own name and record, followed names with sequence, root and age, mirror
//! progress, garbage collection) and the readiness `/readyz` answers (root loaded, no second
//! writer, disk not full).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::gc::GarbageCollector;
use super::replication::Replication;
use crate::admin::{
    AdminCommands, CarStream, CommandFailure, DiskStatus, ExportRequest, FollowedStatus, GcRequest,
    ImportRequest, MirrorStatus, OwnStatus, PeerStatus, ReachabilityStatus, StatusReport,
};
use crate::config::{HealthConfig, Role};
use crate::http::{NodeHealth, Readiness};
use crate::names::IpnsName;
use crate::p2p::P2p;
use crate::registry::{ExportReport, GcReport, ImportReport, Registry};

/// The status and readiness of a running node, and its admin commands.
pub struct NodeReport {
    role: Role,
    p2p: P2p,
    replication: Arc<Replication>,
    registry: Arc<Registry>,
    data_dir: PathBuf,
    health: HealthConfig,
    gc: Arc<GarbageCollector>,
}

impl NodeReport {
    /// A report over the node's parts.
    pub fn new(
        role: Role,
        p2p: P2p,
        replication: Arc<Replication>,
        registry: Arc<Registry>,
        data_dir: PathBuf,
        health: HealthConfig,
        gc: Arc<GarbageCollector>,
    ) -> Self {
        NodeReport {
            role,
            p2p,
            replication,
            registry,
            data_dir,
            health,
            gc,
        }
    }

    /// The status report.
    pub async fn report(&self) -> StatusReport {
        let peer_id = self.p2p.peer_id();
        let peers = self.p2p.connected_peers().await;
        let connections = self
            .p2p
            .peer_connections()
            .await
            .into_iter()
            .map(|c| PeerStatus {
                peer: c.peer.to_string(),
                connection: if c.direct { "direct" } else { "relayed" }.into(),
                addresses: c.addresses.iter().map(ToString::to_string).collect(),
                blocks: c.exchanges_blocks,
            })
            .collect();
        let reach = self.p2p.reachability().await;
        let reachability = ReachabilityStatus {
            public: reach.public.iter().map(ToString::to_string).collect(),
            relayed: reach.relayed.iter().map(ToString::to_string).collect(),
            dht: if reach.dht_server { "server" } else { "client" }.into(),
        };
        let listen = self.p2p.listen_addrs().await;
        let own = self.replication.publisher().map(|p| {
            let record = p.current();
            OwnStatus {
                root: self.registry.root().to_string(),
                sequence: record.as_ref().map(|r| r.sequence()),
                published_root: record
                    .as_ref()
                    .and_then(|r| r.root().ok())
                    .map(|c| c.to_string()),
                conflict: p.conflict(),
            }
        });
        let follower = self.replication.follower();
        let followed = follower
            .names()
            .iter()
            .map(|f| {
                let held = follower.held(&f.name);
                FollowedStatus {
                    name: f.name.to_string(),
                    mirror: f.mirror.to_string(),
                    sequence: held.as_ref().map(|h| h.record.sequence()),
                    root: held.as_ref().map(|h| h.root.to_string()),
                    age_secs: follower.age(&f.name).map(|a| a.as_secs()),
                    mirror_progress: self
                        .replication
                        .mirror_state(&f.name)
                        .map(|m| MirrorStatus {
                            root: m.root,
                            state: m.state,
                            progress: m.progress,
                        }),
                }
            })
            .collect();
        let (disk, readiness) = self.readiness_and_disk().await;
        StatusReport {
            role: self.role,
            peer_id: peer_id.to_string(),
            ipns_name: IpnsName::from_peer_id(peer_id).to_string(),
            listen: listen.iter().map(ToString::to_string).collect(),
            peers: peers.iter().map(ToString::to_string).collect(),
            connections,
            reachability,
            own,
            followed,
            writes_refused: self.registry.write_refusal(),
            ready: readiness.ready,
            problems: readiness.problems,
            disk,
            gc: self.gc.status(),
        }
    }

    async fn readiness_and_disk(&self) -> (Option<DiskStatus>, Readiness) {
        let mut problems = Vec::new();
        // Said once the write gate is closed: the publisher notes a conflict (and writes it to
        // disk) before the gate closes, and readiness must not say writes are refused while
        // one would still be taken.
        let conflict = self
            .replication
            .publisher()
            .and_then(|p| p.conflict())
            .filter(|_| self.registry.write_refusal().is_some());
        if let Some(conflict) = conflict {
            problems.push(format!(
                "second writer detected: publishing stopped and writes refused until a restart \
                 with `serve --take-over-name`: {conflict}"
            ));
        }
        // A writer's own root is loaded before the node serves at all. A replica has something
        // to serve once a followed name resolved.
        if self.role == Role::Replica {
            let follower = self.replication.follower();
            if follower.names().is_empty() {
                problems.push("this replica follows no names: it has nothing to serve".into());
            } else if follower.roots().is_empty() {
                problems.push(
                    "no followed name has resolved yet: no root is loaded to serve from".into(),
                );
            }
        }
        let dir = self.data_dir.clone();
        let space = tokio::task::spawn_blocking(move || free_space(&dir)).await;
        let disk = match space {
            Ok(Ok((available_bytes, total_bytes))) => {
                let disk = DiskStatus {
                    available_bytes,
                    total_bytes,
                    min_free_bytes: self.health.min_free_bytes,
                };
                if available_bytes < self.health.min_free_bytes {
                    problems.push(format!(
                        "disk nearly full: {available_bytes} bytes free for {}, below \
                         health.min_free_bytes ({})",
                        self.data_dir.display(),
                        self.health.min_free_bytes
                    ));
                }
                Some(disk)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, dir = %self.data_dir.display(), "cannot read the free space of the data directory");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the free-space check stopped");
                None
            }
        };
        (disk, Readiness::from_problems(problems))
    }
}

#[async_trait]
impl NodeHealth for NodeReport {
    async fn readiness(&self) -> Readiness {
        self.readiness_and_disk().await.1
    }
}

#[async_trait]
impl AdminCommands for NodeReport {
    async fn status(&self) -> StatusReport {
        self.report().await
    }

    async fn gc(&self, request: GcRequest) -> Result<GcReport, String> {
        self.gc.collect(&request).await.map_err(|e| e.to_string())
    }

    async fn export(
        &self,
        request: ExportRequest,
    ) -> Result<(ExportReport, CarStream), CommandFailure> {
        super::airgap::export(self.registry.clone(), request).await
    }

    async fn import(
        &self,
        request: ImportRequest,
        car: CarStream,
    ) -> Result<ImportReport, CommandFailure> {
        super::airgap::import(&self.registry, request, car).await
    }
}

/// Bytes available to unprivileged users, and the size, of the file system holding `path`.
fn free_space(path: &Path) -> std::io::Result<(u64, u64)> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the struct it is given and reads a NUL-terminated path; both
    // outlive the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The field types differ between targets (32-bit Pis among them).
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let (available, total, fragment) = (
        stat.f_bavail as u64,
        stat.f_blocks as u64,
        stat.f_frsize as u64,
    );
    Ok((available * fragment, total * fragment))
}
