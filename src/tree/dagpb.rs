//! The dag-pb codec (PBNode / PBLink), in the canonical form the dag-pb spec fixes:
//! links before data, link fields in order Hash, Name, Tsize.

use cid::Cid;

use super::protobuf::{put_bytes, put_key, put_uint, put_varint, Reader, Value, LEN};
use super::TreeError;
use crate::protobuf::varint_len;

/// Multicodec of dag-pb.
pub const DAG_PB: u64 = 0x70;

/// One named, sized link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The child.
    pub cid: Cid,
    /// The link name (empty for file chunks, the entry name in directories).
    pub name: String,
    /// Cumulative size of the child's DAG in bytes.
    pub tsize: u64,
}

/// A decoded dag-pb node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PbNode {
    /// The links, in stored order.
    pub links: Vec<PbLink>,
    /// The opaque data (UnixFS `Data` message).
    pub data: Option<Vec<u8>>,
}

impl PbNode {
    /// Encodes the node canonically.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.links.len() * 48);
        let mut link_buf = Vec::with_capacity(64);
        for link in &self.links {
            put_link(
                &mut out,
                &mut link_buf,
                &link.cid,
                link.name.as_bytes(),
                link.tsize,
            );
        }
        if let Some(data) = &self.data {
            put_data(&mut out, data);
        }
        out
    }

    /// Decodes a dag-pb block.
    pub fn decode(bytes: &[u8]) -> Result<Self, TreeError> {
        let mut node = PbNode::default();
        let mut reader = Reader::new(bytes);
        while let Some((field, value)) = reader.next_field()? {
            match (field, value) {
                (1, Value::Bytes(data)) => node.data = Some(data.to_vec()),
                (2, Value::Bytes(link)) => node.links.push(decode_link(link)?),
                _ => {
                    return Err(TreeError::Decode(format!(
                        "unexpected PBNode field {field}"
                    )))
                }
            }
        }
        Ok(node)
    }
}

/// The link named `name` in the encoded node `bytes`, and the node's data, decoding no other
/// link's CID or name: a lookup in a directory of thousands of entries costs a scan of its
/// bytes, not a decode of each entry.
pub fn find_link<'a>(
    bytes: &'a [u8],
    name: &str,
) -> Result<(Option<PbLink>, Option<&'a [u8]>), TreeError> {
    let mut found = None;
    let mut data = None;
    let mut reader = Reader::new(bytes);
    while let Some((field, value)) = reader.next_field()? {
        match (field, value) {
            (1, Value::Bytes(d)) => data = Some(d),
            (2, Value::Bytes(link)) => {
                if found.is_none() {
                    let raw = RawLink::parse(link)?;
                    if raw.name == name.as_bytes() {
                        found = Some(raw.decode()?);
                    }
                }
            }
            _ => {
                return Err(TreeError::Decode(format!(
                    "unexpected PBNode field {field}"
                )))
            }
        }
    }
    Ok((found, data))
}

/// Appends one link field, canonically (`scratch` is reused between calls).
pub(crate) fn put_link(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    cid: &Cid,
    name: &[u8],
    tsize: u64,
) {
    scratch.clear();
    put_bytes(scratch, 1, &cid.to_bytes());
    put_bytes(scratch, 2, name);
    put_uint(scratch, 3, tsize);
    put_key(out, 2, LEN);
    put_varint(out, scratch.len() as u64);
    out.extend_from_slice(scratch);
}

/// Appends the node's data field (it comes after the links).
pub(crate) fn put_data(out: &mut Vec<u8>, data: &[u8]) {
    put_bytes(out, 1, data);
}

/// A node's links as they are encoded, found without decoding any CID or name: what an edit
/// of a large directory needs to copy the links it leaves alone byte for byte.
pub(crate) struct ScannedNode<'a> {
    /// The links, in stored order.
    pub links: Vec<ScannedLink<'a>>,
    /// The node's data field.
    pub data: Option<&'a [u8]>,
}

/// One link of a [`ScannedNode`].
pub(crate) struct ScannedLink<'a> {
    /// The whole link field: key, length and the link message.
    pub encoded: &'a [u8],
    /// The name's bytes.
    pub name: &'a [u8],
    /// The link's `Tsize`.
    pub tsize: u64,
    hash: &'a [u8],
}

impl ScannedLink<'_> {
    /// The link decoded.
    pub fn decode(&self) -> Result<PbLink, TreeError> {
        RawLink {
            hash: Some(self.hash),
            name: self.name,
            tsize: self.tsize,
            ordered: true,
        }
        .decode()
    }
}

/// Scans `bytes` for its links. `None` unless the node is encoded canonically (links before
/// data, each link with its three fields in order, in the exact length [`PbNode::encode`]
/// writes): only then is a copy of a link's bytes what encoding it again would give.
pub(crate) fn scan_canonical(bytes: &[u8]) -> Result<Option<ScannedNode<'_>>, TreeError> {
    let mut links = Vec::with_capacity(bytes.len() / 48);
    let mut data = None;
    let mut reader = Reader::new(bytes);
    loop {
        let before = reader.rest();
        let Some((field, value)) = reader.next_field()? else {
            break;
        };
        let encoded = &before[..before.len() - reader.rest().len()];
        match (field, value) {
            (2, Value::Bytes(_)) if data.is_some() => return Ok(None),
            (2, Value::Bytes(link)) => {
                let raw = RawLink::parse(link)?;
                let (Some(hash), true) = (raw.hash, raw.ordered) else {
                    return Ok(None);
                };
                let body =
                    field_len(hash.len()) + field_len(raw.name.len()) + 1 + varint_len(raw.tsize);
                if encoded.len() != 1 + varint_len(body as u64) + body {
                    return Ok(None);
                }
                links.push(ScannedLink {
                    encoded,
                    name: raw.name,
                    tsize: raw.tsize,
                    hash,
                });
            }
            (1, Value::Bytes(d)) if data.is_none() => data = Some(d),
            (1, Value::Bytes(_)) => return Ok(None),
            _ => {
                return Err(TreeError::Decode(format!(
                    "unexpected PBNode field {field}"
                )))
            }
        }
    }
    Ok(Some(ScannedNode { links, data }))
}

/// Bytes a length-delimited field of `len` bytes takes with its one-byte key.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A link's fields as they are encoded.
struct RawLink<'a> {
    hash: Option<&'a [u8]>,
    name: &'a [u8],
    tsize: u64,
    /// Whether each field came once, in field order.
    ordered: bool,
}

impl<'a> RawLink<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, TreeError> {
        let mut link = RawLink {
            hash: None,
            name: &[],
            tsize: 0,
            ordered: true,
        };
        let mut last = 0;
        let mut reader = Reader::new(bytes);
        while let Some((field, value)) = reader.next_field()? {
            link.ordered &= field > last;
            last = field;
            match (field, value) {
                (1, Value::Bytes(hash)) => link.hash = Some(hash),
                (2, Value::Bytes(name)) => link.name = name,
                (3, Value::Varint(size)) => link.tsize = size,
                _ => {
                    return Err(TreeError::Decode(format!(
                        "unexpected PBLink field {field}"
                    )))
                }
            }
        }
        Ok(link)
    }

    fn decode(self) -> Result<PbLink, TreeError> {
        let hash = self
            .hash
            .ok_or_else(|| TreeError::Decode("link without hash".into()))?;
        let cid = Cid::try_from(hash).map_err(|e| TreeError::Decode(format!("link CID: {e}")))?;
        let name = String::from_utf8(self.name.to_vec())
            .map_err(|_| TreeError::Decode("link name is not UTF-8".into()))?;
        Ok(PbLink {
            cid,
            name,
            tsize: self.tsize,
        })
    }
}

fn decode_link(bytes: &[u8]) -> Result<PbLink, TreeError> {
    RawLink::parse(bytes)?.decode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{cid_of, RAW};

    #[test]
    fn find_link_finds_each_link_by_name_and_returns_the_data() {
        let links: Vec<PbLink> = ["a", "b", "bb", "c"]
            .iter()
            .enumerate()
            .map(|(i, name)| PbLink {
                cid: cid_of(RAW, name.as_bytes()),
                name: (*name).to_owned(),
                tsize: 1000 * i as u64,
            })
            .collect();
        let node = PbNode {
            links: links.clone(),
            data: Some(vec![8, 1]),
        };
        let bytes = node.encode();
        for link in &links {
            let (found, data) = find_link(&bytes, &link.name).expect("scan");
            assert_eq!(found.as_ref(), Some(link));
            assert_eq!(data, Some(&[8u8, 1][..]));
        }
        for absent in ["", "B", "ab", "cc"] {
            assert_eq!(find_link(&bytes, absent).expect("scan").0, None, "{absent}");
        }
        // Malformed bytes are an error, as for a full decode.
        assert!(find_link(&bytes[..bytes.len() - 1], "zz").is_err());
        assert!(PbNode::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
