//! Reading dag-pb and UnixFS protobuf messages; the wire primitives are `crate::protobuf`'s.

use super::TreeError;
use crate::protobuf::read_varint;

pub use crate::protobuf::{put_bytes, put_key, put_uint, put_varint, LEN, VARINT};

/// A cursor over protobuf-encoded bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
}

/// The value of one field.
pub enum Value<'a> {
    /// A varint field.
    Varint(u64),
    /// A length-delimited field.
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn varint(&mut self) -> Result<u64, TreeError> {
        let (value, used) = read_varint(self.buf).map_err(|e| TreeError::Decode(e.to_string()))?;
        self.buf = &self.buf[used..];
        Ok(value)
    }

    /// The next varint of a packed repeated field, or `None` at the end.
    pub fn packed_varint(&mut self) -> Result<Option<u64>, TreeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.varint().map(Some)
    }

    /// The next field as `(number, value)`, or `None` at the end.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, TreeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3)
            .map_err(|_| TreeError::Decode("field number too large".into()))?;
        match (key & 7) as u8 {
            VARINT => Ok(Some((field, Value::Varint(self.varint()?)))),
            LEN => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| TreeError::Decode("length too large".into()))?;
                if len > self.buf.len() {
                    return Err(TreeError::Decode("truncated field".into()));
                }
                let (bytes, rest) = self.buf.split_at(len);
                self.buf = rest;
                Ok(Some((field, Value::Bytes(bytes))))
            }
            other => Err(TreeError::Decode(format!("unsupported wire type {other}"))),
        }
    }
}
