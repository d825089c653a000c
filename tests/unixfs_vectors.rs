//! CID vectors: the same bytes and directories imported by the JS reference importer get the same
//! CIDs here, so blocks and roots are interchangeable with kubo and Helia.
//!
//! The expected CIDs were produced with `ipfs-unixfs-importer` 17.1.1 (Helia's importer), option
//! `profile: 'unixfs-v1-2025'` (CIDv1, raw leaves, 1 MiB chunks, balanced DAG of at most 1024
//! links, HAMT sharding above 256 KiB by `block-bytes`, fanout 256, murmur3-x64-64) and a memory
//! blockstore, over the contents generated below.

use std::collections::BTreeMap;

use ipns_registry::store::BlockStore;
use ipns_registry::tree::{
    apply_changes, cid_of, encode_directory, lookup, read_directory, Change, FileImporter, Link,
    RAW,
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

/// Raw blocks to store: CID and bytes.
type Blocks = Vec<(cid::Cid, Vec<u8>)>;

/// The entries of a test directory: `entry-00000`... each a raw file `file <i>\n`.
fn directory_entries(n: usize) -> (BTreeMap<String, Link>, Blocks) {
    let mut entries = BTreeMap::new();
    let mut blocks = Vec::new();
    for i in 0..n {
        let bytes = format!("file {i}\n").into_bytes();
        let cid = cid_of(RAW, &bytes);
        entries.insert(
            format!("entry-{i:05}"),
            Link {
                cid,
                tsize: bytes.len() as u64,
            },
        );
        blocks.push((cid, bytes));
    }
    (entries, blocks)
}

fn store_blocks(
    store: &BlockStore,
    blocks: impl IntoIterator<Item = (cid::Cid, impl AsRef<[u8]>)>,
) {
    for (cid, bytes) in blocks {
        store.put_blocking(&cid, bytes.as_ref()).expect("put");
    }
}

#[test]
fn directories_get_the_reference_cids() {
    for &(n, cid, tsize) in DIRECTORIES {
        let (entries, _) = directory_entries(n);
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
    let (entries, files) = directory_entries(20000);
    store_blocks(&store, files);
    let (link, blocks) = encode_directory(&entries).expect("encode");
    store_blocks(&store, blocks);

    let read = read_directory(&store, &link.cid).await.expect("read");
    assert_eq!(read, entries);
    for name in ["entry-00000", "entry-12345", "entry-19999"] {
        let found = lookup(&store, &link.cid, name).await.expect("lookup");
        assert_eq!(found, entries.get(name).copied(), "{name}");
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
    let (entries, files) = directory_entries(5000);
    store_blocks(&store, files);
    let cid_of_entries = |n: usize| DIRECTORIES.iter().find(|d| d.0 == n).map(|d| d.1);

    // Grow a directory inside a tree from 4500 entries past the threshold...
    let (basic, _) = directory_entries(4500);
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
