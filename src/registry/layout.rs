//! The one place that knows the storage tree's path layout: that of the reference registry
//! (CNCF distribution), so published trees read like a distribution storage directory.
//!
//! ```text
//! docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data                       blob and manifest bytes
//! docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link         blob linked into a repo
//! .../<name>/_manifests/revisions/<alg>/<hex>/link                        manifest in a repo
//! .../<name>/_manifests/tags/<tag>/current/link                           what a tag points at
//! .../<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link                 everything it pointed at
//! .../<name>/_referrers/<subject alg>/<subject hex>/<alg>/<hex>/link      manifests with a subject
//! ```
//! A `link` file holds a digest string. `_referrers` is ours: distribution computes referrers by
//! scanning, which a replica fetching blocks on demand cannot afford.

use super::digest::{Algorithm, Digest};
use super::reference::{RepoName, Tag};

const BASE: [&str; 3] = ["docker", "registry", "v2"];

fn path<'a>(parts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    BASE.iter()
        .copied()
        .chain(parts)
        .map(str::to_owned)
        .collect()
}

/// Directory holding all repositories.
pub fn repositories() -> Vec<String> {
    path(["repositories"])
}

/// A repository's directory.
pub fn repository(name: &RepoName) -> Vec<String> {
    path(std::iter::once("repositories").chain(name.components()))
}

fn in_repo<'a>(name: &RepoName, parts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut p = repository(name);
    p.extend(parts.into_iter().map(str::to_owned));
    p
}

/// Directory of all blob data (`blobs/<alg>/<2 hex>/<hex>/data`).
pub fn blobs() -> Vec<String> {
    path(["blobs"])
}

/// Directory of the blob data of one digest algorithm (`<2 hex>/<hex>/data` under it).
pub fn blobs_of(algorithm: Algorithm) -> Vec<String> {
    path(["blobs", algorithm.name()])
}

/// The directory holding a blob's `data`: removing it removes the blob from the tree.
pub fn blob_dir(digest: &Digest) -> Vec<String> {
    let hex = digest.hex();
    path(["blobs", digest.algorithm().name(), &hex[..2], hex])
}

/// The bytes of a blob (or manifest), shared by all repositories.
pub fn blob_data(digest: &Digest) -> Vec<String> {
    let hex = digest.hex();
    path(["blobs", digest.algorithm().name(), &hex[..2], hex, "data"])
}

/// Directory of the blobs linked into a repository (`<alg>/<hex>/link` under it).
pub fn layers(name: &RepoName) -> Vec<String> {
    in_repo(name, ["_layers"])
}

/// The link that makes a blob part of a repository.
pub fn layer_link(name: &RepoName, digest: &Digest) -> Vec<String> {
    in_repo(
        name,
        ["_layers", digest.algorithm().name(), digest.hex(), "link"],
    )
}

/// The link that makes a manifest part of a repository.
pub fn revision_link(name: &RepoName, digest: &Digest) -> Vec<String> {
    in_repo(
        name,
        [
            "_manifests",
            "revisions",
            digest.algorithm().name(),
            digest.hex(),
            "link",
        ],
    )
}

/// Directory of a repository's manifest revisions (`<alg>/<hex>/link` under it).
pub fn revisions(name: &RepoName) -> Vec<String> {
    in_repo(name, ["_manifests", "revisions"])
}

/// Directory of all tags of a repository.
pub fn tags(name: &RepoName) -> Vec<String> {
    in_repo(name, ["_manifests", "tags"])
}

/// Directory of one tag.
pub fn tag(name: &RepoName, tag: &Tag) -> Vec<String> {
    in_repo(name, ["_manifests", "tags", tag.as_str()])
}

/// What a tag currently points at.
pub fn tag_current(name: &RepoName, tag: &Tag) -> Vec<String> {
    in_repo(
        name,
        ["_manifests", "tags", tag.as_str(), "current", "link"],
    )
}

/// Record that a tag has pointed at a manifest.
pub fn tag_index(name: &RepoName, tag: &Tag, digest: &Digest) -> Vec<String> {
    in_repo(
        name,
        [
            "_manifests",
            "tags",
            tag.as_str(),
            "index",
            digest.algorithm().name(),
            digest.hex(),
            "link",
        ],
    )
}

/// Directory of the manifests that name `subject` as their subject.
pub fn referrers(name: &RepoName, subject: &Digest) -> Vec<String> {
    in_repo(
        name,
        ["_referrers", subject.algorithm().name(), subject.hex()],
    )
}

/// Record that `referrer` names `subject` as its subject.
pub fn referrer_link(name: &RepoName, subject: &Digest, referrer: &Digest) -> Vec<String> {
    let mut p = referrers(name, subject);
    p.extend(
        [referrer.algorithm().name(), referrer.hex(), "link"]
            .into_iter()
            .map(str::to_owned),
    );
    p
}

/// A directory under `dir` for one digest algorithm, as `layers`, `revisions` and `blobs` hold.
pub fn algorithm_dir(dir: &[String], algorithm: Algorithm) -> Vec<String> {
    let mut p = dir.to_vec();
    p.push(algorithm.name().to_owned());
    p
}

/// A subdirectory `entry` (listed in the directory `dir`).
pub fn child(dir: &[String], entry: &str) -> Vec<String> {
    let mut p = dir.to_vec();
    p.push(entry.to_owned());
    p
}

/// Entries under a repository directory that are not nested repositories.
pub fn is_repository_marker(entry: &str) -> bool {
    matches!(entry, "_manifests" | "_layers")
}
