//! openraft glue: the replicated command, the log store and state machine adapters over
//! `strata-storage`, and [`RaftNode`], the handle the server uses to write and read.
//!
//! Must not: know about gRPC or tonic. Peer networking (QUIC) is not built yet: a node can only
//! be a cluster of one, and [`network::NoPeers`] says so if openraft ever asks for a peer.

// openraft's storage traits fix `StorageError<u64>` (over 200 bytes) as the error type of every
// method and helper here; boxing it would only move the conversion elsewhere.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;
pub mod types;

pub use node::{RaftNode, RaftNodeConfig, WriteError};
pub use types::{Command, Request, Response, TypeConfig};
