//! The `IpnsEntry` protobuf, the wire and storage form of an IPNS record, encoded and decoded by
//! hand (nine optional scalar fields do not warrant a protobuf crate).
//!
//! Encoding matches Go's `proto.Marshal` of boxo's `IpnsRecord`: present fields in field-number
//! order, each once. Decoding follows protobuf-go: the last occurrence of a field wins, unknown
//! fields (and known fields with an unexpected wire type) are skipped.

use crate::protobuf::{self, VarintError};

/// Why bytes are not an `IpnsEntry` protobuf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufError {
    /// The message ends inside a field.
    #[error("truncated protobuf")]
    Truncated,
    /// A varint longer than ten bytes.
    #[error("protobuf varint overflows 64 bits")]
    VarintOverflow,
    /// A varint with trailing zero groups, which no IPNS implementation writes.
    #[error("protobuf varint is not minimally encoded")]
    VarintNotMinimal,
    /// Field number 0, or a wire type protobuf does not define.
    #[error("invalid protobuf field key {0}")]
    InvalidKey(u64),
    /// An end-group marker that does not close the open group.
    #[error("unbalanced protobuf group")]
    UnbalancedGroup,
}

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_START_GROUP: u64 = 3;
const WIRE_END_GROUP: u64 = 4;
const WIRE_FIXED32: u64 = 5;

/// Groups nest; bound the depth so hostile input cannot recurse without limit.
const MAX_GROUP_DEPTH: usize = 64;

/// The fields of `IpnsEntry` (spec "Record Serialization Format"), each `None` when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IpnsEntry {
    /// 1: legacy V1 copy of `data[Value]`.
    pub value: Option<Vec<u8>>,
    /// 2: legacy V1 signature; never used for verification.
    pub signature_v1: Option<Vec<u8>>,
    /// 3: legacy V1 copy of `data[ValidityType]` (an open proto3 enum, hence any i32).
    pub validity_type: Option<i32>,
    /// 4: legacy V1 copy of `data[Validity]`.
    pub validity: Option<Vec<u8>>,
    /// 5: legacy V1 copy of `data[Sequence]`.
    pub sequence: Option<u64>,
    /// 6: legacy V1 copy of `data[TTL]`.
    pub ttl: Option<u64>,
    /// 7: the public key, when the name cannot inline it.
    pub pub_key: Option<Vec<u8>>,
    /// 8: signature over `"ipns-signature:" + data`.
    pub signature_v2: Option<Vec<u8>>,
    /// 9: the DAG-CBOR document.
    pub data: Option<Vec<u8>>,
}

impl IpnsEntry {
    /// Encodes the present fields in field-number order, as Go's `proto.Marshal` does.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, self.value.as_deref());
        put_bytes(&mut out, 2, self.signature_v1.as_deref());
        // A negative enum value is sign-extended to 64 bits on the wire, as protobuf specifies.
        put_varint_field(&mut out, 3, self.validity_type.map(|v| i64::from(v) as u64));
        put_bytes(&mut out, 4, self.validity.as_deref());
        put_varint_field(&mut out, 5, self.sequence);
        put_varint_field(&mut out, 6, self.ttl);
        put_bytes(&mut out, 7, self.pub_key.as_deref());
        put_bytes(&mut out, 8, self.signature_v2.as_deref());
        put_bytes(&mut out, 9, self.data.as_deref());
        out
    }

    /// Decodes an `IpnsEntry`.
    pub fn decode(mut buf: &[u8]) -> Result<Self, ProtobufError> {
        let mut entry = Self::default();
        while !buf.is_empty() {
            let key = get_varint(&mut buf)?;
            let (field, wire) = (key >> 3, key & 7);
            if field == 0 {
                return Err(ProtobufError::InvalidKey(key));
            }
            match (field, wire) {
                (1, WIRE_LEN) => entry.value = Some(get_len(&mut buf)?.to_vec()),
                (2, WIRE_LEN) => entry.signature_v1 = Some(get_len(&mut buf)?.to_vec()),
                // proto3 enums are int32: Go keeps the low 32 bits of the varint.
                (3, WIRE_VARINT) => entry.validity_type = Some(get_varint(&mut buf)? as i32),
                (4, WIRE_LEN) => entry.validity = Some(get_len(&mut buf)?.to_vec()),
                (5, WIRE_VARINT) => entry.sequence = Some(get_varint(&mut buf)?),
                (6, WIRE_VARINT) => entry.ttl = Some(get_varint(&mut buf)?),
                (7, WIRE_LEN) => entry.pub_key = Some(get_len(&mut buf)?.to_vec()),
                (8, WIRE_LEN) => entry.signature_v2 = Some(get_len(&mut buf)?.to_vec()),
                (9, WIRE_LEN) => entry.data = Some(get_len(&mut buf)?.to_vec()),
                // Unknown fields, and known ones with another wire type, which protobuf-go also
                // keeps as unknown rather than rejecting.
                _ => skip_field(&mut buf, key, 0)?,
            }
        }
        Ok(entry)
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: Option<&[u8]>) {
    if let Some(bytes) = bytes {
        protobuf::put_bytes(out, field, bytes);
    }
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: Option<u64>) {
    if let Some(v) = v {
        protobuf::put_uint(out, field, v);
    }
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, ProtobufError> {
    let (v, used) = protobuf::read_varint(buf).map_err(|e| match e {
        VarintError::Truncated => ProtobufError::Truncated,
        VarintError::Overflow => ProtobufError::VarintOverflow,
        VarintError::NotMinimal => ProtobufError::VarintNotMinimal,
    })?;
    *buf = &buf[used..];
    Ok(v)
}

fn get_len<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], ProtobufError> {
    let len = get_varint(buf)?;
    let len = usize::try_from(len).map_err(|_| ProtobufError::Truncated)?;
    if len > buf.len() {
        return Err(ProtobufError::Truncated);
    }
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

fn get_fixed(buf: &mut &[u8], n: usize) -> Result<(), ProtobufError> {
    if n > buf.len() {
        return Err(ProtobufError::Truncated);
    }
    *buf = &buf[n..];
    Ok(())
}

/// Skips the value of the field whose key was just read; groups are skipped to their end marker.
fn skip_field(buf: &mut &[u8], key: u64, depth: usize) -> Result<(), ProtobufError> {
    match key & 7 {
        WIRE_VARINT => get_varint(buf).map(drop),
        WIRE_FIXED64 => get_fixed(buf, 8),
        WIRE_LEN => get_len(buf).map(drop),
        WIRE_FIXED32 => get_fixed(buf, 4),
        WIRE_START_GROUP => {
            if depth >= MAX_GROUP_DEPTH {
                return Err(ProtobufError::UnbalancedGroup);
            }
            loop {
                let inner = get_varint(buf)?;
                if inner >> 3 == 0 {
                    return Err(ProtobufError::InvalidKey(inner));
                }
                if inner & 7 == WIRE_END_GROUP {
                    return if inner >> 3 == key >> 3 {
                        Ok(())
                    } else {
                        Err(ProtobufError::UnbalancedGroup)
                    };
                }
                skip_field(buf, inner, depth + 1)?;
            }
        }
        WIRE_END_GROUP => Err(ProtobufError::UnbalancedGroup),
        _ => Err(ProtobufError::InvalidKey(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> IpnsEntry {
        IpnsEntry {
            value: Some(b"/ipfs/bafkqaaa".to_vec()),
            signature_v1: Some(vec![1; 64]),
            validity_type: Some(0),
            validity: Some(b"2030-01-01T00:00:00Z".to_vec()),
            sequence: Some(0),
            ttl: Some(300_000_000_000),
            pub_key: None,
            signature_v2: Some(vec![2; 64]),
            data: Some(vec![0xa0]),
        }
    }

    #[test]
    fn round_trips_and_keeps_zero_valued_present_fields() {
        let entry = full();
        let bytes = entry.encode();
        // validityType = 0 and sequence = 0 are present (proto3 `optional`), so they are written.
        assert!(bytes.windows(2).any(|w| w == [0x18, 0x00]));
        assert!(bytes.windows(2).any(|w| w == [0x28, 0x00]));
        assert_eq!(IpnsEntry::decode(&bytes).unwrap(), entry);
        assert_eq!(IpnsEntry::decode(&[]).unwrap(), IpnsEntry::default());
    }

    #[test]
    fn skips_unknown_fields_and_last_wins() {
        let mut bytes = full().encode();
        // field 15 varint, field 16 fixed64, field 17 fixed32, field 18 group { field 1 varint }
        bytes.extend_from_slice(&[0x78, 0x05]);
        bytes.extend_from_slice(&[0x81, 0x01, 1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend_from_slice(&[0x8d, 0x01, 1, 2, 3, 4]);
        bytes.extend_from_slice(&[0x93, 0x01, 0x08, 0x01, 0x94, 0x01]);
        // field 5 again: the later value wins; field 1 as a varint is treated as unknown.
        bytes.extend_from_slice(&[0x28, 0x07, 0x08, 0x01]);
        let entry = IpnsEntry::decode(&bytes).unwrap();
        assert_eq!(entry.sequence, Some(7));
        assert_eq!(entry.value, full().value);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &[0x0a, 0x05, 1, 2][..],
            &[0x28][..],
            &[
                0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ][..],
            &[0x00, 0x00][..],
            &[0x0e][..],
            &[0x94, 0x01][..],
            &[0x93, 0x01, 0x08, 0x01][..],
        ] {
            assert!(IpnsEntry::decode(bad).is_err(), "{bad:?}");
        }
    }
}
