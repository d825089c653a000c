//! HAMT-sharded UnixFS directories, as boxo (kubo) and Helia write them: murmur3-x64-64 of the
//! entry name (the first 64 bits of murmur3 x64 128, seed 0, big-endian), fanout 256, so each
//! level of the trie consumes one byte of the hash. A slot holds one entry, named by the slot's
//! two-digit uppercase hex index followed by the entry name, or a child shard, named by the index
//! alone. The shard's UnixFS `Data` is the bitfield of occupied slots as a minimal big-endian
//! integer. Building from the set of entries gives the canonical trie (the one boxo keeps after
//! inserts and removals), so the same entries always get the same CID.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Cursor;
use std::pin::Pin;

use bytes::Bytes;
use cid::Cid;

use super::dagpb::{PbLink, PbNode, DAG_PB};
use super::directory::SHARD_THRESHOLD;
use super::unixfs::{DataType, UnixfsData};
use super::{pb_block, BlockSource, Link, TreeError};

/// Multicodec of murmur3-x64-64, the only HAMT hash in use.
pub const MURMUR3_X64_64: u64 = 0x22;
/// Slots per shard written by this node.
const FANOUT: u64 = 256;
/// The hash gives 64 bits: eight levels of 256 slots. Two names that agree on all 64 bits would
/// need a ninth level, which boxo cannot read either.
const HASH_BYTES: usize = 8;

/// Whether a basic directory's encoded block is too large and it must be sharded: larger
/// than 256 KiB. This is the `block-bytes` estimate of the IPIP-499 `unixfs-v1-2025` profile
/// (Helia's `shardSplitStrategy: 'block-bytes'`, kubo's `UnixFSHAMTDirectorySizeEstimation =
/// "block"`, boxo's `SizeEstimationBlock`), not boxo's legacy default (`SizeEstimationLinks`: the
/// sum of name and CID lengths, ignoring Tsize and protobuf framing), which shards later. Both
/// compare with `>`: a block of exactly 256 KiB stays basic. The decision depends only on the
/// entries, so a directory shrinking back below the threshold becomes basic again, as boxo's
/// `DynamicDirectory` (kubo MFS) and `@helia/unixfs` `rm` convert it back.
pub fn exceeds_threshold(block: &[u8]) -> bool {
    block.len() > SHARD_THRESHOLD
}

/// The 64-bit HAMT hash of `name`, big-endian.
pub fn hash_name(name: &str) -> [u8; HASH_BYTES] {
    let mut input = Cursor::new(name.as_bytes());
    // Reading from memory cannot fail.
    let full = murmur3::murmur3_x64_128(&mut input, 0).unwrap_or_default();
    // The crate packs h1 into the low 64 bits; the HAMT uses h1.
    (full as u64).to_be_bytes()
}

enum Slot {
    Entry(String, Link),
    Shard(Shard),
    /// A child shard not decoded: an edit never went down its hash path.
    Stored(Link),
}

#[derive(Default)]
struct Shard {
    slots: BTreeMap<u8, Slot>,
}

type ShardFuture<'s, T> = Pin<Box<dyn Future<Output = Result<T, TreeError>> + Send + 's>>;

fn slot_index(hash: &[u8; HASH_BYTES], depth: usize, name: &str) -> Result<u8, TreeError> {
    hash.get(depth)
        .copied()
        .ok_or_else(|| TreeError::Decode(format!("HAMT: 64-bit hash collision for {name:?}")))
}

impl Shard {
    /// Inserts a name that is not in the shard yet, into decoded shards only (a fresh build).
    fn insert(&mut self, depth: usize, name: String, link: Link) -> Result<(), TreeError> {
        let index = slot_index(&hash_name(&name), depth, &name)?;
        match self.slots.remove(&index) {
            None => {
                self.slots.insert(index, Slot::Entry(name, link));
            }
            Some(Slot::Entry(other, other_link)) => {
                let mut shard = Shard::default();
                shard.insert(depth + 1, other, other_link)?;
                shard.insert(depth + 1, name, link)?;
                self.slots.insert(index, Slot::Shard(shard));
            }
            Some(Slot::Shard(mut shard)) => {
                shard.insert(depth + 1, name, link)?;
                self.slots.insert(index, Slot::Shard(shard));
            }
            Some(Slot::Stored(_)) => {
                return Err(TreeError::Decode(
                    "HAMT: insert into a shard that is not decoded".into(),
                ))
            }
        }
        Ok(())
    }

    /// Decodes one of this node's shards (fanout 256, murmur3) for editing.
    fn from_node(node: PbNode, data: &UnixfsData) -> Result<Shard, TreeError> {
        let geometry = geometry(data)?;
        if geometry.bits != 8 {
            return Err(TreeError::Decode(format!(
                "HAMT shard of fanout {:?} in a tree of fanout {FANOUT}",
                data.fanout
            )));
        }
        let mut shard = Shard::default();
        for link in node.links {
            let target = Link {
                cid: link.cid,
                tsize: link.tsize,
            };
            let index = link
                .name
                .get(..geometry.prefix_len)
                .and_then(|prefix| u8::from_str_radix(prefix, 16).ok())
                .ok_or_else(|| {
                    TreeError::Decode(format!("HAMT link name {:?} has no slot prefix", link.name))
                })?;
            let name = &link.name[geometry.prefix_len..];
            let slot = if name.is_empty() {
                Slot::Stored(target)
            } else {
                Slot::Entry(name.to_owned(), target)
            };
            if shard.slots.insert(index, slot).is_some() {
                return Err(TreeError::Decode(format!(
                    "HAMT shard has two links in slot {index:02X}"
                )));
            }
        }
        Ok(shard)
    }

    async fn load(source: &dyn BlockSource, link: &Link) -> Result<Shard, TreeError> {
        let block = source.block(&link.cid).await?;
        let (node, data) = decode_shard(&link.cid, &block)?;
        Shard::from_node(node, &data)
    }

    /// The slot `index` as a decoded shard, if it holds a shard.
    async fn decoded_child(
        &mut self,
        source: &dyn BlockSource,
        index: u8,
    ) -> Result<Option<&mut Shard>, TreeError> {
        if let Some(Slot::Stored(link)) = self.slots.get(&index) {
            let shard = Shard::load(source, link).await?;
            self.slots.insert(index, Slot::Shard(shard));
        }
        Ok(match self.slots.get_mut(&index) {
            Some(Slot::Shard(shard)) => Some(shard),
            _ => None,
        })
    }

    /// The entry `name`, decoding the shards on its hash path.
    fn get<'s>(
        &'s mut self,
        source: &'s dyn BlockSource,
        depth: usize,
        name: &'s str,
    ) -> ShardFuture<'s, Option<Link>> {
        Box::pin(async move {
            let index = slot_index(&hash_name(name), depth, name)?;
            if let Some(Slot::Entry(other, link)) = self.slots.get(&index) {
                return Ok((other == name).then_some(*link));
            }
            match self.decoded_child(source, index).await? {
                Some(child) => child.get(source, depth + 1, name).await,
                None => Ok(None),
            }
        })
    }

    /// Sets (`Some`) or removes (`None`) the entry `name`, keeping the trie canonical: a slot
    /// holds a child shard only while two or more entries share it. Returns the entry's
    /// previous link.
    fn set<'s>(
        &'s mut self,
        source: &'s dyn BlockSource,
        depth: usize,
        name: String,
        link: Option<Link>,
    ) -> ShardFuture<'s, Option<Link>> {
        Box::pin(async move {
            let index = slot_index(&hash_name(&name), depth, &name)?;
            if self.decoded_child(source, index).await?.is_some() {
                let Some(Slot::Shard(mut child)) = self.slots.remove(&index) else {
                    unreachable!("decoded_child found a shard in this slot");
                };
                let previous = child.set(source, depth + 1, name, link).await?;
                // A child left with a single entry folds back into this slot.
                let single_entry = child.slots.len() == 1
                    && matches!(child.slots.values().next(), Some(Slot::Entry(..)));
                if single_entry {
                    if let Some((_, entry)) = child.slots.pop_first() {
                        self.slots.insert(index, entry);
                    }
                } else if !child.slots.is_empty() {
                    self.slots.insert(index, Slot::Shard(child));
                }
                return Ok(previous);
            }
            match (self.slots.remove(&index), link) {
                (None, Some(link)) => {
                    self.slots.insert(index, Slot::Entry(name, link));
                    Ok(None)
                }
                (None, None) => Ok(None),
                (Some(Slot::Entry(other, previous)), new) if other == name => {
                    if let Some(link) = new {
                        self.slots.insert(index, Slot::Entry(name, link));
                    }
                    Ok(Some(previous))
                }
                (Some(Slot::Entry(other, other_link)), Some(link)) => {
                    let mut child = Shard::default();
                    child.insert(depth + 1, other, other_link)?;
                    child.insert(depth + 1, name, link)?;
                    self.slots.insert(index, Slot::Shard(child));
                    Ok(None)
                }
                (Some(slot), _) => {
                    self.slots.insert(index, slot);
                    Ok(None)
                }
            }
        })
    }

    /// Every entry under this shard, reading the shards not decoded.
    fn collect_entries<'s>(
        self,
        source: &'s dyn BlockSource,
        entries: &'s mut BTreeMap<String, Link>,
    ) -> ShardFuture<'s, ()> {
        Box::pin(async move {
            for slot in self.slots.into_values() {
                match slot {
                    Slot::Entry(name, link) => {
                        entries.insert(name, link);
                    }
                    Slot::Shard(shard) => shard.collect_entries(source, entries).await?,
                    Slot::Stored(link) => {
                        let block = source.block(&link.cid).await?;
                        let (node, data) = decode_shard(&link.cid, &block)?;
                        entries.extend(read_all(source, node, data).await?);
                    }
                }
            }
            Ok(())
        })
    }

    /// Encodes this shard and its decoded children; returns its link and pushes their blocks.
    /// Shards not decoded are linked as they are.
    fn encode(&self, blocks: &mut Vec<(Cid, Bytes)>) -> Link {
        let mut bitfield = [0u8; (FANOUT / 8) as usize];
        let mut links = Vec::with_capacity(self.slots.len());
        // BTreeMap order is index order, which is also the byte order of the hex prefixes.
        for (index, slot) in &self.slots {
            let last = bitfield.len() - 1;
            bitfield[last - usize::from(*index) / 8] |= 1 << (index % 8);
            let prefix = format!("{index:02X}");
            links.push(match slot {
                Slot::Entry(name, link) => PbLink {
                    cid: link.cid,
                    name: format!("{prefix}{name}"),
                    tsize: link.tsize,
                },
                Slot::Shard(shard) => {
                    let child = shard.encode(blocks);
                    PbLink {
                        cid: child.cid,
                        name: prefix,
                        tsize: child.tsize,
                    }
                }
                Slot::Stored(child) => PbLink {
                    cid: child.cid,
                    name: prefix,
                    tsize: child.tsize,
                },
            });
        }
        let first_set = bitfield
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bitfield.len());
        let mut data = UnixfsData::new(DataType::HamtShard);
        data.data = Some(bitfield[first_set..].to_vec());
        data.hash_type = Some(MURMUR3_X64_64);
        data.fanout = Some(FANOUT);
        let node = PbNode {
            links,
            data: Some(data.encode()),
        };
        let (link, bytes) = pb_block(&node);
        blocks.push((link.cid, bytes));
        link
    }
}

/// Encodes `entries` as a HAMT; returns the root link and all blocks (children first).
pub fn encode(entries: &BTreeMap<String, Link>) -> Result<(Link, Vec<(Cid, Bytes)>), TreeError> {
    let mut root = Shard::default();
    for (name, link) in entries {
        root.insert(0, name.clone(), *link)?;
    }
    let mut blocks = Vec::new();
    let link = root.encode(&mut blocks);
    Ok((link, blocks))
}

/// A sharded directory being edited in place: only the shards on the hash paths of the names
/// read or changed are decoded and written again; the others keep their blocks. The result is
/// the trie [`encode`] builds from the same entries, block for block.
pub struct HamtEdit {
    root: Shard,
}

impl HamtEdit {
    /// Whether a HAMT with this root can be edited in place: only one of this node's own
    /// geometry (fanout 256, murmur3-x64-64). Others are rebuilt whole.
    pub fn can_edit(data: &UnixfsData) -> bool {
        data.hash_type == Some(MURMUR3_X64_64) && data.fanout == Some(FANOUT)
    }

    /// Starts editing the HAMT whose root node is given (see [`HamtEdit::can_edit`]).
    pub fn new(root: PbNode, data: &UnixfsData) -> Result<Self, TreeError> {
        Ok(HamtEdit {
            root: Shard::from_node(root, data)?,
        })
    }

    /// The entry `name`.
    pub async fn get(
        &mut self,
        source: &dyn BlockSource,
        name: &str,
    ) -> Result<Option<Link>, TreeError> {
        self.root.get(source, 0, name).await
    }

    /// Sets (`Some`) or removes (`None`) the entry `name`; returns its previous link.
    pub async fn set(
        &mut self,
        source: &dyn BlockSource,
        name: String,
        link: Option<Link>,
    ) -> Result<Option<Link>, TreeError> {
        self.root.set(source, 0, name, link).await
    }

    /// Every entry of the edited directory (reads every shard not read yet).
    pub async fn into_entries(
        self,
        source: &dyn BlockSource,
    ) -> Result<BTreeMap<String, Link>, TreeError> {
        let mut entries = BTreeMap::new();
        self.root.collect_entries(source, &mut entries).await?;
        Ok(entries)
    }

    /// Encodes the edited HAMT; returns its root link and the blocks of the shards written.
    pub fn encode(&self) -> (Link, Vec<(Cid, Bytes)>) {
        let mut blocks = Vec::new();
        let link = self.root.encode(&mut blocks);
        (link, blocks)
    }
}

/// How a shard names its slots: the width of the hex prefix and bits of hash per level.
struct Geometry {
    prefix_len: usize,
    bits: u32,
}

fn geometry(data: &UnixfsData) -> Result<Geometry, TreeError> {
    if data.hash_type != Some(MURMUR3_X64_64) {
        return Err(TreeError::Decode(format!(
            "HAMT hash function {:?} is not supported (only murmur3-x64-64)",
            data.hash_type
        )));
    }
    let fanout = data
        .fanout
        .ok_or_else(|| TreeError::Decode("HAMT shard without fanout".into()))?;
    if !fanout.is_power_of_two() || !(2..=1 << 16).contains(&fanout) {
        return Err(TreeError::Decode(format!(
            "HAMT fanout {fanout} is invalid"
        )));
    }
    Ok(Geometry {
        prefix_len: format!("{:X}", fanout - 1).len(),
        bits: fanout.trailing_zeros(),
    })
}

fn decode_shard(cid: &Cid, block: &[u8]) -> Result<(PbNode, UnixfsData), TreeError> {
    if cid.codec() != DAG_PB {
        return Err(TreeError::Decode(format!("HAMT child {cid} is not dag-pb")));
    }
    let node = PbNode::decode(block)?;
    let data = UnixfsData::decode(node.data.as_deref().unwrap_or_default())?;
    if data.kind != DataType::HamtShard {
        return Err(TreeError::Decode(format!(
            "HAMT child {cid} is not a shard"
        )));
    }
    Ok((node, data))
}

/// Every entry under the HAMT whose root node is given.
pub async fn read_all(
    source: &dyn BlockSource,
    root: PbNode,
    data: UnixfsData,
) -> Result<BTreeMap<String, Link>, TreeError> {
    let mut entries = BTreeMap::new();
    let mut pending = vec![(root, data)];
    while let Some((node, data)) = pending.pop() {
        let geometry = geometry(&data)?;
        for link in node.links {
            let target = Link {
                cid: link.cid,
                tsize: link.tsize,
            };
            match link.name.get(geometry.prefix_len..) {
                Some("") => {
                    let block = source.block(&link.cid).await?;
                    pending.push(decode_shard(&link.cid, &block)?);
                }
                Some(name) => {
                    entries.insert(name.to_owned(), target);
                }
                None => {
                    return Err(TreeError::Decode(format!(
                        "HAMT link name {:?} is shorter than its prefix",
                        link.name
                    )))
                }
            }
        }
    }
    Ok(entries)
}

/// Reads `bits` bits of `hash` starting at bit `offset`, most significant first.
fn hash_bits(hash: &[u8; HASH_BYTES], offset: u32, bits: u32) -> Option<u64> {
    if offset + bits > (HASH_BYTES as u32) * 8 {
        return None;
    }
    let whole = u64::from_be_bytes(*hash);
    Some((whole << offset) >> (64 - bits))
}

/// One entry of the HAMT whose root node is given, following only the shards on its hash path.
pub async fn lookup(
    source: &dyn BlockSource,
    root: PbNode,
    data: UnixfsData,
    name: &str,
) -> Result<Option<Link>, TreeError> {
    let hash = hash_name(name);
    let (mut node, mut data) = (root, data);
    let mut offset = 0;
    loop {
        let geometry = geometry(&data)?;
        let Some(index) = hash_bits(&hash, offset, geometry.bits) else {
            return Err(TreeError::Decode("HAMT deeper than its 64-bit hash".into()));
        };
        offset += geometry.bits;
        let prefix = format!("{index:0width$X}", width = geometry.prefix_len);
        let Some(link) = node.links.into_iter().find(|l| l.name.starts_with(&prefix)) else {
            return Ok(None);
        };
        let rest = &link.name[prefix.len()..];
        if rest.is_empty() {
            let block = source.block(&link.cid).await?;
            (node, data) = decode_shard(&link.cid, &block)?;
        } else if rest == name {
            return Ok(Some(Link {
                cid: link.cid,
                tsize: link.tsize,
            }));
        } else {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_the_first_half_of_murmur3_x64_128() {
        // murmur3 x64 128 of "hello" with seed 0 is cbd8a7b341bd9b02 5b1e906a48ae1d19.
        assert_eq!(hash_name("hello"), 0xcbd8_a7b3_41bd_9b02u64.to_be_bytes());
        assert_eq!(hash_name(""), [0; 8]);
    }

    #[test]
    fn bits_are_taken_most_significant_first() {
        let hash = 0xcbd8_a7b3_41bd_9b02u64.to_be_bytes();
        assert_eq!(hash_bits(&hash, 0, 8), Some(0xcb));
        assert_eq!(hash_bits(&hash, 8, 8), Some(0xd8));
        assert_eq!(hash_bits(&hash, 0, 4), Some(0xc));
        assert_eq!(hash_bits(&hash, 4, 4), Some(0xb));
        assert_eq!(hash_bits(&hash, 56, 8), Some(0x02));
        assert_eq!(hash_bits(&hash, 60, 8), None);
    }
}
