//! Following IPNS names: for each, the newest valid record seen and the root it names,
//! persisted so a replica serves after a restart with no network.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use cid::Cid;
use tokio::sync::watch;

use super::validation::{judge_record, InvalidRecord, RecordJudgement, StaleRecord};
use super::{IpnsName, IpnsRecord, RecordError};
use crate::config::Mirror;
use crate::store::{MetaStore, StoreError};

/// A name this node follows, with what to mirror of it.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowedName {
    /// The name.
    pub name: IpnsName,
    /// What to fetch ahead of requests.
    pub mirror: Mirror,
}

/// The record held for a followed name.
#[derive(Debug, Clone)]
pub struct HeldRecord {
    /// The newest valid record.
    pub record: IpnsRecord,
    /// The root it names.
    pub root: Cid,
    /// When this node accepted it (`None`: loaded from disk at start).
    pub accepted_at: Option<SystemTime>,
}

/// What became of a record offered to the follower.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// Newer than the one held: now in force.
    Accepted {
        /// The followed name.
        name: IpnsName,
        /// Its new root.
        root: Cid,
        /// Its sequence number.
        sequence: u64,
    },
    /// Valid, but not newer than the held one (equal sequence keeps the held one).
    Stale,
    /// Not for a name this node follows.
    NotFollowed,
}

/// Errors of following.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The record is invalid for the name (bad signature, expired, malformed...).
    #[error("record for {name} rejected: {error}")]
    Rejected {
        /// The name.
        name: IpnsName,
        /// Why.
        error: RecordError,
    },
    /// Persisting failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The followed names and their newest records.
pub struct Follower {
    names: Vec<FollowedName>,
    held: RwLock<HashMap<IpnsName, HeldRecord>>,
    meta: MetaStore,
    changed: watch::Sender<u64>,
}

fn store_key(name: &IpnsName) -> String {
    format!("follow/{name}")
}

impl Follower {
    /// Follows `names` (in lookup order), starting from the records persisted in `meta`.
    pub fn load(names: Vec<FollowedName>, meta: MetaStore) -> Result<Self, FollowError> {
        let mut held = HashMap::new();
        for followed in &names {
            let Some(bytes) = meta.record(&store_key(&followed.name))? else {
                continue;
            };
            // It was valid when accepted. Expiry is not checked again: an offline replica keeps
            // serving the last root it resolved; only a newer valid record replaces it.
            match IpnsRecord::verify(&followed.name, &bytes)
                .and_then(|r| r.root().map(|root| (r, root)))
            {
                Ok((record, root)) => {
                    held.insert(
                        followed.name,
                        HeldRecord {
                            record,
                            root,
                            accepted_at: None,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(name = %followed.name, error = %e, "dropping an unreadable stored record")
                }
            }
        }
        Ok(Follower {
            names,
            held: RwLock::new(held),
            meta,
            changed: watch::Sender::new(0),
        })
    }

    /// The followed names, in lookup order.
    pub fn names(&self) -> &[FollowedName] {
        &self.names
    }

    /// The followed name whose DHT key is `routing_key`.
    pub fn by_routing_key(&self, routing_key: &[u8]) -> Option<&FollowedName> {
        self.names
            .iter()
            .find(|f| f.name.routing_key() == routing_key)
    }

    /// Validates a record received for `routing_key` and keeps it if it is newer.
    pub async fn offer(&self, routing_key: &[u8], bytes: &[u8]) -> Result<Offer, FollowError> {
        let Some(followed) = self.by_routing_key(routing_key) else {
            return Ok(Offer::NotFollowed);
        };
        let name = followed.name;
        let rejected = |error| FollowError::Rejected { name, error };
        let held = self.held(&name);
        let held_bytes = held.as_ref().map(|h| h.record.to_bytes().to_vec());
        // Whether it is a record of the name at all: the one validation of `names`.
        let record =
            match judge_record(routing_key, bytes, held_bytes.as_deref(), SystemTime::now()) {
                RecordJudgement::Valid(record) => *record,
                RecordJudgement::Stale(StaleRecord::Older { .. }) => return Ok(Offer::Stale),
                RecordJudgement::Stale(StaleRecord::Expired { validity }) => {
                    return Err(rejected(RecordError::Expired { validity }))
                }
                RecordJudgement::Invalid(InvalidRecord::Record(e)) => return Err(rejected(e)),
                RecordJudgement::Invalid(InvalidRecord::Key(_)) => return Ok(Offer::NotFollowed),
            };
        let root = record.root().map_err(rejected)?;
        // The followed root moves only on a strictly higher sequence: two records of one
        // sequence cannot flip-flop it.
        if let Some(held) = &held {
            if !record.supersedes(&held.record) {
                return Ok(Offer::Stale);
            }
        }
        // Durable before it is served: a restart never goes back to an older root.
        self.meta.put_record(&store_key(&name), bytes).await?;
        let sequence = record.sequence();
        {
            let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
            // Re-check under the lock: two offers may race past the first check.
            if let Some(current) = held.get(&name) {
                if !record.supersedes(&current.record) {
                    return Ok(Offer::Stale);
                }
            }
            held.insert(
                name,
                HeldRecord {
                    record,
                    root,
                    accepted_at: Some(SystemTime::now()),
                },
            );
        }
        self.changed.send_modify(|n| *n += 1);
        Ok(Offer::Accepted {
            name,
            root,
            sequence,
        })
    }

    /// The record held for `name`.
    pub fn held(&self, name: &IpnsName) -> Option<HeldRecord> {
        self.held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The roots of the followed names that have one, in lookup order.
    pub fn roots(&self) -> Vec<Cid> {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        self.names
            .iter()
            .filter_map(|f| held.get(&f.name).map(|h| h.root))
            .collect()
    }

    /// The newest record held for `routing_key`, as bytes to hand to a peer.
    pub fn newest(&self, routing_key: &[u8]) -> Option<Vec<u8>> {
        let name = &self.by_routing_key(routing_key)?.name;
        self.held(name).map(|h| h.record.to_bytes().to_vec())
    }

    /// Every record held, as `(routing key, record)`.
    pub fn all(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        held.iter()
            .map(|(name, h)| (name.routing_key(), h.record.to_bytes().to_vec()))
            .collect()
    }

    /// Notified whenever a record is accepted.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Age of the held record of `name` (since accepted, or unknown if loaded at start).
    pub fn age(&self, name: &IpnsName) -> Option<Duration> {
        self.held(name)?
            .accepted_at
            .and_then(|t| SystemTime::now().duration_since(t).ok())
    }
}
