//! CID vectors: the same bytes and directories imported by the JS reference importer get the same
//! CIDs here, so blocks and roots are interchangeable with kubo and Helia.
//!
//! The expected CIDs were produced with `ipfs-unixfs-importer` 17.1.1 (Helia's importer), option
//! `profile: 'unixfs-v1-2025'` (CIDv1, raw leaves, 1 MiB chunks, balanced DAG of at most 1024
//! links, HAMT sharding above 256 KiB by `block-bytes`, fanout 256, murmur3-x64-64) and a memory
//! blockstore, over the contents generated below. The threshold-boundary and edited-directory
//! vectors and the `tests/fixtures/unixfs/hamt-fanout-*.car` shards come from the same importer
//! and profile (see `tests/fixtures/unixfs/README.md`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use cid::Cid;
use ipns_registry::store::BlockStore;
use ipns_registry::tree::{
    apply_changes, cid_of, encode_directory, lookup, read_directory, BlockSource, Change,
    FileImporter, Link, TreeError, DAG_PB, RAW,
};

const MIB: usize = 1 << 20;

/// File vectors: (size in bytes, CID, cumulative DAG size).
const FILES: &[(usize, &str, u64)] = &[
    (
        0,
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        0,
    ),
    (
        1,
        "bafkreihhz5dka6h62t5p2c26hl7risacxbj7rlsftjhqyffn2myuw7gduy",
        1,
    ),
    (
        1000,
        "bafkreibmejsy6qrfp5xigw5ovcayljj3grdndrqnmh7fiaq66nwxbgse4m",
        1000,
    ),
    (
        MIB,
        "bafkreibvtjnijxsi7yzulyyyvp5x2yjcacwhhcag4lbmuqz2chlnqn75im",
        1048576,
    ),
    (
        MIB + 1,
        "bafybeih56ebsvc25ctdwfx3dy7dvwusd57elezzkagvb7yvaibhcnxsiiy",
        1048681,
    ),
    (
        3 * MIB + 5,
        "bafybeibtttjqomuipggyoeimfprjy5ys4fymm3cpe5qqcmjvyoxwa5uqyq",
        3145938,
    ),
];

/// A file of 1025 chunks: more leaves than one node may link, so the DAG has two levels.
const TWO_LEVEL_FILE: (usize, &str, u64) = (
    1025 * MIB + 1,
    "bafybeid27va44hbwiqm3dj363t4632luwfvdwmq2x2w6kjjhfhb4adl7kq",
    1074841830,
);

/// Directory vectors: (entries, CID, cumulative DAG size). 4500 entries still fit a basic
/// directory block; 5000 need a HAMT; 20000 need nested shards.
const DIRECTORIES: &[(usize, &str, u64)] = &[
    (
        1,
        "bafybeihl5kr3hvyb5uo4oeb7x4idp62wqvyukcia6qp6aweedgqg2a5nby",
        66,
    ),
    (
        10,
        "bafybeic4cxypmnjgum67wxfk2ibbmsfq2mqsf6m3ykwvyslu7zgcfuv4mi",
        624,
    ),
    (
        4000,
        "bafybeibbuuj22m6ki2hkjsoy3k2wsnq6th6qdxw557axlv4xvykbzzrwte",
        258894,
    ),
    (
        4500,
        "bafybeifji2o6gqe2s2d3puawwwtoj6v3resnmczriszkgcrbs77rgawqu4",
        291394,
    ),
    (
        5000,
        "bafybeifjbwipsctsct4z3bc665yj3kaggztaop6mbycyvwpn73o4rjabda",
        369875,
    ),
    (
        20000,
        "bafybeiboq7333zvt26mbwxxvsbjfro4yqsgrb3wq6ypyq7m5fzp362vva4",
        1581490,
    ),
];

/// The threshold boundary: 4766 entries of which the first `longer` are named with one more
/// byte (`entry-00000x`). With 10 longer names the basic block is exactly 262144 bytes and stays
/// basic; with 11 it is 262145 bytes and becomes a HAMT: (longer, CID, cumulative DAG size).
const BOUNDARY: &[(usize, &str, u64)] = &[
    (
        10,
        "bafybeifn7lptttgbhplzbuh5lgxcnrttjculfjalflrqyi2kf5vrjcq5fe",
        308694,
    ),
    (
        11,
        "bafybeidhoomuuigalim5jnbfhkzmgguvsrd766kqljf6jj6c3ltpc2v7ru",
        353232,
    ),
];
const BOUNDARY_ENTRIES: usize = 4766;

/// `entry-00000`..`entry-20499` without every seventh (`i % 7 == 0`), imported in one go.
const EDITED_DIRECTORY: (&str, u64) = (
    "bafybeidxtqriamppvkubcpihm3ye7kgyp2hwmgueyqjrv7sf2kovsevwwa",
    1376460,
);

/// HAMTs written by the JS importer with other fanouts (`shardFanoutBits` 1, 4, 5, 10) and a
/// 1000-byte split threshold, so they shard and nest: (fanout, entries, root CID, fixture).
const OTHER_FANOUTS: &[(u64, usize, &str, &str)] = &[
    (
        2,
        20,
        "bafybeibrhgvd7z7mo74jofxdw7iat6qowgw65jlxbxxacqp6aj6ebvgkpe",
        "hamt-fanout-2.car",
    ),
    (
        16,
        200,
        "bafybeiekggvkpfgqnxt6dmbdpimixt55rqu453uf6qmkcanruovjwksmky",
        "hamt-fanout-16.car",
    ),
    (
        32,
        300,
        "bafybeifchsfqqixp5fl32gqhhnpiop64wyarexxaki5f4ttb6mldkrpoqa",
        "hamt-fanout-32.car",
    ),
    (
        1024,
        150,
        "bafybeidle5srvjt4a6hzbc3rfbzruyrcyv5gz2ru4kw2l5wkawzaies354",
        "hamt-fanout-1024.car",
    ),
];

/// Chunk `i` of every test file: byte `j` is `(31 j + 7 i + 11) mod 251`. The sequence has
/// period 251 in `j`, so each chunk is a window of one precomputed run.
struct Pattern {
    run: Vec<u8>,
    /// Where chunk `i`'s window starts, per `i mod 251`.
    starts: Vec<usize>,
}

impl Pattern {
    fn new() -> Self {
        let run: Vec<u8> = (0..MIB + 251)
            .map(|j| ((31 * j + 11) % 251) as u8)
            .collect();
        // Shifting the value by 7i equals shifting j by k with 31k = 7i (mod 251).
        let inverse_31 = (1..251)
            .find(|x| (31 * x) % 251 == 1)
            .expect("251 is prime");
        let starts = (0..251).map(|i| (7 * i * inverse_31) % 251).collect();
        Pattern { run, starts }
    }

    fn chunk(&self, i: usize, len: usize) -> &[u8] {
        let start = self.starts[i % 251];
        &self.run[start..start + len]
    }
}

fn import_file(store: &BlockStore, pattern: &Pattern, size: usize) -> (Link, u64) {
    let mut importer = FileImporter::new(store);
    let mut written = 0;
    let mut i = 0;
    while written < size {
        let len = MIB.min(size - written);
        importer.write(pattern.chunk(i, len)).expect("write");
        written += len;
        i += 1;
    }
    importer.finish().expect("finish")
}

#[test]
fn pattern_matches_its_definition() {
    let pattern = Pattern::new();
    for i in [0, 1, 250, 251, 1024] {
        let chunk = pattern.chunk(i, 600);
        for (j, byte) in chunk.iter().enumerate() {
            assert_eq!(
                usize::from(*byte),
                (31 * j + 7 * i + 11) % 251,
                "chunk {i} byte {j}"
            );
        }
    }
}

#[test]
fn files_get_the_reference_cids() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = BlockStore::open(tmp.path()).expect("store");
    let pattern = Pattern::new();
    for &(size, cid, tsize) in FILES {
        let (link, filesize) = import_file(&store, &pattern, size);
        assert_eq!(link.cid.to_string(), cid, "file of {size} bytes");
        assert_eq!(link.tsize, tsize, "DAG size of the file of {size} bytes");
        assert_eq!(filesize, size as u64);
    }
}

#[test]
fn a_file_of_more_than_1024_chunks_gets_the_reference_cid() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = BlockStore::open(tmp.path()).expect("store");
    let (size, cid, tsize) = TWO_LEVEL_FILE;
    let (link, _) = import_file(&store, &Pattern::new(), size);
    assert_eq!(link.cid.to_string(), cid);
    assert_eq!(link.tsize, tsize);
}

/// The entries of a test directory: `entry-00000`... each a raw file `file <i>\n`. The file
/// blocks are never stored: listing, looking up and editing a directory do not read them.
fn directory_entries(n: usize) -> BTreeMap<String, Link> {
    (0..n)
        .map(|i| (format!("entry-{i:05}"), test_file(i)))
        .collect()
}

/// The link to test file `i`.
fn test_file(i: usize) -> Link {
    let bytes = format!("file {i}\n").into_bytes();
    Link {
        cid: cid_of(RAW, &bytes),
        tsize: bytes.len() as u64,
    }
}

fn store_blocks(store: &BlockStore, blocks: impl IntoIterator<Item = (Cid, impl AsRef<[u8]>)>) {
    for (cid, bytes) in blocks {
        store.put_blocking(&cid, bytes.as_ref()).expect("put");
    }
}

#[test]
fn directories_get_the_reference_cids() {
    for &(n, cid, tsize) in DIRECTORIES {
        let entries = directory_entries(n);
        let (link, blocks) = encode_directory(&entries).expect("encode");
        assert_eq!(link.cid.to_string(), cid, "directory of {n} entries");
        assert_eq!(
            link.tsize, tsize,
            "DAG size of the directory of {n} entries"
        );
        assert_eq!(
            blocks.len() > 1,
            n >= 5000,
            "sharded iff over the threshold ({n})"
        );
    }
}

#[tokio::test]
async fn sharded_directories_read_back_and_look_up() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = BlockStore::open(tmp.path()).expect("store");
    let entries = directory_entries(20000);
    let (link, blocks) = encode_directory(&entries).expect("encode");
    store_blocks(&store, blocks);

    let read = read_directory(&store, &link.cid).await.expect("read");
    assert_eq!(read, entries);
    // Every entry is looked up in `lookup_fetches_only_the_shards_on_the_hash_path`; here a
    // sample, through the on-disk store.
    for (name, link_to_file) in entries.iter().step_by(101).chain(entries.last_key_value()) {
        let found = lookup(&store, &link.cid, name).await.expect("lookup");
        assert_eq!(found, Some(*link_to_file), "{name}");
    }
    for absent in ["entry-20000", "entry-0000", "", "ENTRY-00001"] {
        assert_eq!(
            lookup(&store, &link.cid, absent).await.expect("lookup"),
            None,
            "{absent:?}"
        );
    }
}

#[tokio::test]
async fn edits_switch_between_basic_and_sharded_directories() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = BlockStore::open(tmp.path()).expect("store");
    let entries = directory_entries(5000);
    let cid_of_entries = |n: usize| DIRECTORIES.iter().find(|d| d.0 == n).map(|d| d.1);

    // Grow a directory inside a tree from 4500 entries past the threshold...
    let basic = directory_entries(4500);
    let (empty, blocks) = encode_directory(&BTreeMap::new()).expect("empty");
    store_blocks(&store, blocks);
    let put = |names: &mut dyn Iterator<Item = (&String, &Link)>| -> Vec<Change> {
        names
            .map(|(name, link)| Change::Put {
                path: vec!["d".into(), name.clone()],
                link: *link,
            })
            .collect()
    };
    let (root, blocks) = apply_changes(&store, &empty.cid, put(&mut basic.iter()))
        .await
        .expect("first 4500");
    store_blocks(&store, blocks);
    let dir = lookup(&store, &root.cid, "d")
        .await
        .expect("d")
        .expect("d exists");
    assert_eq!(Some(dir.cid.to_string().as_str()), cid_of_entries(4500));

    let rest = entries
        .iter()
        .filter(|(name, _)| !basic.contains_key(*name));
    let (root, blocks) = apply_changes(&store, &root.cid, put(&mut rest.into_iter()))
        .await
        .expect("up to 5000");
    store_blocks(&store, blocks);
    let dir = lookup(&store, &root.cid, "d")
        .await
        .expect("d")
        .expect("d exists");
    assert_eq!(Some(dir.cid.to_string().as_str()), cid_of_entries(5000));
    assert_eq!(
        lookup(&store, &dir.cid, "entry-04999")
            .await
            .expect("lookup"),
        entries.get("entry-04999").copied()
    );

    // ...and shrink it back below: the same CID as a directory built with those entries.
    let removals = (4500..5000)
        .map(|i| Change::Remove {
            path: vec!["d".into(), format!("entry-{i:05}")],
        })
        .collect();
    let (root, blocks) = apply_changes(&store, &root.cid, removals)
        .await
        .expect("back to 4500");
    store_blocks(&store, blocks);
    let dir = lookup(&store, &root.cid, "d")
        .await
        .expect("d")
        .expect("d exists");
    assert_eq!(Some(dir.cid.to_string().as_str()), cid_of_entries(4500));
    assert_eq!(read_directory(&store, &dir.cid).await.expect("read"), basic);
}

#[test]
fn a_basic_block_of_exactly_256_kib_stays_basic_and_one_byte_more_shards() {
    for &(longer, cid, tsize) in BOUNDARY {
        let entries: BTreeMap<String, Link> = (0..BOUNDARY_ENTRIES)
            .map(|i| {
                let suffix = if i < longer { "x" } else { "" };
                (format!("entry-{i:05}{suffix}"), test_file(i))
            })
            .collect();
        let (link, blocks) = encode_directory(&entries).expect("encode");
        assert_eq!(link.cid.to_string(), cid, "{longer} longer names");
        assert_eq!(link.tsize, tsize, "DAG size with {longer} longer names");
        let root = &blocks.last().expect("root block").1;
        if longer == 10 {
            assert_eq!((blocks.len(), root.len()), (1, 256 * 1024), "basic");
        } else {
            assert!(blocks.len() > 1, "sharded");
        }
    }
}

/// Blocks held in memory, counting how many are fetched.
#[derive(Default)]
struct MemorySource {
    blocks: HashMap<Cid, Bytes>,
    fetched: AtomicUsize,
}

impl MemorySource {
    fn insert(&mut self, cid: Cid, bytes: impl Into<Bytes>) {
        let bytes = bytes.into();
        assert_eq!(cid_of(cid.codec(), &bytes), cid, "block matches its CID");
        self.blocks.insert(cid, bytes);
    }

    fn insert_all(&mut self, blocks: Vec<(Cid, Bytes)>) {
        for (cid, bytes) in blocks {
            self.insert(cid, bytes);
        }
    }

    fn take_fetched(&self) -> usize {
        self.fetched.swap(0, Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl BlockSource for MemorySource {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        self.fetched.fetch_add(1, Ordering::SeqCst);
        self.blocks
            .get(cid)
            .cloned()
            .ok_or(TreeError::BlockMissing(*cid))
    }
}

fn read_varint(input: &mut &[u8]) -> u64 {
    let (value, used) = ipns_registry::protobuf::read_varint(input).expect("varint");
    *input = &input[used..];
    value
}

/// The blocks of a CARv1 file (the header, which names the root, is skipped).
fn read_car(bytes: &[u8]) -> MemorySource {
    let mut input = bytes;
    let header = read_varint(&mut input) as usize;
    input = &input[header..];
    let mut source = MemorySource::default();
    while !input.is_empty() {
        let len = read_varint(&mut input) as usize;
        let (mut section, rest) = input.split_at(len);
        input = rest;
        let cid = Cid::read_bytes(&mut section).expect("section CID");
        source.insert(cid, section.to_vec());
    }
    source
}

#[tokio::test]
async fn shards_with_other_fanouts_written_by_others_read_back_and_look_up() {
    for &(fanout, n, root, file) in OTHER_FANOUTS {
        let path = format!(
            "{}/tests/fixtures/unixfs/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let source = read_car(&std::fs::read(&path).expect("fixture"));
        let root: Cid = root.parse().expect("root CID");
        assert!(source.blocks.contains_key(&root), "{file} holds its root");
        let entries = directory_entries(n);

        let read = read_directory(&source, &root).await.expect("read");
        assert_eq!(read, entries, "fanout {fanout}");
        assert_eq!(
            source.take_fetched(),
            source.blocks.len(),
            "every shard read"
        );
        for (name, link) in &entries {
            let found = lookup(&source, &root, name).await.expect("lookup");
            assert_eq!(found, Some(*link), "fanout {fanout}: {name}");
        }
        for absent in ["entry-99999", "entry-0000", "", "ENTRY-00001"] {
            let found = lookup(&source, &root, absent).await.expect("lookup");
            assert_eq!(found, None, "fanout {fanout}: {absent:?}");
        }
    }
}

#[tokio::test]
async fn lookup_fetches_only_the_shards_on_the_hash_path() {
    let entries = directory_entries(20000);
    let (link, blocks) = encode_directory(&entries).expect("encode");
    let mut source = MemorySource::default();
    let shards = blocks.len();
    source.insert_all(blocks);
    assert!(shards > 250, "20000 entries need nested shards ({shards})");
    let mut most = 0;
    for (name, expected) in entries
        .iter()
        .map(|(name, link)| (name.as_str(), Some(*link)))
        .chain([("absent", None)])
    {
        let found = lookup(&source, &link.cid, name).await.expect("lookup");
        assert_eq!(found, expected, "{name}");
        let fetched = source.take_fetched();
        // The root, then one shard per level below it; 20000 names never need more than 4 levels.
        assert!((1..=4).contains(&fetched), "{name}: {fetched} blocks");
        most = most.max(fetched);
    }
    assert!(most >= 2, "some lookups descend into a child shard");
}

#[tokio::test]
async fn edits_to_a_sharded_directory_give_the_reference_cid() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = BlockStore::open(tmp.path()).expect("store");
    let all = directory_entries(20500);
    let initial: BTreeMap<String, Link> = all
        .iter()
        .take(20000)
        .map(|(name, link)| (name.clone(), *link))
        .collect();
    let (dir, blocks) = encode_directory(&initial).expect("encode");
    store_blocks(&store, blocks);
    let (root, blocks) = encode_directory(&BTreeMap::from([("d".to_owned(), dir)])).expect("root");
    store_blocks(&store, blocks);

    // One batch: new entries up to entry-20499, and every seventh name (old or new) absent.
    let mut changes: Vec<Change> = (20000..20500)
        .filter(|i| i % 7 != 0)
        .map(|i| {
            let name = format!("entry-{i:05}");
            Change::Put {
                link: all[&name],
                path: vec!["d".into(), name],
            }
        })
        .collect();
    changes.extend((0..20000).step_by(7).map(|i| Change::Remove {
        path: vec!["d".into(), format!("entry-{i:05}")],
    }));
    let (root, blocks) = apply_changes(&store, &root.cid, changes)
        .await
        .expect("edit");
    store_blocks(&store, blocks);

    let dir = lookup(&store, &root.cid, "d")
        .await
        .expect("d")
        .expect("d exists");
    let (cid, tsize) = EDITED_DIRECTORY;
    assert_eq!(dir.cid.to_string(), cid);
    assert_eq!(dir.tsize, tsize);
    assert_eq!(dir.cid.codec(), DAG_PB);
    let expected: BTreeMap<String, Link> = all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 7 != 0)
        .map(|(_, entry)| entry)
        .collect();
    assert_eq!(
        read_directory(&store, &dir.cid).await.expect("read"),
        expected
    );
    for (name, present) in [
        ("entry-00007", false),
        ("entry-00008", true),
        ("entry-20499", true),
    ] {
        let found = lookup(&store, &dir.cid, name).await.expect("lookup");
        assert_eq!(found, expected.get(name).copied(), "{name}");
        assert_eq!(found.is_some(), present, "{name}");
    }
}

/// A directory `d` with `entries`, under a root, in `source`; returns the root.
fn tree_with_directory(source: &mut MemorySource, entries: &BTreeMap<String, Link>) -> Link {
    let (dir, blocks) = encode_directory(entries).expect("encode");
    source.insert_all(blocks);
    root_over(source, dir)
}

/// A root holding `dir` as `d`, in `source`; returns the root.
fn root_over(source: &mut MemorySource, dir: Link) -> Link {
    let (root, blocks) = encode_directory(&BTreeMap::from([("d".to_owned(), dir)])).expect("root");
    source.insert_all(blocks);
    root
}

/// The directory `d` under `root`, and what a fresh import of `expected` gives.
async fn directory_d_matches(source: &MemorySource, root: &Cid, expected: &BTreeMap<String, Link>) {
    let dir = lookup(source, root, "d").await.expect("d");
    let (fresh, _) = encode_directory(expected).expect("encode");
    if expected.is_empty() {
        assert_eq!(dir, None, "an emptied directory is removed");
    } else {
        assert_eq!(dir, Some(fresh), "edited in place = imported fresh");
    }
}

#[tokio::test]
async fn an_edit_to_a_sharded_directory_rewrites_only_the_shards_on_its_path() {
    let mut source = MemorySource::default();
    let mut entries = directory_entries(20000);
    let root = tree_with_directory(&mut source, &entries);
    source.take_fetched();

    // A new name, a changed one and a removed one: each reads and writes the root shard and the
    // shards on its own hash path, not the 250-odd others.
    let added = test_file(20000);
    let changed = test_file(30000);
    let changes = vec![
        Change::Put {
            path: vec!["d".into(), "entry-20000".into()],
            link: added,
        },
        Change::Put {
            path: vec!["d".into(), "entry-00042".into()],
            link: changed,
        },
        Change::Remove {
            path: vec!["d".into(), "entry-00043".into()],
        },
    ];
    let (root, blocks) = apply_changes(&source, &root.cid, changes)
        .await
        .expect("edit");
    let fetched = source.take_fetched();
    // The tree's root, d's root shard, and at most three levels below it for each name.
    assert!(fetched <= 2 + 3 * 3, "{fetched} blocks read");
    // The same, written: the new root, d's root shard, the shards on the three paths.
    assert!(blocks.len() <= 2 + 3 * 3, "{} blocks written", blocks.len());
    source.insert_all(blocks);
    entries.insert("entry-20000".into(), added);
    entries.insert("entry-00042".into(), changed);
    entries.remove("entry-00043");
    // Removing one name among 20000 shrinks the directory, which then reads it whole to decide
    // whether it is still over the threshold: the result is the same either way.
    directory_d_matches(&source, &root.cid, &entries).await;
}

#[tokio::test]
async fn growing_a_sharded_directory_reads_only_the_paths_of_the_new_names() {
    let mut source = MemorySource::default();
    let mut entries = directory_entries(20000);
    let mut root = tree_with_directory(&mut source, &entries).cid;
    for i in 20000..20100 {
        source.take_fetched();
        let link = test_file(i);
        let name = format!("entry-{i:05}");
        let changes = vec![Change::Put {
            path: vec!["d".into(), name.clone()],
            link,
        }];
        let (new_root, blocks) = apply_changes(&source, &root, changes).await.expect("put");
        let fetched = source.take_fetched();
        assert!(fetched <= 5, "{name}: {fetched} blocks read");
        assert!(blocks.len() <= 5, "{name}: {} blocks written", blocks.len());
        source.insert_all(blocks);
        entries.insert(name, link);
        root = new_root.cid;
    }
    directory_d_matches(&source, &root, &entries).await;
}

/// A small deterministic generator (xorshift64*), so a failing sequence can be replayed.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[tokio::test]
async fn random_edits_in_place_match_a_fresh_import_across_the_threshold() {
    let mut source = MemorySource::default();
    let mut entries = directory_entries(5200);
    let mut root = tree_with_directory(&mut source, &entries).cid;
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    // Batches that mostly add, mostly remove (down through the threshold at about 4770 entries
    // and back up), and change links (other sizes change the entries' encoded lengths).
    let plan: &[(u64, u64, u64, usize)] = &[
        // (percent puts of new names, percent changes, percent removals, batch size)
        (100, 0, 0, 1),
        (0, 100, 0, 1),
        (0, 0, 100, 1),
        (60, 20, 20, 40),
        (0, 0, 100, 300),
        (10, 10, 80, 200),
        (100, 0, 0, 600),
        (30, 40, 30, 120),
        // Growing batches with removals among them stay in place: a removal that leaves one
        // entry in a child shard folds it back into its parent slot.
        (75, 0, 25, 400),
        (70, 10, 20, 400),
        (0, 0, 100, 5000),
        (100, 0, 0, 5000),
    ];
    let mut next_name = 100_000;
    for (step, &(puts, changes, _, size)) in plan.iter().enumerate() {
        let mut batch = Vec::new();
        let mut model = entries.clone();
        for _ in 0..size {
            let roll = random.below(100);
            let existing: Option<String> = (!model.is_empty()).then(|| {
                let at = random.below(model.len() as u64) as usize;
                model.keys().nth(at).cloned().unwrap_or_default()
            });
            let (name, link) = if roll < puts || existing.is_none() {
                next_name += 1;
                (format!("n-{next_name}"), Some(test_file(next_name)))
            } else if roll < puts + changes {
                // A link whose Tsize has a different varint length.
                let bytes = vec![b'x'; 1 + random.below(300) as usize];
                let link = Link {
                    cid: cid_of(RAW, &bytes),
                    tsize: bytes.len() as u64,
                };
                (existing.unwrap_or_default(), Some(link))
            } else {
                (existing.unwrap_or_default(), None)
            };
            let path = vec!["d".to_owned(), name.clone()];
            match link {
                Some(link) => {
                    model.insert(name, link);
                    batch.push(Change::Put { path, link });
                }
                None => {
                    model.remove(&name);
                    batch.push(Change::Remove { path });
                }
            }
        }
        let (new_root, blocks) = apply_changes(&source, &root, batch)
            .await
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
        source.insert_all(blocks);
        root = new_root.cid;
        entries = model;
        directory_d_matches(&source, &root, &entries).await;
    }
}

/// One dag-pb link field with its own fields in the given order (`None` leaves one out).
fn raw_link(order: &[u32], link: &Link, name: &str) -> Vec<u8> {
    use ipns_registry::protobuf::{put_bytes, put_uint};
    let mut body = Vec::new();
    for field in order {
        match field {
            1 => put_bytes(&mut body, 1, &link.cid.to_bytes()),
            2 => put_bytes(&mut body, 2, name.as_bytes()),
            _ => put_uint(&mut body, 3, link.tsize),
        }
    }
    let mut out = Vec::new();
    put_bytes(&mut out, 2, &body);
    out
}

#[tokio::test]
async fn a_basic_directory_written_by_others_is_edited_into_the_canonical_form() {
    use ipns_registry::protobuf::put_bytes;
    let entries = directory_entries(40);
    let directory_data = [8u8, 1];
    let canonical = |entries: &BTreeMap<String, Link>| -> Vec<u8> {
        let mut out = Vec::new();
        for (name, link) in entries {
            out.extend(raw_link(&[1, 2, 3], link, name));
        }
        put_bytes(&mut out, 1, &directory_data);
        out
    };
    let (fresh, _) = encode_directory(&entries).expect("encode");
    assert_eq!(
        cid_of(DAG_PB, &canonical(&entries)),
        fresh.cid,
        "the helper is canonical"
    );

    // Forms a copy of the encoded links would carry over: each must come out canonical.
    let mut variants: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut reversed = Vec::new();
    for (name, link) in entries.iter().rev() {
        reversed.extend(raw_link(&[1, 2, 3], link, name));
    }
    put_bytes(&mut reversed, 1, &directory_data);
    variants.push(("links out of order", reversed));
    for (what, order) in [
        ("a link's name before its hash", &[2, 1, 3][..]),
        ("a link without Tsize", &[1, 2][..]),
        ("a link with its Tsize twice", &[1, 2, 3, 3][..]),
    ] {
        let mut bytes = Vec::new();
        for (i, (name, link)) in entries.iter().enumerate() {
            let order = if i == 17 { order } else { &[1, 2, 3][..] };
            bytes.extend(raw_link(order, link, name));
        }
        put_bytes(&mut bytes, 1, &directory_data);
        variants.push((what, bytes));
    }
    let mut data_first = Vec::new();
    put_bytes(&mut data_first, 1, &directory_data);
    data_first.extend(&canonical(&entries)[..canonical(&entries).len() - 4]);
    variants.push(("data before the links", data_first));
    let mut with_mode = canonical(&entries);
    with_mode.truncate(with_mode.len() - 4);
    // UnixFS Data with a mode (field 7): dropped, as this node writes none.
    put_bytes(&mut with_mode, 1, &[8, 1, 0x38, 0xed, 0x03]);
    variants.push(("a directory with a mode", with_mode));

    for (what, bytes) in variants {
        let mut source = MemorySource::default();
        let dir = Link {
            cid: cid_of(DAG_PB, &bytes),
            tsize: 0,
        };
        source.insert(dir.cid, bytes);
        let root = root_over(&mut source, dir);
        let added = test_file(500);
        let changes = vec![
            Change::Put {
                path: vec!["d".into(), "entry-00020x".into()],
                link: added,
            },
            Change::Remove {
                path: vec!["d".into(), "entry-00003".into()],
            },
        ];
        let (root, blocks) = apply_changes(&source, &root.cid, changes)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        source.insert_all(blocks);
        // What the block holds, as decoded (a missing Tsize reads as 0), edited.
        let mut expected = read_directory(&source, &dir.cid).await.expect("read");
        assert_eq!(expected.len(), entries.len(), "{what}");
        expected.insert("entry-00020x".into(), added);
        expected.remove("entry-00003");
        let edited = lookup(&source, &root.cid, "d").await.expect("d");
        let edited = edited.unwrap_or_else(|| panic!("{what}: d is gone"));
        let (fresh, _) = encode_directory(&expected).expect("encode");
        assert_eq!(edited.cid, fresh.cid, "{what}");
        // The Tsize read back from the links of the edited block, not the one given for `d`.
        assert_eq!(edited.tsize, fresh.tsize, "{what}");
    }
}
