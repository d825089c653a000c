//! IPNS: keys, names and records (create, sign, validate, order). Pure logic, no networking:
//! `p2p` carries the bytes, this module decides what they mean.
//!
//! Follows the IPNS Record specification (<https://specs.ipfs.tech/ipns/ipns-record/>) and
//! produces records byte-identical to boxo/kubo's, so kubo and Helia nodes accept ours and ours
//! accept theirs.

mod data;
mod entry;
mod follow;
pub mod keys;
mod name;
mod publish;
mod record;
pub mod rfc3339;
mod validation;

pub use entry::ProtobufError;
pub use follow::{FollowError, FollowedName, Follower, HeldRecord, Offer};
pub use keys::KeyError;
pub use name::{IpnsName, NameError, IPNS_PREFIX, LIBP2P_KEY_CODEC};
pub use publish::{PublishError, Publisher};
pub use record::{IpnsRecord, RecordError, MAX_RECORD_SIZE};
pub use rfc3339::TimestampError;
pub use validation::{
    check_routing_key, judge_record, InvalidRecord, RecordJudgement, StaleRecord,
};
