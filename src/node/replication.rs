//! Replication tasks: publishing the own root, following names, answering and relaying records,
//! and mirroring followed trees.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cid::Cid;
use futures_util::future::join_all;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{IpnsConfig, Mirror};
use crate::metrics::PublishMetrics;
use crate::names::{
    check_routing_key, judge_record, FollowedName, Follower, IpnsName, Offer, Publisher,
    RecordJudgement,
};
use crate::p2p::{P2p, P2pEvent, RecordSource, RecordValidator, RecordVerdict};
use crate::registry::{MirrorCounts, MirrorProgress, Registry, RepoName};

/// How long a direct record query waits for answers.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// How often followed names are resolved again even without news.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
/// Bursts of commits within this window become one record.
const COALESCE: Duration = Duration::from_millis(5);
/// How often a writer asks its peers which record of its own name they hold. Gossipsub never
/// delivers a message signed by the own peer id, so a second writer using the same key shows up
/// only in these answers (and in the DHT).
const OWN_RECORD_CHECK: Duration = Duration::from_secs(10);
/// How long a starting writer waits for a first peer before it asks for its own name's newest
/// record and publishes.
const STARTUP_PEER_WAIT: Duration = Duration::from_secs(5);

/// What a writer answers to writes once it has seen a second writer of its name: what happened
/// and what the operator can do.
pub fn second_writer_refusal(name: &IpnsName, detail: &str) -> String {
    format!(
        "writes refused: another node publishes under this writer's IPNS name {name} ({detail}); \
         stop the other writer (or give it a key of its own), then restart this one with \
         `ipns-registry serve --take-over-name`"
    )
}

/// The records a node can hand to peers that ask (its own and those it follows), which are
/// also what records from the network are judged against.
pub struct HeldRecords {
    /// The own records (writers).
    pub publisher: Option<Arc<Publisher>>,
    /// The followed records.
    pub follower: Arc<Follower>,
}

impl RecordSource for HeldRecords {
    fn newest(&self, routing_key: &[u8]) -> Option<Vec<u8>> {
        if let Some(publisher) = &self.publisher {
            if publisher.name().routing_key() == routing_key {
                return publisher.current().map(|r| r.to_bytes().to_vec());
            }
        }
        self.follower.newest(routing_key)
    }

    fn all(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut all = self.follower.all();
        if let Some(publisher) = &self.publisher {
            if let Some(own) = publisher.current() {
                all.push((publisher.name().routing_key(), own.to_bytes().to_vec()));
            }
        }
        all
    }
}

/// A record from the network must be valid for its key and no older than what the DHT store,
/// the publisher or the follower holds for it.
impl RecordValidator for HeldRecords {
    fn validate(&self, routing_key: &[u8], record: &[u8], held: Option<&[u8]>) -> RecordVerdict {
        let own = self.newest(routing_key);
        let held = held.into_iter().chain(own.as_deref());
        match judge_record(routing_key, record, held, SystemTime::now()) {
            RecordJudgement::Valid(_) => RecordVerdict::Accept,
            RecordJudgement::Stale(why) => RecordVerdict::Ignore(why.to_string()),
            RecordJudgement::Invalid(why) => RecordVerdict::Reject(why.to_string()),
        }
    }

    fn check_key(&self, routing_key: &[u8]) -> Result<(), String> {
        check_routing_key(routing_key)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

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

/// The running replication of one node.
pub struct Replication {
    p2p: P2p,
    registry: Arc<Registry>,
    follower: Arc<Follower>,
    publisher: Option<Arc<Publisher>>,
    ipns: IpnsConfig,
    mirrors: Mutex<HashMap<IpnsName, MirrorRun>>,
    metrics: PublishMetrics,
}

impl Replication {
    /// Wires the parts together; nothing runs until [`Replication::spawn`]. Publishing is
    /// counted into `metrics`.
    pub fn new(
        p2p: P2p,
        registry: Arc<Registry>,
        follower: Arc<Follower>,
        publisher: Option<Arc<Publisher>>,
        ipns: IpnsConfig,
        metrics: PublishMetrics,
    ) -> Arc<Self> {
        registry.set_followed_roots(follower.roots());
        Arc::new(Replication {
            p2p,
            registry,
            follower,
            publisher,
            ipns,
            mirrors: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The follower.
    pub fn follower(&self) -> &Arc<Follower> {
        &self.follower
    }

    /// The publisher (writers).
    pub fn publisher(&self) -> Option<&Arc<Publisher>> {
        self.publisher.as_ref()
    }

    /// The mirror state of a followed name.
    pub fn mirror_state(&self, name: &IpnsName) -> Option<MirrorState> {
        let mirrors = self.mirrors.lock().unwrap_or_else(|p| p.into_inner());
        mirrors.get(name).map(|run| MirrorState {
            root: run.root.to_string(),
            state: run.state.clone(),
            progress: run.progress.counts(),
        })
    }

    /// Starts the replication tasks; they end when the p2p event stream ends.
    pub fn spawn(self: &Arc<Self>, events: mpsc::Receiver<P2pEvent>) {
        tokio::spawn(self.clone().handle_events(events));
        tokio::spawn(self.clone().resolve_loop());
        tokio::spawn(self.clone().mirror_loop());
        if self.publisher.is_some() {
            tokio::spawn(self.clone().publish_loop());
        }
    }

    async fn handle_events(self: Arc<Self>, mut events: mpsc::Receiver<P2pEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                P2pEvent::Record {
                    routing_key,
                    record,
                    from,
                } => self.on_record(&routing_key, &record, from).await,
                P2pEvent::PeerConnected(peer) => {
                    tracing::debug!(%peer, "peer connected: asking for followed records");
                    let this = self.clone();
                    tokio::spawn(async move {
                        if let Some(publisher) = &this.publisher {
                            // A new peer may hold a record of the own name from a second writer.
                            let key = publisher.name().routing_key();
                            this.p2p.query_records(key, QUERY_TIMEOUT).await;
                        }
                        this.resolve_all().await
                    });
                }
                P2pEvent::PeerDisconnected(peer) => tracing::debug!(%peer, "peer disconnected"),
            }
        }
    }

    /// Offers a record that came from outside libp2p (another node's gateway): judged and
    /// taken like one from a peer.
    pub async fn offer_record(&self, routing_key: &[u8], record: &[u8]) {
        self.on_record(routing_key, record, None).await
    }

    async fn on_record(&self, routing_key: &[u8], record: &[u8], from: Option<libp2p::PeerId>) {
        if let Some(publisher) = &self.publisher {
            if publisher.name().routing_key() == routing_key {
                if publisher.observe(record).await {
                    if let Some(detail) = publisher.conflict() {
                        self.registry
                            .refuse_writes(second_writer_refusal(publisher.name(), &detail));
                    }
                }
                return;
            }
        }
        match self.follower.offer(routing_key, record).await {
            Ok(Offer::Accepted {
                name,
                root,
                sequence,
            }) => {
                tracing::info!(%name, %root, sequence, ?from, "followed name moved to a new root");
                self.registry.set_followed_roots(self.follower.roots());
            }
            Ok(Offer::Stale | Offer::NotFollowed) => {}
            Err(e) => tracing::warn!(?from, error = %e, "ignoring a record"),
        }
    }

    /// Asks every connected peer (and the DHT) for the records of all followed names.
    async fn resolve_all(&self) {
        let queries = self
            .follower
            .names()
            .iter()
            .map(|f| self.p2p.query_records(f.name.routing_key(), QUERY_TIMEOUT));
        // Answers arrive as events too; they are offered there.
        join_all(queries).await;
    }

    async fn resolve_loop(self: Arc<Self>) {
        for followed in self.follower.names() {
            let name = &followed.name;
            if let Err(e) = self
                .p2p
                .subscribe(name.pubsub_topic(), name.routing_key())
                .await
            {
                tracing::warn!(%name, error = %e, "cannot subscribe to the name's pubsub topic");
            }
        }
        let mut resolve = tokio::time::interval(RESOLVE_INTERVAL);
        let mut relay = tokio::time::interval(Duration::from_secs(
            self.ipns.republish_interval_secs.max(1),
        ));
        relay.tick().await;
        loop {
            tokio::select! {
                _ = resolve.tick() => self.resolve_all().await,
                _ = relay.tick() => self.relay_held().await,
            }
        }
    }

    /// Sends the held records of followed names to peers again, so that replicas keep each
    /// other up to date when the writer is gone.
    async fn relay_held(&self) {
        for followed in self.follower.names() {
            let name = &followed.name;
            if let Some(held) = self.follower.held(name) {
                let bytes = held.record.to_bytes().to_vec();
                if let Err(e) = self
                    .p2p
                    .publish(name.pubsub_topic(), name.routing_key(), bytes)
                    .await
                {
                    tracing::debug!(%name, error = %e, "relaying a record failed");
                }
            }
        }
    }

    async fn publish_loop(self: Arc<Self>) {
        let Some(publisher) = self.publisher.clone() else {
            return;
        };
        let name = *publisher.name();
        if let Err(e) = self
            .p2p
            .subscribe(name.pubsub_topic(), name.routing_key())
            .await
        {
            tracing::warn!(%name, error = %e, "cannot subscribe to the own pubsub topic");
        }
        // A data directory restored from a backup may lag behind what it published before:
        // look at what peers hold, so the next sequence number goes above it.
        // Peers configured or on the LAN connect within moments of the start; ask them.
        let waiting = tokio::time::Instant::now();
        while self.p2p.connected_peers().await.is_empty() && waiting.elapsed() < STARTUP_PEER_WAIT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for record in self
            .p2p
            .query_records(name.routing_key(), QUERY_TIMEOUT)
            .await
        {
            publisher.adopt_floor(&record);
        }
        let mut roots = self.registry.tree().subscribe();
        let mut republish = tokio::time::interval(Duration::from_secs(
            self.ipns.republish_interval_secs.max(1),
        ));
        let current_root = publisher.current().and_then(|r| r.root().ok());
        if current_root != Some(self.registry.root())
            || publisher.needs_renewal()
            || publisher.behind_network()
        {
            self.publish(&publisher).await;
        }
        // Only now: answers to the start-up query may still arrive as events, and until the
        // record above is out they are news about the floor, not about a second writer.
        publisher.end_startup();
        // Provider records: replicas that know only the name find this node through the DHT.
        self.p2p
            .provide_root(&name.routing_key(), self.registry.root())
            .await
            .unwrap_or_else(|e| tracing::warn!(error = %e, "not providing the root"));
        republish.tick().await;
        let p2p = self.p2p.clone();
        let key = name.routing_key();
        tokio::spawn(async move {
            let mut own_check = tokio::time::interval(OWN_RECORD_CHECK);
            own_check.tick().await;
            loop {
                own_check.tick().await;
                // Answers arrive as record events and go to `Publisher::observe`.
                p2p.query_records(key.clone(), QUERY_TIMEOUT).await;
            }
        });
        loop {
            tokio::select! {
                changed = roots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::time::sleep(COALESCE).await;
                    roots.borrow_and_update();
                    self.publish(&publisher).await;
                }
                _ = republish.tick() => {
                    if publisher.needs_renewal() {
                        self.publish(&publisher).await;
                    } else if let Some(record) = publisher.current() {
                        self.send(&name, record.to_bytes().to_vec()).await;
                    }
                }
            }
        }
    }

    async fn publish(&self, publisher: &Publisher) {
        let root = self.registry.root();
        let started = std::time::Instant::now();
        match publisher.publish_root(&root).await {
            Ok(record) => {
                tracing::info!(name = %publisher.name(), %root, sequence = record.sequence(), "published");
                self.send(publisher.name(), record.to_bytes().to_vec())
                    .await;
                self.p2p
                    .provide_root(&publisher.name().routing_key(), root)
                    .await
                    .unwrap_or_else(|e| tracing::warn!(error = %e, "not providing the root"));
                self.metrics.published(started.elapsed());
            }
            Err(e) => {
                self.metrics.failed();
                tracing::error!(error = %e, "not publishing");
            }
        }
    }

    async fn send(&self, name: &IpnsName, record: Vec<u8>) {
        if let Err(e) = self
            .p2p
            .publish(name.pubsub_topic(), name.routing_key(), record)
            .await
        {
            tracing::warn!(%name, error = %e, "sending the record to peers failed");
        }
    }

    async fn mirror_loop(self: Arc<Self>) {
        let mut changed = self.follower.subscribe();
        let mut retry = tokio::time::interval(RESOLVE_INTERVAL);
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
            let mut mirrors = self.mirrors.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(run) = mirrors.get(&followed.name) {
                if run.root == held.root && run.state == "complete" {
                    return;
                }
            }
            let progress = Arc::new(MirrorProgress::default());
            mirrors.insert(
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
                self.p2p
                    .provide_root(&name.routing_key(), held.root)
                    .await
                    .unwrap_or_else(
                        |e| tracing::warn!(error = %e, "not providing the mirrored root"),
                    );
                "complete".to_owned()
            }
            Err(e) => {
                tracing::warn!(%name, error = %e, "mirror incomplete; will retry");
                format!("failed: {e}")
            }
        };
        let mut mirrors = self.mirrors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(run) = mirrors.get_mut(name) {
            if run.root == held.root {
                run.state = state;
            }
        }
    }
}
