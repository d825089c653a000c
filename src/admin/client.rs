//! Calling the admin API: one HTTP/1.1 exchange per command over the unix socket or a loopback
//! TCP port, with hyper's client connection (no pool, no TLS: the endpoint is on this machine).

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::socket_path::SocketPath;

use super::{AdminCommand, AdminError, AdminFailure};

/// Largest answer read (a status report or a collection's report is a few KiB).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Where a node's admin API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminEndpoint {
    /// The unix socket at this path.
    Socket(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

impl std::fmt::Display for AdminEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminEndpoint::Socket(path) => write!(f, "unix:{}", path.display()),
            AdminEndpoint::Tcp(addr) => write!(f, "http://{addr}"),
        }
    }
}

/// A client of one node's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    endpoint: AdminEndpoint,
}

impl AdminClient {
    /// A client of the API at `endpoint`; TCP endpoints must be loopback addresses.
    pub fn new(endpoint: AdminEndpoint) -> Result<Self, AdminError> {
        if let AdminEndpoint::Tcp(addr) = &endpoint {
            if !addr.ip().is_loopback() {
                return Err(AdminError::NotLoopback(*addr));
            }
        }
        Ok(AdminClient { endpoint })
    }

    /// Where the client sends commands.
    pub fn endpoint(&self) -> &AdminEndpoint {
        &self.endpoint
    }

    /// Sends `request` and waits for the node's answer (a garbage collection may take a while).
    pub async fn call<C: AdminCommand>(&self, request: &C) -> Result<C::Response, AdminError> {
        let unreachable = |source| AdminError::Unreachable {
            endpoint: self.endpoint.clone(),
            source,
        };
        match &self.endpoint {
            AdminEndpoint::Socket(path) => {
                // Opening the socket's directory, when the path is long, is one quick call.
                let path = SocketPath::new(path).map_err(unreachable)?;
                let stream = UnixStream::connect(path.as_path())
                    .await
                    .map_err(unreachable)?;
                self.exchange(stream, request).await
            }
            AdminEndpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await.map_err(unreachable)?;
                self.exchange(stream, request).await
            }
        }
    }

    async fn exchange<S, C>(&self, stream: S, request: &C) -> Result<C::Response, AdminError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        C: AdminCommand,
    {
        let protocol = |message: String| AdminError::Protocol {
            endpoint: self.endpoint.clone(),
            message,
        };
        let body = serde_json::to_vec(request)
            .map_err(|e| protocol(format!("encoding the request: {e}")))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| protocol(format!("HTTP handshake: {e}")))?;
        let driver = tokio::spawn(connection);
        let req = Request::builder()
            .method(Method::POST)
            .uri(C::PATH)
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| protocol(format!("building the request: {e}")))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| protocol(format!("sending the request: {e}")))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| protocol(format!("reading the answer: {e}")))?
                .to_bytes();
            if status != StatusCode::OK {
                let message = serde_json::from_slice::<AdminFailure>(&bytes)
                    .map(|f| f.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
                return Err(AdminError::Refused {
                    status: status.as_u16(),
                    message,
                });
            }
            serde_json::from_slice(&bytes)
                .map_err(|e| protocol(format!("the answer to {} is not understood: {e}", C::PATH)))
        }
        .await;
        driver.abort();
        result
    }
}
