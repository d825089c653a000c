//! ipns-registry: a peer-to-peer replicated OCI registry node over an IPFS UnixFS tree.
//!
//! Layers, each depending only on those below it: [`node`] wires [`http`] (the OCI API) to the
//! [`registry`] (blobs, manifests, tags, uploads), which works on the [`tree`] (an immutable
//! UnixFS DAG), which lives in the [`store`] (blocks on disk, metadata in sled).

pub mod admin;
pub mod car;
pub mod config;
pub mod http;
pub mod metrics;
pub mod names;
pub mod node;
pub mod p2p;
pub mod protobuf;
pub mod registry;
pub mod store;
pub mod tree;
