//! The open connections of the server: what each is doing (waiting idle, receiving a request
//! head, serving requests), so that timeouts can tell a slow client from a busy server, and the
//! accept loop can close the oldest idle connection when the cap is reached.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::response::Body;
use crate::metrics::{HttpMetrics, MethodLabel, RequestOutcome, RouteClass};

/// Every connection the server holds open.
pub(crate) struct ConnectionTable {
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Signalled when a connection ends or becomes idle: room may have appeared.
    room: Notify,
}

/// One connection's state, shared by its task, its I/O and its requests. Times are
/// milliseconds since the table's epoch; 0 in an optional time means "not now".
pub(crate) struct Connection {
    id: u64,
    table: Arc<ConnectionTable>,
    /// Requests being served (handler running or response still being sent).
    requests: AtomicU32,
    /// When it last became idle (or was accepted).
    idle_since: AtomicU64,
    /// One more than when the first byte of a request head arrived, while no request runs.
    head_since: AtomicU64,
    /// One more than when a write started to wait for the client to read.
    write_blocked_since: AtomicU64,
    /// The connection's task should look at its deadlines again.
    changed: Notify,
    /// The accept loop wants this (idle) connection closed to make room.
    evicted: AtomicBool,
    evict: Notify,
}

/// What a connection is waiting for, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// Nothing timed: a request is being handled by the server.
    Server,
    /// The next request, since the given time.
    Idle(Duration),
    /// The rest of a request head (or a TLS handshake), since the given time.
    Head(Duration),
    /// The client to read the response, since the given time.
    ClientRead(Duration),
}

impl ConnectionTable {
    /// An empty table.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(ConnectionTable {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            room: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The time elapsed since the table's epoch, as connection times are kept.
    pub(crate) fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of open connections.
    pub(crate) fn len(&self) -> usize {
        self.open().len()
    }

    /// Adds a connection that was just accepted: it must send its first request head (or
    /// TLS handshake) within the header timeout.
    pub(crate) fn register(self: &Arc<Self>) -> Registration {
        let now = self.now();
        let conn = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            table: self.clone(),
            requests: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            head_since: AtomicU64::new(now + 1),
            write_blocked_since: AtomicU64::new(0),
            changed: Notify::new(),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        self.open().insert(conn.id, conn.clone());
        Registration(conn)
    }

    /// Whether some connection is serving no request (and could be closed to make room).
    pub(crate) fn has_idle(&self) -> bool {
        self.open()
            .values()
            .any(|c| c.is_idle() && !c.evicted.load(Ordering::Relaxed))
    }

    /// Whether a connection asked to close while idle is still open (it keeps its descriptor
    /// until its task ends).
    pub(crate) fn eviction_pending(&self) -> bool {
        self.open()
            .values()
            .any(|c| c.is_idle() && c.evicted.load(Ordering::Relaxed))
    }

    /// Asks the connection that has been idle longest to close; `false` if every connection
    /// is serving a request.
    pub(crate) fn evict_oldest_idle(&self) -> bool {
        let oldest = self
            .open()
            .values()
            .filter(|c| c.is_idle() && !c.evicted.load(Ordering::Relaxed))
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed))
            .cloned();
        match oldest {
            Some(conn) => {
                conn.evicted.store(true, Ordering::Relaxed);
                conn.evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// Waits until a connection ends or becomes idle.
    pub(crate) async fn room_changed(&self) {
        self.room.notified().await
    }
}

/// Removes its connection from the table when dropped (when the connection's task ends).
pub(crate) struct Registration(Arc<Connection>);

impl Registration {
    /// The registered connection.
    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let table = &self.0.table;
        table.open().remove(&self.0.id);
        table.room.notify_one();
    }
}

impl Connection {
    pub(crate) fn is_idle(&self) -> bool {
        self.requests.load(Ordering::Acquire) == 0
    }

    /// What the connection waits for now.
    pub(crate) fn waiting(&self) -> Waiting {
        let at = |ms: u64| Duration::from_millis(ms);
        let blocked = self.write_blocked_since.load(Ordering::Acquire);
        if blocked != 0 {
            return Waiting::ClientRead(at(blocked - 1));
        }
        if !self.is_idle() {
            return Waiting::Server;
        }
        match self.head_since.load(Ordering::Acquire) {
            0 => Waiting::Idle(at(self.idle_since.load(Ordering::Acquire))),
            head => Waiting::Head(at(head - 1)),
        }
    }

    /// Completes when the connection's state changed in a way that may bring a deadline
    /// forward.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await
    }

    /// Completes when the accept loop asks this connection to close.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await
    }

    /// Marks a request as started; it lasts until the returned guard is dropped (when its
    /// response has been sent, or abandoned).
    pub(crate) fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        RequestGuard(self.clone())
    }

    fn on_read(&self) {
        // The first bytes of a new request: from now on the header timeout runs.
        if self.is_idle() && self.head_since.load(Ordering::Relaxed) == 0 {
            self.head_since
                .store(self.table.now() + 1, Ordering::Release);
            self.changed.notify_one();
        }
    }

    fn on_write(&self, blocked: bool) {
        let since = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked && since == 0 {
            self.write_blocked_since
                .store(self.table.now() + 1, Ordering::Release);
            self.changed.notify_one();
        } else if !blocked && since != 0 {
            self.write_blocked_since.store(0, Ordering::Release);
        }
    }
}

/// A request in progress on a connection.
pub(crate) struct RequestGuard(Arc<Connection>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let conn = &self.0;
        if conn.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            conn.idle_since.store(conn.table.now(), Ordering::Release);
            conn.changed.notify_one();
            conn.table.room.notify_one();
        }
    }
}

/// One request as the metrics see it, counted when dropped: when its response body has been
/// sent, or abandoned (the client went away).
pub(crate) struct RequestRecord {
    metrics: HttpMetrics,
    class: RouteClass,
    method: MethodLabel,
    status: u16,
    started: Instant,
    /// Request body bytes read (by the handler, perhaps still after it answered).
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
}

impl RequestRecord {
    /// A request that arrived at `started` and was answered with `status`.
    pub(crate) fn new(
        metrics: HttpMetrics,
        class: RouteClass,
        method: MethodLabel,
        status: u16,
        started: Instant,
        bytes_in: Arc<AtomicU64>,
    ) -> Self {
        RequestRecord {
            metrics,
            class,
            method,
            status,
            started,
            bytes_in,
            bytes_out: 0,
        }
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        self.metrics.observe(RequestOutcome {
            class: self.class,
            method: self.method,
            status: self.status,
            elapsed: self.started.elapsed(),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out,
        });
    }
}

/// A response body that keeps its request counted as in progress until it is sent, and
/// counts the request in the metrics then.
pub(crate) struct TrackedBody {
    inner: Body,
    record: RequestRecord,
    _request: RequestGuard,
}

impl TrackedBody {
    /// Wraps `inner`, ending the request (and counting it in `record`) when it is dropped.
    pub(crate) fn new(inner: Body, request: RequestGuard, record: RequestRecord) -> Self {
        TrackedBody {
            inner,
            record,
            _request: request,
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.record.bytes_out += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's byte stream, reporting reads (a request head starting) and writes that wait
/// for the client to its [`Connection`].
pub(crate) struct TrackedIo<T> {
    inner: T,
    conn: Arc<Connection>,
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`, reporting to `conn`.
    pub(crate) fn new(inner: T, conn: Arc<Connection>) -> Self {
        TrackedIo { inner, conn }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.conn.on_write(result.is_pending());
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.conn.on_write(result.is_pending());
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.conn.on_write(result.is_pending());
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
