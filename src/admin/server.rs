//! Serving the admin API: a unix socket (created with mode 0600) and, if configured, a
//! loopback TCP port, each answered by hyper with the node's [`AdminCommands`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use super::socket_path::SocketPath;
use super::{AdminCommand, AdminCommands, AdminError, AdminFailure, GcRequest, StatusRequest};

/// Most admin connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// Largest request body (every request is a small JSON document).
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Time to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin API's listeners, bound and waiting to serve.
pub struct AdminServer {
    socket: Option<(UnixListener, SocketFile)>,
    tcp: Option<TcpListener>,
}

/// Removes the socket file when the server stops, so that no stale socket stays behind.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl AdminServer {
    /// Binds the unix socket at `socket` (replacing a stale one) and the TCP address `tcp`,
    /// which must be loopback.
    pub async fn bind(socket: Option<&Path>, tcp: Option<SocketAddr>) -> Result<Self, AdminError> {
        if let Some(addr) = tcp {
            if !addr.ip().is_loopback() {
                return Err(AdminError::NotLoopback(addr));
            }
        }
        let socket = match socket {
            None => None,
            Some(path) => {
                let path = path.to_owned();
                let bound = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || bind_socket(&path)
                })
                .await
                .map_err(|e| AdminError::Socket {
                    path: path.clone(),
                    source: std::io::Error::other(e),
                })?
                .map_err(|source| AdminError::Socket {
                    path: path.clone(),
                    source,
                })?;
                let listener =
                    UnixListener::from_std(bound).map_err(|source| AdminError::Socket {
                        path: path.clone(),
                        source,
                    })?;
                Some((listener, SocketFile(path)))
            }
        };
        let tcp = match tcp {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| AdminError::Listen { addr, source })?,
            ),
        };
        Ok(AdminServer { socket, tcp })
    }

    /// Where the API is reachable, for the log.
    pub fn endpoints(&self) -> Vec<String> {
        let socket = self
            .socket
            .as_ref()
            .map(|(_, file)| format!("unix:{}", file.0.display()));
        let tcp = self
            .tcp
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| format!("http://{a}"));
        socket.into_iter().chain(tcp).collect()
    }

    /// The bound TCP address, if there is a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until the future is dropped (which removes the socket file).
    pub async fn serve(self, commands: Arc<dyn AdminCommands>) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let AdminServer { socket, tcp } = self;
        let unix = async {
            let Some((listener, _file)) = &socket else {
                return std::future::pending::<()>().await;
            };
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_connection(stream, commands.clone(), permit));
                    }
                    Err(e) => accept_failed(&e).await,
                }
            }
        };
        let tcp = async {
            let Some(listener) = &tcp else {
                return std::future::pending::<()>().await;
            };
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_connection(stream, commands.clone(), permit));
                    }
                    Err(e) => accept_failed(&e).await,
                }
            }
        };
        tokio::join!(unix, tcp);
    }
}

/// A failed accept (out of descriptors, most likely): wait a moment rather than spin.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "admin API: accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Binds `path` with mode 0600 from the start: the socket is made in a private directory next
/// to it, restricted, then renamed into place. A socket left by a node that is gone is replaced.
fn bind_socket(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    if std::os::unix::net::UnixStream::connect(SocketPath::new(path)?.as_path()).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another process serves this socket",
        ));
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    let private = parent.join(format!(".admin-{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("s");
    let result = (|| {
        let listener = std::os::unix::net::UnixListener::bind(SocketPath::new(&staged)?.as_path())?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

async fn serve_connection<S>(
    stream: S,
    commands: Arc<dyn AdminCommands>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let commands = commands.clone();
        async move { Ok::<_, Infallible>(answer(commands.as_ref(), req).await) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "admin API connection ended");
    }
}

async fn answer(commands: &dyn AdminCommands, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if req.method() != Method::POST {
        return failure(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("admin commands are sent with POST, not {}", req.method()),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => return failure(StatusCode::BAD_REQUEST, format!("reading the request: {e}")),
    };
    match path.as_str() {
        StatusRequest::PATH => match parse::<StatusRequest>(&body) {
            Ok(_) => success(&commands.status().await),
            Err(resp) => resp,
        },
        GcRequest::PATH => match parse::<GcRequest>(&body) {
            Ok(request) => match commands.gc(request).await {
                Ok(report) => success(&report),
                Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, e),
            },
            Err(resp) => resp,
        },
        other => failure(
            StatusCode::NOT_FOUND,
            format!("no admin command {other:?} (this node knows /status and /gc)"),
        ),
    }
}

/// The request of command `C`; an empty body is the command's default request.
#[allow(clippy::result_large_err)] // the error is the response to send, built once
fn parse<C: AdminCommand>(body: &[u8]) -> Result<C, Response<Full<Bytes>>> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        failure(
            StatusCode::BAD_REQUEST,
            format!("the request for {} is not valid: {e}", C::PATH),
        )
    })
}

fn success(value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(bytes) => json(StatusCode::OK, bytes),
        Err(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        ),
    }
}

fn failure(status: StatusCode, error: impl Into<String>) -> Response<Full<Bytes>> {
    let body = AdminFailure {
        error: error.into(),
    };
    json(status, serde_json::to_vec(&body).unwrap_or_default())
}

fn json(status: StatusCode, bytes: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
