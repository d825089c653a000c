//! Protobuf wire-format primitives shared by every format the node speaks: dag-pb and UnixFS
//! (`tree`), IPNS records (`names`), Bitswap messages and length-prefixed frames (`p2p`). The
//! unsigned varint here is also the multiformats one. Each format keeps its own field reader,
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
}

/// Appends `value` as an unsigned varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Bytes the varint of `value` takes.
pub fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads the unsigned varint at the start of `buf`: `(value, bytes used)`.
pub fn read_varint(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        let part = u64::from(byte & 0x7f);
        // The tenth byte may only carry the top bit of a u64.
        if i == 9 && part > 1 {
            return Err(VarintError::Overflow);
        }
        value |= part << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() < 10 {
        Err(VarintError::Truncated)
    } else {
        Err(VarintError::Overflow)
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
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
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
    }
}
