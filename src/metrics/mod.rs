//! The node's metrics: one registry of typed handles, one handle per layer, and the text that
//! `GET /metrics` serves. This is the only module that knows the exposition format
//! (OpenMetrics text, which Prometheus reads); layers count through their handle and never
//! format anything.
//!
//! Names follow `ipns_registry_<thing>_<unit>`. Labels take few values (route classes, methods,
//! statuses, followed names), never paths, repositories or digests, so the number of series
//! stays small however the registry is used. Everything a scrape reads is in memory: counters
//! and histograms the layers update as they work, and a [`NodeSampler`] that reads the node's
//! state (store counts, sessions, followed names) without I/O.

mod http;
mod p2p;
mod sampled;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub use self::http::{HttpMetrics, MethodLabel, RequestOutcome, RouteClass};
pub use self::p2p::P2pMetrics;
pub use self::sampled::{FollowedSample, MirrorSample, NodeSample, NodeSampler, StoreSample};

/// Prefix of every metric name.
const PREFIX: &str = "ipns_registry";

/// `Content-Type` of the text [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the latency histograms: from a cached manifest answered in a
/// millisecond to a large layer streamed over a slow link for minutes.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.01, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0,
];

/// Upper bounds (seconds) of the commit and publish histograms: both sync to disk, which takes
/// from a millisecond on an SSD to a second on a busy SD card.
const SYNC_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// The node's metric registry and the handles it hands to each layer.
pub struct Metrics {
    registry: Mutex<Registry>,
    http: HttpMetrics,
    commits: CommitMetrics,
    p2p: P2pMetrics,
    publish: PublishMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every handle registered (and no sampler yet).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let http = HttpMetrics::default();
        http.register(&mut registry);
        let commits = CommitMetrics::default();
        commits.register(&mut registry);
        let p2p = P2pMetrics::default();
        p2p.register(&mut registry);
        let publish = PublishMetrics::default();
        publish.register(&mut registry);
        Metrics {
            registry: Mutex::new(registry),
            http,
            commits,
            p2p,
            publish,
        }
    }

    /// The HTTP layer's handle.
    pub fn http(&self) -> HttpMetrics {
        self.http.clone()
    }

    /// The tree's handle (commits).
    pub fn commits(&self) -> CommitMetrics {
        self.commits.clone()
    }

    /// The p2p layer's handle (peers, Bitswap).
    pub fn p2p(&self) -> P2pMetrics {
        self.p2p.clone()
    }

    /// The publisher's handle (writers).
    pub fn publish(&self) -> PublishMetrics {
        self.publish.clone()
    }

    /// Reads `sampler` at every scrape, for the values that are state rather than events.
    pub fn sample_with(&self, sampler: Arc<dyn NodeSampler>) {
        self.lock()
            .register_collector(Box::new(sampled::SampledCollector::new(sampler)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail; an encoder error would be a bug in a collector,
        // and a truncated page is still better than none.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.lock()) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        text
    }
}

/// Commits of the node's own tree: how many and how long each took (new blocks synced, root
/// swapped and flushed). A handle not taken from [`Metrics`] counts into nothing.
#[derive(Clone, Debug)]
pub struct CommitMetrics {
    duration: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        CommitMetrics {
            duration: Histogram::new(SYNC_BUCKETS),
        }
    }
}

impl CommitMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "tree_commit_duration",
            "Commits of the own tree (count) and how long each took: blocks synced, root swapped and flushed",
            Unit::Seconds,
            self.duration.clone(),
        );
    }

    /// One commit took `elapsed`.
    pub fn committed(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// Publishing of the own root (writers): how long each publish took and how many failed. The
/// published sequence itself is sampled from the publisher.
#[derive(Clone, Debug)]
pub struct PublishMetrics {
    duration: Histogram,
    failures: Counter,
}

impl Default for PublishMetrics {
    fn default() -> Self {
        PublishMetrics {
            duration: Histogram::new(SYNC_BUCKETS),
            failures: Counter::default(),
        }
    }
}

impl PublishMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "publish_duration",
            "Records of the own name published (count) and how long each took: signed, its sequence persisted, handed to pubsub and the DHT",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register(
            "publish_failures",
            "Publishes of the own name that failed",
            self.failures.clone(),
        );
    }

    /// A record was published in `elapsed`.
    pub fn published(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// A publish failed.
    pub fn failed(&self) {
        self.failures.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_count_into_the_registry_they_came_from() {
        let metrics = Metrics::new();
        metrics.commits().committed(Duration::from_millis(3));
        metrics.publish().failed();
        let text = metrics.encode();
        assert!(
            text.contains("ipns_registry_tree_commit_duration_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ipns_registry_publish_failures_total 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        // A detached handle counts into nothing that is served.
        CommitMetrics::default().committed(Duration::from_millis(1));
        assert!(metrics
            .encode()
            .contains("ipns_registry_tree_commit_duration_seconds_count 1\n"));
    }
}
