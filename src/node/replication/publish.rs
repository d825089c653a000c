//! The publish task of a writer: turns committed roots into signed records (bursts coalesced
//! into one), publishes at start-up, renews and re-sends the own record, and watches the
//! network for a second writer of the own name.

use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use tokio::sync::watch;

use super::{second_writer_refusal, QUERY_TIMEOUT};
use crate::config::IpnsConfig;
use crate::metrics::PublishMetrics;
use crate::names::{IpnsName, Publisher};
use crate::p2p::P2p;
use crate::registry::Registry;

/// Bursts of commits within this window become one record.
const COALESCE: Duration = Duration::from_millis(5);
/// How often a writer asks its peers which record of its own name they hold. Gossipsub never
/// delivers a message signed by the own peer id, so a second writer using the same key shows up
/// only in these answers (and in the DHT).
const OWN_RECORD_CHECK: Duration = Duration::from_secs(10);
/// How long a starting writer waits for a first peer before it asks for its own name's newest
/// record and publishes.
const STARTUP_PEER_WAIT: Duration = Duration::from_secs(5);

/// Publishing the own root of a writer; [`PublishTask::run`] is the task.
pub struct PublishTask {
    p2p: P2p,
    registry: Arc<Registry>,
    publisher: Arc<Publisher>,
    /// The committed roots of the own tree; the task publishes the newest.
    roots: watch::Receiver<Cid>,
    republish: Duration,
    startup_peer_wait: Duration,
    metrics: PublishMetrics,
}

impl PublishTask {
    /// Publishes the roots `registry` commits under `publisher`'s name, counting into `metrics`.
    pub fn new(
        p2p: P2p,
        registry: Arc<Registry>,
        publisher: Arc<Publisher>,
        ipns: &IpnsConfig,
        metrics: PublishMetrics,
    ) -> Self {
        let roots = registry.tree().subscribe();
        PublishTask {
            p2p,
            registry,
            publisher,
            roots,
            republish: Duration::from_secs(ipns.republish_interval_secs.max(1)),
            startup_peer_wait: STARTUP_PEER_WAIT,
            metrics,
        }
    }

    /// Publishes the roots sent on `roots` instead of the registry's commits (tests drive
    /// bursts through it), and waits at most `startup_peer_wait` for a first peer at start.
    #[cfg(test)]
    fn with_roots(mut self, roots: watch::Receiver<Cid>, startup_peer_wait: Duration) -> Self {
        self.roots = roots;
        self.startup_peer_wait = startup_peer_wait;
        self
    }

    /// The publisher.
    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    /// Runs until the own tree's root stream ends (or the owner drops the future): the
    /// start-up publish, then a record per burst of commits, renewals and re-sends, and the
    /// periodic check of what peers hold for the own name.
    pub async fn run(self: Arc<Self>) {
        let mut roots = self.roots.clone();
        let name = *self.publisher.name();
        if let Err(e) = self
            .p2p
            .subscribe(name.pubsub_topic(), name.routing_key())
            .await
        {
            tracing::warn!(%name, error = %e, "cannot subscribe to the own pubsub topic");
        }
        self.start_up(&mut roots).await;
        tokio::select! {
            () = self.publish_commits(&mut roots) => {}
            () = self.check_own_record_periodically() => {}
        }
    }

    /// Adopts what peers hold for the own name as the sequence floor, then publishes if the
    /// held record does not name the current root, needs renewal or lags behind the network.
    async fn start_up(&self, roots: &mut watch::Receiver<Cid>) {
        let publisher = &self.publisher;
        let name = publisher.name();
        // A data directory restored from a backup may lag behind what it published before:
        // look at what peers hold, so the next sequence number goes above it.
        // Peers configured or on the LAN connect within moments of the start; ask them.
        let waiting = tokio::time::Instant::now();
        while self.p2p.connected_peers().await.is_empty()
            && waiting.elapsed() < self.startup_peer_wait
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for record in self
            .p2p
            .query_records(name.routing_key(), QUERY_TIMEOUT)
            .await
        {
            publisher.adopt_floor(&record);
        }
        let root = *roots.borrow_and_update();
        let current_root = publisher.current().and_then(|r| r.root().ok());
        if current_root != Some(root) || publisher.needs_renewal() || publisher.behind_network() {
            self.publish(root).await;
        }
        // Only now: answers to the start-up query may still arrive as events, and until the
        // record above is out they are news about the floor, not about a second writer.
        publisher.end_startup();
        // Provided from the start, also when the held record already names the root.
        self.provide(root).await;
    }

    /// One record per burst of commits; renewal or a re-send every republish interval.
    async fn publish_commits(&self, roots: &mut watch::Receiver<Cid>) {
        let mut republish = tokio::time::interval(self.republish);
        republish.tick().await;
        loop {
            tokio::select! {
                changed = roots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::time::sleep(COALESCE).await;
                    let root = *roots.borrow_and_update();
                    self.publish(root).await;
                }
                _ = republish.tick() => {
                    if self.publisher.needs_renewal() {
                        let root = *roots.borrow();
                        self.publish(root).await;
                    } else if let Some(record) = self.publisher.current() {
                        self.send(record.to_bytes().to_vec()).await;
                    }
                }
            }
        }
    }

    async fn check_own_record_periodically(&self) {
        let mut own_check = tokio::time::interval(OWN_RECORD_CHECK);
        own_check.tick().await;
        loop {
            own_check.tick().await;
            self.ask_peers_for_own_record().await;
        }
    }

    /// Asks every connected peer (and the DHT) for the own name's record. Answers arrive as
    /// record events, which the follow task hands to [`PublishTask::observe`].
    pub async fn ask_peers_for_own_record(&self) {
        let key = self.publisher.name().routing_key();
        self.p2p.query_records(key, QUERY_TIMEOUT).await;
    }

    /// Checks a record of the own name from the network: one this node did not sign, at or
    /// above its sequence, is a second writer, and writes are refused from then on.
    pub async fn observe(&self, record: &[u8]) {
        let publisher = &self.publisher;
        if publisher.observe(record).await {
            if let Some(detail) = publisher.conflict() {
                self.registry
                    .refuse_writes(second_writer_refusal(publisher.name(), &detail));
            }
        }
    }

    async fn publish(&self, root: Cid) {
        let started = std::time::Instant::now();
        match self.publisher.publish_root(&root).await {
            Ok(record) => {
                tracing::info!(name = %self.publisher.name(), %root, sequence = record.sequence(), "published");
                self.send(record.to_bytes().to_vec()).await;
                self.metrics.published(started.elapsed());
                self.provide(root).await;
            }
            Err(e) => {
                self.metrics.failed();
                tracing::error!(error = %e, "not publishing");
            }
        }
    }

    /// Provides `root` on the DHTs in place of the previous one, so that replicas that know
    /// only the name find this node.
    async fn provide(&self, root: Cid) {
        let name = self.publisher.name();
        if let Err(e) = self.p2p.provide_root(&name.routing_key(), root).await {
            tracing::warn!(%name, %root, error = %e, "not providing the root");
        }
    }

    async fn send(&self, record: Vec<u8>) {
        let name: &IpnsName = self.publisher.name();
        if let Err(e) = self
            .p2p
            .publish(name.pubsub_topic(), name.routing_key(), record)
            .await
        {
            tracing::warn!(%name, error = %e, "sending the record to peers failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::IpnsRecord;
    use crate::node::replication::fixture::{wait_until, PartsNode};
    use crate::node::replication::OwnedTasks;
    use crate::tree::{cid_of, RAW};

    /// The root a record of `publisher` names now.
    fn published_root(publisher: &Publisher) -> Option<Cid> {
        publisher.current().and_then(|r| r.root().ok())
    }

    /// The writer's publish task of `node`, taking its roots from `roots` with no coalescing,
    /// running under tasks of its own.
    fn run_publish_task(
        node: &PartsNode,
        roots: watch::Receiver<Cid>,
    ) -> (Arc<PublishTask>, OwnedTasks) {
        let publisher = node.publisher.clone().expect("a writer");
        let task = Arc::new(
            PublishTask::new(
                node.p2p.clone(),
                node.registry.clone(),
                publisher,
                &IpnsConfig::default(),
                PublishMetrics::default(),
            )
            .with_roots(roots, Duration::ZERO),
        );
        let tasks = OwnedTasks::default();
        tasks.spawn(task.clone().run());
        (task, tasks)
    }

    #[tokio::test]
    async fn a_burst_of_commits_becomes_one_record_and_a_cancelled_task_lets_go() {
        let node = PartsNode::start(true, Vec::new(), Vec::new()).await;
        let publisher = node.publisher.clone().expect("a writer");
        let start_root = node.registry.root();
        let (roots, receiver) = watch::channel(start_root);
        let (task, tasks) = run_publish_task(&node, receiver);

        // Start-up: the root held is published once.
        wait_until("the start-up record", || publisher.current().is_some()).await;
        assert_eq!(published_root(&publisher), Some(start_root));
        assert_eq!(publisher.current().map(|r| r.sequence()), Some(1));

        // Fifty commits with nothing in between: one record, naming the last root.
        let burst: Vec<Cid> = (0..50)
            .map(|i| cid_of(RAW, format!("root {i}").as_bytes()))
            .collect();
        for root in &burst {
            roots.send_replace(*root);
        }
        let last = burst.last().copied();
        wait_until("the burst published", || published_root(&publisher) == last).await;
        assert_eq!(publisher.current().map(|r| r.sequence()), Some(2));

        // Cancelled, the task ends and holds nothing any more: no receiver of the roots is
        // left once the test drops its own handle, so no later commit can be published.
        assert!(tasks.shutdown(Duration::from_secs(60)).await);
        assert_eq!(tasks.running(), 0);
        drop(task);
        assert_eq!(roots.receiver_count(), 0);
        assert!(roots.send(cid_of(RAW, b"after the shutdown")).is_err());
        assert_eq!(publisher.current().map(|r| r.sequence()), Some(2));
    }

    #[tokio::test]
    async fn a_record_of_the_own_name_signed_elsewhere_closes_the_write_gate() {
        let node = PartsNode::start(true, Vec::new(), Vec::new()).await;
        let publisher = node.publisher.clone().expect("a writer");
        let (roots, receiver) = watch::channel(node.registry.root());
        let (task, tasks) = run_publish_task(&node, receiver);
        // A record after the start-up one: the start-up phase, where foreign records only
        // raise the floor, is over.
        wait_until("the start-up record", || publisher.current().is_some()).await;
        roots.send_replace(cid_of(RAW, b"a commit"));
        wait_until("the commit published", || {
            publisher.current().map(|r| r.sequence()) == Some(2)
        })
        .await;

        // Its own record is no news.
        let own = publisher.current().expect("a record");
        task.observe(own.to_bytes()).await;
        assert!(node.registry.ensure_writable().is_ok());

        // The same key used elsewhere, above the own sequence: a second writer.
        let other_root = cid_of(RAW, b"the other writer's tree");
        let foreign = IpnsRecord::sign(
            &node.keypair,
            &format!("/ipfs/{other_root}"),
            3,
            Duration::from_secs(3600),
            Duration::from_secs(60),
        )
        .expect("a record");
        task.observe(foreign.to_bytes()).await;
        let refusal = node.registry.write_refusal().expect("writes refused");
        assert!(refusal.contains("--take-over-name"), "{refusal}");
        assert!(publisher.conflict().is_some());
        assert!(tasks.shutdown(Duration::from_secs(60)).await);
    }
}
