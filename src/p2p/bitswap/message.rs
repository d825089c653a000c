//! The Bitswap wire message: boxo's `message.proto` (1.0.0 `blocks`, 1.1.0 `payload`, 1.2.0
//! wantType / sendDontHave / blockPresences / pendingBytes), decoded with `prost` derives into
//! plain types the engine works with.
//!
//! ```protobuf
//! message Message {
//!   message Wantlist {
//!     enum WantType { Block = 0; Have = 1; }
//!     message Entry { bytes block = 1; int32 priority = 2; bool cancel = 3;
//!                     WantType wantType = 4; bool sendDontHave = 5; }
//!     repeated Entry entries = 1; bool full = 2;
//!   }
//!   message Block { bytes prefix = 1; bytes data = 2; }
//!   enum BlockPresenceType { Have = 0; DontHave = 1; }
//!   message BlockPresence { bytes cid = 1; BlockPresenceType type = 2; }
//!   Wantlist wantlist = 1; repeated bytes blocks = 2; repeated Block payload = 3;
//!   repeated BlockPresence blockPresences = 4; int32 pendingBytes = 5;
//! }
//! ```
//!
//! A message read from a stream ([`Message::decode_shared`]) lends its buffer to a block that
//! makes up at least half of it, the usual one-block message, so that block is not copied; every
//! smaller block is copied into an allocation of its own, so a block kept (waiting to be hashed
//! or stored) never keeps more than its own size again of a message alive. Encoding leaves large
//! blocks out of the message buffer too: they go to the stream as they are.

use bytes::Bytes;
use cid::Cid;
use prost::Message as _;

use super::block::CidPrefix;
use super::BitswapError;

/// Largest message either side may send or accept (the spec's limit), length prefix excluded.
pub const MAX_MESSAGE_SIZE: usize = 4 << 20;

/// The protocol version a message is encoded for: older versions lack fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `/ipfs/bitswap` and `/ipfs/bitswap/1.0.0`: blocks as bare data (CIDv0 implied).
    V100,
    /// `/ipfs/bitswap/1.1.0`: blocks with a CID prefix.
    V110,
    /// `/ipfs/bitswap/1.2.0`: want-have, DONT_HAVE, block presences.
    V120,
}

/// What a wantlist entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WantType {
    /// Send the block.
    Block,
    /// Say whether you have the block.
    Have,
}

/// One wantlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The block wanted (or no longer wanted).
    pub cid: Cid,
    /// Higher is more urgent.
    pub priority: i32,
    /// Revokes an earlier want for `cid`.
    pub cancel: bool,
    /// Block or Have.
    pub want_type: WantType,
    /// Ask for an explicit DONT_HAVE when the receiver lacks the block.
    pub send_dont_have: bool,
}

impl Entry {
    /// A want-block entry asking for DONT_HAVE, as our client sends them.
    pub fn want_block(cid: Cid, priority: i32) -> Self {
        Entry {
            cid,
            priority,
            cancel: false,
            want_type: WantType::Block,
            send_dont_have: true,
        }
    }

    /// A cancel entry.
    pub fn cancel(cid: Cid) -> Self {
        Entry {
            cid,
            priority: 0,
            cancel: true,
            want_type: WantType::Block,
            send_dont_have: false,
        }
    }
}

/// A block carried in a 1.1.0+ `payload`: the CID prefix and the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadBlock {
    /// CID version, codec and multihash type and length.
    pub prefix: CidPrefix,
    /// The block's bytes.
    pub data: Bytes,
}

/// Whether the sender has a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// It has the block.
    Have,
    /// It does not.
    DontHave,
}

/// A HAVE / DONT_HAVE answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPresence {
    /// The block concerned.
    pub cid: Cid,
    /// Have or DontHave.
    pub presence: Presence,
}

/// One Bitswap message, any version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The wantlist entries replace the receiver's copy instead of patching it.
    pub full: bool,
    /// Wantlist entries (wants and cancels).
    pub entries: Vec<Entry>,
    /// 1.0.0 blocks: bare data of CIDv0 (dag-pb, sha2-256) blocks.
    pub raw_blocks: Vec<Bytes>,
    /// 1.1.0+ blocks with their CID prefix.
    pub payload: Vec<PayloadBlock>,
    /// 1.2.0 HAVE / DONT_HAVE answers.
    pub presences: Vec<BlockPresence>,
    /// 1.2.0: bytes the sender still has queued for the receiver.
    pub pending_bytes: i32,
}

impl Message {
    /// Whether the message carries nothing.
    pub fn is_empty(&self) -> bool {
        !self.full
            && self.entries.is_empty()
            && self.raw_blocks.is_empty()
            && self.payload.is_empty()
            && self.presences.is_empty()
    }

    /// Encodes the message for `version`, dropping what that version cannot carry:
    /// before 1.1.0 payload blocks travel as bare `blocks`, before 1.2.0 want-have entries,
    /// `sendDontHave`, presences and `pendingBytes` are left out.
    pub fn encode(&self, version: Version) -> Vec<u8> {
        self.to_wire(version).encode_to_vec()
    }

    /// The encoding with its unsigned-varint length prefix, as pieces to write in order: what
    /// they make together is exactly the prefix and [`Message::encode`]'s bytes, but a block of
    /// [`SHARED_BLOCK`] bytes or more is a piece of its own, the block's own bytes, rather than
    /// copied into a message buffer (the stream copies it once more anyway). Fails if the
    /// message exceeds [`MAX_MESSAGE_SIZE`].
    pub fn encode_framed(&self, version: Version) -> Result<Vec<Bytes>, BitswapError> {
        use prost::encoding::{encode_key, encode_varint, WireType};

        let wire = self.to_wire(version);
        let len = wire.encoded_len();
        if len > MAX_MESSAGE_SIZE {
            return Err(BitswapError::TooLarge(len as u64));
        }
        let mut out = Pieces {
            pieces: Vec::new(),
            buf: super::frame::prefix(len),
        };
        // The fields in tag order, each as prost writes it, so the bytes are those of
        // `encode` (a peer may expect fields in order, as every encoder writes them).
        let wire::Message {
            wantlist,
            blocks,
            payload,
            block_presences,
            pending_bytes,
        } = wire;
        if let Some(wantlist) = &wantlist {
            prost::encoding::message::encode(1, wantlist, &mut out.buf);
        }
        for data in &blocks {
            encode_key(2, WireType::LengthDelimited, &mut out.buf);
            encode_varint(data.len() as u64, &mut out.buf);
            out.data(data);
        }
        for block in &payload {
            encode_key(3, WireType::LengthDelimited, &mut out.buf);
            encode_varint(block.encoded_len() as u64, &mut out.buf);
            // proto3 leaves out empty `bytes` fields.
            if !block.prefix.is_empty() {
                prost::encoding::bytes::encode(1, &block.prefix, &mut out.buf);
            }
            if !block.data.is_empty() {
                encode_key(2, WireType::LengthDelimited, &mut out.buf);
                encode_varint(block.data.len() as u64, &mut out.buf);
                out.data(&block.data);
            }
        }
        let tail = wire::Message {
            block_presences,
            pending_bytes,
            ..wire::Message::default()
        };
        tail.encode(&mut out.buf)
            .map_err(|e| BitswapError::Malformed(format!("encoding: {e}")))?;
        Ok(out.finish())
    }

    /// The protobuf form for `version`; block data are shared, not copied.
    fn to_wire(&self, version: Version) -> wire::Message {
        let entries: Vec<wire::Entry> = self
            .entries
            .iter()
            .filter(|e| version >= Version::V120 || e.want_type == WantType::Block || e.cancel)
            .map(|e| {
                let v120 = version >= Version::V120;
                wire::Entry {
                    block: e.cid.to_bytes(),
                    priority: e.priority,
                    cancel: e.cancel,
                    want_type: if v120 && e.want_type == WantType::Have {
                        1
                    } else {
                        0
                    },
                    send_dont_have: v120 && e.send_dont_have,
                }
            })
            .collect();
        let wantlist = (!entries.is_empty() || self.full).then_some(wire::Wantlist {
            entries,
            full: self.full,
        });
        let mut blocks = self.raw_blocks.clone();
        let mut payload = Vec::new();
        for block in &self.payload {
            if version < Version::V110 {
                blocks.push(block.data.clone());
            } else {
                payload.push(wire::Block {
                    prefix: block.prefix.to_bytes(),
                    data: block.data.clone(),
                });
            }
        }
        let v120 = version >= Version::V120;
        wire::Message {
            wantlist,
            blocks,
            payload,
            block_presences: if v120 {
                self.presences
                    .iter()
                    .map(|p| wire::BlockPresence {
                        cid: p.cid.to_bytes(),
                        r#type: match p.presence {
                            Presence::Have => 0,
                            Presence::DontHave => 1,
                        },
                    })
                    .collect()
            } else {
                Vec::new()
            },
            pending_bytes: if v120 { self.pending_bytes } else { 0 },
        }
    }

    /// Decodes a message (any version). Unknown fields are skipped, as protobuf requires;
    /// block data are copied out of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Message, BitswapError> {
        let wire =
            wire::Message::decode(buf).map_err(|e| BitswapError::Malformed(e.to_string()))?;
        Self::from_wire(wire)
    }

    /// Decodes a message read into `buf`, which a block of at least half its size keeps (not
    /// copied); smaller blocks are copied out, so they do not keep `buf` alive.
    pub fn decode_shared(buf: Bytes) -> Result<Message, BitswapError> {
        let len = buf.len();
        let mut wire =
            wire::Message::decode(buf).map_err(|e| BitswapError::Malformed(e.to_string()))?;
        let own = |data: &mut Bytes| {
            if data.len().saturating_mul(2) < len {
                *data = Bytes::copy_from_slice(data);
            }
        };
        wire.blocks.iter_mut().for_each(own);
        wire.payload.iter_mut().for_each(|b| own(&mut b.data));
        Self::from_wire(wire)
    }

    fn from_wire(wire: wire::Message) -> Result<Message, BitswapError> {
        let (entries, full) = match wire.wantlist {
            Some(list) => (list.entries, list.full),
            None => (Vec::new(), false),
        };
        let entries = entries
            .into_iter()
            .map(|e| {
                Ok(Entry {
                    cid: decode_cid(&e.block)?,
                    priority: e.priority,
                    cancel: e.cancel,
                    want_type: match e.want_type {
                        0 => WantType::Block,
                        1 => WantType::Have,
                        other => {
                            return Err(BitswapError::Malformed(format!(
                                "unknown want type {other}"
                            )))
                        }
                    },
                    send_dont_have: e.send_dont_have,
                })
            })
            .collect::<Result<_, BitswapError>>()?;
        let payload = wire
            .payload
            .into_iter()
            .map(|b| {
                if b.prefix.is_empty() {
                    return Err(BitswapError::Malformed(
                        "payload block without a CID prefix".into(),
                    ));
                }
                Ok(PayloadBlock {
                    prefix: CidPrefix::from_bytes(&b.prefix)?,
                    data: b.data,
                })
            })
            .collect::<Result<_, BitswapError>>()?;
        let presences = wire
            .block_presences
            .into_iter()
            .map(|p| {
                Ok(BlockPresence {
                    cid: decode_cid(&p.cid)?,
                    presence: match p.r#type {
                        0 => Presence::Have,
                        1 => Presence::DontHave,
                        other => {
                            return Err(BitswapError::Malformed(format!(
                                "unknown block presence type {other}"
                            )))
                        }
                    },
                })
            })
            .collect::<Result<_, BitswapError>>()?;
        Ok(Message {
            full,
            entries,
            raw_blocks: wire.blocks,
            payload,
            presences,
            pending_bytes: wire.pending_bytes,
        })
    }
}

/// Blocks at least this large are written as they are, not copied into a message buffer:
/// below it, the write of a piece of its own costs more than the copy.
pub const SHARED_BLOCK: usize = 16 << 10;

/// A framed message being put together: encoded bytes collect in `buf` until a large block
/// goes in as a piece of its own.
struct Pieces {
    pieces: Vec<Bytes>,
    buf: Vec<u8>,
}

impl Pieces {
    fn data(&mut self, data: &Bytes) {
        if data.len() < SHARED_BLOCK {
            self.buf.extend_from_slice(data);
        } else {
            self.pieces.push(Bytes::from(std::mem::take(&mut self.buf)));
            self.pieces.push(data.clone());
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.buf.is_empty() {
            self.pieces.push(Bytes::from(self.buf));
        }
        self.pieces
    }
}

fn decode_cid(bytes: &[u8]) -> Result<Cid, BitswapError> {
    let mut rest = bytes;
    let cid = Cid::read_bytes(&mut rest)
        .map_err(|e| BitswapError::Malformed(format!("invalid CID: {e}")))?;
    if !rest.is_empty() {
        return Err(BitswapError::Malformed("trailing bytes after a CID".into()));
    }
    Ok(cid)
}

/// The protobuf messages as they travel. Enums are read as plain `int32` so an unknown value
/// is refused by [`Message::decode`] with a clear message rather than silently defaulted.
mod wire {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Message {
        #[prost(message, optional, tag = "1")]
        pub wantlist: Option<Wantlist>,
        #[prost(bytes = "bytes", repeated, tag = "2")]
        pub blocks: Vec<Bytes>,
        #[prost(message, repeated, tag = "3")]
        pub payload: Vec<Block>,
        #[prost(message, repeated, tag = "4")]
        pub block_presences: Vec<BlockPresence>,
        #[prost(int32, tag = "5")]
        pub pending_bytes: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Wantlist {
        #[prost(message, repeated, tag = "1")]
        pub entries: Vec<Entry>,
        #[prost(bool, tag = "2")]
        pub full: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Entry {
        #[prost(bytes = "vec", tag = "1")]
        pub block: Vec<u8>,
        #[prost(int32, tag = "2")]
        pub priority: i32,
        #[prost(bool, tag = "3")]
        pub cancel: bool,
        #[prost(int32, tag = "4")]
        pub want_type: i32,
        #[prost(bool, tag = "5")]
        pub send_dont_have: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Block {
        #[prost(bytes = "vec", tag = "1")]
        pub prefix: Vec<u8>,
        #[prost(bytes = "bytes", tag = "2")]
        pub data: Bytes,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct BlockPresence {
        #[prost(bytes = "vec", tag = "1")]
        pub cid: Vec<u8>,
        #[prost(int32, tag = "2")]
        pub r#type: i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{cid_of, RAW};

    fn sample_cid(n: u8) -> Cid {
        cid_of(RAW, &[n; 8])
    }

    /// `data` as a raw block in a 1.1.0+ payload.
    fn payload_block(data: &Bytes) -> PayloadBlock {
        PayloadBlock {
            prefix: CidPrefix::of(&cid_of(RAW, data)),
            data: data.clone(),
        }
    }

    #[test]
    fn round_trip_all_fields() {
        let data = Bytes::from_static(b"hello bitswap");
        let block_cid = cid_of(RAW, &data);
        let msg = Message {
            full: true,
            entries: vec![
                Entry::want_block(sample_cid(1), 7),
                Entry::cancel(sample_cid(2)),
                Entry {
                    cid: sample_cid(3),
                    priority: -5,
                    cancel: false,
                    want_type: WantType::Have,
                    send_dont_have: true,
                },
            ],
            raw_blocks: vec![],
            payload: vec![PayloadBlock {
                prefix: CidPrefix::of(&block_cid),
                data: data.clone(),
            }],
            presences: vec![
                BlockPresence {
                    cid: sample_cid(4),
                    presence: Presence::Have,
                },
                BlockPresence {
                    cid: sample_cid(5),
                    presence: Presence::DontHave,
                },
            ],
            pending_bytes: 12345,
        };
        let decoded = Message::decode(&msg.encode(Version::V120)).unwrap();
        assert_eq!(decoded, msg);
        assert_eq!(
            decoded.payload[0]
                .prefix
                .to_cid(&decoded.payload[0].data)
                .unwrap(),
            block_cid
        );
    }

    #[test]
    fn old_versions_drop_what_they_cannot_carry() {
        let data = Bytes::from_static(b"old");
        let msg = Message {
            entries: vec![
                Entry::want_block(sample_cid(1), 1),
                Entry {
                    want_type: WantType::Have,
                    ..Entry::want_block(sample_cid(2), 1)
                },
            ],
            payload: vec![payload_block(&data)],
            presences: vec![BlockPresence {
                cid: sample_cid(4),
                presence: Presence::DontHave,
            }],
            ..Message::default()
        };
        let v110 = Message::decode(&msg.encode(Version::V110)).unwrap();
        assert_eq!(v110.entries.len(), 1);
        assert!(!v110.entries[0].send_dont_have);
        assert_eq!(v110.payload.len(), 1);
        assert!(v110.presences.is_empty());
        let v100 = Message::decode(&msg.encode(Version::V100)).unwrap();
        assert_eq!(v100.raw_blocks, vec![data]);
        assert!(v100.payload.is_empty());
    }

    /// Bytes laid out the way boxo's gogo-protobuf marshaller writes them: the (non-nullable)
    /// wantlist always present, fields in ascending order, defaults omitted, a negative int32
    /// priority as a 10-byte varint.
    #[test]
    fn decodes_a_kubo_encoded_message() {
        let want = sample_cid(9);
        let have = sample_cid(10);
        let data = b"kubo block".to_vec();
        let block_cid = cid_of(RAW, &data);
        let want_bytes = want.to_bytes();
        let have_bytes = have.to_bytes();

        // Wantlist.Entry { block, priority: 2147483647, wantType: Have, sendDontHave: true }
        let mut entry1 = vec![0x0a, want_bytes.len() as u8];
        entry1.extend_from_slice(&want_bytes);
        entry1.extend_from_slice(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x07, 0x20, 0x01, 0x28, 0x01]);
        // Wantlist.Entry { block, priority: -1, cancel: true }
        let mut entry2 = vec![0x0a, have_bytes.len() as u8];
        entry2.extend_from_slice(&have_bytes);
        entry2.extend_from_slice(&[
            0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        entry2.extend_from_slice(&[0x18, 0x01]);
        let mut wantlist = vec![0x0a, entry1.len() as u8];
        wantlist.extend_from_slice(&entry1);
        wantlist.extend_from_slice(&[0x0a, entry2.len() as u8]);
        wantlist.extend_from_slice(&entry2);
        wantlist.extend_from_slice(&[0x10, 0x01]); // full: true

        // Block { prefix: 01 55 12 20 (CIDv1, raw, sha2-256, 32 bytes), data }
        let mut block = vec![0x0a, 0x04, 0x01, 0x55, 0x12, 0x20, 0x12, data.len() as u8];
        block.extend_from_slice(&data);
        // BlockPresence { cid, type: DontHave }
        let mut presence = vec![0x0a, have_bytes.len() as u8];
        presence.extend_from_slice(&have_bytes);
        presence.extend_from_slice(&[0x10, 0x01]);

        let mut msg = vec![0x0a, wantlist.len() as u8];
        msg.extend_from_slice(&wantlist);
        msg.extend_from_slice(&[0x1a, block.len() as u8]);
        msg.extend_from_slice(&block);
        msg.extend_from_slice(&[0x22, presence.len() as u8]);
        msg.extend_from_slice(&presence);
        msg.extend_from_slice(&[0x28, 0x80, 0x80, 0x40]); // pendingBytes: 1 MiB

        let decoded = Message::decode(&msg).unwrap();
        assert!(decoded.full);
        assert_eq!(
            decoded.entries,
            vec![
                Entry {
                    cid: want,
                    priority: i32::MAX,
                    cancel: false,
                    want_type: WantType::Have,
                    send_dont_have: true,
                },
                Entry {
                    cid: have,
                    priority: -1,
                    cancel: true,
                    want_type: WantType::Block,
                    send_dont_have: false,
                },
            ]
        );
        assert_eq!(decoded.payload.len(), 1);
        assert_eq!(
            decoded.payload[0]
                .prefix
                .to_cid(&decoded.payload[0].data)
                .unwrap(),
            block_cid
        );
        assert_eq!(
            decoded.presences,
            vec![BlockPresence {
                cid: have,
                presence: Presence::DontHave
            }]
        );
        assert_eq!(decoded.pending_bytes, 1 << 20);

        // An empty wantlist, as kubo sends along with blocks, decodes to no entries.
        let decoded = Message::decode(&[0x0a, 0x00]).unwrap();
        assert!(decoded.is_empty());
    }

    #[test]
    fn rejects_malformed_input() {
        // Length running past the end.
        assert!(Message::decode(&[0x0a, 0x05, 0x01]).is_err());
        // Truncated varint.
        assert!(Message::decode(&[0x28, 0x80]).is_err());
        // Entry with a garbage CID.
        assert!(Message::decode(&[0x0a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xff, 0xff]).is_err());
        // Unknown fields are skipped.
        let decoded = Message::decode(&[0x30, 0x01, 0x3a, 0x01, 0x00]).unwrap();
        assert!(decoded.is_empty());
    }

    /// Read from a stream, a block of at least half the message keeps the message's buffer
    /// (no copy); smaller ones are copied out, so they do not keep the rest alive.
    #[test]
    fn only_a_block_of_half_the_message_shares_its_buffer() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let small: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 1000])).collect();
        let msg = Message {
            payload: std::iter::once(&big)
                .chain(&small)
                .map(payload_block)
                .collect(),
            raw_blocks: vec![Bytes::from_static(b"a 1.0.0 block")],
            ..Message::default()
        };
        let wire = Bytes::from(msg.encode(Version::V120));
        let range = wire.as_ptr_range();
        let decoded = Message::decode_shared(wire.clone()).unwrap();
        assert_eq!(decoded, msg);
        let shares = |data: &Bytes| range.contains(&data.as_ptr());
        assert!(shares(&decoded.payload[0].data), "the big block was copied");
        for data in decoded.payload[1..]
            .iter()
            .map(|b| &b.data)
            .chain(&decoded.raw_blocks)
        {
            assert!(!shares(data), "a small block points into the message");
        }
        // Without the big block, none is half the message: all are copied.
        let msg = Message {
            payload: small.iter().map(payload_block).collect(),
            ..Message::default()
        };
        let wire = Bytes::from(msg.encode(Version::V120));
        let range = wire.as_ptr_range();
        let decoded = Message::decode_shared(wire.clone()).unwrap();
        assert_eq!(decoded, msg);
        assert!(decoded
            .payload
            .iter()
            .all(|b| !range.contains(&b.data.as_ptr())));
    }

    /// Each decoded block owns its bytes: holding one does not hold the message it came in.
    #[test]
    fn decoded_blocks_do_not_borrow_the_message() {
        let blocks: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 1000])).collect();
        let msg = Message {
            payload: blocks.iter().map(payload_block).collect(),
            raw_blocks: vec![Bytes::from_static(b"a 1.0.0 block")],
            ..Message::default()
        };
        let wire = msg.encode(Version::V120);
        let range = wire.as_ptr_range();
        let decoded = Message::decode(&wire).unwrap();
        assert_eq!(decoded, msg);
        for data in decoded
            .payload
            .iter()
            .map(|b| &b.data)
            .chain(&decoded.raw_blocks)
        {
            assert!(
                !range.contains(&data.as_ptr()),
                "a block points into the message"
            );
        }
    }

    #[test]
    fn oversized_messages_are_not_framed() {
        let msg = Message {
            raw_blocks: vec![Bytes::from(vec![0u8; MAX_MESSAGE_SIZE])],
            ..Message::default()
        };
        assert!(matches!(
            msg.encode_framed(Version::V120),
            Err(BitswapError::TooLarge(_))
        ));
    }

    #[test]
    fn framed_encoding_is_prefix_then_body() {
        let msg = Message {
            entries: vec![Entry::want_block(sample_cid(1), 3)],
            payload: vec![PayloadBlock {
                prefix: CidPrefix::of(&sample_cid(2)),
                data: Bytes::from(vec![9u8; 300]),
            }],
            ..Message::default()
        };
        let body = msg.encode(Version::V120);
        let framed = msg.encode_framed(Version::V120).unwrap().concat();
        let (len, rest) = unsigned_varint::decode::usize(&framed).unwrap();
        assert_eq!(len, body.len());
        assert_eq!(rest, body.as_slice());
    }

    /// Large blocks are pieces of their own, the blocks' own bytes, and the pieces make up
    /// exactly the prefix and the encoding, in every version, with small, empty and 1.0.0
    /// blocks around them.
    #[test]
    fn large_blocks_are_framed_as_they_are() {
        let large = Bytes::from(vec![5u8; SHARED_BLOCK]);
        let blocks = [
            large.clone(),
            Bytes::from_static(b"small"),
            Bytes::new(),
            Bytes::from(vec![6u8; 3 * SHARED_BLOCK]),
        ];
        let msg = Message {
            full: true,
            entries: vec![
                Entry::want_block(sample_cid(1), 3),
                Entry {
                    want_type: WantType::Have,
                    ..Entry::want_block(sample_cid(2), 1)
                },
                Entry::cancel(sample_cid(4)),
            ],
            payload: blocks.iter().map(payload_block).collect(),
            raw_blocks: vec![Bytes::from_static(b"a 1.0.0 block"), large.clone()],
            presences: vec![BlockPresence {
                cid: sample_cid(3),
                presence: Presence::DontHave,
            }],
            pending_bytes: 1 << 20,
        };
        for version in [Version::V100, Version::V110, Version::V120] {
            let pieces = msg.encode_framed(version).unwrap();
            let mut expected = crate::p2p::frame::prefix(msg.encode(version).len());
            expected.extend(msg.encode(version));
            assert_eq!(pieces.concat(), expected, "{version:?}");
            // Three large blocks: two in the payload (bare blocks in 1.0.0), one bare.
            let shared = pieces
                .iter()
                .filter(|piece| {
                    let own = |b: &Bytes| b.len() >= SHARED_BLOCK && b.as_ptr() == piece.as_ptr();
                    blocks.iter().chain(&msg.raw_blocks).any(own)
                })
                .count();
            assert_eq!(shared, 3, "{version:?}");
        }
    }
}
