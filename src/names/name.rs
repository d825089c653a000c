//! IPNS names: the multihash of a public key (a libp2p peer id), written as a base36 CIDv1 with
//! the `libp2p-key` codec, and the keys the DHT and pubsub find records under.

use std::fmt;
use std::str::FromStr;

use cid::multibase::{self, Base};
use cid::Cid;
use libp2p::identity::{PeerId, PublicKey};

/// Multicodec `libp2p-key`: the codec of a CID that names a public key.
pub const LIBP2P_KEY_CODEC: u64 = 0x72;

/// The `/ipns/` namespace prefix of paths and routing keys.
pub const IPNS_PREFIX: &str = "/ipns/";

/// Prefix of IPNS-over-pubsub topics.
const PUBSUB_TOPIC_PREFIX: &str = "/record/";

/// Why a string or routing key is not an IPNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing to parse.
    #[error("empty IPNS name")]
    Empty,
    /// A legacy base58 peer id that does not decode.
    #[error("invalid base58 peer id {0:?}")]
    Base58(String),
    /// Not a multibase-encoded CID.
    #[error("invalid CID {input:?}: {reason}")]
    Cid {
        /// The text given.
        input: String,
        /// What the CID decoder said.
        reason: String,
    },
    /// A CID, but not of a public key (`libp2p-key`, 0x72).
    #[error("CID codec 0x{codec:x} is not libp2p-key (0x72): not an IPNS name")]
    NotLibp2pKey {
        /// The CID's codec.
        codec: u64,
    },
    /// A multihash a peer id cannot be (only sha2-256, or identity up to 42 bytes).
    #[error("multihash code 0x{code:x} (or length) is not valid for a peer id")]
    UnsupportedMultihash {
        /// The multihash code.
        code: u64,
    },
    /// Bytes that are not a multihash.
    #[error("invalid multihash: {0}")]
    Multihash(String),
    /// A routing key without the `/ipns/` prefix.
    #[error("routing key does not start with /ipns/")]
    NotIpnsRoutingKey,
}

/// An IPNS name: the peer id of the key whose records it names.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpnsName(PeerId);

impl IpnsName {
    /// The name of the key with this peer id.
    pub fn from_peer_id(p: PeerId) -> Self {
        Self(p)
    }

    /// The name of this public key.
    pub fn from_public_key(key: &PublicKey) -> Self {
        Self(key.to_peer_id())
    }

    /// Parses any form people write a name in: base36 CIDv1 (`k51…`), a CIDv1 `libp2p-key` in any
    /// multibase, or a legacy base58 peer id (`12D3…`, `Qm…`), each optionally after `/ipns/`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let s = s.strip_prefix(IPNS_PREFIX).unwrap_or(s);
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        // As go-libp2p's peer.Decode: "Qm…" (sha2-256) and "1…" (identity) are bare base58
        // multihashes; anything else must be a multibase CID (no multibase prefix is '1' or 'Q',
        // so the split is unambiguous).
        if s.starts_with("Qm") || s.starts_with('1') {
            let bytes = Base::Base58Btc
                .decode(s)
                .map_err(|_| NameError::Base58(s.to_owned()))?;
            return Self::from_multihash_bytes(&bytes);
        }
        // Decode the multibase ourselves rather than with `Cid::try_from(&str)`, which would
        // also accept text with "/ipfs/" anywhere in it.
        let cid_error = |reason: String| NameError::Cid {
            input: s.to_owned(),
            reason,
        };
        let (_, bytes) = multibase::decode(s).map_err(|e| cid_error(e.to_string()))?;
        let cid = Cid::try_from(bytes.as_slice()).map_err(|e| cid_error(e.to_string()))?;
        if cid.codec() != LIBP2P_KEY_CODEC {
            return Err(NameError::NotLibp2pKey { codec: cid.codec() });
        }
        let hash = *cid.hash();
        PeerId::from_multihash(hash)
            .map(Self)
            .map_err(|mh| NameError::UnsupportedMultihash { code: mh.code() })
    }

    /// The name whose routing key (`/ipns/` + peer id multihash bytes) this is.
    pub fn from_routing_key(key: &[u8]) -> Result<Self, NameError> {
        let bytes = key
            .strip_prefix(IPNS_PREFIX.as_bytes())
            .ok_or(NameError::NotIpnsRoutingKey)?;
        Self::from_multihash_bytes(bytes)
    }

    fn from_multihash_bytes(bytes: &[u8]) -> Result<Self, NameError> {
        let hash = cid::multihash::Multihash::<64>::from_bytes(bytes)
            .map_err(|e| NameError::Multihash(e.to_string()))?;
        PeerId::from_multihash(hash)
            .map(Self)
            .map_err(|mh| NameError::UnsupportedMultihash { code: mh.code() })
    }

    /// The peer id (multihash of the public key) this name is.
    pub fn peer_id(&self) -> PeerId {
        self.0
    }

    /// The DHT key of this name's records: `/ipns/` followed by the peer id multihash bytes.
    pub fn routing_key(&self) -> Vec<u8> {
        let mut key = IPNS_PREFIX.as_bytes().to_vec();
        key.extend_from_slice(&self.0.to_bytes());
        key
    }

    /// The IPNS-over-pubsub topic: `/record/` + unpadded base64url of the routing key.
    pub fn pubsub_topic(&self) -> String {
        format!(
            "{PUBSUB_TOPIC_PREFIX}{}",
            Base::Base64Url.encode(self.routing_key())
        )
    }

    /// The name as a CIDv1 with the `libp2p-key` codec.
    pub fn to_cid(&self) -> Cid {
        Cid::new_v1(LIBP2P_KEY_CODEC, *self.0.as_ref())
    }

    /// The path `/ipns/<name>`.
    pub fn to_path(&self) -> String {
        format!("{IPNS_PREFIX}{self}")
    }

    /// The public key, when the name inlines it (identity multihash: ed25519, secp256k1); `None`
    /// for names that only hash it (RSA), whose records must carry the key.
    pub fn inlined_public_key(&self) -> Option<PublicKey> {
        let hash = self.0.as_ref();
        // Multihash code 0x00 is `identity`: the digest is the protobuf-encoded key itself.
        if hash.code() != 0x00 {
            return None;
        }
        PublicKey::try_decode_protobuf(hash.digest()).ok()
    }
}

impl fmt::Display for IpnsName {
    /// Base36 CIDv1 `libp2p-key` ("k51…" for ed25519), the form kubo prints and resolves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Base36 of any byte string always succeeds; an error here would be a bug in `cid`.
        match self.to_cid().to_string_of_base(Base::Base36Lower) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl fmt::Debug for IpnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpnsName({self})")
    }
}

impl FromStr for IpnsName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<PeerId> for IpnsName {
    fn from(p: PeerId) -> Self {
        Self(p)
    }
}

impl serde::Serialize for IpnsName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IpnsName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}
