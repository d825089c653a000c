//! The few protobuf wire-format primitives dag-pb and UnixFS need (varints, tagged fields).

use super::TreeError;

/// Wire type of a varint field.
pub const VARINT: u8 = 0;
/// Wire type of a length-delimited field.
pub const LEN: u8 = 2;

/// Appends `value` as a protobuf varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a field key.
pub fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// Appends a length-delimited field.
pub fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a varint field.
pub fn put_uint(out: &mut Vec<u8>, field: u32, value: u64) {
    put_key(out, field, VARINT);
    put_varint(out, value);
}

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

    fn varint(&mut self) -> Result<u64, TreeError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let (&byte, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| TreeError::Decode("truncated varint".into()))?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(TreeError::Decode("varint too long".into()))
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
