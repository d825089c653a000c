//! The dag-pb codec (PBNode / PBLink), in the canonical form the dag-pb spec fixes:
//! links before data, link fields in order Hash, Name, Tsize.

use cid::Cid;

use super::protobuf::{put_bytes, put_key, put_uint, put_varint, Reader, Value, LEN};
use super::TreeError;

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
            link_buf.clear();
            put_bytes(&mut link_buf, 1, &link.cid.to_bytes());
            put_bytes(&mut link_buf, 2, link.name.as_bytes());
            put_uint(&mut link_buf, 3, link.tsize);
            put_key(&mut out, 2, LEN);
            put_varint(&mut out, link_buf.len() as u64);
            out.extend_from_slice(&link_buf);
        }
        if let Some(data) = &self.data {
            put_bytes(&mut out, 1, data);
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

/// A link's fields as they are encoded.
struct RawLink<'a> {
    hash: Option<&'a [u8]>,
    name: &'a [u8],
    tsize: u64,
}

impl<'a> RawLink<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, TreeError> {
        let mut link = RawLink {
            hash: None,
            name: &[],
            tsize: 0,
        };
        let mut reader = Reader::new(bytes);
        while let Some((field, value)) = reader.next_field()? {
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
