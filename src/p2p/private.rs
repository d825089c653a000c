//! The transport of a private network: TCP, then kubo's pre-shared-key layer (XSalsa20 over
//! the whole connection, `libp2p::pnet`), then noise and yamux as usual.
//!
//! The key layer has no handshake of its own that could fail: with another key, each side
//! simply reads noise. So everything that goes wrong between the TCP connection and a working
//! multiplexer counts as the private-network handshake failing, and it is given a deadline of
//! its own, so a pair of nodes that wait on each other's garbage fail as a handshake failure
//! (with the address, in the log) rather than as an anonymous connection timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use either::Either;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::upgrade::Version;
use libp2p::core::transport::{Boxed, Transport as _};
use libp2p::futures::{AsyncRead, AsyncWrite};
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PnetError, PreSharedKey};
use libp2p::{noise, tcp, yamux, PeerId};

/// The start of every log line and error about a failed private-network handshake.
pub(super) const HANDSHAKE_FAILED: &str = "private network handshake failed";

/// How long the handshake may take once TCP is connected: less than the swarm's 10 s
/// connection timeout, so this deadline is the one that fires.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(8);
/// Bytes read after which the handshake has visibly succeeded and the deadline no longer
/// applies. With a wrong key a side reads at most the peer's nonce (24 bytes) and its first
/// multistream message (28); a good handshake reads the noise messages too, well over this.
const HANDSHAKE_BYTES: usize = 128;

/// Why a connection of a private network failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum PrivateTransportError {
    /// The TCP connection itself failed.
    #[error(transparent)]
    Tcp(io::Error),
    /// The key exchange, or the negotiation after it, failed or stalled: what a peer without
    /// the key (or with another one) causes.
    #[error("{HANDSHAKE_FAILED}: {0}")]
    Handshake(String),
    /// Setting up the stream multiplexer failed (the key matched).
    #[error("multiplexer: {0}")]
    Muxer(String),
}

/// The private network's transport for the swarm.
pub(super) fn transport(
    key: &Keypair,
    psk: PreSharedKey,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let noise = noise::Config::new(key)?;
    let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .and_then(move |socket, _| PnetConfig::new(psk).handshake(HandshakeDeadline::new(socket)))
        .upgrade(Version::V1)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .map_err(classify)
        .boxed();
    Ok(transport)
}

/// Sorts the errors of TCP, then the key exchange, then noise (`N`), then yamux (`M`), as the
/// upgrades nest them.
fn classify<N: std::fmt::Display, M: std::fmt::Display>(
    error: Either<Either<Either<io::Error, PnetError>, N>, M>,
) -> PrivateTransportError {
    match error {
        Either::Left(Either::Left(Either::Left(e))) => PrivateTransportError::Tcp(e),
        Either::Left(Either::Left(Either::Right(e))) => {
            PrivateTransportError::Handshake(e.to_string())
        }
        Either::Left(Either::Right(e)) => PrivateTransportError::Handshake(e.to_string()),
        Either::Right(e) => PrivateTransportError::Muxer(e.to_string()),
    }
}

/// A connection whose reads fail once [`HANDSHAKE_DEADLINE`] has passed before
/// [`HANDSHAKE_BYTES`] arrived; after that, a plain connection.
struct HandshakeDeadline<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    read: usize,
}

impl<S> HandshakeDeadline<S> {
    fn new(inner: S) -> Self {
        Self::with_deadline(inner, HANDSHAKE_DEADLINE)
    }

    fn with_deadline(inner: S, deadline: Duration) -> Self {
        HandshakeDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(deadline))),
            read: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HandshakeDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no handshake within the deadline after connecting",
                )));
            }
        }
        let n = ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.read += n;
        if this.read >= HANDSHAKE_BYTES {
            this.deadline = None;
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HandshakeDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Both ends of a loopback TCP connection.
    async fn tcp_pair() -> (tcp::tokio::TcpStream, tcp::tokio::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (near, far) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (
            tcp::tokio::TcpStream(near.unwrap()),
            tcp::tokio::TcpStream(far.unwrap().0),
        )
    }

    #[tokio::test]
    async fn the_deadline_ends_a_stalled_handshake_and_not_a_working_connection() {
        let deadline = Duration::from_millis(200);
        // Nothing arrives: the read fails once the deadline passes.
        let (near, _far) = tcp_pair().await;
        let mut stalled = HandshakeDeadline::with_deadline(near, deadline);
        let mut buf = [0u8; 16];
        let err = stalled.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        // A handshake's worth of bytes in time: later reads wait as long as they need to.
        let (near, mut far) = tcp_pair().await;
        let mut working = HandshakeDeadline::with_deadline(near, deadline);
        far.write_all(&[1; HANDSHAKE_BYTES]).await.unwrap();
        let mut got = vec![0u8; HANDSHAKE_BYTES];
        working.read_exact(&mut got).await.unwrap();
        tokio::time::sleep(2 * deadline).await;
        far.write_all(b"late").await.unwrap();
        let mut late = [0u8; 4];
        working.read_exact(&mut late).await.unwrap();
        assert_eq!(&late, b"late");
    }
}
