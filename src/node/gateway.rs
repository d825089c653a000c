//! The node's side of the trustless gateway: the records it serves on `/ipns/`, and the client
//! that takes blocks and records from other nodes' gateways (`--gateway URL`) for networks
//! where libp2p is blocked but HTTP passes.
//!
//! Nothing a gateway answers is trusted: a block is checked against its CID before it is kept
//! or used, and a record goes to the follower, which validates it like one from a peer.

use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use reqwest::{StatusCode, Url};

use super::replication::HeldRecords;
use super::NodeError;
use crate::car::verify_block;
use crate::http::gateway::{NameRecords, IPNS_RECORD, RAW_BLOCK};
use crate::names::{IpnsName, IpnsRecord};

/// Largest block taken from a gateway: Bitswap's 2 MiB convention, like the CAR reader's
/// bound, so a hostile gateway cannot make the node buffer much.
const MAX_BLOCK_BYTES: usize = 2 << 20;
/// Largest IPNS record taken from a gateway (the spec caps records at 10 KiB).
const MAX_RECORD_BYTES: usize = 10 << 10;

impl NameRecords for HeldRecords {
    fn newest(&self, name: &IpnsName) -> Option<IpnsRecord> {
        if let Some(publisher) = &self.publisher {
            if publisher.name() == name {
                return publisher.current();
            }
        }
        self.follower.held(name).map(|held| held.record)
    }
}

/// Other nodes' trustless gateways, asked in the configured order.
pub struct GatewayClient {
    http: reqwest::Client,
    urls: Vec<Url>,
}

impl GatewayClient {
    /// A client of the gateways at `urls` (`http://` or `https://`), each request bounded by
    /// `timeout`.
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self, NodeError> {
        let urls = urls
            .iter()
            .map(|u| {
                let url = Url::parse(u)
                    .map_err(|e| NodeError::Config(format!("gateway URL {u:?}: {e}")))?;
                if url.scheme() != "http" && url.scheme() != "https" {
                    return Err(NodeError::Config(format!(
                        "gateway URL {u:?}: only http:// and https:// are served"
                    )));
                }
                Ok(url)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| NodeError::Config(format!("gateway HTTP client: {e}")))?;
        Ok(GatewayClient { http, urls })
    }

    /// Whether any gateway is configured.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// `{base}/{path}`, keeping a path prefix the base URL may have.
    fn url(base: &Url, path: &str) -> String {
        format!("{}/{path}", base.as_str().trim_end_matches('/'))
    }

    /// The block `cid` from the first gateway that has it, checked against the CID.
    pub async fn block(&self, cid: &Cid) -> Option<Bytes> {
        for base in &self.urls {
            let url = Self::url(base, &format!("ipfs/{cid}?format=raw"));
            match self.fetch(&url, RAW_BLOCK, MAX_BLOCK_BYTES).await {
                Ok(Some(bytes)) => match verify_block(cid, &bytes) {
                    Ok(()) => return Some(bytes),
                    Err(e) => {
                        tracing::warn!(gateway = %base, %cid, error = %e, "gateway sent a block that is not the one asked for")
                    }
                },
                Ok(None) => {
                    tracing::debug!(gateway = %base, %cid, "gateway does not have the block")
                }
                Err(e) => {
                    tracing::debug!(gateway = %base, %cid, error = %e, "asking the gateway for a block failed")
                }
            }
        }
        None
    }

    /// The record of `name` each gateway holds, unchecked (the follower judges them).
    pub async fn records(&self, name: &IpnsName) -> Vec<Bytes> {
        let mut out = Vec::new();
        for base in &self.urls {
            let url = Self::url(base, &format!("ipns/{name}"));
            match self.fetch(&url, IPNS_RECORD, MAX_RECORD_BYTES).await {
                Ok(Some(bytes)) => out.push(bytes),
                Ok(None) => tracing::debug!(gateway = %base, %name, "gateway holds no record"),
                Err(e) => {
                    tracing::debug!(gateway = %base, %name, error = %e, "asking the gateway for a record failed")
                }
            }
        }
        out
    }

    /// GET `url` accepting `media_type`: the body if 200, `None` if the gateway says it lacks
    /// the content (404, 410, 504), an error otherwise or when the body exceeds `limit`.
    async fn fetch(
        &self,
        url: &str,
        media_type: &str,
        limit: usize,
    ) -> Result<Option<Bytes>, String> {
        let mut resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, media_type)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::GATEWAY_TIMEOUT => {
                return Ok(None)
            }
            status => return Err(format!("HTTP {status}")),
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > limit {
                return Err(format!("answer exceeds {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(body)))
    }
}
