//! `/v2/<name>/blobs/uploads/...`: starting, chunking, completing, inspecting and cancelling
//! blob uploads, monolithic uploads and cross-repository mounts.

use std::collections::HashMap;
use std::net::IpAddr;

use http::{header, HeaderMap, Response, StatusCode};
use serde_json::json;

use super::blobs::internal;
use super::error::ApiError;
use super::response::{builder, empty, header_value, Body};
use super::route::digest as parse_digest;
use super::RequestBody;
use crate::registry::{Algorithm, Digest, Registry, RepoName};

fn location(repo: &RepoName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn session(
    status: StatusCode,
    repo: &RepoName,
    id: &str,
    offset: u64,
) -> Result<Response<Body>, ApiError> {
    builder(status)
        .header(header::LOCATION, header_value(&location(repo, id)))
        .header(header::RANGE, format!("0-{}", offset.saturating_sub(1)))
        .header("Docker-Upload-UUID", header_value(id))
        .header(header::CONTENT_LENGTH, 0)
        .body(empty())
        .map_err(internal)
}

fn created(repo: &RepoName, digest: &Digest) -> Result<Response<Body>, ApiError> {
    builder(StatusCode::CREATED)
        .header(
            header::LOCATION,
            header_value(&format!("/v2/{repo}/blobs/{digest}")),
        )
        .header("Docker-Content-Digest", header_value(&digest.to_string()))
        .header(header::CONTENT_LENGTH, 0)
        .body(empty())
        .map_err(internal)
}

/// POST: a mount (`?mount=&from=`), a monolithic upload (`?digest=`), or a new session opened
/// for `client` (whose open sessions are capped).
pub async fn start(
    registry: &Registry,
    repo: &RepoName,
    query: &HashMap<String, String>,
    client: Option<IpAddr>,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    // The algorithm the session's digest will use (a spec 1.1+ parameter).
    let algorithm = match query.get("digest-algorithm") {
        Some(name) => Algorithm::from_name(name).ok_or_else(|| {
            ApiError::digest_invalid(
                "unsupported digest-algorithm: sha256 and sha512 are supported",
            )
            .detail(json!({ "digest-algorithm": name }))
        })?,
        None => Algorithm::Sha256,
    };
    if let Some(mount) = query.get("mount") {
        let digest = parse_digest(mount)?;
        let from = match query.get("from") {
            Some(from) => Some(RepoName::parse(from).ok_or_else(|| ApiError::name_invalid(from))?),
            None => None,
        };
        if registry.mount_blob(repo, &digest, from.as_ref()).await? {
            return created(repo, &digest);
        }
    } else if let Some(digest) = query.get("digest") {
        let digest = parse_digest(digest)?;
        registry.upload_blob(repo, &digest, body).await?;
        return created(repo, &digest);
    }
    let id = registry.start_upload(repo, client, algorithm).await?;
    session(StatusCode::ACCEPTED, repo, &id, 0)
}

fn content_range_invalid() -> ApiError {
    ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "BLOB_UPLOAD_INVALID",
        "Content-Range must be <start>-<end> with start <= end",
    )
}

/// The `(start, length)` of a request's `Content-Range`, if it has one.
fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| content_range_invalid())?;
    parse_content_range(text).map(Some)
}

/// Parses a chunk upload's `Content-Range: <start>-<end>` (also with a `bytes ` or `bytes=` unit
/// and a `/<size>` suffix, as clients send it) into `(start, length)`.
pub fn parse_content_range(text: &str) -> Result<(u64, u64), ApiError> {
    let text = text.trim();
    let text = text
        .strip_prefix("bytes ")
        .or_else(|| text.strip_prefix("bytes="))
        .unwrap_or(text);
    let text = text.split('/').next().unwrap_or(text);
    let (start, end) = text.split_once('-').ok_or_else(content_range_invalid)?;
    let start: u64 = start.trim().parse().map_err(|_| content_range_invalid())?;
    let end: u64 = end.trim().parse().map_err(|_| content_range_invalid())?;
    // `0-18446744073709551615` is well formed but names more bytes than a u64 counts.
    let length = end
        .checked_sub(start)
        .and_then(|span| span.checked_add(1))
        .ok_or_else(content_range_invalid)?;
    Ok((start, length))
}

/// PATCH: appends a chunk (or a stream) to a session.
pub async fn patch(
    registry: &Registry,
    repo: &RepoName,
    id: &str,
    headers: &HeaderMap,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let range = content_range(headers)?;
    let offset = registry.append_upload(repo, id, range, body).await?;
    session(StatusCode::ACCEPTED, repo, id, offset)
}

/// PUT: completes a session with an optional last chunk, which like a PATCH must start where
/// the session ends if it comes with a `Content-Range`.
pub async fn put(
    registry: &Registry,
    repo: &RepoName,
    id: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let digest = query
        .get("digest")
        .ok_or_else(|| ApiError::digest_invalid("the digest query parameter is required"))?;
    let digest = parse_digest(digest)?;
    let range = content_range(headers)?;
    registry
        .finish_upload(repo, id, &digest, range, Some(body))
        .await?;
    created(repo, &digest)
}

/// GET: the state of a session.
pub async fn status(
    registry: &Registry,
    repo: &RepoName,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let offset = registry.upload_offset(repo, id).await?;
    session(StatusCode::NO_CONTENT, repo, id, offset)
}

/// DELETE: abandons a session.
pub async fn cancel(
    registry: &Registry,
    repo: &RepoName,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    registry.cancel_upload(repo, id).await?;
    builder(StatusCode::NO_CONTENT)
        .header(header::CONTENT_LENGTH, 0)
        .body(empty())
        .map_err(internal)
}
