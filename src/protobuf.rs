//! Protobuf wire-format primitives shared by every format the node speaks: dag-pb and UnixFS
//! (`tree`), IPNS records (`names`) and CID prefixes (`p2p`). The unsigned varint is the
//! multiformats one, from the `unsigned-varint` crate (as `cid`, `multihash` and libp2p use it);
//! stream framing in `p2p` reads it with that crate too. Each format keeps its own field reader,
//! because each treats unknown and mistyped fields the way its reference implementation does.

/// Wire type of a varint field.
pub const VARINT: u8 = 0;
/// Wire type of a 64-bit fixed-width field.
pub const I64: u8 = 1;
/// Wire type of a length-delimited field.
pub const LEN: u8 = 2;
/// Wire type of a 32-bit fixed-width field.
pub const I32: u8 = 5;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    /// The input ends inside the varint.
    #[error("truncated varint")]
    Truncated,
    /// More than ten bytes, or a value above `u64::MAX`.
    #[error("varint overflows 64 bits")]
    Overflow,
    /// Trailing zero groups (`0x80 0x00` for 0): the multiformats varint, which every format
    /// here shares, has one encoding per value.
    #[error("varint is not minimally encoded")]
    NotMinimal,
}

/// Appends `value` as an unsigned varint.
pub fn put_varint(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(unsigned_varint::encode::u64(
        value,
        &mut unsigned_varint::encode::u64_buffer(),
    ));
}

/// Bytes the varint of `value` takes.
pub fn varint_len(value: u64) -> usize {
    // Seven bits per byte; zero takes one.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads the unsigned varint at the start of `buf`: `(value, bytes used)`.
///
/// Protobuf and multiformats agree on the encoding, except that protobuf readers also take
/// non-minimal forms, which no encoder we interoperate with writes; they are refused here.
pub fn read_varint(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    use unsigned_varint::decode::Error;
    // Most varints are field keys and short lengths, one byte: scanning a directory block of
    // thousands of links reads several per link.
    if let Some(&byte) = buf.first() {
        if byte < 0x80 {
            return Ok((u64::from(byte), 1));
        }
    }
    match unsigned_varint::decode::u64(buf) {
        Ok((value, rest)) => {
            let used = buf.len() - rest.len();
            // The tenth byte may only carry the top bit of a u64; unsigned-varint drops the
            // rest silently, which would read a different number than the sender meant.
            if used == 10 && buf[9] > 1 {
                return Err(VarintError::Overflow);
            }
            Ok((value, used))
        }
        Err(Error::Insufficient) => Err(VarintError::Truncated),
        Err(Error::NotMinimal) => Err(VarintError::NotMinimal),
        Err(_) => Err(VarintError::Overflow),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_garbage() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u64::from(u32::MAX),
            1 << 63,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(read_varint(&out), Ok((v, out.len())));
        }
        assert_eq!(read_varint(&[0x80, 0x80]), Err(VarintError::Truncated));
        assert_eq!(read_varint(&[0xff; 10]), Err(VarintError::Overflow));
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(VarintError::Overflow)
        );
        assert_eq!(read_varint(&[0x80, 0x00]), Err(VarintError::NotMinimal));
        assert_eq!(read_varint(&[0x00, 0x80]), Ok((0, 1)));
    }
}
