//! Publishing the own root: signing IPNS records with a sequence number that never goes back,
//! and noticing a second writer that signs with the same key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use cid::Cid;
use libp2p::identity::Keypair;

use super::{IpnsName, IpnsRecord, RecordError};
use crate::store::{MetaStore, StoreError};

const STORE_KEY: &str = "self";
/// The meta store note holding a second writer seen: it outlives restarts until an operator
/// takes the name over explicitly.
const CONFLICT_NOTE: &str = "self/conflict";

/// Errors of publishing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Another writer publishes under this node's name: this node stopped publishing.
    #[error("another writer publishes under {name}: {detail}")]
    Conflict {
        /// The name.
        name: IpnsName,
        /// What was seen.
        detail: String,
    },
    /// Signing failed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Persisting failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signs and remembers the own records.
pub struct Publisher {
    keypair: Keypair,
    name: IpnsName,
    meta: MetaStore,
    lifetime: Duration,
    ttl: Duration,
    current: RwLock<Option<IpnsRecord>>,
    /// The highest sequence seen for the own name from earlier runs (a restored backup).
    floor: RwLock<u64>,
    conflict: RwLock<Option<String>>,
    /// Until the network has been asked for the own name's newest record, records seen for it
    /// raise the floor instead of counting as a second writer.
    starting: AtomicBool,
}

impl Publisher {
    /// A publisher for `keypair`'s name, continuing from the record persisted in `meta`.
    pub fn load(
        keypair: Keypair,
        meta: MetaStore,
        lifetime: Duration,
        ttl: Duration,
    ) -> Result<Self, PublishError> {
        let name = IpnsName::from_peer_id(keypair.public().to_peer_id());
        let current = match meta.record(STORE_KEY)? {
            Some(bytes) => Some(IpnsRecord::verify(&name, &bytes)?),
            None => None,
        };
        let conflict = meta
            .note(CONFLICT_NOTE)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        Ok(Publisher {
            keypair,
            name,
            meta,
            lifetime,
            ttl,
            current: RwLock::new(current),
            floor: RwLock::new(0),
            conflict: RwLock::new(conflict),
            starting: AtomicBool::new(true),
        })
    }

    /// The own name.
    pub fn name(&self) -> &IpnsName {
        &self.name
    }

    /// The newest own record.
    pub fn current(&self) -> Option<IpnsRecord> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forgets a second writer seen before (persisted), so that this node publishes again:
    /// its next record goes above the newest one its peers hold, which makes it the writer of
    /// the name again. Returns what was forgotten. Meant for start-up, on an operator's word.
    pub async fn take_over(&self) -> Result<Option<String>, PublishError> {
        let forgotten = self.conflict();
        if forgotten.is_some() {
            self.meta.remove_note(CONFLICT_NOTE).await?;
            *self.conflict.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
        Ok(forgotten)
    }

    /// Why publishing stopped, if it did (in this run or an earlier one).
    pub fn conflict(&self) -> Option<String> {
        self.conflict
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Signs a record for `root` with the next sequence number, persisted before it is returned.
    pub async fn publish_root(&self, root: &Cid) -> Result<IpnsRecord, PublishError> {
        if let Some(detail) = self.conflict() {
            return Err(PublishError::Conflict {
                name: self.name,
                detail,
            });
        }
        let last = self.current().map_or(0, |r| r.sequence());
        let floor = *self.floor.read().unwrap_or_else(|p| p.into_inner());
        let sequence = last.max(floor) + 1;
        let record = IpnsRecord::sign(
            &self.keypair,
            &format!("/ipfs/{root}"),
            sequence,
            self.lifetime,
            self.ttl,
        )?;
        self.meta.put_record(STORE_KEY, record.to_bytes()).await?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(record.clone());
        Ok(record)
    }

    /// Whether the current record should be renewed (less than half its lifetime left).
    pub fn needs_renewal(&self) -> bool {
        match self.current() {
            None => true,
            Some(r) => r
                .validity()
                .duration_since(SystemTime::now())
                .map_or(true, |left| left < self.lifetime / 2),
        }
    }

    /// Takes note of a record for the own name found on the network before publishing starts
    /// (a data directory restored from backup lags behind what it published): the next
    /// sequence number goes above it.
    pub fn adopt_floor(&self, bytes: &[u8]) {
        // The node's own newest record comes back from its own DHT store (it serves it from
        // the start): that is no sign of lagging behind.
        if self.current().is_some_and(|c| c.to_bytes() == bytes) {
            return;
        }
        if let Ok(record) = IpnsRecord::validate(&self.name, bytes, SystemTime::now()) {
            let mut floor = self.floor.write().unwrap_or_else(|p| p.into_inner());
            *floor = (*floor).max(record.sequence());
        }
    }

    /// Ends the start-up phase: from now on, records of the own name that this node did not
    /// sign are a second writer.
    pub fn end_startup(&self) {
        self.starting.store(false, Ordering::SeqCst);
    }

    /// Whether peers hold a record of the own name at or above the own sequence (a data
    /// directory restored from a backup): the next record must go above it.
    pub fn behind_network(&self) -> bool {
        let floor = *self.floor.read().unwrap_or_else(|p| p.into_inner());
        floor > 0 && floor >= self.current().map_or(0, |r| r.sequence())
    }

    /// Checks a record for the own name received while publishing. A valid one this node did
    /// not sign, at or above its own sequence, means a second writer: publishing stops, and
    /// the conflict is persisted so that a restart does not quietly resume.
    /// Returns whether a conflict is (now) recorded.
    pub async fn observe(&self, bytes: &[u8]) -> bool {
        if self.starting.load(Ordering::SeqCst) {
            self.adopt_floor(bytes);
            return false;
        }
        let Ok(record) = IpnsRecord::verify(&self.name, bytes) else {
            return self.conflict().is_some();
        };
        let current = self.current();
        let ours = current
            .as_ref()
            .is_some_and(|c| c.to_bytes() == record.to_bytes());
        let older = current
            .as_ref()
            .is_some_and(|c| record.sequence() < c.sequence());
        if !ours && !older && self.conflict().is_none() {
            let detail = format!(
                "a record with sequence {} naming {} that this node did not sign, seen at {}",
                record.sequence(),
                record.value(),
                super::rfc3339::format(SystemTime::now())
                    .unwrap_or_else(|_| "an unknown time".into())
            );
            tracing::error!(name = %self.name, %detail, "second writer detected: publishing stopped");
            *self.conflict.write().unwrap_or_else(|p| p.into_inner()) = Some(detail.clone());
            if let Err(e) = self.meta.put_note(CONFLICT_NOTE, detail.as_bytes()).await {
                tracing::error!(error = %e, "the second writer could not be recorded on disk: a restart would forget it");
            }
        }
        self.conflict().is_some()
    }
}
