//! CAR files (Content Addressable aRchives, version 1): the header naming the roots, then one
//! section per block (a varint length, the block's CID, its bytes). Read and written here for
//! the trustless gateway and for export/import.
//!
//! Follows <https://ipld.io/specs/transport/car/carv1/>. A CAR may come from anyone (a file
//! handed to `import`, a gateway's answer), so the reader bounds every length before it
//! allocates, refuses what the format does not allow with an error saying where and why, and
//! checks each block against its CID unless told not to.

use std::io::{ErrorKind, Read, Write};

use cid::Cid;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha512};

use crate::protobuf::{put_varint, read_varint, VarintError};

/// Largest header read (a header is a few CIDs; this leaves room for thousands).
pub const MAX_HEADER_BYTES: u64 = 1 << 20;
/// Largest section read: a block and its CID. Blocks on IPFS are at most 2 MiB by convention
/// (Bitswap's limit); 4 MiB leaves room without letting a hostile length allocate much.
pub const MAX_SECTION_BYTES: u64 = 4 << 20;

/// Multihash code of the identity "hash" (the digest is the data itself).
const IDENTITY: u64 = 0x00;
/// Multihash code of sha2-256.
const SHA2_256: u64 = 0x12;
/// Multihash code of sha2-512.
const SHA2_512: u64 = 0x13;

/// Why a CAR could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    /// Reading or writing the underlying file or stream failed.
    #[error("CAR I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The input ends inside the header or a section.
    #[error("CAR truncated at byte {offset}: {what}")]
    Truncated {
        /// Where the input ended.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A length prefix is not a valid varint.
    #[error("CAR byte {offset}: {what} length: {source}")]
    Varint {
        /// Where the varint starts.
        offset: u64,
        /// What it is the length of.
        what: &'static str,
        /// Why it is invalid.
        source: VarintError,
    },
    /// The header is not a CARv1 header.
    #[error("CAR header: {0}")]
    Header(String),
    /// The header declares a version this reader does not read.
    #[error("CAR version {0} is not supported (only CARv1)")]
    Version(u64),
    /// A length exceeds what this reader accepts.
    #[error("CAR byte {offset}: {what} of {length} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Where the length prefix starts.
        offset: u64,
        /// What it is the length of.
        what: &'static str,
        /// The declared length.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// A section is malformed (empty, or no valid CID at its start).
    #[error("CAR section at byte {offset}: {reason}")]
    Section {
        /// Where the section starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A block does not hash to its CID.
    #[error("CAR section at byte {offset}: block does not match its CID {cid}")]
    HashMismatch {
        /// Where the section starts.
        offset: u64,
        /// The CID it claims.
        cid: Cid,
    },
    /// A block's CID uses a hash function this node cannot check.
    #[error("block {cid}: hash function 0x{code:x} cannot be verified (only sha2-256, sha2-512 and identity)")]
    UnsupportedHash {
        /// The CID.
        cid: Cid,
        /// Its multihash code.
        code: u64,
    },
}

/// The header as DAG-CBOR: `{"roots": [CID...], "version": 1}` (canonical key order).
#[derive(Serialize, Deserialize)]
struct RawHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roots: Option<Vec<Cid>>,
    version: u64,
}

/// Checks that `data` is the block `cid` names: sha2-256, sha2-512 and identity multihashes.
pub fn verify_block(cid: &Cid, data: &[u8]) -> Result<(), CarError> {
    let hash = cid.hash();
    let matches = match hash.code() {
        SHA2_256 => Sha256::digest(data).as_slice() == hash.digest(),
        SHA2_512 => Sha512::digest(data).as_slice() == hash.digest(),
        IDENTITY => hash.digest() == data,
        code => return Err(CarError::UnsupportedHash { cid: *cid, code }),
    };
    if matches {
        Ok(())
    } else {
        Err(CarError::HashMismatch {
            offset: 0,
            cid: *cid,
        })
    }
}

/// The encoded header (with its length prefix) of a CARv1 with these roots.
pub fn encode_header(roots: &[Cid]) -> Vec<u8> {
    let header = RawHeader {
        roots: Some(roots.to_vec()),
        version: 1,
    };
    // A struct of a list of CIDs and an integer always encodes.
    let cbor = serde_ipld_dagcbor::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(cbor.len() + 2);
    put_varint(&mut out, cbor.len() as u64);
    out.extend_from_slice(&cbor);
    out
}

/// What comes before a block's bytes in its section: the section length and the CID.
/// Written separately so that a block is streamed without being copied.
pub fn section_prefix(cid: &Cid, data_len: usize) -> Vec<u8> {
    let cid_bytes = cid.to_bytes();
    let mut out = Vec::with_capacity(cid_bytes.len() + 4);
    put_varint(&mut out, (cid_bytes.len() + data_len) as u64);
    out.extend_from_slice(&cid_bytes);
    out
}

/// Writes a CARv1 to `W`: the header at creation, then blocks in the order given.
pub struct CarWriter<W: Write> {
    out: W,
}

impl<W: Write> CarWriter<W> {
    /// Starts a CAR with these roots (writes the header).
    pub fn new(mut out: W, roots: &[Cid]) -> Result<Self, CarError> {
        out.write_all(&encode_header(roots))?;
        Ok(CarWriter { out })
    }

    /// Appends one block; the caller vouches that `data` is the block `cid` names.
    pub fn write_block(&mut self, cid: &Cid, data: &[u8]) -> Result<(), CarError> {
        self.out.write_all(&section_prefix(cid, data.len()))?;
        self.out.write_all(data)?;
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, CarError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a CARv1 from `R`, one block at a time, never holding more than one section.
pub struct CarReader<R: Read> {
    input: R,
    offset: u64,
    roots: Vec<Cid>,
    verify: bool,
}

impl<R: Read> CarReader<R> {
    /// Reads the header; blocks are then checked against their CIDs as they are read.
    pub fn new(input: R) -> Result<Self, CarError> {
        let mut reader = CarReader {
            input,
            offset: 0,
            roots: Vec::new(),
            verify: true,
        };
        let start = reader.offset;
        let Some(length) = reader.read_length("header")? else {
            return Err(CarError::Truncated {
                offset: 0,
                what: "the header length",
            });
        };
        if length == 0 {
            return Err(CarError::Header("empty header".into()));
        }
        if length > MAX_HEADER_BYTES {
            return Err(CarError::TooLarge {
                offset: start,
                what: "header",
                length,
                limit: MAX_HEADER_BYTES,
            });
        }
        let bytes = reader.read_exact_vec(length, "the header")?;
        let header: RawHeader = serde_ipld_dagcbor::from_slice(&bytes)
            .map_err(|e| CarError::Header(format!("not a DAG-CBOR {{roots, version}} map: {e}")))?;
        if header.version != 1 {
            return Err(CarError::Version(header.version));
        }
        reader.roots = header
            .roots
            .ok_or_else(|| CarError::Header("no roots".into()))?;
        Ok(reader)
    }

    /// Does not check blocks against their CIDs (the caller does, or trusts the source).
    pub fn without_verification(mut self) -> Self {
        self.verify = false;
        self
    }

    /// The roots the header names.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next block, `None` at the end of the CAR.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>, CarError> {
        let start = self.offset;
        let Some(length) = self.read_length("section")? else {
            return Ok(None);
        };
        if length == 0 {
            return Err(CarError::Section {
                offset: start,
                reason: "empty section".into(),
            });
        }
        if length > MAX_SECTION_BYTES {
            return Err(CarError::TooLarge {
                offset: start,
                what: "section",
                length,
                limit: MAX_SECTION_BYTES,
            });
        }
        let section = self.read_exact_vec(length, "a section")?;
        let mut rest = section.as_slice();
        let cid = Cid::read_bytes(&mut rest).map_err(|e| CarError::Section {
            offset: start,
            reason: format!("no valid CID: {e}"),
        })?;
        let data = rest.to_vec();
        if self.verify {
            verify_block(&cid, &data).map_err(|e| match e {
                CarError::HashMismatch { cid, .. } => CarError::HashMismatch { offset: start, cid },
                other => other,
            })?;
        }
        Ok(Some((cid, data)))
    }

    /// A varint length; `None` if the input ends cleanly before it.
    fn read_length(&mut self, what: &'static str) -> Result<Option<u64>, CarError> {
        let start = self.offset;
        let mut buf = [0u8; 10];
        let mut used = 0;
        loop {
            let mut byte = [0u8; 1];
            match self.input.read(&mut byte) {
                Ok(0) if used == 0 => return Ok(None),
                Ok(0) => {
                    return Err(CarError::Truncated {
                        offset: self.offset,
                        what: "a length prefix",
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            self.offset += 1;
            buf[used] = byte[0];
            used += 1;
            if byte[0] & 0x80 == 0 || used == buf.len() {
                break;
            }
        }
        read_varint(&buf[..used])
            .map(|(value, _)| Some(value))
            .map_err(|source| CarError::Varint {
                offset: start,
                what,
                source,
            })
    }

    /// Exactly `length` bytes (bounded by the caller), or a truncation error.
    fn read_exact_vec(&mut self, length: u64, what: &'static str) -> Result<Vec<u8>, CarError> {
        let mut out = Vec::new();
        let got = (&mut self.input).take(length).read_to_end(&mut out)? as u64;
        self.offset += got;
        if got < length {
            return Err(CarError::Truncated {
                offset: self.offset,
                what,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{cid_of, DAG_PB, RAW};

    fn sample() -> (Vec<Cid>, Vec<(Cid, Vec<u8>)>) {
        let blocks: Vec<(Cid, Vec<u8>)> = [b"one".to_vec(), b"two".to_vec(), vec![7u8; 70_000]]
            .into_iter()
            .map(|data| (cid_of(RAW, &data), data))
            .collect();
        (vec![blocks[0].0], blocks)
    }

    fn write(roots: &[Cid], blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
        let mut writer = CarWriter::new(Vec::new(), roots).unwrap();
        for (cid, data) in blocks {
            writer.write_block(cid, data).unwrap();
        }
        writer.finish().unwrap()
    }

    #[allow(clippy::type_complexity)] // a test helper: roots and blocks, spelled out
    fn read_all(bytes: &[u8]) -> Result<(Vec<Cid>, Vec<(Cid, Vec<u8>)>), CarError> {
        let mut reader = CarReader::new(bytes)?;
        let roots = reader.roots().to_vec();
        let mut blocks = Vec::new();
        while let Some(block) = reader.next_block()? {
            blocks.push(block);
        }
        Ok((roots, blocks))
    }

    #[test]
    fn round_trip() {
        let (roots, blocks) = sample();
        let bytes = write(&roots, &blocks);
        let (read_roots, read_blocks) = read_all(&bytes).unwrap();
        assert_eq!(read_roots, roots);
        assert_eq!(read_blocks, blocks);
        // No roots, no blocks: still a valid CAR.
        assert_eq!(read_all(&write(&[], &[])).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn header_is_the_canonical_dag_cbor_of_the_spec() {
        // The CARv1 spec's example header shape: a map of "roots" then "version" (canonical
        // DAG-CBOR orders keys by length), roots as tag 42 byte strings with a 0x00 prefix.
        let cid = cid_of(DAG_PB, b"x");
        let header = encode_header(&[cid]);
        let cbor = &header[1..];
        assert_eq!(usize::from(header[0]), cbor.len());
        assert_eq!(cbor[0], 0xa2, "a map of two entries");
        assert_eq!(&cbor[1..7], b"\x65roots");
        assert_eq!(&cbor[7..10], &[0x81, 0xd8, 0x2a], "one root, tag 42");
        let cid_bytes = cid.to_bytes();
        assert_eq!(cbor[10], 0x58);
        assert_eq!(usize::from(cbor[11]), cid_bytes.len() + 1);
        assert_eq!(cbor[12], 0x00, "multibase identity prefix");
        assert_eq!(&cbor[13..13 + cid_bytes.len()], cid_bytes.as_slice());
        assert_eq!(&cbor[13 + cid_bytes.len()..], b"\x67version\x01");
    }

    #[test]
    fn cidv0_sections_are_read() {
        let data = b"dag-pb bytes".to_vec();
        let v1 = cid_of(DAG_PB, &data);
        let v0 = Cid::new_v0(*v1.hash()).unwrap();
        let bytes = write(&[v0], &[(v0, data.clone())]);
        let (roots, blocks) = read_all(&bytes).unwrap();
        assert_eq!(roots, vec![v0]);
        assert_eq!(blocks, vec![(v0, data)]);
    }

    #[test]
    fn malformed_input_is_refused_with_a_reason() {
        let (roots, blocks) = sample();
        let good = write(&roots, &blocks);
        let err = |bytes: &[u8]| read_all(bytes).unwrap_err().to_string();

        assert!(err(&[]).contains("truncated at byte 0"), "{}", err(&[]));
        assert!(err(&[0x00]).contains("empty header"));
        // A header length beyond the limit, before anything is allocated.
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX >> 1);
        assert!(err(&huge).contains("exceeds the limit"), "{}", err(&huge));
        // A varint that never ends.
        assert!(err(&[0xff; 12]).contains("varint"), "{}", err(&[0xff; 12]));
        // Not CBOR, and CBOR of the wrong shape.
        assert!(err(&[0x03, 0xff, 0xff, 0xff]).contains("CAR header"));
        let mut v2 = Vec::new();
        let cbor = serde_ipld_dagcbor::to_vec(&RawHeader {
            roots: None,
            version: 2,
        })
        .unwrap();
        put_varint(&mut v2, cbor.len() as u64);
        v2.extend_from_slice(&cbor);
        assert!(
            err(&v2).contains("version 2 is not supported"),
            "{}",
            err(&v2)
        );
        let mut rootless = Vec::new();
        let cbor = serde_ipld_dagcbor::to_vec(&RawHeader {
            roots: None,
            version: 1,
        })
        .unwrap();
        put_varint(&mut rootless, cbor.len() as u64);
        rootless.extend_from_slice(&cbor);
        assert!(err(&rootless).contains("no roots"));

        // Cut anywhere inside: truncated, never a panic, never a short block taken as whole.
        for cut in 1..good.len() {
            let result = read_all(&good[..cut]);
            if let Ok((_, read)) = &result {
                assert!(
                    blocks.starts_with(read),
                    "cut at {cut} yielded a wrong block"
                );
                assert!(read.len() < blocks.len());
            }
        }
        let header_len = encode_header(&roots).len();
        let cut = &good[..header_len + 10];
        assert!(err(cut).contains("truncated"), "{}", err(cut));

        // A block that does not match its CID.
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(err(&forged).contains("does not match its CID"));
        // ... which the caller may choose to check itself.
        let mut reader = CarReader::new(forged.as_slice())
            .unwrap()
            .without_verification();
        while reader.next_block().unwrap().is_some() {}

        // A section of length zero, and one without a CID.
        let mut empty = encode_header(&roots);
        empty.push(0);
        assert!(err(&empty).contains("empty section"));
        let mut no_cid = encode_header(&roots);
        no_cid.extend_from_slice(&[0x02, 0x05, 0x05]);
        assert!(err(&no_cid).contains("no valid CID"), "{}", err(&no_cid));
        // A section longer than the limit.
        let mut long = encode_header(&roots);
        put_varint(&mut long, MAX_SECTION_BYTES + 1);
        assert!(err(&long).contains("exceeds the limit"));
    }

    #[test]
    fn verification_knows_its_hash_functions() {
        let data = b"inline";
        let identity = Cid::new_v1(RAW, cid::multihash::Multihash::<64>::wrap(0, data).unwrap());
        assert!(verify_block(&identity, data).is_ok());
        assert!(verify_block(&identity, b"other").is_err());
        let blake3 = Cid::new_v1(
            RAW,
            cid::multihash::Multihash::<64>::wrap(0x1e, &[0; 32]).unwrap(),
        );
        assert!(matches!(
            verify_block(&blake3, data),
            Err(CarError::UnsupportedHash { code: 0x1e, .. })
        ));
    }
}
