//! The HTTP layer's handle: requests by route class, method and status, their latency, and the
//! body bytes that came in and went out.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::LATENCY_BUCKETS;

/// What kind of endpoint a request went to: the label requests are counted under, instead of
/// their path (paths carry repository names and digests, which would make a series each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags,
    /// `/v2/<name>/manifests/<reference>`
    Manifest,
    /// `/v2/<name>/blobs/<digest>`
    Blob,
    /// `/v2/<name>/blobs/uploads/...`
    Upload,
    /// `/v2/<name>/referrers/<digest>`
    Referrers,
    /// `/healthz`, `/readyz` and `/_health`.
    Health,
    /// `/metrics`
    Metrics,
    /// The trustless gateway, `/ipfs/` and `/ipns/`.
    Gateway,
    /// Anything else (unknown paths, malformed names).
    Other,
}

impl RouteClass {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Base => "base",
            RouteClass::Catalog => "catalog",
            RouteClass::Tags => "tags",
            RouteClass::Manifest => "manifest",
            RouteClass::Blob => "blob",
            RouteClass::Upload => "upload",
            RouteClass::Referrers => "referrers",
            RouteClass::Health => "health",
            RouteClass::Metrics => "metrics",
            RouteClass::Gateway => "gateway",
            RouteClass::Other => "other",
        }
    }
}

impl EncodeLabelValue for RouteClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// A request method as a label: the methods the API answers, and `OTHER` for the rest (a
/// client can send any token as a method; each must not become a series).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodLabel {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// Any other method.
    Other,
}

impl MethodLabel {
    /// The label of `method`.
    pub fn of(method: &::http::Method) -> Self {
        match *method {
            ::http::Method::GET => MethodLabel::Get,
            ::http::Method::HEAD => MethodLabel::Head,
            ::http::Method::POST => MethodLabel::Post,
            ::http::Method::PUT => MethodLabel::Put,
            ::http::Method::PATCH => MethodLabel::Patch,
            ::http::Method::DELETE => MethodLabel::Delete,
            _ => MethodLabel::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "GET",
            MethodLabel::Head => "HEAD",
            MethodLabel::Post => "POST",
            MethodLabel::Put => "PUT",
            MethodLabel::Patch => "PATCH",
            MethodLabel::Delete => "DELETE",
            MethodLabel::Other => "OTHER",
        }
    }
}

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    class: RouteClass,
    method: MethodLabel,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LatencyLabels {
    class: RouteClass,
    method: MethodLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClassLabels {
    class: RouteClass,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// One request, once its response has been sent (or abandoned).
#[derive(Debug, Clone, Copy)]
pub struct RequestOutcome {
    /// Where it went.
    pub class: RouteClass,
    /// Its method.
    pub method: MethodLabel,
    /// The status answered.
    pub status: u16,
    /// From the request head to the end of the response body.
    pub elapsed: Duration,
    /// Request body bytes read.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
}

/// Requests served over HTTP. A handle not taken from [`super::Metrics`] counts into nothing.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<LatencyLabels>,
    bytes_in: Family<ClassLabels, Counter>,
    bytes_out: Family<ClassLabels, Counter>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
        }
    }
}

impl HttpMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests answered, by route class, method and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's head to the end of its response body, by route class and method",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register_with_unit(
            "http_request_body",
            "Request body bytes read, by route class",
            Unit::Bytes,
            self.bytes_in.clone(),
        );
        registry.register_with_unit(
            "http_response_body",
            "Response body bytes sent, by route class",
            Unit::Bytes,
            self.bytes_out.clone(),
        );
    }

    /// Counts one finished request.
    pub fn observe(&self, outcome: RequestOutcome) {
        let RequestOutcome {
            class,
            method,
            status,
            elapsed,
            bytes_in,
            bytes_out,
        } = outcome;
        self.requests
            .get_or_create(&RequestLabels {
                class,
                method,
                status,
            })
            .inc();
        self.duration
            .get_or_create(&LatencyLabels { class, method })
            .observe(elapsed.as_secs_f64());
        let labels = ClassLabels { class };
        if bytes_in > 0 {
            self.bytes_in.get_or_create(&labels).inc_by(bytes_in);
        }
        if bytes_out > 0 {
            self.bytes_out.get_or_create(&labels).inc_by(bytes_out);
        }
    }
}
