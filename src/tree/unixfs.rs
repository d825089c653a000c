//! The UnixFS `Data` message carried in dag-pb nodes.

use super::protobuf::{put_bytes, put_uint, Reader, Value};
use super::TreeError;

/// The UnixFS node types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Raw data (legacy leaves).
    Raw = 0,
    /// A basic directory.
    Directory = 1,
    /// A file.
    File = 2,
    /// Metadata (unused).
    Metadata = 3,
    /// A symbolic link.
    Symlink = 4,
    /// One node of a HAMT-sharded directory.
    HamtShard = 5,
}

impl DataType {
    fn from_u64(value: u64) -> Result<Self, TreeError> {
        Ok(match value {
            0 => DataType::Raw,
            1 => DataType::Directory,
            2 => DataType::File,
            3 => DataType::Metadata,
            4 => DataType::Symlink,
            5 => DataType::HamtShard,
            other => return Err(TreeError::Decode(format!("unknown UnixFS type {other}"))),
        })
    }
}

/// A UnixFS `Data` message (mode and mtime are not written by this node and ignored on read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixfsData {
    /// The node type.
    pub kind: DataType,
    /// Inline data (file bytes for inline leaves, the bitfield for HAMT shards).
    pub data: Option<Vec<u8>>,
    /// Total file size, for files.
    pub filesize: Option<u64>,
    /// File bytes under each link, for files.
    pub blocksizes: Vec<u64>,
    /// Hash function of a HAMT (multicodec).
    pub hash_type: Option<u64>,
    /// Fanout of a HAMT.
    pub fanout: Option<u64>,
}

impl UnixfsData {
    /// A data message of the given type with nothing else set.
    pub fn new(kind: DataType) -> Self {
        UnixfsData {
            kind,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: None,
            fanout: None,
        }
    }

    /// Encodes in field order, `blocksizes` unpacked (as go-unixfs and js-unixfs write it).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.blocksizes.len() * 4);
        put_uint(&mut out, 1, self.kind as u64);
        if let Some(data) = &self.data {
            put_bytes(&mut out, 2, data);
        }
        if let Some(size) = self.filesize {
            put_uint(&mut out, 3, size);
        }
        for size in &self.blocksizes {
            put_uint(&mut out, 4, *size);
        }
        if let Some(hash) = self.hash_type {
            put_uint(&mut out, 5, hash);
        }
        if let Some(fanout) = self.fanout {
            put_uint(&mut out, 6, fanout);
        }
        out
    }

    /// Decodes a `Data` message.
    pub fn decode(bytes: &[u8]) -> Result<Self, TreeError> {
        let mut kind = None;
        let mut out = UnixfsData::new(DataType::Raw);
        let mut reader = Reader::new(bytes);
        while let Some((field, value)) = reader.next_field()? {
            match (field, value) {
                (1, Value::Varint(v)) => kind = Some(DataType::from_u64(v)?),
                (2, Value::Bytes(b)) => out.data = Some(b.to_vec()),
                (3, Value::Varint(v)) => out.filesize = Some(v),
                (4, Value::Varint(v)) => out.blocksizes.push(v),
                (4, Value::Bytes(packed)) => {
                    let mut inner = Reader::new(packed);
                    while let Some(v) = inner.packed_varint()? {
                        out.blocksizes.push(v);
                    }
                }
                (5, Value::Varint(v)) => out.hash_type = Some(v),
                (6, Value::Varint(v)) => out.fanout = Some(v),
                // mode (7), mtime (8) and unknown fields do not affect how we read content.
                _ => {}
            }
        }
        out.kind = kind.ok_or_else(|| TreeError::Decode("UnixFS data without type".into()))?;
        Ok(out)
    }
}
