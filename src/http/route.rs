//! Parses `/v2/<name...>/<kind>/<reference>` into a typed route, once, before any handler runs.

use cid::Cid;

use crate::metrics::RouteClass;
use crate::names::IpnsName;
use crate::registry::{Digest, ManifestRef, RepoName, Tag};

use super::error::ApiError;

/// An API endpoint with its validated path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, ManifestRef),
    /// `/v2/<name>/manifests/<reference>` where the reference is neither a tag nor a digest:
    /// no such manifest can exist, so reads and deletes find nothing (404, as the reference
    /// registry answers) while a push is refused as malformed (400).
    ManifestByInvalidReference(RepoName, String),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

impl Route {
    /// The methods the endpoint answers, as an `Allow` header value.
    pub fn allowed_methods(&self) -> &'static str {
        match self {
            Route::Base | Route::Catalog | Route::Tags(_) | Route::Referrers(..) => "GET, HEAD",
            Route::Manifest(..) | Route::ManifestByInvalidReference(..) => "GET, HEAD, PUT, DELETE",
            Route::Blob(..) => "GET, HEAD, DELETE",
            Route::UploadStart(_) => "POST",
            Route::Upload(..) => "GET, HEAD, PATCH, PUT, DELETE",
        }
    }

    /// The class requests to this endpoint are counted under.
    pub fn class(&self) -> RouteClass {
        match self {
            Route::Base => RouteClass::Base,
            Route::Catalog => RouteClass::Catalog,
            Route::Tags(_) => RouteClass::Tags,
            Route::Manifest(..) | Route::ManifestByInvalidReference(..) => RouteClass::Manifest,
            Route::Blob(..) => RouteClass::Blob,
            Route::UploadStart(_) | Route::Upload(..) => RouteClass::Upload,
            Route::Referrers(..) => RouteClass::Referrers,
        }
    }

    /// The methods the endpoint answers on a node that accepts no writes.
    pub fn read_methods(&self) -> &'static str {
        match self {
            Route::UploadStart(_) | Route::Upload(..) => "",
            _ => "GET, HEAD",
        }
    }
}

fn repo(segments: &[&str]) -> Result<RepoName, ApiError> {
    let name = segments.join("/");
    RepoName::parse(&name).ok_or_else(|| ApiError::name_invalid(&name))
}

/// Parses a digest from a path or query, mapping failures to `DIGEST_INVALID`.
pub fn digest(s: &str) -> Result<Digest, ApiError> {
    s.parse()
        .map_err(|e: crate::registry::DigestError| ApiError::digest_invalid(e.to_string()))
}

/// Parses a manifest reference: a digest (anything with a `:`) or a tag, mapping failures to
/// `DIGEST_INVALID` or a tag's `MANIFEST_INVALID`.
pub fn manifest_ref(s: &str) -> Result<ManifestRef, ApiError> {
    if s.contains(':') {
        return digest(s).map(ManifestRef::Digest);
    }
    Tag::parse(s)
        .map(ManifestRef::Tag)
        .ok_or_else(|| ApiError::tag_invalid(s))
}

/// Parses a request path. `Ok(None)` means no endpoint lives there.
pub fn parse(path: &str) -> Result<Option<Route>, ApiError> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Ok(None);
    };
    if rest.is_empty() || rest == "/" {
        return Ok(Some(Route::Base));
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Ok(None);
    };
    if rest == "_catalog" {
        return Ok(Some(Route::Catalog));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    let tail = |k: usize| &segments[n - k..];
    let head = |k: usize| &segments[..n - k];
    let route = if n >= 3 && tail(2) == ["tags", "list"] {
        Route::Tags(repo(head(2))?)
    } else if n >= 3 && segments[n - 2] == "uploads" && segments[n - 3] == "blobs" && n >= 4 {
        let name = repo(head(3))?;
        match segments[n - 1] {
            "" => Route::UploadStart(name),
            id => Route::Upload(name, id.to_owned()),
        }
    } else if n >= 3 && tail(2) == ["blobs", "uploads"] {
        Route::UploadStart(repo(head(2))?)
    } else if n >= 3 && segments[n - 2] == "manifests" {
        let name = repo(head(2))?;
        let reference = segments[n - 1];
        match manifest_ref(reference) {
            Ok(reference) => Route::Manifest(name, reference),
            Err(_) => Route::ManifestByInvalidReference(name, reference.to_owned()),
        }
    } else if n >= 3 && segments[n - 2] == "blobs" {
        Route::Blob(repo(head(2))?, digest(segments[n - 1])?)
    } else if n >= 3 && segments[n - 2] == "referrers" {
        Route::Referrers(repo(head(2))?, digest(segments[n - 1])?)
    } else {
        return Ok(None);
    };
    Ok(Some(route))
}

/// A content path of the trustless gateway, with its segments percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayPath {
    /// `/ipfs/<cid>[/<path>]`: immutable content.
    Ipfs {
        /// The content root.
        cid: Cid,
        /// UnixFS names below it.
        path: Vec<String>,
    },
    /// `/ipns/<name>[/<path>]`: the content a name's record points to.
    Ipns {
        /// The name.
        name: IpnsName,
        /// UnixFS names below its root.
        path: Vec<String>,
    },
}

/// Parses a gateway path. `None` if the path is not under `/ipfs/` or `/ipns/`; a 400 for a
/// root that is not a CID (or IPNS name) or a segment that is not a name.
pub fn parse_gateway(path: &str) -> Option<Result<GatewayPath, ApiError>> {
    let (ipfs, rest) = if let Some(rest) = path.strip_prefix("/ipfs") {
        (true, rest)
    } else {
        (false, path.strip_prefix("/ipns")?)
    };
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    Some(gateway_path(ipfs, rest))
}

fn gateway_path(ipfs: bool, rest: &str) -> Result<GatewayPath, ApiError> {
    let bad =
        |message: String| ApiError::new(http::StatusCode::BAD_REQUEST, "BAD_REQUEST", message);
    let mut segments = Vec::new();
    for raw in rest.split('/').filter(|s| !s.is_empty()) {
        let segment = percent_decode(raw).ok_or_else(|| {
            bad(format!(
                "path segment {raw:?} is not valid percent-encoded UTF-8"
            ))
        })?;
        if segment == "." || segment == ".." || segment.contains('/') || segment.contains('\0') {
            return Err(bad(format!(
                "path segment {segment:?} is not a UnixFS name"
            )));
        }
        segments.push(segment);
    }
    let Some((root, path)) = segments.split_first() else {
        let what = if ipfs { "a CID" } else { "an IPNS name" };
        return Err(bad(format!("the path must start with {what}")));
    };
    let path = path.to_vec();
    if ipfs {
        let cid = Cid::try_from(root.as_str())
            .map_err(|e| bad(format!("{root:?} is not a valid CID: {e}")))?;
        Ok(GatewayPath::Ipfs { cid, path })
    } else {
        let name =
            IpnsName::parse(root).map_err(|e| bad(format!("{root:?} is not an IPNS name: {e}")))?;
        Ok(GatewayPath::Ipns { name, path })
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).expect("valid name")
    }

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/").ok().flatten(), Some(Route::Base));
        assert_eq!(parse("/v2").ok().flatten(), Some(Route::Base));
        assert_eq!(parse("/v2/_catalog").ok().flatten(), Some(Route::Catalog));
        assert_eq!(
            parse("/v2/a/b/tags/list").ok().flatten(),
            Some(Route::Tags(name("a/b")))
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/").ok().flatten(),
            Some(Route::UploadStart(name("a")))
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads").ok().flatten(),
            Some(Route::UploadStart(name("a")))
        );
        assert_eq!(
            parse("/v2/x/y/blobs/uploads/abc").ok().flatten(),
            Some(Route::Upload(name("x/y"), "abc".into()))
        );
        assert!(matches!(
            parse(&format!("/v2/blobs/blobs/{D}")).ok().flatten(),
            Some(Route::Blob(n, _)) if n.as_str() == "blobs"
        ));
        assert!(matches!(
            parse("/v2/a/manifests/latest").ok().flatten(),
            Some(Route::Manifest(_, ManifestRef::Tag(_)))
        ));
        assert!(parse("/v2/A/manifests/latest").is_err());
        assert!(parse("/v2/a/blobs/sha256:zz").is_err());
        assert_eq!(
            parse("/v2/a/manifests/-x").ok().flatten(),
            Some(Route::ManifestByInvalidReference(name("a"), "-x".into()))
        );
        assert_eq!(
            parse("/v2/a/manifests/sha256:zz").ok().flatten(),
            Some(Route::ManifestByInvalidReference(
                name("a"),
                "sha256:zz".into()
            ))
        );
        assert!(
            parse("/v2/A/manifests/-x").is_err(),
            "the name is checked first"
        );
        assert_eq!(parse("/v3/").ok().flatten(), None);
        assert_eq!(parse("/v2/a/other/thing").ok().flatten(), None);
    }

    #[test]
    fn gateway_paths() {
        let cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
        let parsed = |p: &str| parse_gateway(p).map(|r| r.map_err(|e| e.status));
        assert_eq!(
            parsed(&format!("/ipfs/{cid}")),
            Some(Ok(GatewayPath::Ipfs {
                cid: cid.parse().unwrap(),
                path: vec![]
            }))
        );
        assert_eq!(
            parsed(&format!("/ipfs/{cid}/a%20b/c/")),
            Some(Ok(GatewayPath::Ipfs {
                cid: cid.parse().unwrap(),
                path: vec!["a b".into(), "c".into()]
            }))
        );
        assert!(matches!(
            parsed("/ipns/k51qzi5uqu5dlkw8pxuw9qmqayfdeh4kfebhmreauqdc6a7c3y7d5i9fi8mk9w/x"),
            Some(Ok(GatewayPath::Ipns { path, .. })) if path == vec!["x".to_owned()]
        ));
        for bad in [
            "/ipfs/",
            "/ipfs/not-a-cid",
            "/ipns/not-a-name",
            &format!("/ipfs/{cid}/../x"),
            &format!("/ipfs/{cid}/%zz"),
            &format!("/ipfs/{cid}/a%2Fb"),
            &format!("/ipfs/{cid}/%ff"),
        ] {
            assert_eq!(
                parsed(bad),
                Some(Err(http::StatusCode::BAD_REQUEST)),
                "{bad}"
            );
        }
        assert_eq!(parsed("/ipfsx/abc"), None);
        assert_eq!(parsed("/v2/"), None);
    }
}
