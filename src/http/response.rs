//! Building responses: bodies (whole or streamed) and the headers every response carries.

use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::error::ApiError;

/// The body type of every response.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body streamed from `rx`, one block at a time.
pub fn streamed(rx: mpsc::Receiver<Bytes>) -> Body {
    let frames = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(Frame::data(chunk)), rx))
    });
    StreamBody::new(frames).boxed()
}

/// A response builder with the headers every answer carries.
pub fn builder(status: StatusCode) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header("Docker-Distribution-API-Version", "registry/2.0")
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    builder(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(full(bytes))
        .unwrap_or_else(|_| fallback())
}

/// A 200 response holding `bytes` of `content_type`; without body for HEAD requests (the
/// length is still told).
pub fn content(content_type: &'static str, bytes: impl Into<Bytes>, head: bool) -> Response<Body> {
    let bytes = bytes.into();
    builder(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(if head { empty() } else { full(bytes) })
        .unwrap_or_else(|_| fallback())
}

/// The response for an error; without body for HEAD requests.
pub fn error(err: ApiError, head: bool) -> Response<Body> {
    let bytes = serde_json::to_vec(&err.body()).unwrap_or_default();
    let mut b = builder(err.status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, bytes.len());
    for (name, value) in err.headers {
        b = b.header(name, value);
    }
    b.body(if head { empty() } else { full(bytes) })
        .unwrap_or_else(|_| fallback())
}

/// Converts a dynamic string into a header value, dropping it if it is not valid there.
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn fallback() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}
