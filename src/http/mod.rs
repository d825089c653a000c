//! The OCI Distribution API over HTTP (hyper). Knows HTTP and the registry's operations; nothing
//! of IPFS. Handlers are thin: parse, call the registry, shape the response.

mod blobs;
mod error;
mod listing;
mod manifests;
mod range;
mod response;
mod route;
mod uploads;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyStream;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::Instrument;

pub use error::ApiError;
pub use response::Body;
pub use range::{answer as range_answer, RangeAnswer};
pub use route::{parse as parse_route, Route};
pub use uploads::parse_content_range;

use crate::registry::Registry;

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

/// What a node reports about itself on `/_status` and `/_health` (the HTTP layer only serves it).
#[async_trait::async_trait]
pub trait NodeStatus: Send + Sync {
    /// The status document.
    async fn status(&self) -> serde_json::Value;
    /// Why the node is unhealthy, if it is.
    fn problem(&self) -> Option<String>;
}

/// The HTTP front of one registry.
pub struct HttpApi {
    registry: Arc<Registry>,
    status: Option<Arc<dyn NodeStatus>>,
}

impl HttpApi {
    /// Serves `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        HttpApi {
            registry,
            status: None,
        }
    }

    /// Also serves `/_status` and `/_health` from `status`.
    pub fn with_status(mut self, status: Arc<dyn NodeStatus>) -> Self {
        self.status = Some(status);
        self
    }

    /// Answers one request. Never fails: every error becomes an OCI error response.
    pub async fn handle<B: IncomingBody>(&self, req: Request<B>) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        match self.dispatch(req).await {
            Ok(resp) => resp,
            Err(err) => response::error(err, head),
        }
    }

    async fn dispatch<B: IncomingBody>(&self, req: Request<B>) -> Result<Response<Body>, ApiError> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        if let (Some(status), "/_status" | "/_health") = (&self.status, path) {
            return Ok(node_status(status.as_ref(), path).await);
        }
        let route = route::parse(path)?.ok_or_else(|| ApiError::not_found(path))?;
        let query = query_map(parts.uri.query());
        let headers = &parts.headers;
        let r = self.registry.as_ref();
        let m = &parts.method;
        let head = m == Method::HEAD;
        let get = m == Method::GET || head;
        let allow = route.allowed_methods();
        let read_only_allow = route.read_methods();
        let result = match route {
            Route::Base if get => Ok(response::json(StatusCode::OK, &serde_json::json!({}))),
            Route::Catalog if get => listing::catalog(r, &query).await,
            Route::Tags(repo) if get => listing::tags(r, &repo, &query).await,
            Route::Referrers(repo, digest) if get => {
                listing::referrers(r, &repo, &digest, &query).await
            }
            Route::Manifest(repo, reference) => match *m {
                Method::GET | Method::HEAD => manifests::get(r, &repo, &reference, head).await,
                Method::PUT => {
                    manifests::put(r, &repo, &reference, headers, request_body(body)).await
                }
                Method::DELETE => manifests::delete(r, &repo, &reference).await,
                _ => Err(ApiError::method_not_allowed(m, allow)),
            },
            Route::Blob(repo, digest) => match *m {
                Method::GET | Method::HEAD => blobs::get(r, &repo, &digest, headers, head).await,
                Method::DELETE => blobs::delete(r, &repo, &digest).await,
                _ => Err(ApiError::method_not_allowed(m, allow)),
            },
            Route::UploadStart(repo) if m == Method::POST => {
                uploads::start(r, &repo, &query, request_body(body)).await
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
        };
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
}

async fn node_status(status: &dyn NodeStatus, path: &str) -> Response<Body> {
    if path == "/_status" {
        return response::json(StatusCode::OK, &status.status().await);
    }
    match status.problem() {
        None => response::json(StatusCode::OK, &serde_json::json!({ "healthy": true })),
        Some(problem) => response::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "healthy": false, "problem": problem }),
        ),
    }
}

/// Accepts connections on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    api: Arc<HttpApi>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the connections we have.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let api = api.clone();
                let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
                async move {
                    let started = Instant::now();
                    let resp = api.handle(req).await;
                    tracing::debug!(
                        status = resp.status().as_u16(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "answered"
                    );
                    Ok::<_, Infallible>(resp)
                }
                .instrument(span)
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
