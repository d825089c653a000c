//! The bodies of the fuzz targets: each takes arbitrary bytes and drives one decoder or parser the
//! network or a client can reach. Shared by the `cargo fuzz` targets in `fuzz_targets/` and by the
//! regression test `tests/fuzz_regressions.rs`, which replays every input that once crashed one.
//! A body returns normally for any input; a panic, abort or hang is a bug.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cid::Cid;

use ipns_registry::names::{IpnsName, IpnsRecord};
use ipns_registry::p2p::bitswap::{read_message, Message};
use ipns_registry::registry::{parse_manifest, Digest, RepoName, Tag};
use ipns_registry::tree::{
    file_size, lookup, read_directory, read_file_range, BlockSource, PbNode, TreeError, UnixfsData,
};

/// A target's body: any input, no panic.
pub type FuzzBody = fn(&[u8]);

/// The targets by name, for the regression test.
pub const TARGETS: [(&str, FuzzBody); 6] = [
    ("manifest", manifest),
    ("ipns_record", ipns_record),
    ("unixfs", unixfs),
    ("bitswap_message", bitswap_message),
    ("reference", reference),
    ("range", range),
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

/// Manifest parsing and validation, under each content type a client may send.
pub fn manifest(data: &[u8]) {
    for content_type in [
        None,
        Some("application/vnd.oci.image.manifest.v1+json"),
        Some("application/vnd.oci.image.index.v1+json"),
        Some("application/vnd.docker.distribution.manifest.v2+json"),
        Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8"),
    ] {
        let _ = parse_manifest(data, content_type);
    }
}

/// IPNS record decoding and validation: against the name the record's embedded key would have,
/// and against a fixed name (the usual case: a record for a name we follow).
pub fn ipns_record(data: &[u8]) {
    const FOLLOWED: &str = "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8";
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    if let Ok(name) = IpnsName::parse(FOLLOWED) {
        if let Ok(record) = IpnsRecord::validate(&name, data, now) {
            let _ = record.root();
            let _ = record.ttl();
        }
        let _ = IpnsRecord::verify(&name, data);
    }
    // The first bytes name a key the rest may embed: covers the embedded-public-key path.
    if let Some((head, rest)) = data.split_first() {
        let len = usize::from(*head).min(rest.len());
        if let Ok(name) = IpnsName::from_routing_key(&rest[..len]) {
            let _ = IpnsRecord::validate(&name, &rest[len..], now);
        }
    }
}

/// Blocks from a hostile peer or tree: the input is split into pieces at `0xFF 0x00 0xFF`, and
/// a CID resolves to the piece its digest's first byte selects, so links land on other pieces
/// (or the same one: cycles) whatever the hashes. A budget of block reads bounds the walk, as a
/// real DAG, whose links are hashes, can't loop but can fan out without end.
struct PieceSource {
    pieces: Vec<Bytes>,
    budget: AtomicUsize,
}

#[async_trait::async_trait]
impl BlockSource for PieceSource {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        let left = self.budget.fetch_sub(1, Ordering::Relaxed);
        if left == 0 || left > 1 << 20 {
            self.budget.store(0, Ordering::Relaxed);
            return Err(TreeError::BlockMissing(*cid));
        }
        let index = cid.hash().digest().first().copied().unwrap_or(0) as usize;
        Ok(self.pieces[index % self.pieces.len()].clone())
    }
}

fn split_pieces(data: &[u8]) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(3).position(|w| w == [0xFF, 0x00, 0xFF]) {
        pieces.push(Bytes::copy_from_slice(&rest[..at]));
        rest = &rest[at + 3..];
    }
    pieces.push(Bytes::copy_from_slice(rest));
    pieces
}

/// dag-pb, UnixFS and HAMT decoding, and the tree walks over them: directory listing, lookup
/// (basic and sharded directories), file size and file reads.
pub fn unixfs(data: &[u8]) {
    let pieces = split_pieces(data);
    for piece in &pieces {
        if let Ok(node) = PbNode::decode(piece) {
            if let Some(inner) = &node.data {
                let _ = UnixfsData::decode(inner);
            }
        }
        let _ = UnixfsData::decode(piece);
    }
    let source = PieceSource {
        pieces,
        budget: AtomicUsize::new(2_000),
    };
    let root = ipns_registry::tree::cid_of(ipns_registry::tree::DAG_PB, data);
    runtime().block_on(async {
        let reset = |s: &PieceSource| s.budget.store(2_000, Ordering::Relaxed);
        let _ = read_directory(&source, &root).await;
        reset(&source);
        for name in ["data", "link", "sha256", "_manifests", ""] {
            let _ = lookup(&source, &root, name).await;
            reset(&source);
        }
        let raw_root = ipns_registry::tree::cid_of(ipns_registry::tree::RAW, data);
        for cid in [root, raw_root] {
            if let Ok(size) = file_size(&source, &cid).await {
                reset(&source);
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
                let end = size.min(4 << 20);
                let drain = async {
                    let mut got = 0usize;
                    while let Some(chunk) = rx.recv().await {
                        got += chunk.len();
                    }
                    got
                };
                let (_, got) = tokio::join!(read_file_range(&source, &cid, 0..end, tx), drain);
                assert!(got as u64 <= end, "read {got} bytes of a {end}-byte range");
            }
            reset(&source);
        }
    });
}

/// Bitswap messages: a bare message, and length-prefixed frames read from a stream.
pub fn bitswap_message(data: &[u8]) {
    if let Ok(message) = Message::decode(data) {
        // Shared or copied, the blocks decode the same.
        let shared = Message::decode_shared(bytes::Bytes::copy_from_slice(data));
        assert_eq!(shared.as_ref().ok(), Some(&message));
        // What decodes must encode again without panicking, in every version, and its framed
        // pieces are exactly the length prefix and that encoding.
        for version in [
            ipns_registry::p2p::bitswap::Version::V100,
            ipns_registry::p2p::bitswap::Version::V110,
            ipns_registry::p2p::bitswap::Version::V120,
        ] {
            let body = message.encode(version);
            if let Ok(pieces) = message.encode_framed(version) {
                let mut expected = varint(body.len());
                expected.extend_from_slice(&body);
                assert_eq!(pieces.concat(), expected);
            }
        }
    }
    runtime().block_on(async {
        let mut stream = futures_util::io::Cursor::new(data);
        for _ in 0..16 {
            match read_message(&mut stream).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    });
}

/// The unsigned-varint (LEB128) encoding of `n`, as frames are prefixed.
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// Repository names, tags, digests and whole request paths.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(name) = RepoName::parse(text) {
        assert_eq!(name.as_str(), text);
        let _ = name.components().count();
    }
    if let Some(tag) = Tag::parse(text) {
        assert_eq!(tag.as_str(), text);
    }
    if let Ok(digest) = text.parse::<Digest>() {
        assert_eq!(digest.to_string(), text);
    }
    let _ = ipns_registry::http::parse_route(text);
}

/// `Range` (blob downloads) and `Content-Range` (chunked uploads) headers.
pub fn range(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (size, header) = match text.split_once('\n') {
        Some((size, header)) => (size.trim().parse().unwrap_or(0), header),
        None => (1 << 20, text),
    };
    if let ipns_registry::http::RangeAnswer::Partial(range) =
        ipns_registry::http::range_answer(Some(header), size)
    {
        assert!(
            range.start < range.end && range.end <= size,
            "{range:?} of {size}"
        );
    }
    if let Ok((start, len)) = ipns_registry::http::parse_content_range(header) {
        assert!(len >= 1 && start.checked_add(len - 1).is_some());
    }
}
