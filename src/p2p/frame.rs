//! Length-prefixed frames on a stream: an unsigned-varint length, then that many bytes. Used by
//! Bitswap and libp2p fetch.
//!
//! The length a peer declares is a claim, not a budget: it is checked against the caller's cap
//! before anything is read, and the buffer is reserved for it but zeroed and filled only
//! [`READ_STEP`] ahead of the bytes that actually arrive, so a peer announcing 4 MiB and sending
//! ten bytes makes the node touch 64 KiB, not 4 MiB. Reserving the whole length up front keeps
//! a large frame (a Bitswap block message) from being copied as its buffer grows.

use std::io;

use libp2p::futures::io::Cursor;
use libp2p::futures::{AsyncRead, AsyncReadExt as _};

/// How far ahead of the bytes received a frame's buffer is zeroed (and so touched).
const READ_STEP: usize = 64 << 10;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared length exceeds the cap.
    #[error("frame of {declared} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// What the peer declared.
        declared: u64,
        /// The cap.
        limit: usize,
    },
    /// The length prefix is not a valid varint.
    #[error("invalid frame length prefix: {0}")]
    Prefix(String),
    /// The stream ended inside a frame.
    #[error("stream ended {got} bytes into a frame of {declared}")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes declared.
        declared: usize,
    },
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => e,
            FrameError::Truncated { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Reads one frame of at most `limit` bytes; `None` at a clean end of stream (before the
/// first byte of a prefix).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut first = [0u8; 1];
    if reader.read(&mut first).await? == 0 {
        return Ok(None);
    }
    let declared = unsigned_varint::aio::read_u64(Cursor::new(first).chain(&mut *reader))
        .await
        .map_err(|e| match e {
            unsigned_varint::io::ReadError::Io(e) => FrameError::Io(e),
            other => FrameError::Prefix(other.to_string()),
        })?;
    let len = usize::try_from(declared)
        .ok()
        .filter(|len| *len <= limit)
        .ok_or(FrameError::TooLarge { declared, limit })?;
    // Address space only: the pages are touched as `resize` zeroes them, one step at a time.
    let mut body = Vec::with_capacity(len);
    let mut filled = 0;
    while filled < len {
        if filled == body.len() {
            body.resize((filled + READ_STEP).min(len), 0);
        }
        match reader.read(&mut body[filled..]).await? {
            0 => {
                return Err(FrameError::Truncated {
                    got: filled,
                    declared: len,
                })
            }
            n => filled += n,
        }
    }
    Ok(Some(body))
}

/// The varint length prefix of a `len`-byte frame.
pub fn prefix(len: usize) -> Vec<u8> {
    unsigned_varint::encode::usize(len, &mut unsigned_varint::encode::usize_buffer()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = prefix(body.len());
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let mut input = frame(&[7; 300]);
        input.extend(frame(b""));
        let mut reader = Cursor::new(input);
        assert_eq!(
            read_frame(&mut reader, 1024).await.unwrap(),
            Some(vec![7; 300])
        );
        assert_eq!(read_frame(&mut reader, 1024).await.unwrap(), Some(vec![]));
        assert_eq!(read_frame(&mut reader, 1024).await.unwrap(), None);
    }

    /// A frame several read steps long, arriving in small reads and in pieces that straddle
    /// the steps, comes out whole, in a buffer that never grew past its length.
    #[tokio::test]
    async fn long_frames_arriving_piecemeal_are_read_whole() {
        use libp2p::futures::stream::{self, TryStreamExt as _};
        let body: Vec<u8> = (0..3 * READ_STEP + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let framed = frame(&body);
        let pieces: Vec<io::Result<Vec<u8>>> =
            framed.chunks(1_000).map(|c| Ok(c.to_vec())).collect();
        let mut reader = stream::iter(pieces).into_async_read();
        let read = read_frame(&mut reader, 1 << 20).await.unwrap().unwrap();
        assert_eq!(read, body);
        assert_eq!(read.capacity(), body.len());
        assert_eq!(read_frame(&mut reader, 1 << 20).await.unwrap(), None);
    }

    #[tokio::test]
    async fn refuses_oversized_truncated_and_malformed_frames() {
        let mut big = Cursor::new(prefix(1025));
        assert!(matches!(
            read_frame(&mut big, 1024).await,
            Err(FrameError::TooLarge {
                declared: 1025,
                limit: 1024
            })
        ));
        // A huge declared length with a few bytes behind it: refused by the cap, before any
        // buffer of that size exists.
        let mut huge = prefix(usize::MAX >> 1);
        huge.extend_from_slice(b"abc");
        assert!(matches!(
            read_frame(&mut Cursor::new(huge), 4 << 20).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut short = prefix(10);
        short.extend_from_slice(b"abc");
        assert!(matches!(
            read_frame(&mut Cursor::new(short), 1024).await,
            Err(FrameError::Truncated {
                got: 3,
                declared: 10
            })
        ));
        // Inside the prefix.
        assert!(matches!(
            read_frame(&mut Cursor::new(vec![0x80]), 1024).await,
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof
        ));
        // Eleven continuation bytes.
        assert!(matches!(
            read_frame(&mut Cursor::new(vec![0xff; 11]), 1024).await,
            Err(FrameError::Prefix(_))
        ));
    }
}
