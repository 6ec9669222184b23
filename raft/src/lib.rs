//! openraft glue: the replicated command, the log store and state machine adapters over
//! `strata-storage`, and [`RaftNode`], the handle the server uses to write and read.
//!
//! Nodes talk to each other over QUIC with mutual TLS ([`network`]): Raft RPCs, and leader-only
//! operations (writes, read indexes, membership changes) forwarded by followers.
//!
//! Must not: know about gRPC or tonic.

// openraft's storage traits fix `StorageError<u64>` (over 200 bytes) as the error type of every
// method and helper here; boxing it would only move the conversion elsewhere.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod batcher;
pub mod clock;
pub mod disk;
pub mod failpoints;
pub mod leases;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
pub mod recovery;
pub mod rounds;
pub mod state_machine;
#[cfg(test)]
mod test_support;
pub mod types;

pub use network::message::NodeStatus;
pub use network::{tls, PeerTransport};
pub use node::{
    Bootstrap, MemberView, MembershipError, MembershipView, RaftNode, RaftNodeConfig, WriteError,
};
pub use rounds::RoundCounts;
pub use types::{Command, Request, Response, TypeConfig};
