//! The Bitswap wire message: a hand-rolled protobuf encoder and decoder for boxo's
//! `message.proto` (1.0.0 `blocks`, 1.1.0 `payload`, 1.2.0 wantType / sendDontHave /
//! blockPresences / pendingBytes).
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

use bytes::Bytes;
use cid::Cid;

use super::block::CidPrefix;
use super::BitswapError;
use crate::protobuf::{
    self, put_bytes, put_key, put_uint, put_varint, varint_len, VarintError, I32, I64, LEN, VARINT,
};

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
        let mut out = Vec::with_capacity(self.encoded_len_estimate());
        self.encode_into(version, &mut out);
        out
    }

    /// The encoding with its unsigned-varint length prefix, in one buffer (one write, one
    /// frame on the wire) and without copying the body.
    pub fn encode_framed(&self, version: Version) -> Bytes {
        const ROOM: usize = 10;
        let mut out = Vec::with_capacity(ROOM + self.encoded_len_estimate());
        out.resize(ROOM, 0);
        self.encode_into(version, &mut out);
        let mut prefix = Vec::with_capacity(ROOM);
        put_varint(&mut prefix, (out.len() - ROOM) as u64);
        let start = ROOM - prefix.len();
        out[start..ROOM].copy_from_slice(&prefix);
        Bytes::from(out).slice(start..)
    }

    fn encoded_len_estimate(&self) -> usize {
        let data_len: usize = self
            .payload
            .iter()
            .map(|b| b.data.len() + 16)
            .sum::<usize>()
            + self.raw_blocks.iter().map(|b| b.len() + 8).sum::<usize>();
        data_len + 64 * (self.entries.len() + self.presences.len()) + 16
    }

    fn encode_into(&self, version: Version, out: &mut Vec<u8>) {
        let mut wantlist = Vec::with_capacity(64 * self.entries.len() + 4);
        for entry in &self.entries {
            if version < Version::V120 && entry.want_type == WantType::Have && !entry.cancel {
                continue;
            }
            let mut e = Vec::with_capacity(64);
            put_bytes(&mut e, 1, &entry.cid.to_bytes());
            if entry.priority != 0 {
                // int32 is encoded as its sign-extended 64-bit two's complement.
                put_uint(&mut e, 2, i64::from(entry.priority) as u64);
            }
            if entry.cancel {
                put_uint(&mut e, 3, 1);
            }
            if version >= Version::V120 {
                if entry.want_type == WantType::Have {
                    put_uint(&mut e, 4, 1);
                }
                if entry.send_dont_have {
                    put_uint(&mut e, 5, 1);
                }
            }
            put_bytes(&mut wantlist, 1, &e);
        }
        if self.full {
            put_uint(&mut wantlist, 2, 1);
        }
        if !wantlist.is_empty() {
            put_bytes(out, 1, &wantlist);
        }

        for data in &self.raw_blocks {
            put_bytes(out, 2, data);
        }
        for block in &self.payload {
            if version < Version::V110 {
                put_bytes(out, 2, &block.data);
                continue;
            }
            let prefix = block.prefix.to_bytes();
            let inner_len = 1
                + varint_len(prefix.len() as u64)
                + prefix.len()
                + 1
                + varint_len(block.data.len() as u64)
                + block.data.len();
            put_key(out, 3, LEN);
            put_varint(out, inner_len as u64);
            put_bytes(out, 1, &prefix);
            put_bytes(out, 2, &block.data);
        }
        if version >= Version::V120 {
            for presence in &self.presences {
                let mut p = Vec::with_capacity(48);
                put_bytes(&mut p, 1, &presence.cid.to_bytes());
                if presence.presence == Presence::DontHave {
                    put_uint(&mut p, 2, 1);
                }
                put_bytes(out, 4, &p);
            }
            if self.pending_bytes != 0 {
                put_uint(out, 5, i64::from(self.pending_bytes) as u64);
            }
        }
    }

    /// Decodes a message (any version); block data are zero-copy slices of `buf`.
    /// Unknown fields are skipped, as protobuf requires.
    pub fn decode(buf: Bytes) -> Result<Message, BitswapError> {
        let mut msg = Message::default();
        let mut reader = Reader::new(&buf);
        while let Some((field, value)) = reader.field()? {
            match (field, value) {
                (1, Value::Bytes(range)) => decode_wantlist(&buf[range], &mut msg)?,
                (2, Value::Bytes(range)) => msg.raw_blocks.push(buf.slice(range)),
                (3, Value::Bytes(range)) => {
                    let base = range.start;
                    let mut prefix = None;
                    let mut data = Bytes::new();
                    let mut inner = Reader::new(&buf[range]);
                    while let Some((field, value)) = inner.field()? {
                        match (field, value) {
                            (1, Value::Bytes(r)) => {
                                prefix =
                                    Some(CidPrefix::from_bytes(&buf[base + r.start..base + r.end])?)
                            }
                            (2, Value::Bytes(r)) => data = buf.slice(base + r.start..base + r.end),
                            (1 | 2, _) => return Err(wire_type_error("Block")),
                            _ => {}
                        }
                    }
                    let prefix = prefix.ok_or_else(|| {
                        BitswapError::Malformed("payload block without a CID prefix".into())
                    })?;
                    msg.payload.push(PayloadBlock { prefix, data });
                }
                (4, Value::Bytes(range)) => {
                    let mut cid = None;
                    let mut presence = Presence::Have;
                    let mut inner = Reader::new(&buf[range]);
                    while let Some((field, value)) = inner.field()? {
                        match (field, value) {
                            (1, Value::Bytes(r)) => cid = Some(decode_cid(inner.slice(r))?),
                            (2, Value::Varint(v)) => {
                                presence = match v {
                                    0 => Presence::Have,
                                    1 => Presence::DontHave,
                                    other => {
                                        return Err(BitswapError::Malformed(format!(
                                            "unknown block presence type {other}"
                                        )))
                                    }
                                }
                            }
                            (1 | 2, _) => return Err(wire_type_error("BlockPresence")),
                            _ => {}
                        }
                    }
                    let cid = cid.ok_or_else(|| {
                        BitswapError::Malformed("block presence without a CID".into())
                    })?;
                    msg.presences.push(BlockPresence { cid, presence });
                }
                (5, Value::Varint(v)) => msg.pending_bytes = v as i32,
                (1..=5, _) => return Err(wire_type_error("Message")),
                _ => {}
            }
        }
        Ok(msg)
    }
}

fn decode_wantlist(buf: &[u8], msg: &mut Message) -> Result<(), BitswapError> {
    let mut reader = Reader::new(buf);
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (1, Value::Bytes(range)) => {
                let mut entry = Entry {
                    cid: Cid::default(),
                    // proto3 default; the ".proto" comment's "default to 1" is the sender's job.
                    priority: 0,
                    cancel: false,
                    want_type: WantType::Block,
                    send_dont_have: false,
                };
                let mut has_cid = false;
                let mut inner = Reader::new(reader.slice(range));
                while let Some((field, value)) = inner.field()? {
                    match (field, value) {
                        (1, Value::Bytes(r)) => {
                            entry.cid = decode_cid(inner.slice(r))?;
                            has_cid = true;
                        }
                        // Truncation to 32 bits is how protobuf reads an int32.
                        (2, Value::Varint(v)) => entry.priority = v as i32,
                        (3, Value::Varint(v)) => entry.cancel = v != 0,
                        (4, Value::Varint(v)) => {
                            entry.want_type = match v {
                                0 => WantType::Block,
                                1 => WantType::Have,
                                other => {
                                    return Err(BitswapError::Malformed(format!(
                                        "unknown want type {other}"
                                    )))
                                }
                            }
                        }
                        (5, Value::Varint(v)) => entry.send_dont_have = v != 0,
                        (1..=5, _) => return Err(wire_type_error("Wantlist.Entry")),
                        _ => {}
                    }
                }
                if !has_cid {
                    return Err(BitswapError::Malformed(
                        "wantlist entry without a CID".into(),
                    ));
                }
                msg.entries.push(entry);
            }
            (2, Value::Varint(v)) => msg.full = v != 0,
            (1 | 2, _) => return Err(wire_type_error("Wantlist")),
            _ => {}
        }
    }
    Ok(())
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

fn wire_type_error(message: &str) -> BitswapError {
    BitswapError::Malformed(format!("unexpected wire type in {message}"))
}

/// Reads an unsigned varint at the start of `buf`: `(value, bytes used)`.
pub(crate) fn read_varint(buf: &[u8]) -> Result<(u64, usize), BitswapError> {
    protobuf::read_varint(buf).map_err(|e| match e {
        VarintError::Truncated => BitswapError::Malformed("truncated varint".into()),
        VarintError::Overflow => BitswapError::Malformed("varint overflows 64 bits".into()),
    })
}

/// A field value: varints decoded, length-delimited fields as a range into the buffer.
enum Value {
    Varint(u64),
    Bytes(std::ops::Range<usize>),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn slice(&self, range: std::ops::Range<usize>) -> &'a [u8] {
        &self.buf[range]
    }

    fn varint(&mut self) -> Result<u64, BitswapError> {
        let (value, used) = read_varint(&self.buf[self.pos..])?;
        self.pos += used;
        Ok(value)
    }

    fn skip(&mut self, n: usize) -> Result<std::ops::Range<usize>, BitswapError> {
        let start = self.pos;
        let end = start
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                BitswapError::Malformed("field runs past the end of the message".into())
            })?;
        self.pos = end;
        Ok(start..end)
    }

    /// The next field, skipping fixed-width ones (none of ours use them).
    fn field(&mut self) -> Result<Option<(u64, Value)>, BitswapError> {
        loop {
            if self.pos >= self.buf.len() {
                return Ok(None);
            }
            let key = self.varint()?;
            let field = key >> 3;
            if field == 0 {
                return Err(BitswapError::Malformed("field number 0".into()));
            }
            match (key & 7) as u8 {
                VARINT => return Ok(Some((field, Value::Varint(self.varint()?)))),
                LEN => {
                    let len = usize::try_from(self.varint()?)
                        .map_err(|_| BitswapError::Malformed("field length overflows".into()))?;
                    return Ok(Some((field, Value::Bytes(self.skip(len)?))));
                }
                I64 => {
                    self.skip(8)?;
                }
                I32 => {
                    self.skip(4)?;
                }
                other => {
                    return Err(BitswapError::Malformed(format!(
                        "unsupported wire type {other}"
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{cid_of, RAW};

    fn sample_cid(n: u8) -> Cid {
        cid_of(RAW, &[n; 8])
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
        let decoded = Message::decode(Bytes::from(msg.encode(Version::V120))).unwrap();
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
            payload: vec![PayloadBlock {
                prefix: CidPrefix::of(&cid_of(RAW, &data)),
                data: data.clone(),
            }],
            presences: vec![BlockPresence {
                cid: sample_cid(4),
                presence: Presence::DontHave,
            }],
            ..Message::default()
        };
        let v110 = Message::decode(Bytes::from(msg.encode(Version::V110))).unwrap();
        assert_eq!(v110.entries.len(), 1);
        assert!(!v110.entries[0].send_dont_have);
        assert_eq!(v110.payload.len(), 1);
        assert!(v110.presences.is_empty());
        let v100 = Message::decode(Bytes::from(msg.encode(Version::V100))).unwrap();
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

        let decoded = Message::decode(Bytes::from(msg)).unwrap();
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
        let decoded = Message::decode(Bytes::from_static(&[0x0a, 0x00])).unwrap();
        assert!(decoded.is_empty());
    }

    #[test]
    fn rejects_malformed_input() {
        // Length running past the end.
        assert!(Message::decode(Bytes::from_static(&[0x0a, 0x05, 0x01])).is_err());
        // Truncated varint.
        assert!(Message::decode(Bytes::from_static(&[0x28, 0x80])).is_err());
        // Entry with a garbage CID.
        assert!(Message::decode(Bytes::from_static(&[
            0x0a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xff, 0xff
        ]))
        .is_err());
        // Unknown fields are skipped.
        let decoded = Message::decode(Bytes::from_static(&[0x30, 0x01, 0x3a, 0x01, 0x00])).unwrap();
        assert!(decoded.is_empty());
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
        let framed = msg.encode_framed(Version::V120);
        let (len, used) = read_varint(&framed).unwrap();
        assert_eq!(len as usize, body.len());
        assert_eq!(&framed[used..], body.as_slice());
    }

    #[test]
    fn varints() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            1 << 21,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(read_varint(&out).unwrap(), (v, out.len()));
        }
    }
}
