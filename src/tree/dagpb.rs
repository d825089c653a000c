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

fn decode_link(bytes: &[u8]) -> Result<PbLink, TreeError> {
    let mut cid = None;
    let mut name = String::new();
    let mut tsize = 0;
    let mut reader = Reader::new(bytes);
    while let Some((field, value)) = reader.next_field()? {
        match (field, value) {
            (1, Value::Bytes(hash)) => {
                cid = Some(
                    Cid::try_from(hash).map_err(|e| TreeError::Decode(format!("link CID: {e}")))?,
                )
            }
            (2, Value::Bytes(n)) => {
                name = String::from_utf8(n.to_vec())
                    .map_err(|_| TreeError::Decode("link name is not UTF-8".into()))?
            }
            (3, Value::Varint(size)) => tsize = size,
            _ => {
                return Err(TreeError::Decode(format!(
                    "unexpected PBLink field {field}"
                )))
            }
        }
    }
    let cid = cid.ok_or_else(|| TreeError::Decode("link without hash".into()))?;
    Ok(PbLink { cid, name, tsize })
}
