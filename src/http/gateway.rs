//! The trustless gateway (<https://specs.ipfs.tech/http-gateways/trustless-gateway/>) on the
//! API's port: `/ipfs/<cid>[/<path>]` as one raw block or a CAR of the path and the DAG at its
//! end, `/ipns/<name>` as the newest signed record held. Only verifiable answers: a client
//! checks every byte against the CIDs it asked for, so it need not trust this node.
//!
//! Blocks come through the same [`BlockSource`] the registry reads (the node's hands it one
//! that fetches from peers); records through [`NameRecords`]. Nothing here knows of peers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cid::Cid;
use futures_util::stream;
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::response::{builder, empty, full, header_value, Body};
use super::route::GatewayPath;
use crate::car;
use crate::names::{IpnsName, IpnsRecord};
use crate::tree::{
    select_blocks, walk_path, BlockSource, EntityBytes, EntityKind, PathOutcome, Scope, Selection,
    TreeError, WalkedPath, DAG_PB,
};

/// Media type of one raw block.
pub const RAW_BLOCK: &str = "application/vnd.ipld.raw";
/// Media type of a CAR stream.
pub const CAR: &str = "application/vnd.ipld.car";
/// Media type of a signed IPNS record.
pub const IPNS_RECORD: &str = "application/vnd.ipfs.ipns-record";
/// `Cache-Control` of everything under `/ipfs/`: it never changes.
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// What a 504 tells clients to wait before they try again.
const RETRY_AFTER_SECS: u64 = 10;
/// Multihash code of the identity "hash".
const IDENTITY: u64 = 0x00;

/// The records a node holds, as the gateway serves them.
pub trait NameRecords: Send + Sync {
    /// The newest valid record held for `name` (the node's own, or a followed name's).
    fn newest(&self, name: &IpnsName) -> Option<IpnsRecord>;
}

/// Why a gateway request fails.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed or asks for something the spec does not allow (400).
    #[error("{0}")]
    BadRequest(String),
    /// No response format the client accepts is served here (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// The content path leads nowhere, or no record is held for the name (404).
    #[error("{0}")]
    NotFound(String),
    /// A block could not be had: from peers within the fetch timeout (504), or, on a gateway
    /// serving only local blocks, at all (404).
    #[error("block {cid} is not available{}", if *.recursive { " from any peer in time" } else { " here" })]
    Unavailable {
        /// The block.
        cid: Cid,
        /// Whether the gateway asks peers for blocks it lacks.
        recursive: bool,
    },
    /// `Cache-Control: only-if-cached` and the root block is not held locally (412).
    #[error("block {0} is not held locally (only-if-cached)")]
    NotCached(Cid),
    /// Reading the DAG failed otherwise: malformed content (502) or the local store (500).
    #[error(transparent)]
    Tree(TreeError),
}

impl GatewayError {
    /// Seconds a client should wait before asking again, for answers that say "try later".
    pub fn retry_after(&self) -> Option<u64> {
        matches!(
            self,
            GatewayError::Unavailable {
                recursive: true,
                ..
            }
        )
        .then_some(RETRY_AFTER_SECS)
    }
}

/// A response format of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Raw,
    Car { duplicates: bool },
    IpnsRecord,
}

impl Format {
    fn query_value(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Car { .. } => "car",
            Format::IpnsRecord => "ipns-record",
        }
    }
}

/// The trustless gateway of one node.
pub struct Gateway {
    local: Arc<dyn BlockSource>,
    blocks: Arc<dyn BlockSource>,
    recursive: bool,
    records: Arc<dyn NameRecords>,
}

impl Gateway {
    /// A gateway serving the blocks of `local` (a missing block is a 404) and the records of
    /// `records`.
    pub fn new(local: Arc<dyn BlockSource>, records: Arc<dyn NameRecords>) -> Self {
        Gateway {
            blocks: local.clone(),
            local,
            recursive: false,
            records,
        }
    }

    /// Reads blocks through `blocks` (which may fetch from peers; a block it cannot get in
    /// time is a 504), keeping `local` for `Cache-Control: only-if-cached`.
    pub fn fetching_through(mut self, blocks: Arc<dyn BlockSource>) -> Self {
        self.blocks = blocks;
        self.recursive = true;
        self
    }

    /// Answers a GET or HEAD of `path`.
    pub async fn handle(
        &self,
        method: &Method,
        path: GatewayPath,
        query: &std::collections::HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, ApiError> {
        let head = *method == Method::HEAD;
        if !head && *method != Method::GET {
            return Err(ApiError::method_not_allowed(method, "GET, HEAD"));
        }
        let (format, from_accept) = negotiate(query, headers)?;
        let only_if_cached = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|d| d.trim().eq_ignore_ascii_case("only-if-cached"));
        let request = Request {
            path,
            format,
            from_accept,
            query,
            headers,
            head,
            only_if_cached,
        };
        match format {
            Format::IpnsRecord => self.record(&request),
            Format::Raw => self.raw(&request).await,
            Format::Car { duplicates } => self.car(&request, duplicates).await,
        }
        .map_err(ApiError::from)
    }

    fn record(&self, req: &Request<'_>) -> Result<Response<Body>, GatewayError> {
        let GatewayPath::Ipns { name, path } = &req.path else {
            return Err(GatewayError::BadRequest(
                "IPNS records are served for /ipns/<name> only".into(),
            ));
        };
        if !path.is_empty() {
            return Err(GatewayError::BadRequest(
                "an IPNS record request takes no path after the name".into(),
            ));
        }
        let record = self
            .records
            .newest(name)
            .ok_or_else(|| GatewayError::NotFound(format!("no record of {name} is held here")))?;
        let bytes = Bytes::copy_from_slice(record.to_bytes());
        let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&bytes)[..16]));
        let b = builder(StatusCode::OK)
            .header(header::CONTENT_TYPE, IPNS_RECORD)
            .header(header::CONTENT_LENGTH, bytes.len())
            .header(
                header::CONTENT_DISPOSITION,
                header_value(&format!("attachment; filename=\"{name}.ipns-record\"")),
            )
            .header(header::ETAG, header_value(&etag))
            .header("X-Ipfs-Path", header_value(&format!("/ipns/{name}")))
            .header("X-Content-Type-Options", "nosniff")
            .header(header::VARY, "Accept");
        let b = with_ttl(b, &record);
        let b = with_location(b, req);
        if not_modified(req.headers, &etag) {
            return b
                .status(StatusCode::NOT_MODIFIED)
                .body(empty())
                .map_err(http_error);
        }
        b.body(if req.head { empty() } else { full(bytes) })
            .map_err(http_error)
    }

    /// The root CID and path of a request, with the record a `/ipns/` path went through.
    fn content_root(
        &self,
        req: &Request<'_>,
    ) -> Result<(Cid, Vec<String>, Option<IpnsRecord>), GatewayError> {
        match &req.path {
            GatewayPath::Ipfs { cid, path } => Ok((*cid, path.clone(), None)),
            GatewayPath::Ipns { name, path } => {
                let record = self.records.newest(name).ok_or_else(|| {
                    GatewayError::NotFound(format!("no record of {name} is held here"))
                })?;
                let root = record.root().map_err(|e| {
                    GatewayError::NotFound(format!("the record of {name} names no CID: {e}"))
                })?;
                Ok((root, path.clone(), Some(record)))
            }
        }
    }

    async fn raw(&self, req: &Request<'_>) -> Result<Response<Body>, GatewayError> {
        let (cid, path, record) = self.content_root(req)?;
        if !path.is_empty() {
            return Err(GatewayError::BadRequest(
                "a raw block is served for /ipfs/<cid> only, without a path: ask for a CAR \
                 (format=car) to traverse a path"
                    .into(),
            ));
        }
        let etag = format!("\"{cid}.raw\"");
        let b = builder(StatusCode::OK)
            .header(header::CONTENT_TYPE, RAW_BLOCK)
            .header(
                header::CONTENT_DISPOSITION,
                header_value(&format!("attachment; filename=\"{cid}.bin\"")),
            )
            .header(header::ETAG, header_value(&etag))
            .header("X-Ipfs-Path", header_value(&req.display_path()))
            .header("X-Ipfs-Roots", header_value(&cid.to_string()))
            .header("X-Content-Type-Options", "nosniff")
            .header(header::VARY, "Accept");
        let b = with_caching(b, record.as_ref(), req);
        if record.is_none() && not_modified(req.headers, &etag) {
            return b
                .status(StatusCode::NOT_MODIFIED)
                .body(empty())
                .map_err(http_error);
        }
        let block = self.block(&cid, req.only_if_cached).await?;
        b.header(header::CONTENT_LENGTH, block.len())
            .body(if req.head { empty() } else { full(block) })
            .map_err(http_error)
    }

    async fn car(
        &self,
        req: &Request<'_>,
        duplicates: bool,
    ) -> Result<Response<Body>, GatewayError> {
        let (root, path, record) = self.content_root(req)?;
        let scope = match req.query.get("dag-scope").map(String::as_str) {
            None | Some("all") => Scope::All,
            Some("entity") => Scope::Entity,
            Some("block") => Scope::Block,
            Some(other) => {
                return Err(GatewayError::BadRequest(format!(
                    "dag-scope={other:?}: expected block, entity or all"
                )))
            }
        };
        let bytes = match req.query.get("entity-bytes") {
            None => None,
            Some(value) => Some(EntityBytes::parse(value).ok_or_else(|| {
                GatewayError::BadRequest(format!(
                    "entity-bytes={value:?}: expected from:to with integers (negative ones \
                     count from the end) and to either `*` or not before from"
                ))
            })?),
        };
        // entity-bytes implies dag-scope=entity.
        let scope = if bytes.is_some() {
            Scope::Entity
        } else {
            scope
        };
        if req.only_if_cached {
            self.block(&root, true).await?;
        }
        let walked = match walk_path(self.blocks.as_ref(), &root, &path)
            .await
            .map_err(|e| self.tree_error(e))?
        {
            PathOutcome::Found(walked) => walked,
            PathOutcome::Missing { index } => {
                return Err(GatewayError::NotFound(format!(
                    "{} has no {:?}: /{}",
                    req.display_root(),
                    path[index],
                    path[..=index].join("/")
                )))
            }
        };
        let terminus = walked.terminus();
        let first = self.block(&terminus, false).await?;
        let kind = EntityKind::of(&terminus, &first).map_err(|e| self.tree_error(e))?;
        let range = match (bytes, kind) {
            (Some(bytes), EntityKind::File { size }) => {
                if size > 0 && bytes.starts_past_end(size) {
                    return Err(GatewayError::BadRequest(format!(
                        "entity-bytes starts at {} but the file has {size} bytes",
                        bytes.from
                    )));
                }
                Some(bytes.resolve(size))
            }
            _ => None,
        };
        let mut etag_input = format!("{}|{}|{duplicates}", path.join("/"), scope.as_str());
        if let Some(range) = &range {
            etag_input.push_str(&format!("|{}-{}", range.start, range.end));
        }
        let etag = format!(
            "\"{root}.car.{}\"",
            hex::encode(&Sha256::digest(etag_input.as_bytes())[..8])
        );
        let roots: Vec<String> = walked.roots.iter().map(Cid::to_string).collect();
        let b = builder(StatusCode::OK)
            .header(
                header::CONTENT_TYPE,
                format!(
                    "{CAR}; version=1; order=dfs; dups={}",
                    if duplicates { "y" } else { "n" }
                ),
            )
            .header(
                header::CONTENT_DISPOSITION,
                header_value(&format!("attachment; filename=\"{root}.car\"")),
            )
            .header(header::ETAG, header_value(&etag))
            .header("X-Ipfs-Path", header_value(&req.display_path()))
            .header("X-Ipfs-Roots", header_value(&roots.join(",")))
            .header("X-Content-Type-Options", "nosniff")
            .header(header::ACCEPT_RANGES, "none")
            .header(header::VARY, "Accept");
        let b = with_caching(b, record.as_ref(), req);
        if record.is_none() && not_modified(req.headers, &etag) {
            return b
                .status(StatusCode::NOT_MODIFIED)
                .body(empty())
                .map_err(http_error);
        }
        if req.head {
            return b.body(empty()).map_err(http_error);
        }
        let selection = Selection {
            scope,
            bytes: range,
            duplicates,
        };
        let body = self.stream_car(root, walked, first, kind, selection);
        b.body(body).map_err(http_error)
    }

    /// The CAR body: header, the path's blocks, then the selected DAG, streamed as blocks are
    /// read. A block that cannot be had mid-stream ends the body with an error, so the client
    /// sees a broken transfer rather than a CAR that merely looks complete.
    fn stream_car(
        &self,
        root: Cid,
        walked: WalkedPath,
        first: Bytes,
        kind: EntityKind,
        selection: Selection,
    ) -> Body {
        let (frames, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        let source = self.blocks.clone();
        let terminus = walked.terminus();
        tokio::spawn(async move {
            if frames
                .send(Ok(Bytes::from(car::encode_header(&[root]))))
                .await
                .is_err()
            {
                return;
            }
            let mut sent = HashSet::new();
            for (cid, block) in walked.blocks {
                let fresh = sent.insert(cid);
                if cid.hash().code() == IDENTITY || (!fresh && !selection.duplicates) {
                    continue;
                }
                if !send_section(&frames, &cid, block).await {
                    return;
                }
            }
            let (tx, mut blocks) = mpsc::channel::<(Cid, Bytes)>(4);
            let walk = select_blocks(source, terminus, first, kind, &selection, sent, tx);
            let forward = async {
                while let Some((cid, block)) = blocks.recv().await {
                    if !send_section(&frames, &cid, block).await {
                        return;
                    }
                }
            };
            let (result, ()) = tokio::join!(walk, forward);
            if let Err(e) = result {
                tracing::warn!(%root, error = %e, "CAR response cut short");
                let _ = frames.send(Err(std::io::Error::other(e.to_string()))).await;
            }
        });
        let stream = stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame.map(Frame::data), rx))
        });
        StreamBody::new(stream).boxed()
    }

    /// A block through the gateway's source (only the local store if `local_only`).
    async fn block(&self, cid: &Cid, local_only: bool) -> Result<Bytes, GatewayError> {
        if cid.hash().code() == IDENTITY {
            // The identity "hash" is the block itself (`bafkqaaa`, the empty one, is the
            // spec's probe).
            return Ok(Bytes::copy_from_slice(cid.hash().digest()));
        }
        let lookup = normalize(cid);
        let result = if local_only {
            self.local.block(&lookup).await
        } else {
            self.blocks.block(&lookup).await
        };
        result.map_err(|e| match e {
            TreeError::BlockMissing(_) if local_only => GatewayError::NotCached(*cid),
            e => self.tree_error(e),
        })
    }

    fn tree_error(&self, e: TreeError) -> GatewayError {
        match e {
            TreeError::BlockMissing(cid) => GatewayError::Unavailable {
                cid,
                recursive: self.recursive,
            },
            e => GatewayError::Tree(e),
        }
    }
}

/// One request, parsed.
struct Request<'a> {
    path: GatewayPath,
    format: Format,
    /// The format came from `Accept`, not from `format=`.
    from_accept: bool,
    query: &'a std::collections::HashMap<String, String>,
    headers: &'a HeaderMap,
    head: bool,
    only_if_cached: bool,
}

impl Request<'_> {
    /// The content path as requested (`X-Ipfs-Path`).
    fn display_path(&self) -> String {
        let mut out = self.display_root();
        for segment in self.segments() {
            out.push('/');
            out.push_str(segment);
        }
        out
    }

    /// The path segments after the CID or name.
    fn segments(&self) -> &[String] {
        match &self.path {
            GatewayPath::Ipfs { path, .. } | GatewayPath::Ipns { path, .. } => path,
        }
    }

    fn display_root(&self) -> String {
        match &self.path {
            GatewayPath::Ipfs { cid, .. } => format!("/ipfs/{cid}"),
            GatewayPath::Ipns { name, .. } => format!("/ipns/{name}"),
        }
    }
}

/// Blocks are stored under CIDv1: a CIDv0 names the same dag-pb block.
fn normalize(cid: &Cid) -> Cid {
    if cid.version() == cid::Version::V0 {
        Cid::new_v1(DAG_PB, *cid.hash())
    } else {
        *cid
    }
}

async fn send_section(
    frames: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    cid: &Cid,
    block: Bytes,
) -> bool {
    let prefix = Bytes::from(car::section_prefix(cid, block.len()));
    frames.send(Ok(prefix)).await.is_ok() && frames.send(Ok(block)).await.is_ok()
}

/// The caching headers of an answer: `Cache-Control` (immutable for `/ipfs/`, the record's
/// TTL for `/ipns/`) and `Content-Location`.
fn with_caching(
    b: http::response::Builder,
    record: Option<&IpnsRecord>,
    req: &Request<'_>,
) -> http::response::Builder {
    let b = match record {
        Some(record) => with_ttl(b, record),
        None => b.header(header::CACHE_CONTROL, IMMUTABLE),
    };
    with_location(b, req)
}

/// `Cache-Control` for content reached through a record: its TTL, never beyond its validity.
fn with_ttl(b: http::response::Builder, record: &IpnsRecord) -> http::response::Builder {
    let left = record
        .validity()
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let max_age = record.ttl().min(left).as_secs();
    b.header(header::CACHE_CONTROL, format!("public, max-age={max_age}"))
}

/// `Content-Location` with `format=` when the format was negotiated by `Accept` alone, so
/// that HTTP caches keep the formats apart.
fn with_location(b: http::response::Builder, req: &Request<'_>) -> http::response::Builder {
    if !req.from_accept {
        return b;
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in req.query {
        query.append_pair(key, value);
    }
    query.append_pair("format", req.format.query_value());
    let mut path = req.display_root();
    for segment in req.segments() {
        path.push('/');
        path.push_str(&form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>());
    }
    b.header(
        header::CONTENT_LOCATION,
        header_value(&format!("{path}?{}", query.finish())),
    )
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        })
}

fn http_error(e: http::Error) -> GatewayError {
    GatewayError::Tree(TreeError::Decode(format!("building the response: {e}")))
}

/// One media range of an `Accept` header: type, parameters and quality.
struct MediaRange<'a> {
    essence: String,
    params: Vec<(String, &'a str)>,
    quality: f32,
}

fn media_ranges(accept: &str) -> Vec<MediaRange<'_>> {
    accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let essence = parts.next()?.trim().to_ascii_lowercase();
            if essence.is_empty() {
                return None;
            }
            let mut params = Vec::new();
            let mut quality = 1.0;
            for param in parts {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                let key = key.trim().to_ascii_lowercase();
                let value = value.trim().trim_matches('"');
                if key == "q" {
                    quality = value.parse().unwrap_or(0.0);
                } else {
                    params.push((key, value));
                }
            }
            Some(MediaRange {
                essence,
                params,
                quality,
            })
        })
        .collect()
}

/// The CAR variant asked for by `Accept` parameters and the `car-*` query parameters (which
/// win): version 1, order `dfs` or `unk` (always answered in `dfs`), dups `y` or `n` (default).
fn car_variant(
    params: &[(String, &str)],
    query: &std::collections::HashMap<String, String>,
) -> Result<Format, String> {
    let param = |key: &str| {
        query
            .get(&format!("car-{key}"))
            .map(String::as_str)
            .or_else(|| params.iter().find(|(k, _)| k == key).map(|(_, v)| *v))
    };
    if let Some(version) = param("version") {
        if version != "1" {
            return Err(format!("CAR version {version} is not served (only 1)"));
        }
    }
    if let Some(order) = param("order") {
        if order != "dfs" && order != "unk" {
            return Err(format!("CAR order {order:?} is not served (only dfs)"));
        }
    }
    let duplicates = match param("dups") {
        None | Some("n") => false,
        Some("y") => true,
        Some(other) => return Err(format!("CAR dups={other:?}: expected y or n")),
    };
    Ok(Format::Car { duplicates })
}

/// Picks the response format from `format=` (which wins) or `Accept`. Returns it and whether
/// it came from `Accept`.
fn negotiate(
    query: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Format, bool), GatewayError> {
    let supported = "this gateway serves only verifiable responses: application/vnd.ipld.raw \
                     (format=raw), application/vnd.ipld.car (format=car) and \
                     application/vnd.ipfs.ipns-record (format=ipns-record)";
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let ranges = media_ranges(&accept);
    if let Some(format) = query.get("format") {
        return match format.as_str() {
            "raw" => Ok((Format::Raw, false)),
            "ipns-record" => Ok((Format::IpnsRecord, false)),
            "car" => {
                let params = ranges
                    .iter()
                    .find(|r| r.essence == CAR)
                    .map(|r| r.params.clone())
                    .unwrap_or_default();
                car_variant(&params, query)
                    .map(|f| (f, false))
                    .map_err(GatewayError::BadRequest)
            }
            "tar" | "dag-json" | "dag-cbor" | "json" | "cbor" => Err(GatewayError::NotAcceptable(
                format!("format={format} is not served: {supported}"),
            )),
            other => Err(GatewayError::BadRequest(format!(
                "format={other:?} is unknown: {supported}"
            ))),
        };
    }
    let mut best: Option<(f32, Result<Format, String>)> = None;
    for range in &ranges {
        if range.quality <= 0.0 {
            continue;
        }
        let candidate = match range.essence.as_str() {
            RAW_BLOCK => Ok(Format::Raw),
            IPNS_RECORD => Ok(Format::IpnsRecord),
            CAR => car_variant(&range.params, query),
            _ => continue,
        };
        // A variant we serve beats any we do not; among those alike, the higher quality wins.
        let better = match &best {
            None => true,
            Some((q, current)) => match (current.is_ok(), candidate.is_ok()) {
                (false, true) => true,
                (true, false) => false,
                _ => range.quality > *q,
            },
        };
        if better {
            best = Some((range.quality, candidate));
        }
    }
    match best {
        Some((_, Ok(format))) => Ok((format, true)),
        Some((_, Err(why))) => Err(GatewayError::NotAcceptable(why)),
        None if ranges.iter().all(|r| r.essence == "*/*") => Err(GatewayError::BadRequest(
            format!("no response format asked for: {supported}"),
        )),
        None => Err(GatewayError::NotAcceptable(format!(
            "none of the accepted types ({accept}) is served: {supported}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(format: Option<&str>, accept: Option<&str>) -> Result<Format, StatusCode> {
        let mut query = std::collections::HashMap::new();
        if let Some(f) = format {
            query.insert("format".to_owned(), f.to_owned());
        }
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(header::ACCEPT, a.parse().unwrap());
        }
        negotiate(&query, &headers)
            .map(|(f, _)| f)
            .map_err(|e| ApiError::from(e).status)
    }

    #[test]
    fn negotiation() {
        assert_eq!(pick(Some("raw"), None), Ok(Format::Raw));
        assert_eq!(pick(Some("raw"), Some(CAR)), Ok(Format::Raw), "format wins");
        assert_eq!(pick(None, Some(RAW_BLOCK)), Ok(Format::Raw));
        assert_eq!(
            pick(
                None,
                Some("application/vnd.ipld.car; version=1; order=dfs; dups=y")
            ),
            Ok(Format::Car { duplicates: true })
        );
        assert_eq!(
            pick(Some("car"), None),
            Ok(Format::Car { duplicates: false })
        );
        assert_eq!(
            pick(None, Some("application/vnd.ipld.car;order=foo, application/vnd.ipld.car;order=dfs;dups=y;q=0.5")),
            Ok(Format::Car { duplicates: true }),
            "an unserved variant falls back to the next preference"
        );
        assert_eq!(pick(None, Some(IPNS_RECORD)), Ok(Format::IpnsRecord));
        assert_eq!(
            pick(None, Some("text/html, application/vnd.ipld.raw;q=0.9")),
            Ok(Format::Raw)
        );
        assert_eq!(pick(None, None), Err(StatusCode::BAD_REQUEST));
        assert_eq!(pick(None, Some("*/*")), Err(StatusCode::BAD_REQUEST));
        assert_eq!(
            pick(None, Some("text/html")),
            Err(StatusCode::NOT_ACCEPTABLE)
        );
        assert_eq!(
            pick(None, Some("application/vnd.ipld.car; version=2")),
            Err(StatusCode::NOT_ACCEPTABLE)
        );
        assert_eq!(pick(Some("tar"), None), Err(StatusCode::NOT_ACCEPTABLE));
        assert_eq!(pick(Some("zip"), None), Err(StatusCode::BAD_REQUEST));
    }
}
