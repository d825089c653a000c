//! Health endpoints, answered to anyone who reaches the HTTP port, without credentials (load
//! balancers and probes have none): `GET /healthz` says the process serves HTTP; `GET /readyz`
//! (and its old name `/_health`) whether the node should get traffic, with the reasons when
//! not. Everything else a node reports about itself is on the admin API, not here.

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::response::{self, Body};

/// `/healthz`: the process answers.
pub const ALIVE_PATH: &str = "/healthz";
/// `/readyz`: the node should get traffic.
pub const READY_PATH: &str = "/readyz";
/// The old name of `/readyz`, kept as an alias.
pub const LEGACY_HEALTH_PATH: &str = "/_health";

/// Whether a node should get traffic, and why not (the `/readyz` document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Whether it should.
    pub ready: bool,
    /// Why not, one line each (empty when ready).
    pub problems: Vec<String>,
}

impl Readiness {
    /// Ready exactly when there is no problem.
    pub fn from_problems(problems: Vec<String>) -> Self {
        Readiness {
            ready: problems.is_empty(),
            problems,
        }
    }
}

/// What the HTTP layer asks a node about its health; the node decides.
#[async_trait]
pub trait NodeHealth: Send + Sync {
    /// Whether the node should get traffic now.
    async fn readiness(&self) -> Readiness;
}

/// The `/healthz` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// Always true: a process that cannot say so does not answer.
    pub alive: bool,
}

/// Answers a health path (`None` for any other path). Without a health source (an API served
/// without a node), the node counts as ready.
pub(super) async fn answer(
    health: Option<&dyn NodeHealth>,
    method: &Method,
    path: &str,
) -> Option<Result<Response<Body>, ApiError>> {
    if ![ALIVE_PATH, READY_PATH, LEGACY_HEALTH_PATH].contains(&path) {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(Err(ApiError::method_not_allowed(method, "GET, HEAD")));
    }
    if path == ALIVE_PATH {
        return Some(Ok(json(StatusCode::OK, &Liveness { alive: true })));
    }
    let readiness = match health {
        Some(health) => health.readiness().await,
        None => Readiness::from_problems(Vec::new()),
    };
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Some(Ok(json(status, &readiness)))
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let value = serde_json::to_value(value).unwrap_or_default();
    response::json(status, &value)
}
