//! Request bodies as the server hands them to the API: a body that stops delivering bytes
//! fails after the stall timeout, and a body the handler did not read to its end is handed
//! back, so that the connection can be drained or closed cleanly instead of reading the rest
//! of it as the next request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The client sent nothing for the stall timeout.
    #[error("no bytes of the request body arrived for {} s", .0.as_secs())]
    Stalled(Duration),
    /// The connection broke or the body was malformed.
    #[error(transparent)]
    Broken(#[from] hyper::Error),
}

/// What is left of a request body once its handler is done with it.
#[derive(Default)]
pub(crate) enum Leftover {
    /// Read to its end (or there was none): the connection can serve the next request.
    #[default]
    Nothing,
    /// Not read to its end: the rest is still on the wire.
    Unread(Incoming),
    /// The client stopped sending (or the body broke): the connection cannot be reused.
    Unusable,
}

/// Where a [`WatchedBody`] leaves what its handler did not read.
pub(crate) type LeftoverSlot = Arc<Mutex<Leftover>>;

/// A request body with a stall timeout that reports what was left unread.
pub(crate) struct WatchedBody {
    inner: Option<Incoming>,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Data arrived since the timer was last armed.
    progressed: bool,
    /// The body ended, broke or stalled: nothing to hand back.
    finished: bool,
    leftover: LeftoverSlot,
    /// Body bytes read so far (for the request's metrics).
    received: Arc<AtomicU64>,
}

impl WatchedBody {
    /// Watches `inner`; what remains unread when it is dropped goes to `leftover`, and the
    /// bytes read are added to `received`.
    pub(crate) fn new(
        inner: Incoming,
        stall: Duration,
        leftover: LeftoverSlot,
        received: Arc<AtomicU64>,
    ) -> Self {
        WatchedBody {
            inner: Some(inner),
            stall,
            timer: None,
            progressed: false,
            finished: false,
            leftover,
            received,
        }
    }

    fn set_leftover(&self, value: Leftover) {
        *self.leftover.lock().unwrap_or_else(|p| p.into_inner()) = value;
    }
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.progressed = true;
                if let Some(data) = frame.data_ref() {
                    this.received
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finished = true;
                this.set_leftover(Leftover::Unusable);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.stall;
                match &mut this.timer {
                    None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    Some(timer) if this.progressed => timer.as_mut().reset(deadline),
                    Some(_) => {}
                }
                this.progressed = false;
                let fired = this
                    .timer
                    .as_mut()
                    .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
                if fired {
                    this.finished = true;
                    this.set_leftover(Leftover::Unusable);
                    return Poll::Ready(Some(Err(RequestBodyError::Stalled(this.stall))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(inner) = self.inner.take() {
            if !inner.is_end_stream() {
                self.set_leftover(Leftover::Unread(inner));
            }
        }
    }
}

/// Reads and discards the rest of a body if it is at most `limit` bytes and keeps coming;
/// `true` if it was read to its end (so the connection can serve the next request).
pub(crate) async fn drain(mut body: Incoming, limit: u64, stall: Duration) -> bool {
    if body.size_hint().lower() > limit {
        return false;
    }
    let mut read = 0u64;
    loop {
        match tokio::time::timeout(stall, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len() as u64;
                    if read > limit {
                        return false;
                    }
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}
