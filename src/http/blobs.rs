//! `/v2/<name>/blobs/<digest>`: GET/HEAD (with Range) and DELETE.

use http::{header, HeaderMap, Response, StatusCode};

use super::error::ApiError;
use super::range::{answer, RangeAnswer};
use super::response::{builder, empty, header_value, streamed, Body};
use crate::registry::{Digest, Registry, RepoName};

/// Serves a blob, whole or a byte range of it.
pub async fn get(
    registry: &Registry,
    repo: &RepoName,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let blob = registry.blob(repo, digest).await?;
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let b = builder(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("Docker-Content-Digest", header_value(&digest.to_string()))
        .header(header::ETAG, header_value(&format!("\"{digest}\"")))
        .header(header::ACCEPT_RANGES, "bytes");
    let (b, range) = match answer(range_header, blob.size) {
        RangeAnswer::Full => (b, 0..blob.size),
        RangeAnswer::Partial(r) => (
            b.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", r.start, r.end - 1, blob.size),
            ),
            r,
        ),
        RangeAnswer::Unsatisfiable => {
            let mut err = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                format!("range not satisfiable for a blob of {} bytes", blob.size),
            );
            err.headers.push((
                "Content-Range",
                header_value(&format!("bytes */{}", blob.size)),
            ));
            return Err(err);
        }
    };
    let b = b.header(header::CONTENT_LENGTH, range.end - range.start);
    let body = if head || range.is_empty() {
        empty()
    } else {
        streamed(registry.read_blob(&blob, range).await?)
    };
    b.body(body).map_err(internal)
}

/// Removes a blob from a repository.
pub async fn delete(
    registry: &Registry,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Response<Body>, ApiError> {
    registry.delete_blob(repo, digest).await?;
    builder(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(empty())
        .map_err(internal)
}

/// Maps a response-building failure (an invalid header) to a 500.
pub fn internal(e: http::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        format!("building the response failed: {e}"),
    )
}
