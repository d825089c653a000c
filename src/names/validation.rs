//! Judging a record that arrived from the network under a routing key: the one place where the
//! DHT stores (WAN and LAN), gossip relaying, libp2p fetch (what it serves and what it takes)
//! and following agree on what is true.
//!
//! A record is worth keeping and passing on only if its key is an IPNS name (`/ipns/<multihash>`;
//! no other namespace is accepted), it is a valid record of that name (signature by the name's
//! key, not expired) and it is not older than any record already held for the name. Being older
//! or expired is not a fault of whoever sent it (replicas keep relaying what they hold); being
//! invalid is.

use std::time::SystemTime;

use super::{IpnsName, IpnsRecord, NameError, RecordError};

/// What a record received for a routing key is worth.
#[derive(Debug)]
pub enum RecordJudgement {
    /// Valid and at least as new as every record held: keep it, pass it on.
    Valid(Box<IpnsRecord>),
    /// Signed by the name's key, but expired or older than a record held: not news, and no
    /// fault of the sender.
    Stale(StaleRecord),
    /// Not a valid record for this key: the sender is at fault.
    Invalid(InvalidRecord),
}

/// Why a genuine record is not news.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaleRecord {
    /// Its validity has passed.
    #[error("record expired at {validity}")]
    Expired {
        /// The record's validity.
        validity: String,
    },
    /// A record with a higher sequence (or the same sequence and a later validity) is held.
    #[error("record with sequence {sequence} is older than the held one (sequence {held})")]
    Older {
        /// The record's sequence.
        sequence: u64,
        /// The held record's sequence.
        held: u64,
    },
}

/// Why a record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    /// The key is not `/ipns/` followed by a peer id multihash.
    #[error("not an IPNS routing key: {0}")]
    Key(NameError),
    /// The record is not valid for the name.
    #[error(transparent)]
    Record(#[from] RecordError),
}

// Written out rather than `#[from]`, which would also make the inner error the `source`: its
// text is already in the message, and error-chain printers (anyhow's `{:#}`) would repeat it.
impl From<NameError> for InvalidRecord {
    fn from(e: NameError) -> Self {
        InvalidRecord::Key(e)
    }
}

/// The name a routing key stands for, if it is one records can exist under at all: `/ipns/`
/// and a peer id multihash (fetch answers `ERROR` for anything else).
pub fn check_routing_key(routing_key: &[u8]) -> Result<IpnsName, InvalidRecord> {
    Ok(IpnsName::from_routing_key(routing_key)?)
}

/// Judges `bytes`, received under `routing_key`, as of `now`, against the records already held
/// for that key (from any source: the DHT store, the followed name, the own name). Held
/// records that no longer verify are disregarded.
pub fn judge_record<'a>(
    routing_key: &[u8],
    bytes: &[u8],
    held: impl IntoIterator<Item = &'a [u8]>,
    now: SystemTime,
) -> RecordJudgement {
    let name = match check_routing_key(routing_key) {
        Ok(name) => name,
        Err(e) => return RecordJudgement::Invalid(e),
    };
    let record = match IpnsRecord::validate(&name, bytes, now) {
        Ok(record) => record,
        Err(RecordError::Expired { validity }) => {
            return RecordJudgement::Stale(StaleRecord::Expired { validity })
        }
        Err(e) => return RecordJudgement::Invalid(e.into()),
    };
    for held in held {
        let Ok(held) = IpnsRecord::verify(&name, held) else {
            continue;
        };
        if !at_least_as_new(&record, &held) {
            return RecordJudgement::Stale(StaleRecord::Older {
                sequence: record.sequence(),
                held: held.sequence(),
            });
        }
    }
    RecordJudgement::Valid(Box::new(record))
}

/// Whether `record` may replace `held`, as boxo's IPNS validator selects between two: the higher
/// sequence wins, then the later validity; the very same record is as new as itself.
fn at_least_as_new(record: &IpnsRecord, held: &IpnsRecord) -> bool {
    if record.sequence() != held.sequence() {
        return record.sequence() > held.sequence();
    }
    record.to_bytes() == held.to_bytes() || record.validity() > held.validity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;
    use std::time::Duration;

    fn record(keypair: &Keypair, sequence: u64, lifetime: Duration) -> Vec<u8> {
        IpnsRecord::sign(
            keypair,
            "/ipfs/bafkqaaa",
            sequence,
            lifetime,
            Duration::ZERO,
        )
        .unwrap()
        .to_bytes()
        .to_vec()
    }

    #[test]
    fn judges_key_signature_expiry_and_order() {
        let owner = Keypair::generate_ed25519();
        let name = IpnsName::from_public_key(&owner.public());
        let key = name.routing_key();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let v5 = record(&owner, 5, hour);
        let v6 = record(&owner, 6, hour);
        let none: [&[u8]; 0] = [];

        assert!(matches!(
            judge_record(&key, &v5, none, now),
            RecordJudgement::Valid(r) if r.sequence() == 5
        ));
        // Newer replaces, the same record is fine, older is stale.
        assert!(matches!(
            judge_record(&key, &v6, [v5.as_slice()], now),
            RecordJudgement::Valid(_)
        ));
        assert!(matches!(
            judge_record(&key, &v5, [v5.as_slice()], now),
            RecordJudgement::Valid(_)
        ));
        assert!(matches!(
            judge_record(&key, &v5, [v6.as_slice()], now),
            RecordJudgement::Stale(StaleRecord::Older {
                sequence: 5,
                held: 6
            })
        ));
        // Every held record counts; an unreadable one does not.
        assert!(matches!(
            judge_record(&key, &v5, [b"junk".as_slice(), v6.as_slice()], now),
            RecordJudgement::Stale(_)
        ));
        assert!(matches!(
            judge_record(&key, &v6, [b"junk".as_slice()], now),
            RecordJudgement::Valid(_)
        ));
        // Same sequence: the later validity wins.
        let v6_longer = record(&owner, 6, 2 * hour);
        assert!(matches!(
            judge_record(&key, &v6_longer, [v6.as_slice()], now),
            RecordJudgement::Valid(_)
        ));
        assert!(matches!(
            judge_record(&key, &v6, [v6_longer.as_slice()], now),
            RecordJudgement::Stale(_)
        ));
        // Expired: stale, not invalid.
        assert!(matches!(
            judge_record(&key, &v5, none, now + 2 * hour),
            RecordJudgement::Stale(StaleRecord::Expired { .. })
        ));

        // Signed by another key: invalid, whatever its sequence.
        let forger = Keypair::generate_ed25519();
        let forged = record(&forger, 1000, hour);
        assert!(matches!(
            judge_record(&key, &forged, [v5.as_slice()], now),
            RecordJudgement::Invalid(InvalidRecord::Record(_))
        ));
        // Garbage, and keys outside /ipns/.
        assert!(matches!(
            judge_record(&key, b"not a record", none, now),
            RecordJudgement::Invalid(_)
        ));
        let mut pk_key = b"/pk/".to_vec();
        pk_key.extend_from_slice(&name.peer_id().to_bytes());
        assert!(matches!(
            judge_record(&pk_key, &v5, none, now),
            RecordJudgement::Invalid(InvalidRecord::Key(_))
        ));
        assert!(matches!(
            judge_record(b"/ipns/not-a-multihash", &v5, none, now),
            RecordJudgement::Invalid(InvalidRecord::Key(_))
        ));
    }
}
