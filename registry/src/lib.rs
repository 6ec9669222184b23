//! The service registry and dynamic config, replicated through the same log as everything else.
//!
//! Owns: how a [`RegistryCommand`] changes registry and config state (deterministically, from
//! the state and the log index), how that state is read, and the history watchers replay.
//!
//! Must not: know about Raft, the network, gRPC, encryption keys or a clock. Node liveness is
//! the leader's business: it keeps leases in memory and proposes [`RegistryCommand::Expire`]
//! for nodes it has not heard from within their TTL; apply only checks that the node it
//! removes is still the version the leader judged. Secret config values arrive here already
//! encrypted (as [`json::SECRET_MARKER`] objects) and are stored as they are.

mod command;
pub mod json;
mod record;
mod state;

pub use command::*;
pub use record::{ConfigRecord, NodeRecord, VersionRecord};
pub use state::{
    node_key, HistoryPage, LeaseRow, RegistryState, ServicePage, ServiceView, LIST_NODES_MAX,
};
