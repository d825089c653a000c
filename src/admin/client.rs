//! Calling the admin API: one HTTP/1.1 exchange per command over the unix socket or a loopback
//! TCP port, with hyper's client connection (no pool, no TLS: the endpoint is on this machine).

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinHandle;

use super::socket_path::SocketPath;

use super::{
    AdminCommand, AdminError, AdminFailure, CarStream, ExportRequest, ImportRequest, REPORT_HEADER,
    REQUEST_HEADER,
};
use crate::registry::{ExportReport, ImportReport, CAR_MEDIA_TYPE};

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
        let protocol = |message: String| self.protocol(message);
        let body = serde_json::to_vec(request)
            .map_err(|e| protocol(format!("encoding the request: {e}")))?;
        let (mut sender, driver) = self.connect::<Full<Bytes>>().await?;
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

/// A CAR arriving from `export`: the response body, and the connection that carries it (closed
/// when this is dropped).
pub struct IncomingCar {
    body: Incoming,
    driver: JoinHandle<()>,
    endpoint: AdminEndpoint,
}

impl IncomingCar {
    /// The next chunk of the CAR; `None` at its end. An error means the node stopped part way:
    /// what came so far is not a whole CAR.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, AdminError>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(e) => {
                    return Some(Err(AdminError::Protocol {
                        endpoint: self.endpoint.clone(),
                        message: format!("the export broke off: {e}"),
                    }))
                }
            }
        }
    }
}

impl Drop for IncomingCar {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl AdminClient {
    fn protocol(&self, message: String) -> AdminError {
        AdminError::Protocol {
            endpoint: self.endpoint.clone(),
            message,
        }
    }

    /// An HTTP/1.1 connection to the endpoint, driven by a task of its own.
    async fn connect<B>(&self) -> Result<(SendRequest<B>, JoinHandle<()>), AdminError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
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
                self.handshake(stream).await
            }
            AdminEndpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await.map_err(unreachable)?;
                self.handshake(stream).await
            }
        }
    }

    async fn handshake<S, B>(
        &self,
        stream: S,
    ) -> Result<(SendRequest<B>, JoinHandle<()>), AdminError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(format!("HTTP handshake: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((sender, driver))
    }

    /// The node's failure answer as an error.
    async fn refusal(&self, resp: Response<Incoming>) -> AdminError {
        let status = resp.status().as_u16();
        match Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
        {
            Ok(body) => {
                let bytes = body.to_bytes();
                let message = serde_json::from_slice::<AdminFailure>(&bytes)
                    .map(|f| f.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
                AdminError::Refused { status, message }
            }
            Err(e) => self.protocol(format!("reading the answer: {e}")),
        }
    }

    /// Starts an export: the node's report of what the CAR holds, then its bytes.
    pub async fn export(
        &self,
        request: &ExportRequest,
    ) -> Result<(ExportReport, IncomingCar), AdminError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| self.protocol(format!("encoding the request: {e}")))?;
        let (mut sender, driver) = self.connect::<Full<Bytes>>().await?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(ExportRequest::PATH)
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.protocol(format!("building the request: {e}")))?;
        let resp = match sender.send_request(req).await {
            Ok(resp) => resp,
            Err(e) => {
                driver.abort();
                return Err(self.protocol(format!("sending the request: {e}")));
            }
        };
        if resp.status() != StatusCode::OK {
            let error = self.refusal(resp).await;
            driver.abort();
            return Err(error);
        }
        let report = resp
            .headers()
            .get(REPORT_HEADER)
            .ok_or_else(|| format!("no {REPORT_HEADER} header"))
            .and_then(|v| serde_json::from_slice(v.as_bytes()).map_err(|e| e.to_string()));
        let report = match report {
            Ok(report) => report,
            Err(e) => {
                driver.abort();
                return Err(self.protocol(format!("the export's report is not understood: {e}")));
            }
        };
        Ok((
            report,
            IncomingCar {
                body: resp.into_body(),
                driver,
                endpoint: self.endpoint.clone(),
            },
        ))
    }

    /// Sends a CAR of `length` bytes (if known) to be imported, and waits for the node's report.
    pub async fn import(
        &self,
        request: &ImportRequest,
        car: CarStream,
        length: Option<u64>,
    ) -> Result<ImportReport, AdminError> {
        let encoded = serde_json::to_string(request)
            .map_err(|e| self.protocol(format!("encoding the request: {e}")))?;
        let (mut sender, driver) = self
            .connect::<UnsyncBoxBody<Bytes, std::io::Error>>()
            .await?;
        let body = StreamBody::new(car.map_ok(hyper::body::Frame::data));
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(ImportRequest::PATH)
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, CAR_MEDIA_TYPE)
            .header(REQUEST_HEADER, encoded);
        if let Some(length) = length {
            req = req.header(header::CONTENT_LENGTH, length);
        }
        let req = req
            .body(BodyExt::boxed_unsync(body))
            .map_err(|e| self.protocol(format!("building the request: {e}")))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| self.protocol(format!("sending the CAR: {e}")))?;
            if resp.status() != StatusCode::OK {
                return Err(self.refusal(resp).await);
            }
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| self.protocol(format!("reading the answer: {e}")))?
                .to_bytes();
            serde_json::from_slice(&bytes).map_err(|e| {
                self.protocol(format!(
                    "the answer to {} is not understood: {e}",
                    ImportRequest::PATH
                ))
            })
        }
        .await;
        driver.abort();
        result
    }
}
