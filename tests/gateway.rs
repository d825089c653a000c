//! The trustless gateway over real HTTP on loopback: raw blocks, CARs for each `dag-scope`
//! (parsed with the CAR reader, which checks every block against its CID, and compared with
//! the DAG's depth-first order), path traversal through a HAMT-sharded directory,
//! `entity-bytes`, `dups`, `/ipns/` records, HEAD, and the 400/404/406/504 answers.

#[path = "common/bytes.rs"]
mod bytes_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use bytes_support::pseudo_random;
use cid::Cid;
use ipns_registry::car::CarReader;
use ipns_registry::http::gateway::{Gateway, NameRecords};
use ipns_registry::http::{serve, HttpApi};
use ipns_registry::names::{IpnsName, IpnsRecord};
use ipns_registry::registry::{Registry, RegistryOptions, Stores};
use ipns_registry::store::BlockStore;
use ipns_registry::tree::{
    encode_directory, lookup, BlockSource, FileImporter, Link, PbNode, TreeError, CHUNK_SIZE,
    DAG_PB,
};
use libp2p::identity::Keypair;
use reqwest::{Response, StatusCode};
use tokio::net::TcpListener;

const RAW: &str = "application/vnd.ipld.raw";
const CAR: &str = "application/vnd.ipld.car";
const RECORD: &str = "application/vnd.ipfs.ipns-record";
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// Entries of the sharded directory: enough that a basic directory block would pass 256 KiB.
const SHARDED_ENTRIES: usize = 6000;

/// Records held by the test "node".
struct Records(HashMap<IpnsName, IpnsRecord>);

impl NameRecords for Records {
    fn newest(&self, name: &IpnsName) -> Option<IpnsRecord> {
        self.0.get(name).cloned()
    }
}

/// The local store as a source that "peers" cannot complete: hidden blocks are missing, as
/// when no peer provides them within the fetch timeout.
struct Hiding {
    store: Arc<BlockStore>,
    hidden: Mutex<HashSet<Cid>>,
}

#[async_trait]
impl BlockSource for Hiding {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        if self.hidden.lock().unwrap().contains(cid) {
            return Err(TreeError::BlockMissing(*cid));
        }
        self.store.block(cid).await
    }
}

/// Blocks from a CAR: what a client holds after a response, to check it can walk the path.
struct CarBlocks(HashMap<Cid, Bytes>);

#[async_trait]
impl BlockSource for CarBlocks {
    async fn block(&self, cid: &Cid) -> Result<Bytes, TreeError> {
        self.0
            .get(cid)
            .cloned()
            .ok_or(TreeError::BlockMissing(*cid))
    }
}

/// The content served: a root directory holding files and directories of every kind.
struct Content {
    root: Cid,
    /// 2.5 MiB of pseudo-random bytes: a dag-pb root with three raw leaves.
    big: Cid,
    big_bytes: Vec<u8>,
    /// A one-block file (a raw block).
    small: Cid,
    small_bytes: Vec<u8>,
    /// 2 MiB of zeros: two links to the same leaf.
    zeros: Cid,
    /// A HAMT-sharded directory of `entry-00000`…
    sharded: Cid,
    /// What every entry of the sharded directory points to.
    entry: Cid,
    /// A basic directory holding `nested.txt`.
    dir: Cid,
}

struct Server {
    _tmp: tempfile::TempDir,
    base: String,
    client: reqwest::Client,
    store: Arc<BlockStore>,
    hiding: Arc<Hiding>,
    content: Content,
    name: IpnsName,
    record: IpnsRecord,
}

fn import(store: &BlockStore, data: &[u8]) -> Link {
    let mut file = FileImporter::new(store);
    file.write(data).expect("import");
    file.finish().expect("import").0
}

fn put_dir(store: &BlockStore, entries: &BTreeMap<String, Link>) -> Link {
    let (link, blocks) = encode_directory(entries).expect("directory");
    for (cid, bytes) in blocks {
        store.put_blocking(&cid, &bytes).expect("put");
    }
    link
}

fn build_content(store: &BlockStore) -> Content {
    let big_bytes = pseudo_random(CHUNK_SIZE * 5 / 2, 7);
    let small_bytes = b"hello, trustless gateway\n".to_vec();
    let big = import(store, &big_bytes);
    let small = import(store, &small_bytes);
    let zeros = import(store, &vec![0u8; CHUNK_SIZE * 2]);
    let entry = import(store, b"an entry\n");
    let sharded = put_dir(
        store,
        &(0..SHARDED_ENTRIES)
            .map(|i| (format!("entry-{i:05}"), entry))
            .collect(),
    );
    let nested = import(store, b"nested\n");
    let dir = put_dir(store, &BTreeMap::from([("nested.txt".to_owned(), nested)]));
    let root = put_dir(
        store,
        &BTreeMap::from([
            ("big.bin".to_owned(), big),
            ("small.txt".to_owned(), small),
            ("zeros.bin".to_owned(), zeros),
            ("sharded".to_owned(), sharded),
            ("dir".to_owned(), dir),
        ]),
    );
    Content {
        root: root.cid,
        big: big.cid,
        big_bytes,
        small: small.cid,
        small_bytes,
        zeros: zeros.cid,
        sharded: sharded.cid,
        entry: entry.cid,
        dir: dir.cid,
    }
}

impl Server {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let stores = Stores::open(tmp.path()).expect("stores");
        let store = stores.blocks.clone();
        let content = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || build_content(&store))
                .await
                .expect("content")
        };
        let keypair = Keypair::generate_ed25519();
        let name = IpnsName::from_public_key(&keypair.public());
        let record = IpnsRecord::sign(
            &keypair,
            &format!("/ipfs/{}", content.root),
            1,
            Duration::from_secs(3600),
            Duration::from_secs(300),
        )
        .expect("record");
        let registry = Registry::new(
            &stores,
            tmp.path(),
            RegistryOptions::default(),
            store.clone(),
        )
        .await
        .expect("registry");
        let hiding = Arc::new(Hiding {
            store: store.clone(),
            hidden: Mutex::new(HashSet::new()),
        });
        let records = Arc::new(Records(HashMap::from([(name, record.clone())])));
        let gateway = Gateway::new(store.clone(), records).fetching_through(hiding.clone());
        let api = Arc::new(HttpApi::new(Arc::new(registry)).with_gateway(Arc::new(gateway)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(serve(listener, api, std::future::pending()));
        Server {
            _tmp: tmp,
            base,
            client: reqwest::Client::new(),
            store,
            hiding,
            content,
            name,
            record,
        }
    }

    async fn get(&self, path: &str, accept: Option<&str>) -> Response {
        self.request(reqwest::Method::GET, path, accept).await
    }

    async fn request(&self, method: reqwest::Method, path: &str, accept: Option<&str>) -> Response {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(accept) = accept {
            req = req.header("Accept", accept);
        }
        req.send().await.expect("request")
    }

    /// GETs a CAR and reads it with the CAR reader (every block checked against its CID).
    async fn car(&self, path: &str) -> (Response, Vec<Cid>, Vec<(Cid, Bytes)>) {
        let resp = self.get(path, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("CAR body");
        let mut reader = CarReader::new(&body[..]).expect("CAR header");
        let roots = reader.roots().to_vec();
        let mut blocks = Vec::new();
        while let Some((cid, data)) = reader.next_block().expect("CAR section") {
            blocks.push((cid, Bytes::from(data)));
        }
        // The headers, on a response with no body left to read.
        let mut fake = http::Response::new(Vec::<u8>::new());
        *fake.headers_mut() = headers;
        (Response::from(fake), roots, blocks)
    }

    /// The blocks of the DAG at `cid`, depth-first, pre-order, links in order, each once
    /// (unless `duplicates`): the order the spec asks of `dag-scope=all`.
    async fn dfs(&self, cid: Cid, duplicates: bool) -> Vec<Cid> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![cid];
        while let Some(cid) = stack.pop() {
            if !seen.insert(cid) && !duplicates {
                continue;
            }
            out.push(cid);
            if cid.codec() == DAG_PB {
                let block = self.store.block(&cid).await.expect("block");
                let node = PbNode::decode(&block).expect("dag-pb");
                stack.extend(node.links.iter().rev().map(|l| l.cid));
            }
        }
        out
    }

    async fn links(&self, cid: &Cid) -> Vec<Cid> {
        let block = self.store.block(cid).await.expect("block");
        PbNode::decode(&block)
            .expect("dag-pb")
            .links
            .iter()
            .map(|l| l.cid)
            .collect()
    }
}

fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("header text")
        .to_owned()
}

fn cids(blocks: &[(Cid, Bytes)]) -> Vec<Cid> {
    blocks.iter().map(|(c, _)| *c).collect()
}

async fn assert_status(resp: Response, status: StatusCode, code: &str) {
    assert_eq!(resp.status(), status);
    let body: serde_json::Value = resp.json().await.expect("error JSON");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
}

#[tokio::test]
async fn raw_blocks_by_format_and_accept_and_head() {
    let s = Server::start().await;
    let small = s.content.small;
    for (path, accept) in [
        (format!("/ipfs/{small}?format=raw"), None),
        (format!("/ipfs/{small}"), Some(RAW)),
    ] {
        let resp = s.get(&path, accept).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "content-type"), RAW);
        assert_eq!(header(&resp, "cache-control"), IMMUTABLE);
        assert_eq!(header(&resp, "x-ipfs-path"), format!("/ipfs/{small}"));
        assert_eq!(header(&resp, "x-ipfs-roots"), small.to_string());
        assert_eq!(
            header(&resp, "content-length"),
            s.content.small_bytes.len().to_string()
        );
        assert_eq!(resp.bytes().await.unwrap(), s.content.small_bytes);
    }
    // A dag-pb block comes as its bytes, not as the file it starts.
    let resp = s
        .get(&format!("/ipfs/{}?format=raw", s.content.big), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let block = resp.bytes().await.unwrap();
    assert_eq!(block, s.store.block(&s.content.big).await.unwrap());

    let head = s
        .request(reqwest::Method::HEAD, &format!("/ipfs/{small}"), Some(RAW))
        .await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "content-type"), RAW);
    assert_eq!(
        header(&head, "content-length"),
        s.content.small_bytes.len().to_string()
    );
    assert!(head.bytes().await.unwrap().is_empty());

    // The spec's probe: the empty identity CID is always there.
    let resp = s.get("/ipfs/bafkqaaa?format=raw", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn car_of_everything_is_depth_first_without_duplicates() {
    let s = Server::start().await;
    let root = s.content.root;
    let (resp, roots, blocks) = s.car(&format!("/ipfs/{root}?format=car")).await;
    assert_eq!(
        header(&resp, "content-type"),
        "application/vnd.ipld.car; version=1; order=dfs; dups=n"
    );
    assert_eq!(header(&resp, "cache-control"), IMMUTABLE);
    assert_eq!(header(&resp, "x-ipfs-roots"), root.to_string());
    assert_eq!(roots, vec![root]);
    assert_eq!(cids(&blocks), s.dfs(root, false).await);
    let distinct: HashSet<_> = cids(&blocks).into_iter().collect();
    assert_eq!(distinct.len(), blocks.len(), "dups=n sends each block once");
}

#[tokio::test]
async fn duplicates_only_when_asked_for() {
    let s = Server::start().await;
    let zeros = s.content.zeros;
    let leaves = s.links(&zeros).await;
    assert_eq!(leaves.len(), 2);
    assert_eq!(leaves[0], leaves[1], "two identical chunks");
    let (_, _, once) = s.car(&format!("/ipfs/{zeros}?format=car")).await;
    assert_eq!(cids(&once), vec![zeros, leaves[0]]);

    let resp = s
        .get(
            &format!("/ipfs/{zeros}"),
            Some("application/vnd.ipld.car; version=1; order=dfs; dups=y"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "content-type"),
        "application/vnd.ipld.car; version=1; order=dfs; dups=y"
    );
    let body = resp.bytes().await.unwrap();
    let mut reader = CarReader::new(&body[..]).unwrap();
    let mut twice = Vec::new();
    while let Some((cid, _)) = reader.next_block().unwrap() {
        twice.push(cid);
    }
    assert_eq!(twice, vec![zeros, leaves[0], leaves[1]]);
    assert_eq!(twice, s.dfs(zeros, true).await);
}

#[tokio::test]
async fn scopes_of_a_file_and_a_directory_behind_a_path() {
    let s = Server::start().await;
    let (root, big, dir) = (s.content.root, s.content.big, s.content.dir);
    let leaves = s.links(&big).await;
    assert_eq!(leaves.len(), 3);

    let (resp, roots, blocks) = s
        .car(&format!("/ipfs/{root}/big.bin?format=car&dag-scope=entity"))
        .await;
    assert_eq!(roots, vec![root], "the CAR's root is the path's root");
    assert_eq!(header(&resp, "x-ipfs-roots"), format!("{root},{big}"));
    assert_eq!(
        header(&resp, "x-ipfs-path"),
        format!("/ipfs/{root}/big.bin")
    );
    let mut expected = vec![root, big];
    expected.extend(&leaves);
    assert_eq!(
        cids(&blocks),
        expected,
        "the path's blocks, then the whole file"
    );

    let (_, _, blocks) = s
        .car(&format!("/ipfs/{root}/big.bin?format=car&dag-scope=block"))
        .await;
    assert_eq!(cids(&blocks), vec![root, big]);

    // A directory's entity is its own node, not its children.
    let (_, _, blocks) = s
        .car(&format!("/ipfs/{root}/dir?format=car&dag-scope=entity"))
        .await;
    assert_eq!(cids(&blocks), vec![root, dir]);
    let (_, _, blocks) = s
        .car(&format!("/ipfs/{root}/dir?format=car&dag-scope=all"))
        .await;
    let mut expected = vec![root];
    expected.extend(s.dfs(dir, false).await);
    assert_eq!(cids(&blocks), expected);
}

#[tokio::test]
async fn paths_through_a_hamt_sharded_directory_are_verifiable() {
    let s = Server::start().await;
    let (root, sharded, entry) = (s.content.root, s.content.sharded, s.content.entry);
    let block = s.store.block(&sharded).await.unwrap();
    assert_eq!(
        ipns_registry::tree::EntityKind::of(&sharded, &block).unwrap(),
        ipns_registry::tree::EntityKind::ShardedDirectory,
        "the directory is HAMT-sharded"
    );

    let path = format!("/ipfs/{root}/sharded/entry-01234?format=car&dag-scope=block");
    let (resp, roots, blocks) = s.car(&path).await;
    assert_eq!(roots, vec![root]);
    assert_eq!(
        header(&resp, "x-ipfs-roots"),
        format!("{root},{sharded},{entry}")
    );
    assert_eq!(blocks[0].0, root);
    assert_eq!(blocks[1].0, sharded);
    assert_eq!(blocks.last().unwrap().0, entry);
    assert!(
        blocks.len() > 3,
        "the HAMT's inner shard on the way is included"
    );
    // A client holding only the CAR's blocks can walk the path itself.
    let held = CarBlocks(blocks.iter().cloned().collect());
    let found = lookup(&held, &root, "sharded").await.unwrap().unwrap();
    assert_eq!(found.cid, sharded);
    let found = lookup(&held, &sharded, "entry-01234")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.cid, entry);

    // The entity of a sharded directory is its shards: every one, and no entry.
    let (_, _, blocks) = s
        .car(&format!("/ipfs/{sharded}?format=car&dag-scope=entity"))
        .await;
    assert!(blocks.iter().all(|(c, _)| c.codec() == DAG_PB));
    assert!(!cids(&blocks).contains(&entry));
    let all = s.dfs(sharded, false).await;
    let shards: Vec<Cid> = all.into_iter().filter(|c| *c != entry).collect();
    assert_eq!(cids(&blocks), shards);
}

#[tokio::test]
async fn entity_bytes_sends_the_blocks_of_the_range() {
    let s = Server::start().await;
    let big = s.content.big;
    let leaves = s.links(&big).await;
    let size = s.content.big_bytes.len();
    let chunk = CHUNK_SIZE;
    for (range, expected) in [
        ("0:0".to_owned(), vec![leaves[0]]),
        (format!("{chunk}:{chunk}"), vec![leaves[1]]),
        (
            format!("{}:{}", chunk - 1, chunk),
            vec![leaves[0], leaves[1]],
        ),
        ("-10:*".to_owned(), vec![leaves[2]]),
        (format!("0:-{}", size - chunk + 1), vec![leaves[0]]),
        ("0:*".to_owned(), leaves.clone()),
        (format!("{}:{}", 2 * chunk, size * 2), vec![leaves[2]]),
    ] {
        let (_, _, blocks) = s
            .car(&format!("/ipfs/{big}?format=car&entity-bytes={range}"))
            .await;
        let mut want = vec![big];
        want.extend(expected);
        assert_eq!(cids(&blocks), want, "entity-bytes={range}");
        // The blocks hold the bytes asked for.
        let data: Vec<u8> = blocks[1..].iter().flat_map(|(_, b)| b.to_vec()).collect();
        assert!(s.content.big_bytes.windows(data.len()).any(|w| w == data));
    }
    let resp = s
        .get(&format!("/ipfs/{big}?format=car&entity-bytes=5:3"), None)
        .await;
    assert_status(resp, StatusCode::BAD_REQUEST, "BAD_REQUEST").await;
    let resp = s
        .get(
            &format!("/ipfs/{big}?format=car&entity-bytes={}:*", size),
            None,
        )
        .await;
    assert_status(resp, StatusCode::BAD_REQUEST, "BAD_REQUEST").await;
}

#[tokio::test]
async fn bad_requests_missing_paths_and_unserved_formats() {
    let s = Server::start().await;
    let root = s.content.root;
    for path in [
        "/ipfs/not-a-cid?format=raw".to_owned(),
        "/ipfs/?format=raw".to_owned(),
        "/ipns/not-a-name?format=ipns-record".to_owned(),
        format!("/ipfs/{root}?format=car&dag-scope=most"),
        format!("/ipfs/{root}?format=car&entity-bytes=x"),
        format!("/ipfs/{root}/small.txt?format=raw"),
        format!("/ipfs/{root}?format=zip"),
        format!("/ipfs/{root}"),
        format!("/ipfs/{root}?format=car&car-version=1&car-dups=maybe"),
    ] {
        let resp = s.get(&path, None).await;
        assert_status(resp, StatusCode::BAD_REQUEST, "BAD_REQUEST").await;
    }
    let resp = s
        .get(&format!("/ipfs/{root}/no-such-file?format=car"), None)
        .await;
    assert_status(resp, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    let resp = s
        .get(&format!("/ipfs/{root}/small.txt/below?format=car"), None)
        .await;
    assert_status(resp, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    let stranger = IpnsName::from_public_key(&Keypair::generate_ed25519().public());
    let resp = s.get(&format!("/ipns/{stranger}"), Some(RECORD)).await;
    assert_status(resp, StatusCode::NOT_FOUND, "NOT_FOUND").await;

    for accept in ["text/html", "application/vnd.ipld.car; version=2"] {
        let resp = s.get(&format!("/ipfs/{root}"), Some(accept)).await;
        assert_status(resp, StatusCode::NOT_ACCEPTABLE, "NOT_ACCEPTABLE").await;
    }
    let resp = s.get(&format!("/ipfs/{root}?format=tar"), None).await;
    assert_status(resp, StatusCode::NOT_ACCEPTABLE, "NOT_ACCEPTABLE").await;

    let post = s
        .client
        .post(format!("{}/ipfs/{root}?format=raw", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    let head = s
        .request(
            reqwest::Method::HEAD,
            &format!("/ipfs/{root}/nope"),
            Some(CAR),
        )
        .await;
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn blocks_no_peer_provides_are_a_504_or_a_broken_car() {
    let s = Server::start().await;
    let (root, big) = (s.content.root, s.content.big);
    s.hiding.lock_hide(big);
    let resp = s.get(&format!("/ipfs/{big}?format=raw"), None).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(resp.headers().contains_key("retry-after"));
    assert_status(resp, StatusCode::GATEWAY_TIMEOUT, "UNAVAILABLE").await;
    let resp = s
        .get(&format!("/ipfs/{root}/big.bin?format=car"), None)
        .await;
    assert_status(resp, StatusCode::GATEWAY_TIMEOUT, "UNAVAILABLE").await;

    // A block missing mid-stream: the answer has begun, so the transfer breaks rather than
    // end in a CAR that looks complete.
    s.hiding.hidden.lock().unwrap().clear();
    let leaves = s.links(&big).await;
    s.hiding.lock_hide(leaves[2]);
    let resp = s.get(&format!("/ipfs/{big}?format=car"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let complete = match resp.bytes().await {
        Err(_) => false,
        Ok(body) => {
            let mut reader = CarReader::new(&body[..]).unwrap();
            let mut n = 0;
            while let Ok(Some(_)) = reader.next_block() {
                n += 1;
            }
            n == 4
        }
    };
    assert!(!complete, "a CAR missing a block must not look complete");
}

impl Hiding {
    fn lock_hide(&self, cid: Cid) {
        self.hidden.lock().unwrap().insert(cid);
    }
}

#[tokio::test]
async fn ipns_records_and_content_behind_them() {
    let s = Server::start().await;
    let name = s.name;
    let resp = s.get(&format!("/ipns/{name}"), Some(RECORD)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), RECORD);
    assert_eq!(header(&resp, "x-ipfs-path"), format!("/ipns/{name}"));
    assert_eq!(header(&resp, "cache-control"), "public, max-age=300");
    let body = resp.bytes().await.unwrap();
    assert_eq!(body, s.record.to_bytes());
    let record = IpnsRecord::validate(&name, &body, std::time::SystemTime::now()).unwrap();
    assert_eq!(record.root().unwrap(), s.content.root);

    let resp = s
        .get(&format!("/ipns/{name}?format=ipns-record"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let head = s
        .request(
            reqwest::Method::HEAD,
            &format!("/ipns/{name}"),
            Some(RECORD),
        )
        .await;
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.bytes().await.unwrap().is_empty());

    // Content through the name: the TTL's cache time, not immutable.
    let (resp, roots, blocks) = s.car(&format!("/ipns/{name}/small.txt?format=car")).await;
    assert_eq!(header(&resp, "cache-control"), "public, max-age=300");
    assert_eq!(roots, vec![s.content.root]);
    assert_eq!(cids(&blocks), vec![s.content.root, s.content.small]);
    assert_eq!(blocks[1].1, s.content.small_bytes);
}
