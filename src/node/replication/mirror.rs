//! The mirror task: fetches the trees of followed names configured with `[[mirror]]` (all of
//! a tree, or chosen repositories) ahead of requests, whenever a name moves and again after a
//! failed run, and keeps each name's progress for status and metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::Cid;
use serde::Serialize;

use super::RESOLVE_INTERVAL;
use crate::config::Mirror;
use crate::names::{FollowedName, Follower, IpnsName};
use crate::p2p::P2p;
use crate::registry::{MirrorCounts, MirrorProgress, Registry, RepoName};

/// The state of mirroring one followed name.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorState {
    /// The root being or last mirrored.
    pub root: String,
    /// `running`, `complete`, or `failed: <why>`.
    pub state: String,
    /// Counters.
    pub progress: MirrorCounts,
}

struct MirrorRun {
    root: Cid,
    state: String,
    progress: Arc<MirrorProgress>,
}

/// Mirroring the followed trees; [`MirrorTask::run`] is the task.
pub struct MirrorTask {
    /// Where a completed mirror's root is provided.
    p2p: P2p,
    registry: Arc<Registry>,
    follower: Arc<Follower>,
    runs: Mutex<HashMap<IpnsName, MirrorRun>>,
    retry: Duration,
}

impl MirrorTask {
    /// Mirrors `follower`'s names into `registry`'s store as their `mirror` setting asks, and
    /// provides each completed mirror's root through `p2p`.
    pub fn new(p2p: P2p, registry: Arc<Registry>, follower: Arc<Follower>) -> Self {
        MirrorTask {
            p2p,
            registry,
            follower,
            runs: Mutex::new(HashMap::new()),
            retry: RESOLVE_INTERVAL,
        }
    }

    /// The mirror state of a followed name.
    pub fn state(&self, name: &IpnsName) -> Option<MirrorState> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(name).map(|run| MirrorState {
            root: run.root.to_string(),
            state: run.state.clone(),
            progress: run.progress.counts(),
        })
    }

    /// Runs until the follower is gone (or the owner drops the future, which stops a fetch in
    /// flight): mirrors every name that needs it, then waits for a name to move or for the
    /// retry interval.
    pub async fn run(self: Arc<Self>) {
        let mut changed = self.follower.subscribe();
        let mut retry = tokio::time::interval(self.retry);
        loop {
            for followed in self.follower.names() {
                self.mirror_if_needed(followed).await;
            }
            tokio::select! {
                c = changed.changed() => if c.is_err() { return },
                _ = retry.tick() => {}
            }
        }
    }

    async fn mirror_if_needed(&self, followed: &FollowedName) {
        let repositories = match &followed.mirror {
            Mirror::None => return,
            Mirror::All => None,
            Mirror::Repositories(names) => Some(
                names
                    .iter()
                    .filter_map(|n| RepoName::parse(n))
                    .collect::<Vec<_>>(),
            ),
        };
        let Some(held) = self.follower.held(&followed.name) else {
            return;
        };
        let progress = {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(run) = runs.get(&followed.name) {
                if run.root == held.root && run.state == "complete" {
                    return;
                }
            }
            let progress = Arc::new(MirrorProgress::default());
            runs.insert(
                followed.name,
                MirrorRun {
                    root: held.root,
                    state: "running".into(),
                    progress: progress.clone(),
                },
            );
            progress
        };
        let name = &followed.name;
        tracing::info!(%name, root = %held.root, "mirroring");
        let outcome = self
            .registry
            .mirror(held.root, repositories.as_deref(), &progress)
            .await;
        let state = match outcome {
            Ok(()) => {
                tracing::info!(%name, root = %held.root, counts = ?progress.counts(), "mirror complete");
                // Every block of the root (or of its chosen repositories) is held and checked:
                // provided, so replicas find this one when the writer is gone (one provider
                // record per name: the previous root's is withdrawn).
                if let Err(e) = self.p2p.provide_root(&name.routing_key(), held.root).await {
                    tracing::warn!(%name, error = %e, "not providing the mirrored root");
                }
                "complete".to_owned()
            }
            Err(e) => {
                tracing::warn!(%name, error = %e, "mirror incomplete; will retry");
                format!("failed: {e}")
            }
        };
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(run) = runs.get_mut(name) {
            if run.root == held.root {
                run.state = state;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;
    use libp2p::identity::Keypair;
    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::names::{IpnsRecord, Offer};
    use crate::node::replication::fixture::{wait_until, PartsNode};
    use crate::node::replication::OwnedTasks;
    use crate::registry::Digest;
    use crate::store::BlockStore;
    use crate::tree::{cid_of, BlockSource, TreeError, RAW};

    /// A record of `keypair`'s name naming `root`, offered to `follower` as if from a peer.
    async fn follow_root(follower: &Follower, keypair: &Keypair, root: Cid) {
        let name = IpnsName::from_peer_id(keypair.public().to_peer_id());
        let record = IpnsRecord::sign(
            keypair,
            &format!("/ipfs/{root}"),
            1,
            Duration::from_secs(3600),
            Duration::from_secs(60),
        )
        .expect("a record");
        let offer = follower
            .offer(&name.routing_key(), record.to_bytes())
            .await
            .expect("a valid record");
        assert!(matches!(offer, Offer::Accepted { .. }), "{offer:?}");
    }

    fn mirror_all(keypair: &Keypair) -> FollowedName {
        FollowedName {
            name: IpnsName::from_peer_id(keypair.public().to_peer_id()),
            mirror: Mirror::All,
        }
    }

    #[tokio::test]
    async fn the_mirror_task_fetches_a_followed_tree_from_a_peer_and_reports_progress() {
        // A writer holding one blob of three 1 MiB chunks.
        let writer = PartsNode::start(true, Vec::new(), Vec::new()).await;
        let blob = Bytes::from(vec![7u8; 3 << 20]);
        let digest: Digest = format!("sha256:{}", hex::encode(Sha256::digest(&blob)))
            .parse()
            .expect("a digest");
        let repo = RepoName::parse("demo/app").expect("a repository name");
        writer
            .registry
            .upload_blob(
                &repo,
                &digest,
                futures_util::stream::iter([Ok::<_, std::convert::Infallible>(blob.clone())]),
            )
            .await
            .expect("the blob is stored");
        let root = writer.registry.root();

        let replica = PartsNode::start(
            false,
            vec![mirror_all(&writer.keypair)],
            vec![writer.tcp_addr().await],
        )
        .await;
        follow_root(&replica.follower, &writer.keypair, root).await;
        let task = Arc::new(MirrorTask::new(
            replica.p2p.clone(),
            replica.registry.clone(),
            replica.follower.clone(),
        ));
        let tasks = OwnedTasks::default();
        tasks.spawn(task.clone().run());
        let name = mirror_all(&writer.keypair).name;
        wait_until("the mirror completes", || {
            task.state(&name).is_some_and(|s| s.state == "complete")
        })
        .await;

        let state = task.state(&name).expect("a mirror state");
        assert_eq!(state.root, root.to_string());
        assert!(state.progress.bytes >= blob.len() as u64, "{state:?}");
        assert!(state.progress.blocks >= 4, "{state:?}");
        assert_eq!(state.progress.blobs_total, 1);
        assert_eq!(state.progress.blobs_verified, 1);
        // Held locally now: readable with every peer gone.
        writer.p2p.shutdown().await;
        let local: &BlockStore = &replica.blocks;
        assert!(local.get(&root).await.expect("the store reads").is_some());
        assert!(tasks.shutdown(Duration::from_secs(60)).await);
    }

    /// A peer that never delivers: counts the fetches asked of it and those given up.
    struct SilentPeer {
        local: Arc<BlockStore>,
        asked: AtomicUsize,
        given_up: Arc<AtomicUsize>,
    }

    /// Counts a fetch given up when the future waiting on it is dropped.
    struct GivenUp(Arc<AtomicUsize>);

    impl Drop for GivenUp {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[async_trait]
    impl BlockSource for SilentPeer {
        async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
            if let Some(block) = self.local.get(cid).await? {
                return Ok(block);
            }
            self.asked.fetch_add(1, Ordering::SeqCst);
            let _given_up = GivenUp(self.given_up.clone());
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_cancelled_mirror_stops_fetching() {
        let writer = Keypair::generate_ed25519();
        let silent = Arc::new(std::sync::OnceLock::<Arc<SilentPeer>>::new());
        let made = silent.clone();
        let replica = PartsNode::start_reading(
            false,
            vec![mirror_all(&writer)],
            Vec::new(),
            move |local, _p2p| {
                let peer = Arc::new(SilentPeer {
                    local,
                    asked: AtomicUsize::new(0),
                    given_up: Arc::new(AtomicUsize::new(0)),
                });
                let _ = made.set(peer.clone());
                peer
            },
        )
        .await;
        let peer = silent.get().expect("the source was made").clone();
        let root = cid_of(RAW, b"a tree no peer delivers");
        follow_root(&replica.follower, &writer, root).await;
        let task = Arc::new(MirrorTask::new(
            replica.p2p.clone(),
            replica.registry.clone(),
            replica.follower.clone(),
        ));
        let tasks = OwnedTasks::default();
        tasks.spawn(task.clone().run());
        wait_until("the root is asked for", || {
            peer.asked.load(Ordering::SeqCst) == 1
        })
        .await;
        let name = mirror_all(&writer).name;
        assert_eq!(
            task.state(&name).map(|s| s.state),
            Some("running".to_owned())
        );

        // Without the cancellation this fetch would wait forever.
        assert!(tasks.shutdown(Duration::from_secs(60)).await);
        assert_eq!(tasks.running(), 0);
        assert_eq!(peer.given_up.load(Ordering::SeqCst), 1);
        assert_eq!(peer.asked.load(Ordering::SeqCst), 1);
    }
}
