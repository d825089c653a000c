//! The listener: accepts connections (HTTP or HTTPS), caps how many are open, and closes the
//! ones whose clients are too slow, so that a flood of idle sockets, a slowloris or running out
//! of file descriptors cannot starve real clients.
//!
//! A connection is always in one of four states ([`Waiting`]), each with its own clock: a
//! request head (or TLS handshake) must arrive within the header timeout; a keep-alive
//! connection may sit idle for the idle timeout; a response the client stops reading, like a
//! request body that stops arriving, fails after the body-stall timeout; and while the server
//! itself works on a request, no clock runs.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::connection::{
    Connection, ConnectionTable, RequestGuard, RequestRecord, TrackedBody, TrackedIo, Waiting,
};
use super::open_files::{connection_cap, is_resource_exhaustion, raise_open_file_limit};
use super::request_body::{drain, Leftover, LeftoverSlot, WatchedBody};
use super::HttpApi;
use crate::metrics::{MethodLabel, RouteClass};

/// Default time to receive a request head (and a TLS handshake).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Default time a keep-alive connection may wait for its next request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a request body may deliver nothing (or a client not read its response).
pub const DEFAULT_BODY_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on open connections (lowered to fit the open-file limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Unread request bodies up to this size are read and dropped so the connection stays usable;
/// longer ones close it.
const DRAIN_LIMIT: u64 = 64 * 1024;
/// How long to wait for the next piece of a body being drained.
const DRAIN_STALL: Duration = Duration::from_secs(2);
/// After answering with `Connection: close`, how long to keep reading what the client still
/// sends, in all and with nothing arriving.
const LINGER_TOTAL: Duration = Duration::from_secs(30);
const LINGER_QUIET: Duration = Duration::from_secs(2);
/// First and longest pause after `accept` fails for lack of descriptors.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A shortage of descriptors is over once accepts succeed for this long without a failure.
const RECOVERED_AFTER: Duration = Duration::from_secs(1);

/// How the server treats connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// A request head must be complete within this time of its first byte (of the connection
    /// opening, for the first one); a TLS handshake within this time of the connection opening.
    pub header_read_timeout: Duration,
    /// A keep-alive connection waiting this long for its next request is closed.
    pub idle_timeout: Duration,
    /// A request body that delivers no bytes for this long fails (and its connection closes);
    /// so does a connection whose client reads nothing of its response for this long.
    pub body_stall_timeout: Duration,
    /// Most connections open at once, lowered to fit the open-file limit. At the cap the
    /// connection idle longest is closed to admit a new one; when none is idle, new clients
    /// wait in the listen backlog.
    pub max_connections: usize,
    /// Serve HTTPS with this configuration instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_stall_timeout: DEFAULT_BODY_STALL_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
        }
    }
}

/// The address of the client that sent a request (a request extension set by the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Accepts connections on `listener` with the default [`ServeOptions`] until `shutdown`
/// completes.
pub async fn serve(
    listener: TcpListener,
    api: Arc<HttpApi>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, api, ServeOptions::default(), shutdown).await
}

/// A shortage of descriptors: `accept` calls failing, with at most brief successes in between
/// (each closed connection lets one accept through). Reported once when it starts and once
/// when it is over, with the back-off growing throughout.
struct Starved {
    since: Instant,
    failures: u64,
    delay: Duration,
    last_failure: Instant,
}

/// Accepts connections on `listener` until `shutdown` completes.
pub async fn serve_with(
    listener: TcpListener,
    api: Arc<HttpApi>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    if exposed_without_tls(local, options.tls.is_some()) {
        tracing::warn!(
            listen = %local,
            "the HTTP listener is not on loopback and TLS is off: credentials and pushed \
             content would cross the network in clear text; set [http.tls] cert and key, or \
             listen on 127.0.0.1 behind a TLS proxy"
        );
    }
    let file_limit = raise_open_file_limit();
    let cap = connection_cap(options.max_connections, file_limit);
    if cap < options.max_connections {
        tracing::warn!(
            configured = options.max_connections,
            cap,
            open_file_limit = file_limit,
            "the open-file limit allows fewer connections than http.max_connections; raise \
             LimitNOFILE (ulimit -n) to serve more"
        );
    }
    tracing::info!(
        listen = %local,
        tls = options.tls.is_some(),
        max_connections = cap,
        open_file_limit = file_limit,
        "accepting connections"
    );
    let settings = Arc::new(ConnectionSettings {
        header_read_timeout: options.header_read_timeout,
        idle_timeout: options.idle_timeout,
        body_stall_timeout: options.body_stall_timeout,
        tls: options.tls.map(TlsAcceptor::from),
    });
    let table = ConnectionTable::new();
    let mut starved: Option<Starved> = None;
    tokio::pin!(shutdown);
    loop {
        // At the cap, accept only when an idle connection can make room; while every
        // connection serves a request, new clients wait in the listen backlog.
        while table.len() >= cap && !table.has_idle() {
            tokio::select! {
                () = table.room_changed() => {}
                () = &mut shutdown => return Ok(()),
            }
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return Ok(()),
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) if is_resource_exhaustion(&e) => {
                let episode = starved.get_or_insert_with(|| {
                    tracing::warn!(
                        error = %e,
                        open_connections = table.len(),
                        max_connections = cap,
                        open_file_limit = file_limit,
                        "cannot accept connections: backing off until descriptors free up \
                         (raise LimitNOFILE or lower http.max_connections)"
                    );
                    Starved {
                        since: Instant::now(),
                        failures: 0,
                        delay: BACKOFF_FIRST,
                        last_failure: Instant::now(),
                    }
                });
                episode.failures += 1;
                episode.last_failure = Instant::now();
                let delay = episode.delay;
                episode.delay = (delay * 2).min(BACKOFF_MAX);
                // An idle connection's descriptor is better spent on a client that waits.
                table.evict_oldest_idle();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = &mut shutdown => return Ok(()),
                }
                continue;
            }
            Err(e) => {
                // One client's connection failed (reset before it was accepted, and the like).
                tracing::debug!(error = %e, "accepting a connection failed");
                continue;
            }
        };
        if let Some(episode) = starved.take_if(|e| e.last_failure.elapsed() >= RECOVERED_AFTER) {
            tracing::info!(
                failed_accepts = episode.failures,
                after_ms = episode.since.elapsed().as_millis() as u64,
                "accepting connections again"
            );
        }
        // At the cap, this client waits (unserved) until a connection has gone. An idle one is
        // asked to close, but it holds its descriptor until its task ends: counting the request
        // as room let a burst of clients run far past the cap (241 open at a cap of 96, and
        // out of descriptors, under a flood with a limit of 256). If none is idle, it waits
        // for one to become idle.
        while table.len() >= cap {
            if !table.eviction_pending() {
                table.evict_oldest_idle();
            }
            tokio::select! {
                () = table.room_changed() => {}
                () = &mut shutdown => return Ok(()),
            }
        }
        let registration = table.register();
        let settings = settings.clone();
        let api = api.clone();
        let table = table.clone();
        tokio::spawn(async move {
            let conn = registration.connection().clone();
            run_connection(stream, peer, conn, &table, api, &settings).await;
            drop(registration);
        });
    }
}

/// Whether serving on `addr` puts plain HTTP on a network other than loopback.
fn exposed_without_tls(addr: SocketAddr, tls: bool) -> bool {
    !tls && !addr.ip().to_canonical().is_loopback()
}

/// What every connection task needs to know.
struct ConnectionSettings {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    body_stall_timeout: Duration,
    tls: Option<TlsAcceptor>,
}

async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<Connection>,
    table: &ConnectionTable,
    api: Arc<HttpApi>,
    settings: &ConnectionSettings,
) {
    // Responses are written whole; waiting to coalesce small writes only adds latency.
    let _ = stream.set_nodelay(true);
    let io = TrackedIo::new(stream, conn.clone());
    match &settings.tls {
        None => serve_http(io, peer, conn, table, api, settings).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(settings.header_read_timeout, acceptor.accept(io));
            let tls = tokio::select! {
                done = handshake => done,
                () = conn.evicted() => return,
            };
            match tls {
                Ok(Ok(tls)) => serve_http(tls, peer, conn, table, api, settings).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// What a connection task does when a clock runs out.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    /// Close once no request runs (hyper's graceful shutdown).
    Graceful,
    /// Drop the connection now.
    Abort(&'static str),
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    conn: Arc<Connection>,
    table: &ConnectionTable,
    api: Arc<HttpApi>,
    settings: &ConnectionSettings,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let close_after = Arc::new(AtomicBool::new(false));
    let service = ApiService {
        api,
        conn: conn.clone(),
        peer,
        stall: settings.body_stall_timeout,
        close_after: close_after.clone(),
    };
    let mut builder = http1::Builder::new();
    // The header timeout is enforced below, per request head rather than from the end of the
    // previous response, so that it does not double as a short idle timeout.
    builder.header_read_timeout(None);
    let mut http = builder.serve_connection(TokioIo::new(io), service);
    let mut closing: Option<Duration> = None;
    let result = loop {
        let now = table.elapsed();
        let (deadline, expiry) = match (conn.waiting(), closing) {
            (Waiting::ClientRead(since), _) => (
                since + settings.body_stall_timeout,
                Expiry::Abort("the client stopped reading the response"),
            ),
            // The server is working on a request; a graceful shutdown waits for it too.
            (Waiting::Server, _) => (Duration::MAX, Expiry::Graceful),
            (Waiting::Idle(since), None) => (since + settings.idle_timeout, Expiry::Graceful),
            (Waiting::Head(since), None) => (
                since + settings.header_read_timeout,
                Expiry::Abort("the request head did not arrive in time"),
            ),
            // Closing: hyper ends an idle connection at once; one that still lingers without
            // a request gets the header timeout, then goes.
            (Waiting::Idle(_) | Waiting::Head(_), Some(since)) => (
                since + settings.header_read_timeout,
                Expiry::Abort("the connection did not close"),
            ),
        };
        if deadline <= now {
            match expiry {
                Expiry::Graceful => {
                    Pin::new(&mut http).graceful_shutdown();
                    closing = Some(now);
                    continue;
                }
                Expiry::Abort(why) => {
                    tracing::debug!(%peer, "closing the connection: {why}");
                    return;
                }
            }
        }
        let wake = wake_at(table, deadline);
        tokio::select! {
            result = std::future::poll_fn(|cx| http.poll_without_shutdown(cx)) => break result,
            () = conn.changed() => {}
            () = conn.evicted(), if closing.is_none() => {
                // With no request running (idle, or a head still arriving) it goes at once: a
                // client waits for its descriptor. One that has just started a request
                // finishes it first.
                if conn.is_idle() {
                    tracing::debug!(%peer, "closing an idle connection to make room");
                    return;
                }
                tracing::debug!(%peer, "closing a connection to make room after its request");
                Pin::new(&mut http).graceful_shutdown();
                closing = Some(now);
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
        return;
    }
    let mut io = http.into_parts().io.into_inner();
    if close_after.load(Ordering::Acquire) {
        linger(&mut io, &conn).await;
    } else {
        let _ = tokio::time::timeout(LINGER_QUIET, io.shutdown()).await;
    }
}

/// The tokio instant at which `deadline` (a time on the table's clock) falls; a day ahead for
/// "never".
fn wake_at(table: &ConnectionTable, deadline: Duration) -> Instant {
    let far = Duration::from_secs(24 * 3600);
    Instant::now() + deadline.saturating_sub(table.elapsed()).min(far)
}

/// Ends a connection whose last response said `Connection: close` while the client may still
/// be sending a body: stop writing, then read and drop what arrives for a while. Closing with
/// unread bytes makes the kernel reset the connection, which can destroy the response before
/// the client has read it.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I, conn: &Connection) {
    let _ = tokio::time::timeout(LINGER_QUIET, io.shutdown()).await;
    let until = Instant::now() + LINGER_TOTAL;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let quiet = (Instant::now() + LINGER_QUIET).min(until);
        tokio::select! {
            read = tokio::time::timeout_at(quiet, io.read(&mut buf)) => match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            },
            () = conn.evicted() => return,
        }
    }
}

/// The hyper service of one connection: hands requests to the API and keeps the connection's
/// state current.
struct ApiService {
    api: Arc<HttpApi>,
    conn: Arc<Connection>,
    peer: SocketAddr,
    stall: Duration,
    close_after: Arc<AtomicBool>,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ApiService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: Request<Incoming>) -> ServiceFuture {
        let request = self.conn.start_request();
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            client = %self.peer.ip()
        );
        let api = self.api.clone();
        let peer = self.peer;
        let stall = self.stall;
        let close_after = self.close_after.clone();
        Box::pin(
            async move {
                let started = std::time::Instant::now();
                let resp = answer(api, req, peer, stall, &close_after, request, started).await;
                tracing::debug!(
                    status = resp.status().as_u16(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "answered"
                );
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

async fn answer(
    api: Arc<HttpApi>,
    req: Request<Incoming>,
    peer: SocketAddr,
    stall: Duration,
    close_after: &AtomicBool,
    request: RequestGuard,
    started: std::time::Instant,
) -> Response<TrackedBody> {
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ClientAddr(peer));
    let method = MethodLabel::of(&parts.method);
    let leftover = LeftoverSlot::default();
    let bytes_in = Arc::new(AtomicU64::new(0));
    let body = WatchedBody::new(body, stall, leftover.clone(), bytes_in.clone());
    let mut resp = api.handle(Request::from_parts(parts, body)).await;
    // An answer given before the body was read (an error, mostly) must not leave the rest of
    // the body on the wire, where it would be read as the next request.
    let rest = std::mem::take(&mut *leftover.lock().unwrap_or_else(|p| p.into_inner()));
    let reusable = match rest {
        Leftover::Nothing => true,
        Leftover::Unread(body) => drain(body, DRAIN_LIMIT, stall.min(DRAIN_STALL)).await,
        Leftover::Unusable => false,
    };
    if !reusable {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        close_after.store(true, Ordering::Release);
    }
    let record = RequestRecord::new(
        api.request_metrics().clone(),
        resp.extensions()
            .get::<RouteClass>()
            .copied()
            .unwrap_or(RouteClass::Other),
        method,
        resp.status().as_u16(),
        started,
        bytes_in,
    );
    resp.map(|body| TrackedBody::new(body, request, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_beyond_loopback_is_flagged() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("address");
        assert!(exposed_without_tls(addr("0.0.0.0:5000"), false));
        assert!(exposed_without_tls(addr("192.0.2.7:5000"), false));
        assert!(exposed_without_tls(addr("[::]:5000"), false));
        assert!(!exposed_without_tls(addr("0.0.0.0:5000"), true));
        assert!(!exposed_without_tls(addr("127.0.0.1:5000"), false));
        assert!(!exposed_without_tls(addr("127.0.0.2:5000"), false));
        assert!(!exposed_without_tls(addr("[::1]:5000"), false));
        assert!(!exposed_without_tls(addr("[::ffff:127.0.0.1]:5000"), false));
    }
}
