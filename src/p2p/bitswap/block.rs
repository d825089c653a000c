//! Block identity: CID prefixes as Bitswap carries them, and checking data against a CID.

use cid::multihash::Multihash;
use cid::{Cid, Version};
use sha2::{Digest as _, Sha256, Sha512};

use super::BitswapError;
use crate::protobuf::{put_varint, read_varint};

/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;
/// Multihash code of sha2-512.
pub const SHA2_512: u64 = 0x13;
/// Multicodec of dag-pb, the codec every CIDv0 implies.
const DAG_PB: u64 = 0x70;

/// Everything of a CID but the digest: what a 1.1.0+ payload block names its hashing with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidPrefix {
    /// CID version.
    pub version: Version,
    /// Content multicodec.
    pub codec: u64,
    /// Multihash function code.
    pub mh_type: u64,
    /// Digest length in bytes.
    pub mh_len: u64,
}

impl CidPrefix {
    /// The prefix of `cid`.
    pub fn of(cid: &Cid) -> Self {
        CidPrefix {
            version: cid.version(),
            codec: cid.codec(),
            mh_type: cid.hash().code(),
            mh_len: u64::from(cid.hash().size()),
        }
    }

    /// The prefix of a CIDv0 (dag-pb, sha2-256): what a 1.0.0 block implies.
    pub fn v0() -> Self {
        CidPrefix {
            version: Version::V0,
            codec: DAG_PB,
            mh_type: SHA2_256,
            mh_len: 32,
        }
    }

    /// Wire form: four unsigned varints (version, codec, multihash type, multihash length).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8);
        put_varint(&mut out, u64::from(self.version));
        put_varint(&mut out, self.codec);
        put_varint(&mut out, self.mh_type);
        put_varint(&mut out, self.mh_len);
        out
    }

    /// Parses the wire form.
    pub fn from_bytes(mut buf: &[u8]) -> Result<Self, BitswapError> {
        let mut next = || -> Result<u64, BitswapError> {
            let (value, used) = read_varint(buf)
                .map_err(|e| BitswapError::Malformed(format!("CID prefix: {e}")))?;
            buf = &buf[used..];
            Ok(value)
        };
        let version = Version::try_from(next()?)
            .map_err(|_| BitswapError::Malformed("unknown CID version in prefix".into()))?;
        let codec = next()?;
        let mh_type = next()?;
        let mh_len = next()?;
        Ok(CidPrefix {
            version,
            codec,
            mh_type,
            mh_len,
        })
    }

    /// The CID of `data` under this prefix: hashes the data, so the result names exactly these
    /// bytes. Fails for hash functions we do not implement and for truncated digests.
    pub fn to_cid(&self, data: &[u8]) -> Result<Cid, BitswapError> {
        let digest = digest(self.mh_type, data)?;
        if self.mh_len != digest.len() as u64 {
            return Err(BitswapError::Malformed(format!(
                "multihash length {} does not match the hash function's {}",
                self.mh_len,
                digest.len()
            )));
        }
        let hash = Multihash::<64>::wrap(self.mh_type, &digest)
            .map_err(|e| BitswapError::Malformed(format!("multihash: {e}")))?;
        Cid::new(self.version, self.codec, hash)
            .map_err(|e| BitswapError::Malformed(format!("CID: {e}")))
    }
}

/// Whether blocks named with `cid` can be verified here (sha2-256 or sha2-512).
pub fn is_supported(cid: &Cid) -> bool {
    matches!(cid.hash().code(), SHA2_256 | SHA2_512)
}

/// Checks that `data` hashes to the digest in `cid`: the only thing that makes a block from an
/// untrusted peer safe to store.
pub fn verify_block(cid: &Cid, data: &[u8]) -> Result<(), BitswapError> {
    let hash = cid.hash();
    let actual = digest(hash.code(), data)?;
    if actual.as_slice() == hash.digest() {
        Ok(())
    } else {
        Err(BitswapError::HashMismatch(*cid))
    }
}

fn digest(code: u64, data: &[u8]) -> Result<Vec<u8>, BitswapError> {
    match code {
        SHA2_256 => Ok(Sha256::digest(data).to_vec()),
        SHA2_512 => Ok(Sha512::digest(data).to_vec()),
        other => Err(BitswapError::UnsupportedHash(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{cid_of, RAW};

    #[test]
    fn verification_rejects_wrong_data() {
        let cid = cid_of(RAW, b"the real block");
        assert!(verify_block(&cid, b"the real block").is_ok());
        assert!(matches!(
            verify_block(&cid, b"a forged block"),
            Err(BitswapError::HashMismatch(c)) if c == cid
        ));
        // A forged block under the right prefix yields a different CID: it can never satisfy
        // the want.
        let forged = CidPrefix::of(&cid).to_cid(b"a forged block").unwrap();
        assert_ne!(forged, cid);
    }

    #[test]
    fn unsupported_hashes_are_rejected() {
        let identity = Cid::new_v1(RAW, Multihash::<64>::wrap(0x00, b"inline").unwrap());
        assert!(!is_supported(&identity));
        assert!(matches!(
            verify_block(&identity, b"inline"),
            Err(BitswapError::UnsupportedHash(0))
        ));
        let blake3 = CidPrefix {
            version: Version::V1,
            codec: RAW,
            mh_type: 0x1e,
            mh_len: 32,
        };
        assert!(blake3.to_cid(b"x").is_err());
    }

    #[test]
    fn prefix_round_trip() {
        let cid = cid_of(RAW, b"x");
        let prefix = CidPrefix::of(&cid);
        assert_eq!(prefix.to_bytes(), vec![0x01, 0x55, 0x12, 0x20]);
        assert_eq!(CidPrefix::from_bytes(&prefix.to_bytes()).unwrap(), prefix);
        assert_eq!(prefix.to_cid(b"x").unwrap(), cid);
        let v0 = CidPrefix::v0().to_cid(b"dag-pb bytes").unwrap();
        assert_eq!(v0.version(), Version::V0);
        assert!(verify_block(&v0, b"dag-pb bytes").is_ok());
    }
}
