//! The one place where errors become OCI error responses (`{"errors":[{code,message,detail}]}`).

use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::registry::RegistryError;
use crate::tree::TreeError;

/// An error response of the distribution API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OCI error code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Structured detail.
    pub detail: Value,
    /// Extra response headers.
    pub headers: Vec<(&'static str, HeaderValue)>,
}

impl ApiError {
    /// An error with no detail.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: Value::Null,
            headers: Vec::new(),
        }
    }

    /// Adds structured detail.
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    /// `NAME_INVALID` for a repository name that fails the spec's grammar.
    pub fn name_invalid(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name",
        )
        .detail(json!({ "name": name }))
    }

    /// `DIGEST_INVALID` for a malformed or mismatched digest.
    pub fn digest_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
    }

    /// A tag that fails the spec's grammar.
    pub fn tag_invalid(tag: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "invalid tag: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}",
        )
        .detail(json!({ "tag": tag }))
    }

    /// No endpoint at this path.
    pub fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
            .detail(json!({ "path": path }))
    }

    /// The endpoint exists but not with this method; `allow` lists the methods it has
    /// (RFC 9110 requires the `Allow` header on a 405).
    pub fn method_not_allowed(method: &http::Method, allow: &'static str) -> Self {
        let mut err = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!("method {method} is not supported on this endpoint"),
        );
        err.headers.push(("Allow", HeaderValue::from_static(allow)));
        err
    }

    /// `UNAUTHORIZED` (401): no valid credentials where they are needed. `challenge` is the
    /// `WWW-Authenticate` value, which clients need before they send credentials at all.
    pub fn unauthorized(message: impl Into<String>, challenge: HeaderValue) -> Self {
        let mut err = Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
        err.headers.push(("WWW-Authenticate", challenge));
        err
    }

    /// `DENIED` (403): the caller is known but lacks the right.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "DENIED", message)
    }

    /// A malformed query parameter.
    pub fn bad_parameter(name: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "PAGINATION_NUMBER_INVALID",
            message,
        )
        .detail(json!({ "parameter": name }))
    }

    /// The JSON body of the response.
    pub fn body(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if !self.detail.is_null() {
            error["detail"] = self.detail.clone();
        }
        json!({ "errors": [error] })
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        let message = e.to_string();
        if e.is_storage_full() {
            // Not the client's fault and not a bug: 507 says the node is out of space, and the
            // message, which clients print, says what to do. Nothing half-written is kept: the
            // upload is back at its last acknowledged size and the tree at its last root.
            tracing::warn!(error = %message, "storage full: a write was refused");
            return Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "UNKNOWN",
                format!(
                    "the registry's storage is full ({message}); nothing of this request was kept: free space on the registry node, then retry"
                ),
            );
        }
        match e {
            E::BlobUnknown(d) => Self::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", message)
                .detail(json!({ "digest": d })),
            E::BlobUploadUnknown(id) => {
                Self::new(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", message)
                    .detail(json!({ "uuid": id }))
            }
            E::BlobUploadInvalid(_) => {
                Self::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", message)
            }
            E::TooManyUploads(_) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
            }
            E::RangeInvalid { offset, .. } => {
                let mut err = Self::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "BLOB_UPLOAD_INVALID",
                    message,
                )
                .detail(json!({ "offset": offset }));
                if let Ok(v) = HeaderValue::from_str(&format!("0-{}", offset.saturating_sub(1))) {
                    err.headers.push(("Range", v));
                }
                err
            }
            E::DigestInvalid(_) => Self::digest_invalid(message),
            E::ManifestBlobUnknown(d) => {
                Self::new(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN", message)
                    .detail(json!({ "digest": d }))
            }
            E::ManifestInvalid(_) => {
                Self::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", message)
            }
            E::ManifestUnknown(r) => Self::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message)
                .detail(json!({ "reference": r })),
            E::ManifestTooLarge { size, limit } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID", message)
                    .detail(json!({ "size": size, "limit": limit }))
            }
            E::NameInvalid(n) => Self::name_invalid(&n),
            E::NameUnknown(n) => Self::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", message)
                .detail(json!({ "name": n })),
            E::SizeInvalid(_) => Self::new(StatusCode::BAD_REQUEST, "SIZE_INVALID", message),
            E::Unsupported(_) => Self::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message),
            // Not the client's fault nor a matter of rights: the node cannot take writes until
            // its operator acts, which 503 says (and `/_health` answers 503 alike).
            E::WritesRefused(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
            }
            E::ContentInvalid(_) => {
                tracing::error!(error = %message, "stored or fetched content is invalid");
                Self::new(StatusCode::BAD_GATEWAY, "UNKNOWN", message)
            }
            // The node writes only well-formed trees, so a block that does not decode, or a file
            // where a directory should be, came from a followed tree: the upstream's fault.
            E::Tree(TreeError::Decode(_) | TreeError::WrongKind(_)) => {
                tracing::warn!(error = %message, "malformed tree content");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "UNKNOWN",
                    format!("malformed tree content: {message}"),
                )
            }
            E::Tree(TreeError::BlockMissing(_)) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("{message}: no connected peer provided it"),
            ),
            E::Tree(TreeError::TooLarge { .. }) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID", message)
            }
            E::Tree(_) | E::Store(_) | E::Io { .. } => {
                tracing::error!(error = %message, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    format!("internal error: {message}"),
                )
            }
        }
    }
}
