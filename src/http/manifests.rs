//! `/v2/<name>/manifests/<reference>`: GET/HEAD, PUT and DELETE.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{header, HeaderMap, Response, StatusCode};

use super::blobs::internal;
use super::error::ApiError;
use super::response::{builder, empty, full, header_value, Body};
use super::RequestBody;
use crate::registry::{ManifestRef, Registry, RegistryError, RepoName, Tag};

/// `tag` parameters one manifest push may carry (the spec asks registries to take at least 10).
const MAX_TAG_PARAMS: usize = 100;

/// Serves a manifest by tag or digest.
pub async fn get(
    registry: &Registry,
    repo: &RepoName,
    reference: &ManifestRef,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let manifest = registry.manifest(repo, reference).await?;
    let digest = manifest.digest.to_string();
    builder(StatusCode::OK)
        .header(header::CONTENT_TYPE, header_value(&manifest.media_type))
        .header("Docker-Content-Digest", header_value(&digest))
        .header(header::ETAG, header_value(&format!("\"{digest}\"")))
        .header(header::CONTENT_LENGTH, manifest.bytes.len())
        .body(if head { empty() } else { full(manifest.bytes) })
        .map_err(internal)
}

/// Reads a manifest body, refusing to buffer more than the limit.
async fn read_limited(
    mut body: RequestBody,
    headers: &HeaderMap,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let too_large = |size| ApiError::from(RegistryError::ManifestTooLarge { size, limit });
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = announced.filter(|len| *len > limit) {
        return Err(too_large(len));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                format!("reading the body: {e}"),
            )
        })?;
        buf.extend_from_slice(&chunk);
        if buf.len() as u64 > limit {
            return Err(too_large(buf.len() as u64));
        }
    }
    Ok(buf.freeze())
}

/// The `tag` parameters of a manifest push (`?tag=v1&tag=latest`), validated.
fn tag_params(query: Option<&str>) -> Result<Vec<Tag>, ApiError> {
    let mut tags = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key != "tag" {
            continue;
        }
        if tags.len() == MAX_TAG_PARAMS {
            return Err(ApiError::new(
                StatusCode::URI_TOO_LONG,
                "UNSUPPORTED",
                format!("at most {MAX_TAG_PARAMS} tag parameters per manifest push"),
            ));
        }
        tags.push(Tag::parse(&value).ok_or_else(|| ApiError::tag_invalid(&value))?);
    }
    Ok(tags)
}

/// Stores a manifest, under its tag if pushed by one and under the tags of its `tag`
/// parameters; the tags set by parameters are listed in `OCI-Tag`.
pub async fn put(
    registry: &Registry,
    repo: &RepoName,
    reference: &ManifestRef,
    query: Option<&str>,
    headers: &HeaderMap,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let extra_tags = tag_params(query)?;
    let bytes = read_limited(body, headers, registry.max_manifest_bytes()).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let pushed = registry
        .put_manifest(repo, reference, &extra_tags, content_type, bytes)
        .await?;
    let digest = pushed.digest.to_string();
    let mut b = builder(StatusCode::CREATED)
        .header(
            header::LOCATION,
            header_value(&format!("/v2/{repo}/manifests/{digest}")),
        )
        .header("Docker-Content-Digest", header_value(&digest))
        .header(header::CONTENT_LENGTH, 0);
    if let Some(subject) = pushed.subject {
        b = b.header("OCI-Subject", header_value(&subject.to_string()));
    }
    if !extra_tags.is_empty() {
        for tag in &pushed.tags {
            b = b.header("OCI-Tag", header_value(tag.as_str()));
        }
    }
    b.body(empty()).map_err(internal)
}

/// Deletes a tag, or a manifest by digest.
pub async fn delete(
    registry: &Registry,
    repo: &RepoName,
    reference: &ManifestRef,
) -> Result<Response<Body>, ApiError> {
    registry.delete_manifest(repo, reference).await?;
    builder(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(empty())
        .map_err(internal)
}
