//! The follow task: keeps each followed name at its newest valid record. It takes records from
//! the p2p events (pubsub, answers, the DHT) and from other nodes' gateways, resolves the names
//! again periodically and whenever a peer connects, and relays the held records so replicas keep
//! each other current when the writer is gone. Records of a writer's own name go to its publish
//! task's second-writer check.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::mpsc;

use super::publish::PublishTask;
use super::{OwnedTasks, QUERY_TIMEOUT, RESOLVE_INTERVAL};
use crate::config::IpnsConfig;
use crate::names::{Follower, IpnsName, Offer};
use crate::node::gateway::GatewayClient;
use crate::p2p::{P2p, P2pEvent};
use crate::registry::Registry;
use crate::tree::{cid_of, RAW};

/// A replica looks for fellow replicas of its names while it has fewer connected peers than
/// this; each look dials at most eight (`P2p::meet_providers`), and the swarm's
/// `p2p.max_connections` bounds the total.
const MEET_BELOW_PEERS: usize = 8;

/// The key under which the replicas of `name` provide themselves on the DHTs, so that they
/// find each other by the name alone. It is not content anyone serves: a raw CID of a fixed
/// text naming the name, the same for every node of this program.
fn rendezvous(name: &IpnsName) -> cid::Cid {
    let mut text = b"ipns-registry replicas of ".to_vec();
    text.extend_from_slice(&name.routing_key());
    cid_of(RAW, &text)
}

/// Other nodes' gateways asked for the followed names' records, and how often.
pub struct GatewayPolling {
    /// The gateways.
    pub client: Arc<GatewayClient>,
    /// Time between two rounds of asking.
    pub interval: Duration,
}

/// Following names; [`FollowTask::run`] is the task.
pub struct FollowTask {
    p2p: P2p,
    registry: Arc<Registry>,
    follower: Arc<Follower>,
    /// A writer's publish task, which judges records of the own name.
    own: Option<Arc<PublishTask>>,
    relay: Duration,
    gateways: Option<GatewayPolling>,
    /// Where the short queries started when a peer connects run, owned like the task itself.
    tasks: OwnedTasks,
}

impl FollowTask {
    /// Follows `follower`'s names, moving `registry`'s followed roots along; records of the own
    /// name go to `own`; queries started per connected peer run on `tasks`.
    pub fn new(
        p2p: P2p,
        registry: Arc<Registry>,
        follower: Arc<Follower>,
        own: Option<Arc<PublishTask>>,
        ipns: &IpnsConfig,
        tasks: OwnedTasks,
    ) -> Self {
        FollowTask {
            p2p,
            registry,
            follower,
            own,
            relay: Duration::from_secs(ipns.republish_interval_secs.max(1)),
            gateways: None,
            tasks,
        }
    }

    /// Also asks `gateways` for the followed names' records.
    pub fn with_gateways(mut self, gateways: GatewayPolling) -> Self {
        self.gateways = Some(gateways);
        self
    }

    /// The follower.
    pub fn follower(&self) -> &Arc<Follower> {
        &self.follower
    }

    /// Runs until the owner drops the future: handles `events` (until the p2p node closes
    /// them), resolves and relays periodically, and polls the gateways.
    pub async fn run(self: Arc<Self>, events: mpsc::Receiver<P2pEvent>) {
        tokio::join!(
            self.handle_events(events),
            self.resolve_and_relay(),
            self.poll_gateways()
        );
    }

    async fn handle_events(self: &Arc<Self>, mut events: mpsc::Receiver<P2pEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                P2pEvent::Record {
                    routing_key,
                    record,
                    from,
                } => self.on_record(&routing_key, &record, from).await,
                P2pEvent::PeerConnected(peer) => {
                    tracing::debug!(%peer, "peer connected: asking for followed records");
                    let own = self.own.clone();
                    let this = self.clone();
                    self.tasks.spawn(async move {
                        if let Some(own) = own {
                            // A new peer may hold a record of the own name from a second writer.
                            own.ask_peers_for_own_record().await;
                        }
                        this.resolve_all().await
                    });
                }
                P2pEvent::PeerDisconnected(peer) => tracing::debug!(%peer, "peer disconnected"),
            }
        }
    }

    /// Judges a record (from a peer, or `from: None` for the own DHT store or a gateway) and
    /// takes it if it is the newest of a followed name.
    pub async fn on_record(&self, routing_key: &[u8], record: &[u8], from: Option<libp2p::PeerId>) {
        if let Some(own) = &self.own {
            if own.publisher().name().routing_key() == routing_key {
                own.observe(record).await;
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

    async fn resolve_and_relay(&self) {
        for followed in self.follower.names() {
            let name = &followed.name;
            if let Err(e) = self
                .p2p
                .subscribe(name.pubsub_topic(), name.routing_key())
                .await
            {
                tracing::warn!(%name, error = %e, "cannot subscribe to the name's pubsub topic");
            }
            if let Err(e) = self.p2p.provide(rendezvous(name)).await {
                tracing::warn!(%name, error = %e, "cannot announce this replica of the name");
            }
        }
        let mut resolve = tokio::time::interval(RESOLVE_INTERVAL);
        let mut relay = tokio::time::interval(self.relay);
        relay.tick().await;
        loop {
            tokio::select! {
                _ = resolve.tick() => self.resolve_all().await,
                _ = relay.tick() => self.relay_held().await,
            }
        }
    }

    /// Asks every connected peer (and the DHT) for the records of all followed names, and
    /// meets fellow replicas while there are few peers.
    async fn resolve_all(&self) {
        if self.p2p.connected_peers().await.len() < MEET_BELOW_PEERS {
            for followed in self.follower.names() {
                self.p2p.meet_providers(rendezvous(&followed.name)).await;
            }
        }
        let queries = self
            .follower
            .names()
            .iter()
            .map(|f| self.p2p.query_records(f.name.routing_key(), QUERY_TIMEOUT));
        // Answers arrive as events too; they are offered there.
        join_all(queries).await;
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

    /// Asks the gateways for the records of every followed name now and every interval, and
    /// judges what they answer like a record from a peer.
    async fn poll_gateways(&self) {
        let Some(gateways) = &self.gateways else {
            return;
        };
        let mut tick = tokio::time::interval(gateways.interval);
        loop {
            tick.tick().await;
            for followed in self.follower.names() {
                let name = followed.name;
                for record in gateways.client.records(&name).await {
                    self.on_record(&name.routing_key(), &record, None).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mirror;
    use crate::names::{FollowedName, IpnsName, IpnsRecord};
    use crate::node::replication::fixture::{wait_until, PartsNode};
    use crate::tree::{cid_of, RAW};
    use cid::Cid;
    use libp2p::identity::Keypair;

    /// A writer's key and name, and a record of it naming `root` at `sequence`.
    struct Writer(Keypair);

    impl Writer {
        fn name(&self) -> IpnsName {
            IpnsName::from_peer_id(self.0.public().to_peer_id())
        }

        fn record(&self, sequence: u64, root: Cid) -> P2pEvent {
            let record = IpnsRecord::sign(
                &self.0,
                &format!("/ipfs/{root}"),
                sequence,
                Duration::from_secs(3600),
                Duration::from_secs(60),
            )
            .expect("a record");
            P2pEvent::Record {
                routing_key: self.name().routing_key(),
                record: record.to_bytes().to_vec(),
                from: None,
            }
        }
    }

    #[tokio::test]
    async fn the_follow_task_takes_a_newer_record_ignores_a_stale_one_and_stops_when_cancelled() {
        let (a, b) = (
            Writer(Keypair::generate_ed25519()),
            Writer(Keypair::generate_ed25519()),
        );
        let followed = |w: &Writer| FollowedName {
            name: w.name(),
            mirror: Mirror::None,
        };
        let node = PartsNode::start(false, vec![followed(&a), followed(&b)], Vec::new()).await;
        let tasks = OwnedTasks::default();
        let task = Arc::new(FollowTask::new(
            node.p2p.clone(),
            node.registry.clone(),
            node.follower.clone(),
            None,
            &IpnsConfig::default(),
            tasks.clone(),
        ));
        let (events, receiver) = mpsc::channel(8);
        tasks.spawn(task.clone().run(receiver));
        let held = |w: &Writer| node.follower.held(&w.name()).map(|h| h.record.sequence());

        // Newer than nothing: taken, and the registry reads the new root.
        let (old_root, new_root) = (cid_of(RAW, b"old"), cid_of(RAW, b"new"));
        events
            .send(a.record(2, new_root))
            .await
            .expect("the task listens");
        wait_until("a's record taken", || held(&a) == Some(2)).await;
        assert_eq!(node.registry.view(), vec![new_root]);

        // Older than the held one: ignored. Events are handled in order, so once b's record
        // (sent after it) is held, the stale one has been judged.
        let b_root = cid_of(RAW, b"b");
        events
            .send(a.record(1, old_root))
            .await
            .expect("the task listens");
        events
            .send(b.record(1, b_root))
            .await
            .expect("the task listens");
        wait_until("b's record taken", || held(&b) == Some(1)).await;
        assert_eq!(held(&a), Some(2));
        assert_eq!(node.registry.view(), vec![new_root, b_root]);

        // Cancelled, it lets go of its event stream.
        assert!(tasks.shutdown(Duration::from_secs(60)).await);
        assert_eq!(tasks.running(), 0);
        assert!(events.is_closed());
    }
}
