//! The direct record exchange, `/ipns-registry/record/1.0.0`: the request is a routing key, the
//! response the answering node's newest record for it (empty when it has none), each framed as
//! an unsigned-varint length and the bytes.

use std::io;

use libp2p::futures::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use libp2p::request_response;
use libp2p::StreamProtocol;

use super::frame;

/// The protocol id.
pub const RECORD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipns-registry/record/1.0.0");

/// Largest record (and routing key) carried: IPNS records are a few hundred bytes, and kubo caps
/// them at 10 KiB.
pub const MAX_RECORD_SIZE: usize = 10 << 10;

/// Length-prefixed bytes both ways; `None` travels as an empty response.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    frame::read_frame(io, MAX_RECORD_SIZE)
        .await?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no record frame"))
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MAX_RECORD_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "record frame of {} bytes exceeds {MAX_RECORD_SIZE}",
                bytes.len()
            ),
        ));
    }
    let mut out = frame::prefix(bytes.len());
    out.extend_from_slice(bytes);
    io.write_all(&out).await?;
    io.close().await
}

impl request_response::Codec for RecordCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Option<Vec<u8>>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Option<Vec<u8>>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_frame(io).await?;
        Ok((!bytes.is_empty()).then_some(bytes))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Option<Vec<u8>>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, response.as_deref().unwrap_or_default()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    #[tokio::test]
    async fn frames_round_trip_and_cap_sizes() {
        let mut codec = RecordCodec;
        let mut out = Cursor::new(Vec::new());
        codec
            .write_response(&RECORD_PROTOCOL, &mut out, Some(vec![7; 300]))
            .await
            .unwrap();
        let bytes = out.into_inner();
        assert_eq!(&bytes[..2], &[0xac, 0x02]);
        let mut input = Cursor::new(bytes);
        let response = codec
            .read_response(&RECORD_PROTOCOL, &mut input)
            .await
            .unwrap();
        assert_eq!(response, Some(vec![7; 300]));

        let mut out = Cursor::new(Vec::new());
        codec
            .write_response(&RECORD_PROTOCOL, &mut out, None)
            .await
            .unwrap();
        let mut input = Cursor::new(out.into_inner());
        assert_eq!(
            codec
                .read_response(&RECORD_PROTOCOL, &mut input)
                .await
                .unwrap(),
            None
        );

        let too_big = frame::prefix(MAX_RECORD_SIZE + 1);
        let mut input = Cursor::new(too_big);
        assert!(codec
            .read_request(&RECORD_PROTOCOL, &mut input)
            .await
            .is_err());
        let mut out = Cursor::new(Vec::new());
        assert!(codec
            .write_request(&RECORD_PROTOCOL, &mut out, vec![0; MAX_RECORD_SIZE + 1])
            .await
            .is_err());
    }
}
