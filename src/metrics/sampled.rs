//! Values read from the node's state at each scrape rather than counted as they happen: what
//! the block store holds, open upload sessions, the own published sequence, and each followed
//! name's sequence, root age and mirror progress.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Reads the node's state for a scrape. Called on every `GET /metrics`: it must only read
/// memory (no disk, no network, no tree walks).
pub trait NodeSampler: Send + Sync + 'static {
    /// The values now.
    fn sample(&self) -> NodeSample;
}

/// The node's state at one scrape.
#[derive(Debug, Clone, Default)]
pub struct NodeSample {
    /// What the block store holds; `None` while its first count is still running.
    pub store: Option<StoreSample>,
    /// Upload sessions open.
    pub upload_sessions: u64,
    /// The sequence of the own record last published (writers that have published).
    pub published_sequence: Option<u64>,
    /// The followed names, in lookup order.
    pub followed: Vec<FollowedSample>,
}

/// Blocks held in the local store (staging areas not included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSample {
    /// Number of blocks.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One followed name.
#[derive(Debug, Clone, Default)]
pub struct FollowedSample {
    /// The IPNS name.
    pub name: String,
    /// The sequence of the record held, if any.
    pub sequence: Option<u64>,
    /// Since the held record was accepted; `None` if it was loaded from disk at start.
    pub root_age: Option<Duration>,
    /// The mirror run of the held root, if the name is mirrored and one has started.
    pub mirror: Option<MirrorSample>,
}

/// Progress of mirroring a followed name's root.
#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorSample {
    /// Blocks fetched or found.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs checked against their digests.
    pub blobs_verified: u64,
    /// Blobs to check.
    pub blobs_total: u64,
    /// Whether the run completed.
    pub complete: bool,
}

/// Encodes a [`NodeSampler`]'s values as gauges.
pub(super) struct SampledCollector {
    sampler: Arc<dyn NodeSampler>,
}

impl SampledCollector {
    pub(super) fn new(sampler: Arc<dyn NodeSampler>) -> Self {
        SampledCollector { sampler }
    }
}

impl std::fmt::Debug for SampledCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampledCollector").finish_non_exhaustive()
    }
}

/// Saturates instead of wrapping: a gauge far beyond i64 is wrong either way, but never
/// negative.
fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// Writes one unlabelled gauge.
fn write_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = gauge(value);
    let metric_encoder = encoder.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// Writes one gauge with a sample per followed name that has a value.
fn write_per_name<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    followed: &[FollowedSample],
    value: V,
) -> Result<(), std::fmt::Error>
where
    V: Fn(&FollowedSample) -> Option<ConstGauge<i64>>,
{
    let values: Vec<(&str, ConstGauge<i64>)> = followed
        .iter()
        .filter_map(|f| value(f).map(|v| (f.name.as_str(), v)))
        .collect();
    if values.is_empty() {
        return Ok(());
    }
    let mut metric_encoder = encoder.encode_descriptor(
        name,
        help,
        unit,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (followed_name, metric) in values {
        let labels = [("name", followed_name)];
        metric.encode(metric_encoder.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for SampledCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = self.sampler.sample();
        if let Some(store) = sample.store {
            write_gauge(
                &mut encoder,
                "store_blocks",
                "Blocks held in the local block store.",
                None,
                store.blocks,
            )?;
            write_gauge(
                &mut encoder,
                "store",
                "Bytes of the blocks held in the local block store.",
                Some(&Unit::Bytes),
                store.bytes,
            )?;
        }
        write_gauge(
            &mut encoder,
            "upload_sessions",
            "Blob upload sessions open.",
            None,
            sample.upload_sessions,
        )?;
        if let Some(sequence) = sample.published_sequence {
            write_gauge(
                &mut encoder,
                "published_sequence",
                "Sequence number of the own IPNS record last published.",
                None,
                sequence,
            )?;
        }
        let followed = &sample.followed;
        write_per_name(
            &mut encoder,
            "followed_sequence",
            "Sequence number of the record held for a followed name.",
            None,
            followed,
            |f| f.sequence.map(gauge),
        )?;
        write_per_name(
            &mut encoder,
            "followed_root_age",
            "Time since the record held for a followed name was accepted (absent until one is accepted after a start).",
            Some(&Unit::Seconds),
            followed,
            |f| f.root_age.map(|age| gauge(age.as_secs())),
        )?;
        write_per_name(
            &mut encoder,
            "mirror_blocks",
            "Blocks of a followed name's root fetched or found by its mirror run.",
            None,
            followed,
            |f| f.mirror.map(|m| gauge(m.blocks)),
        )?;
        write_per_name(
            &mut encoder,
            "mirror",
            "Bytes of the blocks a followed name's mirror run fetched or found.",
            Some(&Unit::Bytes),
            followed,
            |f| f.mirror.map(|m| gauge(m.bytes)),
        )?;
        write_per_name(
            &mut encoder,
            "mirror_blobs_verified",
            "Blobs of a followed name's root checked against their digests by its mirror run.",
            None,
            followed,
            |f| f.mirror.map(|m| gauge(m.blobs_verified)),
        )?;
        write_per_name(
            &mut encoder,
            "mirror_blobs",
            "Blobs of a followed name's root its mirror run checks.",
            None,
            followed,
            |f| f.mirror.map(|m| gauge(m.blobs_total)),
        )?;
        write_per_name(
            &mut encoder,
            "mirror_complete",
            "1 once the mirror run of a followed name's held root completed, else 0.",
            None,
            followed,
            |f| f.mirror.map(|m| gauge(u64::from(m.complete))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    struct Fixed(NodeSample);

    impl NodeSampler for Fixed {
        fn sample(&self) -> NodeSample {
            self.0.clone()
        }
    }

    #[test]
    fn sampled_values_appear_only_when_known() {
        let metrics = Metrics::new();
        metrics.sample_with(Arc::new(Fixed(NodeSample {
            store: None,
            upload_sessions: 2,
            published_sequence: None,
            followed: vec![
                FollowedSample {
                    name: "k51a".into(),
                    sequence: Some(7),
                    root_age: Some(Duration::from_secs(90)),
                    mirror: Some(MirrorSample {
                        blocks: 3,
                        bytes: 300,
                        blobs_verified: 1,
                        blobs_total: 2,
                        complete: false,
                    }),
                },
                FollowedSample {
                    name: "k51b".into(),
                    ..FollowedSample::default()
                },
            ],
        })));
        let text = metrics.encode();
        assert!(text.contains("ipns_registry_upload_sessions 2\n"), "{text}");
        assert!(!text.contains("ipns_registry_store_blocks"), "{text}");
        assert!(!text.contains("ipns_registry_published_sequence"), "{text}");
        assert!(
            text.contains("ipns_registry_followed_sequence{name=\"k51a\"} 7\n"),
            "{text}"
        );
        assert!(!text.contains("name=\"k51b\""), "{text}");
        assert!(
            text.contains("ipns_registry_followed_root_age_seconds{name=\"k51a\"} 90\n"),
            "{text}"
        );
        assert!(
            text.contains("ipns_registry_mirror_bytes{name=\"k51a\"} 300\n"),
            "{text}"
        );
        assert!(
            text.contains("ipns_registry_mirror_complete{name=\"k51a\"} 0\n"),
            "{text}"
        );
    }
}
