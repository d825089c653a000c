//! Listings: `/v2/<name>/tags/list`, `/v2/_catalog` and `/v2/<name>/referrers/<digest>`.

use std::collections::HashMap;

use http::{header, Response, StatusCode};
use serde_json::json;

use super::auth::Verdict;
use super::blobs::internal;
use super::error::ApiError;
use super::response::{builder, full, header_value, Body};
use crate::registry::{Digest, Page, Registry, RepoName, OCI_INDEX};

/// `n` and `last` of a paginated request.
fn pagination(query: &HashMap<String, String>) -> Result<(Option<usize>, Option<&str>), ApiError> {
    let n = match query.get("n") {
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            ApiError::bad_parameter("n", format!("n must be a non-negative integer, not {n:?}"))
        })?),
        None => None,
    };
    Ok((n, query.get("last").map(String::as_str)))
}

fn page_response(
    path: &str,
    n: Option<usize>,
    page: &Page,
    body: serde_json::Value,
) -> Result<Response<Body>, ApiError> {
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut b = builder(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, bytes.len());
    if let (true, Some(n), Some(last)) = (page.more, n, page.entries.last()) {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &n.to_string())
            .append_pair("last", last)
            .finish();
        b = b.header(
            header::LINK,
            header_value(&format!("<{path}?{query}>; rel=\"next\"")),
        );
    }
    b.body(full(bytes)).map_err(internal)
}

/// The tags of a repository.
pub async fn tags(
    registry: &Registry,
    repo: &RepoName,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let (n, last) = pagination(query)?;
    let page = registry.tags(repo, n, last).await?;
    let body = json!({ "name": repo.as_str(), "tags": page.entries });
    page_response(&format!("/v2/{repo}/tags/list"), n, &page, body)
}

/// The repositories of the registry that the caller may pull from.
pub async fn catalog(
    registry: &Registry,
    query: &HashMap<String, String>,
    verdict: &Verdict,
) -> Result<Response<Body>, ApiError> {
    let (n, last) = pagination(query)?;
    let page = if verdict.may_pull_everywhere() {
        registry.catalog(n, last).await?
    } else {
        // Filtered before the page is cut, so pages are full and `Link` stays right.
        let all = registry.catalog(None, last).await?;
        let mut entries: Vec<String> = all
            .entries
            .into_iter()
            .filter(|name| RepoName::parse(name).is_some_and(|repo| verdict.may_pull(&repo)))
            .collect();
        let more = n.is_some_and(|n| entries.len() > n);
        if let Some(n) = n {
            entries.truncate(n);
        }
        Page { entries, more }
    };
    let body = json!({ "repositories": page.entries });
    page_response("/v2/_catalog", n, &page, body)
}

/// The manifests referring to `subject`, as an image index.
pub async fn referrers(
    registry: &Registry,
    repo: &RepoName,
    subject: &Digest,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let filter = query.get("artifactType").map(String::as_str);
    let manifests = registry.referrers(repo, subject, filter).await?;
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut b = builder(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCI_INDEX)
        .header(header::CONTENT_LENGTH, bytes.len());
    if filter.is_some() {
        b = b.header("OCI-Filters-Applied", "artifactType");
    }
    b.body(full(bytes)).map_err(internal)
}
