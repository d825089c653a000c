//! The OCI Distribution API over HTTP (hyper). Knows HTTP and the registry's operations; nothing
//! of IPFS. Handlers are thin: parse, call the registry, shape the response. The listener
//! (`server`) serves it over HTTP or HTTPS with timeouts and a connection cap.

pub mod auth;
mod blobs;
mod connection;
mod error;
pub mod gateway;
mod health;
mod listing;
mod manifests;
mod open_files;
mod range;
mod request_body;
mod response;
mod route;
mod server;
pub mod tls;
mod uploads;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyStream;

pub use error::ApiError;
pub use health::{Liveness, NodeHealth, Readiness, ALIVE_PATH, LEGACY_HEALTH_PATH, READY_PATH};
pub use range::{answer as range_answer, RangeAnswer};
pub use response::Body;
pub use route::{parse as parse_route, Route};
pub use server::{
    serve, serve_with, ClientAddr, ServeOptions, DEFAULT_BODY_STALL_TIMEOUT,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
};
pub use uploads::parse_content_range;

use crate::metrics::{HttpMetrics, Metrics, RouteClass};
use crate::registry::{Registry, RegistryError, RepoName};
use auth::{Action, Auth, Verdict};
use gateway::Gateway;

/// Where the metrics are served.
pub const METRICS_PATH: &str = "/metrics";

/// Who may read `/metrics` on a node with users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Anyone, like `/healthz`.
    Anonymous,
    /// Callers with any user's credentials (when the htpasswd file holds users; without
    /// users, anyone).
    Users,
}

/// A request body as a stream of byte chunks.
pub type RequestBody = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// Request bodies the API accepts: hyper's, or any other (for in-process tests).
pub trait IncomingBody:
    http_body::Body<Data = Bytes, Error: std::fmt::Display + Send> + Send + 'static
{
}

impl<B> IncomingBody for B where
    B: http_body::Body<Data = Bytes, Error: std::fmt::Display + Send> + Send + 'static
{
}

fn request_body<B: IncomingBody>(body: B) -> RequestBody {
    Box::pin(BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(e.to_string())),
        }
    }))
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The HTTP front of one registry.
pub struct HttpApi {
    registry: Arc<Registry>,
    health: Option<Arc<dyn NodeHealth>>,
    auth: Option<Arc<Auth>>,
    gateway: Option<Arc<Gateway>>,
    /// Where requests are counted (by the server, once each response is sent).
    requests: HttpMetrics,
    /// The registry `/metrics` serves, and to whom; `None`: not served.
    metrics: Option<(Arc<Metrics>, MetricsAccess)>,
}

impl HttpApi {
    /// Serves `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        HttpApi {
            registry,
            health: None,
            auth: None,
            gateway: None,
            requests: HttpMetrics::default(),
            metrics: None,
        }
    }

    /// Counts requests into `metrics`, and serves it on `/metrics` to whom `access` allows
    /// (`None`: the endpoint is off, requests are still counted).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>, access: Option<MetricsAccess>) -> Self {
        self.requests = metrics.http();
        self.metrics = access.map(|access| (metrics, access));
        self
    }

    /// Where requests are counted.
    pub(crate) fn request_metrics(&self) -> &HttpMetrics {
        &self.requests
    }

    /// Checks credentials and access rules before any handler runs (see [`auth`]).
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Also serves the trustless gateway (`/ipfs/`, `/ipns/`).
    pub fn with_gateway(mut self, gateway: Arc<Gateway>) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Answers `/readyz` (and `/_health`) from `health`.
    pub fn with_health(mut self, health: Arc<dyn NodeHealth>) -> Self {
        self.health = Some(health);
        self
    }

    /// Answers one request. Never fails: every error becomes an OCI error response. The
    /// response carries the request's [`RouteClass`] as an extension, for counting.
    pub async fn handle<B: IncomingBody>(&self, req: Request<B>) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        let mut class = RouteClass::Other;
        let mut resp = match self.dispatch(req, &mut class).await {
            Ok(resp) => resp,
            Err(err) => response::error(err, head),
        };
        resp.extensions_mut().insert(class);
        resp
    }

    async fn dispatch<B: IncomingBody>(
        &self,
        req: Request<B>,
        class: &mut RouteClass,
    ) -> Result<Response<Body>, ApiError> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        if let Some(answer) = health::answer(self.health.as_deref(), &parts.method, path).await {
            *class = RouteClass::Health;
            return answer;
        }
        if let (Some((metrics, access)), METRICS_PATH) = (&self.metrics, path) {
            *class = RouteClass::Metrics;
            return self.metrics_page(metrics, *access, &parts).await;
        }
        if let Some(gateway) = &self.gateway {
            if let Some(request) = route::parse_gateway(path) {
                *class = RouteClass::Gateway;
                if let Some(auth) = &self.auth {
                    auth.authorize(&parts.headers, Action::Gateway).await?;
                }
                let query = query_map(parts.uri.query());
                return gateway
                    .handle(&parts.method, request?, &query, &parts.headers)
                    .await;
            }
        }
        let route = route::parse(path)?.ok_or_else(|| ApiError::not_found(path))?;
        *class = route.class();
        let read_only_allow = route.read_methods();
        let result = self.route(route, &parts, body).await;
        // A read-only replica refuses writes with 405; RFC 9110 wants the 405 to say what is
        // left.
        result.map_err(|mut err| {
            if err.status == StatusCode::METHOD_NOT_ALLOWED
                && !err.headers.iter().any(|(name, _)| *name == "Allow")
            {
                err.headers
                    .push(("Allow", http::HeaderValue::from_static(read_only_allow)));
            }
            err
        })
    }

    /// `GET /metrics`: every metric as OpenMetrics text. Reads memory only (counters, and the
    /// node's state through its sampler), so scrapes cost next to nothing.
    async fn metrics_page(
        &self,
        metrics: &Metrics,
        access: MetricsAccess,
        parts: &http::request::Parts,
    ) -> Result<Response<Body>, ApiError> {
        let head = parts.method == Method::HEAD;
        if parts.method != Method::GET && !head {
            return Err(ApiError::method_not_allowed(&parts.method, "GET, HEAD"));
        }
        if let (MetricsAccess::Users, Some(auth)) = (access, &self.auth) {
            // Any user may read them: the check `GET /v2/` makes of a login.
            auth.authorize(&parts.headers, Action::Login).await?;
        }
        Ok(response::content(
            crate::metrics::CONTENT_TYPE,
            metrics.encode(),
            head,
        ))
    }

    /// Decides whether a request may run at all, before its handler reads anything.
    async fn admit(
        &self,
        route: &Route,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Verdict, ApiError> {
        // Where the endpoint does not answer the method, the handler's 405 follows.
        let Some(action) = Action::of(route, method) else {
            return Ok(Verdict::unrestricted());
        };
        if action.writes() {
            // A node that takes no writes (a replica, a writer that saw a second writer of its
            // name) says so to everyone: credentials would not change the answer, so none are
            // asked for, and an authorised user gets the same refusal.
            self.registry.ensure_writable()?;
        }
        match &self.auth {
            Some(auth) => auth.authorize(headers, action).await,
            None => Ok(Verdict::unrestricted()),
        }
    }

    async fn route<B: IncomingBody>(
        &self,
        route: Route,
        parts: &http::request::Parts,
        body: B,
    ) -> Result<Response<Body>, ApiError> {
        let verdict = self.admit(&route, &parts.method, &parts.headers).await?;
        let mut query = query_map(parts.uri.query());
        let headers = &parts.headers;
        let r = self.registry.as_ref();
        let m = &parts.method;
        let head = m == Method::HEAD;
        let get = m == Method::GET || head;
        let allow = route.allowed_methods();
        match route {
            Route::Base if get => Ok(response::json(StatusCode::OK, &serde_json::json!({}))),
            Route::Catalog if get => listing::catalog(r, &query, &verdict).await,
            Route::Tags(repo) if get => listing::tags(r, &repo, &query).await,
            Route::Referrers(repo, digest) if get => {
                listing::referrers(r, &repo, &digest, &query).await
            }
            Route::Manifest(repo, reference) => match *m {
                Method::GET | Method::HEAD => manifests::get(r, &repo, &reference, head).await,
                Method::PUT => {
                    let query = parts.uri.query();
                    manifests::put(r, &repo, &reference, query, headers, request_body(body)).await
                }
                Method::DELETE => manifests::delete(r, &repo, &reference).await,
                _ => Err(ApiError::method_not_allowed(m, allow)),
            },
            Route::ManifestByInvalidReference(_, reference) => match *m {
                // No manifest can be stored under a name that is not a tag or a digest: reads
                // and deletes find nothing, as with the reference registry (CNCF distribution
                // looks a malformed digest up as a tag, and routes no other malformed name).
                Method::GET | Method::HEAD | Method::DELETE => {
                    Err(RegistryError::ManifestUnknown(reference).into())
                }
                // A push names where to store: a name that cannot be one is the client's error.
                Method::PUT => Err(route::manifest_ref(&reference)
                    .err()
                    .unwrap_or_else(|| ApiError::tag_invalid(&reference))),
                _ => Err(ApiError::method_not_allowed(m, allow)),
            },
            Route::Blob(repo, digest) => match *m {
                Method::GET | Method::HEAD => blobs::get(r, &repo, &digest, headers, head).await,
                Method::DELETE => blobs::delete(r, &repo, &digest).await,
                _ => Err(ApiError::method_not_allowed(m, allow)),
            },
            Route::UploadStart(repo) if m == Method::POST => {
                drop_unreadable_mount(&mut query, &verdict);
                let client = parts.extensions.get::<ClientAddr>().map(|c| c.0.ip());
                uploads::start(r, &repo, &query, client, request_body(body)).await
            }
            Route::Upload(repo, id) => match *m {
                Method::GET | Method::HEAD => uploads::status(r, &repo, &id).await,
                Method::PATCH => uploads::patch(r, &repo, &id, headers, request_body(body)).await,
                Method::PUT => {
                    uploads::put(r, &repo, &id, &query, headers, request_body(body)).await
                }
                Method::DELETE => uploads::cancel(r, &repo, &id).await,
                _ => Err(ApiError::method_not_allowed(m, allow)),
            },
            _ => Err(ApiError::method_not_allowed(m, allow)),
        }
    }
}

/// A mount copies a blob from another repository, or from anywhere without `from`: only from
/// where the caller may pull. Otherwise the mount is dropped and the request opens an upload
/// session (202), as the spec lets a registry do with a mount it cannot honour, so the client
/// uploads the blob itself.
fn drop_unreadable_mount(query: &mut HashMap<String, String>, verdict: &Verdict) {
    if !query.contains_key("mount") {
        return;
    }
    let readable = match query.get("from") {
        // An invalid name is the handler's NAME_INVALID to report.
        Some(from) => RepoName::parse(from).is_none_or(|from| verdict.may_pull(&from)),
        None => verdict.may_pull_everywhere(),
    };
    if !readable {
        tracing::debug!("mount from a repository the caller may not pull: upload instead");
        query.remove("mount");
        query.remove("from");
    }
}
