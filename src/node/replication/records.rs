//! The records a node holds (its own and the followed ones): what it serves to peers that ask,
//! and what records from the network are judged against.

use std::sync::Arc;
use std::time::SystemTime;

use crate::names::{check_routing_key, judge_record, Follower, Publisher, RecordJudgement};
use crate::p2p::{RecordSource, RecordValidator, RecordVerdict};

/// The records a node can hand to peers that ask (its own and those it follows), which are
/// also what records from the network are judged against.
pub struct HeldRecords {
    /// The own records (writers).
    pub publisher: Option<Arc<Publisher>>,
    /// The followed records.
    pub follower: Arc<Follower>,
}

impl RecordSource for HeldRecords {
    fn newest(&self, routing_key: &[u8]) -> Option<Vec<u8>> {
        if let Some(publisher) = &self.publisher {
            if publisher.name().routing_key() == routing_key {
                return publisher.current().map(|r| r.to_bytes().to_vec());
            }
        }
        self.follower.newest(routing_key)
    }

    fn all(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut all = self.follower.all();
        if let Some(publisher) = &self.publisher {
            if let Some(own) = publisher.current() {
                all.push((publisher.name().routing_key(), own.to_bytes().to_vec()));
            }
        }
        all
    }
}

/// A record from the network must be valid for its key and no older than what the DHT store,
/// the publisher or the follower holds for it.
impl RecordValidator for HeldRecords {
    fn validate(&self, routing_key: &[u8], record: &[u8], held: Option<&[u8]>) -> RecordVerdict {
        let own = self.newest(routing_key);
        let held = held.into_iter().chain(own.as_deref());
        match judge_record(routing_key, record, held, SystemTime::now()) {
            RecordJudgement::Valid(_) => RecordVerdict::Accept,
            RecordJudgement::Stale(why) => RecordVerdict::Ignore(why.to_string()),
            RecordJudgement::Invalid(why) => RecordVerdict::Reject(why.to_string()),
        }
    }

    fn check_key(&self, routing_key: &[u8]) -> Result<(), String> {
        check_routing_key(routing_key)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
