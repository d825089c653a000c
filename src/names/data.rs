//! The DAG-CBOR document in `IpnsEntry.data`: the signed fields of a record.
//!
//! Written as boxo writes it: a map of `Value` and `Validity` (byte strings), `ValidityType`,
//! `Sequence` and `TTL` (integers), keys in RFC 7049 canonical order (length, then bytes):
//! `TTL`, `Value`, `Sequence`, `Validity`, `ValidityType`. boxo stores integers as Go `int64`,
//! so a sequence above `i64::MAX` goes on the wire as a negative integer; we do the same and
//! read it back the same way, so records stay byte-identical and round-trip with Go nodes.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

const VALUE: &str = "Value";
const VALIDITY: &str = "Validity";
const VALIDITY_TYPE: &str = "ValidityType";
const SEQUENCE: &str = "Sequence";
const TTL: &str = "TTL";

/// The signed fields, as they are in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataFields {
    /// `Value`: the content path, as bytes.
    pub value: Vec<u8>,
    /// `Validity`: the RFC 3339 expiry, as bytes.
    pub validity: Vec<u8>,
    /// `ValidityType`: 0 is EOL, the only one defined.
    pub validity_type: i128,
    /// `Sequence`, as the integer on the wire.
    pub sequence: i128,
    /// `TTL` in nanoseconds, as the integer on the wire.
    pub ttl: i128,
}

#[derive(Serialize)]
struct DataOut<'a> {
    #[serde(rename = "Value", with = "serde_bytes")]
    value: &'a [u8],
    #[serde(rename = "Validity", with = "serde_bytes")]
    validity: &'a [u8],
    #[serde(rename = "ValidityType")]
    validity_type: i64,
    #[serde(rename = "Sequence")]
    sequence: i64,
    #[serde(rename = "TTL")]
    ttl: i64,
}

/// Encodes the document boxo signs for these fields (EOL validity type).
pub(crate) fn encode(
    value: &[u8],
    validity: &[u8],
    sequence: u64,
    ttl_nanos: i64,
) -> Result<Vec<u8>, String> {
    // serde_ipld_dagcbor sorts map entries canonically, whatever the field order here.
    serde_ipld_dagcbor::to_vec(&DataOut {
        value,
        validity,
        validity_type: 0,
        // Go's int64(seq): values above i64::MAX wrap to negative, bit-for-bit as boxo writes.
        sequence: sequence as i64,
        ttl: ttl_nanos,
    })
    .map_err(|e| e.to_string())
}

/// Decodes the document; unknown keys (extensible data) are ignored, as the spec requires.
pub(crate) fn decode(bytes: &[u8]) -> Result<DataFields, String> {
    serde_ipld_dagcbor::from_slice::<DataFields>(bytes).map_err(|e| e.to_string())
}

/// A CBOR byte string and nothing else (a text string is not accepted in its place, as Go's
/// `AsBytes` does not accept one).
struct StrictBytes(Vec<u8>);

impl<'de> Deserialize<'de> for StrictBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrictBytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<StrictBytes, E> {
                Ok(StrictBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<StrictBytes, E> {
                Ok(StrictBytes(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A CBOR integer of either sign.
struct Int(i128);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(Int(i128::from(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(i128::from(v)))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Int, E> {
                i128::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom("integer out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for DataFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DataFields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IPNS data map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DataFields, A::Error> {
                let mut value = None;
                let mut validity = None;
                let mut validity_type = None;
                let mut sequence = None;
                let mut ttl = None;
                while let Some(key) = map.next_key::<String>()? {
                    // A repeated key makes the document ambiguous: refuse it.
                    let fresh = match key.as_str() {
                        VALUE => value.replace(map.next_value::<StrictBytes>()?.0).is_none(),
                        VALIDITY => validity
                            .replace(map.next_value::<StrictBytes>()?.0)
                            .is_none(),
                        VALIDITY_TYPE => {
                            validity_type.replace(map.next_value::<Int>()?.0).is_none()
                        }
                        SEQUENCE => sequence.replace(map.next_value::<Int>()?.0).is_none(),
                        TTL => ttl.replace(map.next_value::<Int>()?.0).is_none(),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            true
                        }
                    };
                    if !fresh {
                        return Err(de::Error::custom(format!("duplicate key {key}")));
                    }
                }
                Ok(DataFields {
                    value: value.ok_or_else(|| de::Error::missing_field(VALUE))?,
                    validity: validity.ok_or_else(|| de::Error::missing_field(VALIDITY))?,
                    validity_type: validity_type
                        .ok_or_else(|| de::Error::missing_field(VALIDITY_TYPE))?,
                    sequence: sequence.ok_or_else(|| de::Error::missing_field(SEQUENCE))?,
                    ttl: ttl.ok_or_else(|| de::Error::missing_field(TTL))?,
                })
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_key_order() {
        let bytes = encode(b"/ipfs/bafkqaaa", b"2030-01-01T00:00:00Z", 1, 5).unwrap();
        let keys: Vec<usize> = ["TTL", "Value", "Sequence", "Validity", "ValidityType"]
            .iter()
            .map(|k| {
                bytes
                    .windows(k.len())
                    .position(|w| w == k.as_bytes())
                    .unwrap()
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(bytes[0], 0xa5);
        let fields = decode(&bytes).unwrap();
        assert_eq!(fields.sequence, 1);
        assert_eq!(fields.ttl, 5);
    }

    #[test]
    fn huge_sequence_wraps_like_go() {
        let bytes = encode(b"/ipfs/bafkqaaa", b"x", u64::MAX, 0).unwrap();
        assert_eq!(decode(&bytes).unwrap().sequence, -1);
    }

    #[test]
    fn ignores_extra_keys_and_rejects_wrong_types() {
        #[derive(Serialize)]
        struct Extra<'a> {
            #[serde(rename = "Value", with = "serde_bytes")]
            value: &'a [u8],
            #[serde(rename = "Validity", with = "serde_bytes")]
            validity: &'a [u8],
            #[serde(rename = "ValidityType")]
            validity_type: i64,
            #[serde(rename = "Sequence")]
            sequence: i64,
            #[serde(rename = "TTL")]
            ttl: i64,
            #[serde(rename = "_custom")]
            custom: Vec<String>,
        }
        let bytes = serde_ipld_dagcbor::to_vec(&Extra {
            value: b"/ipfs/bafkqaaa",
            validity: b"x",
            validity_type: 0,
            sequence: 3,
            ttl: 0,
            custom: vec!["a".into()],
        })
        .unwrap();
        assert_eq!(decode(&bytes).unwrap().sequence, 3);

        #[derive(Serialize)]
        struct TextValue<'a> {
            #[serde(rename = "Value")]
            value: &'a str,
            #[serde(rename = "Validity", with = "serde_bytes")]
            validity: &'a [u8],
            #[serde(rename = "ValidityType")]
            validity_type: i64,
            #[serde(rename = "Sequence")]
            sequence: i64,
            #[serde(rename = "TTL")]
            ttl: i64,
        }
        let bytes = serde_ipld_dagcbor::to_vec(&TextValue {
            value: "/ipfs/bafkqaaa",
            validity: b"x",
            validity_type: 0,
            sequence: 3,
            ttl: 0,
        })
        .unwrap();
        assert!(decode(&bytes).is_err());
        assert!(decode(&[0xa0]).is_err());
        assert!(decode(b"not cbor").is_err());
    }
}
