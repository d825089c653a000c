//! The standard record exchange, libp2p fetch (`/libp2p/fetch/0.0.1`,
//! <https://github.com/libp2p/specs/tree/master/fetch>), as the IPNS PubSub Router spec uses it:
//! the request names a key (`/ipns/` and the binary multihash of a name's peer id), the answer
//! is `OK` with the record, `NOT_FOUND`, or `ERROR` with a message. Each side sends one protobuf
//! message, framed as an unsigned-varint length and the bytes, as `@libp2p/fetch` and
//! go-libp2p-pubsub-router do.

use std::io;

use libp2p::futures::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use libp2p::request_response;
use libp2p::StreamProtocol;
use prost::Message as _;

use super::frame;

/// The protocol id.
pub const FETCH_PROTOCOL: StreamProtocol = StreamProtocol::new("/libp2p/fetch/0.0.1");

/// Largest record (and routing key) carried: IPNS records are a few hundred bytes, and kubo caps
/// them at 10 KiB.
pub const MAX_RECORD_SIZE: usize = 10 << 10;

/// Room for the protobuf fields around a key or record (tags, lengths, the status).
const ENVELOPE: usize = 32;

/// A fetch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAnswer {
    /// `OK`: the value held for the key.
    Found(Vec<u8>),
    /// `NOT_FOUND`: nothing is held for the key.
    NotFound,
    /// `ERROR`: the key is not one the peer serves (or it failed), with its message.
    Error(String),
}

/// The wire request. The spec's `.proto` has `string identifier`; `bytes` reads the same wire
/// bytes without insisting on UTF-8, which a binary multihash is not.
#[derive(Clone, PartialEq, prost::Message)]
struct FetchRequest {
    #[prost(bytes = "vec", tag = "1")]
    identifier: Vec<u8>,
}

/// The wire response.
#[derive(Clone, PartialEq, prost::Message)]
struct FetchResponse {
    #[prost(enumeration = "StatusCode", tag = "1")]
    status: i32,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
enum StatusCode {
    Ok = 0,
    NotFound = 1,
    Error = 2,
}

/// One length-prefixed protobuf message each way.
#[derive(Debug, Clone, Copy, Default)]
pub struct FetchCodec;

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

async fn read_message<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    frame::read_frame(io, MAX_RECORD_SIZE + ENVELOPE)
        .await?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no fetch message"))
}

async fn write_message<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MAX_RECORD_SIZE + ENVELOPE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fetch message of {} bytes is too large", bytes.len()),
        ));
    }
    let mut out = frame::prefix(bytes.len());
    out.extend_from_slice(bytes);
    io.write_all(&out).await?;
    io.close().await
}

impl request_response::Codec for FetchCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = FetchAnswer;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_message(io).await?;
        let request = FetchRequest::decode(bytes.as_slice())
            .map_err(|e| invalid(format!("fetch request: {e}")))?;
        if request.identifier.len() > MAX_RECORD_SIZE {
            return Err(invalid("fetch key too long".into()));
        }
        Ok(request.identifier)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<FetchAnswer>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_message(io).await?;
        let response = FetchResponse::decode(bytes.as_slice())
            .map_err(|e| invalid(format!("fetch response: {e}")))?;
        match StatusCode::try_from(response.status) {
            Ok(StatusCode::Ok) if response.data.len() > MAX_RECORD_SIZE => Err(invalid(format!(
                "fetched record of {} bytes exceeds {MAX_RECORD_SIZE}",
                response.data.len()
            ))),
            Ok(StatusCode::Ok) => Ok(FetchAnswer::Found(response.data)),
            Ok(StatusCode::NotFound) => Ok(FetchAnswer::NotFound),
            Ok(StatusCode::Error) => Ok(FetchAnswer::Error(
                String::from_utf8_lossy(&response.data).into_owned(),
            )),
            Err(_) => Err(invalid(format!(
                "fetch response with unknown status {}",
                response.status
            ))),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        identifier: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &FetchRequest { identifier }.encode_to_vec()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        answer: FetchAnswer,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let (status, data) = match answer {
            FetchAnswer::Found(data) => (StatusCode::Ok, data),
            FetchAnswer::NotFound => (StatusCode::NotFound, Vec::new()),
            FetchAnswer::Error(message) => (StatusCode::Error, message.into_bytes()),
        };
        let mut data = data;
        // An error message is for people; it never needs to push the message over the cap.
        if status == StatusCode::Error {
            data.truncate(256);
        }
        let message = FetchResponse {
            status: status as i32,
            data,
        };
        write_message(io, &message.encode_to_vec()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    async fn round_trip(answer: FetchAnswer) -> io::Result<FetchAnswer> {
        let mut out = Cursor::new(Vec::new());
        FetchCodec
            .write_response(&FETCH_PROTOCOL, &mut out, answer)
            .await?;
        FetchCodec
            .read_response(&FETCH_PROTOCOL, &mut Cursor::new(out.into_inner()))
            .await
    }

    #[tokio::test]
    async fn messages_match_the_spec_bytes_and_round_trip() {
        // A request for key "/ipns/a": field 1 (bytes), length 7; framed with its length.
        let mut out = Cursor::new(Vec::new());
        FetchCodec
            .write_request(&FETCH_PROTOCOL, &mut out, b"/ipns/a".to_vec())
            .await
            .unwrap();
        let bytes = out.into_inner();
        assert_eq!(bytes, b"\x09\x0a\x07/ipns/a");
        let key = FetchCodec
            .read_request(&FETCH_PROTOCOL, &mut Cursor::new(bytes))
            .await
            .unwrap();
        assert_eq!(key, b"/ipns/a");

        // OK is proto3's default status, so only the data field is on the wire.
        let mut out = Cursor::new(Vec::new());
        FetchCodec
            .write_response(&FETCH_PROTOCOL, &mut out, FetchAnswer::Found(vec![7; 3]))
            .await
            .unwrap();
        assert_eq!(out.into_inner(), b"\x05\x12\x03\x07\x07\x07");
        let mut out = Cursor::new(Vec::new());
        FetchCodec
            .write_response(&FETCH_PROTOCOL, &mut out, FetchAnswer::NotFound)
            .await
            .unwrap();
        assert_eq!(out.into_inner(), b"\x02\x08\x01");

        for answer in [
            FetchAnswer::Found(vec![1; MAX_RECORD_SIZE]),
            FetchAnswer::NotFound,
            FetchAnswer::Error("no lookup for that key".into()),
        ] {
            assert_eq!(round_trip(answer.clone()).await.unwrap(), answer);
        }
    }

    #[tokio::test]
    async fn oversized_and_malformed_messages_are_refused() {
        // A record one byte over the cap, inside a frame that still fits.
        let message = FetchResponse {
            status: 0,
            data: vec![0; MAX_RECORD_SIZE + 1],
        }
        .encode_to_vec();
        let mut input = frame::prefix(message.len());
        input.extend(message);
        assert!(FetchCodec
            .read_response(&FETCH_PROTOCOL, &mut Cursor::new(input))
            .await
            .is_err());
        // A frame over the cap is refused before it is read.
        let too_big = frame::prefix(MAX_RECORD_SIZE + ENVELOPE + 1);
        assert!(FetchCodec
            .read_response(&FETCH_PROTOCOL, &mut Cursor::new(too_big))
            .await
            .is_err());
        // Not protobuf, and an unknown status.
        let garbage = b"\x03\xff\xff\xff".to_vec();
        assert!(FetchCodec
            .read_request(&FETCH_PROTOCOL, &mut Cursor::new(garbage))
            .await
            .is_err());
        assert!(FetchCodec
            .read_response(&FETCH_PROTOCOL, &mut Cursor::new(b"\x02\x08\x07".to_vec()))
            .await
            .is_err());
        // Writing a key over the cap fails rather than sending it.
        assert!(FetchCodec
            .write_request(
                &FETCH_PROTOCOL,
                &mut Cursor::new(Vec::new()),
                vec![0; MAX_RECORD_SIZE + ENVELOPE]
            )
            .await
            .is_err());
    }
}
