//! Replication of one node: the publish task (writers), the follow task and the mirror task,
//! started together and owned here, so that shutting the node down stops and awaits them all.

#[cfg(test)]
mod fixture;
mod follow;
mod mirror;
mod publish;
mod records;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::IpnsConfig;
use crate::metrics::PublishMetrics;
use crate::names::{Follower, IpnsName, Publisher};
use crate::p2p::{P2p, P2pEvent};
use crate::registry::Registry;

pub use follow::{FollowTask, GatewayPolling};
pub use mirror::{MirrorState, MirrorTask};
pub use publish::PublishTask;
pub use records::HeldRecords;

/// How long a direct record query waits for answers.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// How often followed names are resolved again even without news (and failed mirrors retried).
const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a shutdown waits for the replication tasks to end. Every task stops at its next
/// await once cancelled, so this bounds only a task stuck in code that never yields.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(5);

/// What a writer answers to writes once it has seen a second writer of its name: what happened
/// and what the operator can do.
pub fn second_writer_refusal(name: &IpnsName, detail: &str) -> String {
    format!(
        "writes refused: another node publishes under this writer's IPNS name {name} ({detail}); \
         stop the other writer (or give it a key of its own), then restart this one with \
         `ipns-registry serve --take-over-name`"
    )
}

/// Tasks with one owner: each ends when the owner cancels them, and the owner can wait until
/// all have ended. Clones share the tasks.
#[derive(Clone, Default)]
pub struct OwnedTasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl OwnedTasks {
    /// Runs `task` until it ends or the tasks are cancelled, whichever comes first (a task
    /// spawned after cancellation ends at once).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            cancel.run_until_cancelled(task).await;
        });
    }

    /// Tasks not ended yet.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Cancels every task and waits at most `bound` for all to end; whether they did.
    pub async fn shutdown(&self, bound: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(bound, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// The running replication of one node, owning its tasks.
pub struct Replication {
    follow: Arc<FollowTask>,
    mirror: Arc<MirrorTask>,
    publish: Option<Arc<PublishTask>>,
    tasks: OwnedTasks,
}

impl Replication {
    /// Starts the follow and mirror tasks, and for a writer (`publisher`) the publish task,
    /// handling the p2p `events`; records from `gateways` are judged like those from peers.
    /// Publishing is counted into `metrics`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        p2p: P2p,
        registry: Arc<Registry>,
        follower: Arc<Follower>,
        publisher: Option<Arc<Publisher>>,
        ipns: &IpnsConfig,
        metrics: PublishMetrics,
        gateways: Option<GatewayPolling>,
        events: mpsc::Receiver<P2pEvent>,
    ) -> Arc<Self> {
        registry.set_followed_roots(follower.roots());
        let tasks = OwnedTasks::default();
        let publish = publisher.map(|publisher| {
            Arc::new(PublishTask::new(
                p2p.clone(),
                registry.clone(),
                publisher,
                ipns,
                metrics,
            ))
        });
        let mut follow = FollowTask::new(
            p2p.clone(),
            registry.clone(),
            follower.clone(),
            publish.clone(),
            ipns,
            tasks.clone(),
        );
        if let Some(gateways) = gateways {
            follow = follow.with_gateways(gateways);
        }
        let follow = Arc::new(follow);
        let mirror = Arc::new(MirrorTask::new(p2p.clone(), registry, follower));
        tasks.spawn(follow.clone().run(events));
        tasks.spawn(mirror.clone().run());
        if let Some(publish) = &publish {
            tasks.spawn(publish.clone().run());
        }
        Arc::new(Replication {
            follow,
            mirror,
            publish,
            tasks,
        })
    }

    /// The follower.
    pub fn follower(&self) -> &Arc<Follower> {
        self.follow.follower()
    }

    /// The publisher (writers).
    pub fn publisher(&self) -> Option<&Arc<Publisher>> {
        self.publish.as_ref().map(|p| p.publisher())
    }

    /// The mirror state of a followed name.
    pub fn mirror_state(&self, name: &IpnsName) -> Option<MirrorState> {
        self.mirror.state(name)
    }

    /// Replication tasks still running (the three tasks and per-peer queries in flight).
    pub fn running_tasks(&self) -> usize {
        self.tasks.running()
    }

    /// Stops every replication task and waits (a bounded while) until none runs.
    pub async fn shutdown(&self) {
        if self.tasks.shutdown(SHUTDOWN_BOUND).await {
            tracing::debug!("replication stopped");
        } else {
            tracing::warn!(
                still_running = self.tasks.running(),
                "replication tasks did not stop within {SHUTDOWN_BOUND:?}"
            );
        }
    }
}

impl Drop for Replication {
    /// A replication dropped without a shutdown still stops its tasks.
    fn drop(&mut self) {
        self.tasks.cancel.cancel();
    }
}
