//! The admin API: commands on a running node (`status`, `gc`), reachable only from this
//! machine: through a unix socket in the data directory (mode 0600: the node's user and root)
//! and, if configured, a loopback TCP port.
//!
//! One typed request and one typed response per command ([`AdminCommand`]), shared by the node
//! (which serves them, `server`) and the CLI (which sends them, `client`): each command is
//! `POST <path>` with its request as JSON, answered `200` with its response as JSON, or with
//! an [`AdminFailure`] and a 4xx/5xx status. Two commands move a CAR file's bytes, streamed
//! in the HTTP body rather than named by path (the node may run as another user, with a
//! private /tmp): `export` answers with the CAR as the body and its [`ExportReport`] in the
//! [`REPORT_HEADER`] header; `import` sends its request in [`REQUEST_HEADER`] and the CAR as
//! the body.

mod client;
mod server;
mod socket_path;
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use client::{AdminClient, AdminEndpoint, IncomingCar};
pub use server::AdminServer;
pub use status::{
    DiskStatus, FollowedStatus, GcStatus, MirrorStatus, OwnStatus, PeerStatus, ReachabilityStatus,
    StatusReport,
};

use crate::registry::{ExportReport, GcReport, ImportReport};

/// A command of the admin API: its request type, with the path it is sent to and the type of
/// its response.
pub trait AdminCommand: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Where the command is sent (`POST`).
    const PATH: &'static str;
    /// What the node answers.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// `status`: the node's peers, records, followed names, mirrors, readiness and last garbage
/// collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {}

impl AdminCommand for StatusRequest {
    const PATH: &'static str = "/status";
    type Response = StatusReport;
}

/// `gc`: a garbage collection now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    /// Only report what would be removed.
    #[serde(default)]
    pub dry_run: bool,
    /// The grace period of unreferenced layer links for this run, instead of the configured
    /// `gc.layer_grace_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_grace_secs: Option<u64>,
}

impl AdminCommand for GcRequest {
    const PATH: &'static str = "/gc";
    type Response = GcReport;
}

/// `export`: a CAR of the named images (`REPO`, `REPO:TAG`, `REPO@DIGEST`), streamed as the
/// response body; the [`ExportReport`] comes first, in the [`REPORT_HEADER`] header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequest {
    /// The images, as on the command line.
    pub images: Vec<String>,
}

impl AdminCommand for ExportRequest {
    const PATH: &'static str = "/export";
    type Response = ExportReport;
}

/// `import`: the CAR is the request body; this request travels in the [`REQUEST_HEADER`]
/// header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRequest {}

impl AdminCommand for ImportRequest {
    const PATH: &'static str = "/import";
    type Response = ImportReport;
}

/// The header carrying a command's request when the body carries a CAR (`import`).
pub const REQUEST_HEADER: &str = "admin-request";
/// The header carrying a command's report when the body carries a CAR (`export`).
pub const REPORT_HEADER: &str = "admin-report";

/// A CAR's bytes as they stream through the admin API.
pub type CarStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A command the node could not carry out: the HTTP status to answer with, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFailure {
    /// 4xx for the caller's mistakes, 5xx for the node's.
    pub status: u16,
    /// What went wrong.
    pub error: String,
}

/// The body of every failed admin command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminFailure {
    /// What went wrong.
    pub error: String,
}

/// What a node does for the admin API's commands.
#[async_trait]
pub trait AdminCommands: Send + Sync {
    /// Answers `status`.
    async fn status(&self) -> StatusReport;
    /// Runs `gc`; the error is told to the caller.
    async fn gc(&self, request: GcRequest) -> Result<GcReport, String>;
    /// Starts `export`: what the CAR holds, and its bytes as they are written.
    async fn export(
        &self,
        request: ExportRequest,
    ) -> Result<(ExportReport, CarStream), CommandFailure>;
    /// Runs `import` on the CAR arriving as `car`.
    async fn import(
        &self,
        request: ImportRequest,
        car: CarStream,
    ) -> Result<ImportReport, CommandFailure>;
}

/// Errors serving or calling the admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A TCP address that is not loopback was configured (`admin.listen`, `--listen`).
    #[error("{0} is not a loopback address: the admin API is reachable from this machine only")]
    NotLoopback(SocketAddr),
    /// The unix socket could not be set up.
    #[error("admin socket {path}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TCP listener could not be bound.
    #[error("admin listener {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Nothing answers at the endpoint (no node runs, or it serves no admin API there).
    #[error("cannot reach the node's admin API at {endpoint}")]
    Unreachable {
        /// The endpoint.
        endpoint: AdminEndpoint,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The exchange with the node failed or its answer was not understood.
    #[error("admin API at {endpoint}: {message}")]
    Protocol {
        /// The endpoint.
        endpoint: AdminEndpoint,
        /// What went wrong.
        message: String,
    },
    /// The node answered with a failure.
    #[error("the node refused the command ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The node's message.
        message: String,
    },
}
