//! Commands that change registry and config state, their outcomes and the events they emit.
//! These travel inside Raft log entries (and events live in history), so their encoding is part
//! of the on-disk format: add variants and fields at the end only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A recursive type description of an endpoint's request or response (Micro's `Value`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeInfo {
    pub name: String,
    pub type_name: String,
    pub values: Vec<TypeInfo>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub request: Option<TypeInfo>,
    pub response: Option<TypeInfo>,
    pub metadata: BTreeMap<String, String>,
}

/// What a (service, version) says of itself, shared by its nodes: the last registration wins.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    pub metadata: BTreeMap<String, String>,
    pub endpoints: Vec<Endpoint>,
}

/// One instance of a service version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub address: String,
    pub metadata: BTreeMap<String, String>,
}

/// A node scheduled for removal by its lease, identified by its storage key and the mod
/// revision the leader judged: a node registered again since then is left alone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExpireNode {
    pub key: Vec<u8>,
    pub mod_revision: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum RegistryCommand {
    /// Creates or updates (service, version) and merges `nodes` into it by id. Nodes and the
    /// service info that are already exactly so are left alone (no event, no new revision).
    Register {
        namespace: String,
        service: String,
        version: String,
        info: ServiceInfo,
        nodes: Vec<NodeInfo>,
        ttl_ms: u64,
        /// Most nodes the service (all versions together) may have afterwards; chosen by the
        /// proposer so that every replica judges alike.
        max_nodes: u64,
    },
    /// Removes the listed nodes of (service, version), or all of them when none is listed; the
    /// version goes with its last node.
    Deregister {
        namespace: String,
        service: String,
        version: String,
        node_ids: Vec<String>,
    },
    /// Nodes whose lease ran out by the leader's clock.
    Expire { nodes: Vec<ExpireNode> },
    /// Writes a JSON value (text) at a dotted path of a config document: an object is merged
    /// into an object there, anything else replaces what was there.
    ConfigSet {
        namespace: String,
        key: String,
        path: Vec<String>,
        value: String,
        /// Largest document afterwards, in bytes of JSON text.
        max_document_bytes: u64,
    },
    /// Removes the subtree at `path`, or the whole document when `path` is empty.
    ConfigDelete {
        namespace: String,
        key: String,
        path: Vec<String>,
    },
}

impl RegistryCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryCommand::Register { .. } => "register",
            RegistryCommand::Deregister { .. } => "deregister",
            RegistryCommand::Expire { .. } => "expire",
            RegistryCommand::ConfigSet { .. } => "config_set",
            RegistryCommand::ConfigDelete { .. } => "config_delete",
        }
    }
}

/// Why a command changed nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum RegistryFailure {
    /// The service would have more nodes than allowed.
    TooManyNodes {
        limit: u64,
        would_have: u64,
    },
    /// The path runs into something that is not an object (`at`: the dotted prefix).
    NotAnObject {
        at: String,
    },
    /// The document root must be a JSON object.
    RootNotObject,
    DocumentTooLarge {
        bytes: u64,
        limit: u64,
    },
    /// The stored document or value is not valid JSON (cannot happen through the API).
    InvalidJson(String),
}

impl std::fmt::Display for RegistryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryFailure::TooManyNodes { limit, would_have } => write!(
                f,
                "the service would have {would_have} nodes; the limit is {limit} \
                 (--registry-max-nodes)"
            ),
            RegistryFailure::NotAnObject { at } => {
                write!(f, "the path runs into a value that is not an object at {at:?}")
            }
            RegistryFailure::RootNotObject => {
                write!(f, "a config document must be a JSON object; set a path inside it")
            }
            RegistryFailure::DocumentTooLarge { bytes, limit } => write!(
                f,
                "the document would be {bytes} bytes; the limit is {limit} bytes (--max-value-bytes)"
            ),
            RegistryFailure::InvalidJson(reason) => write!(f, "invalid JSON: {reason}"),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum RegistryResponse {
    /// `revision` 0: nothing changed (an identical registration).
    Registered {
        revision: u64,
        created: u32,
        updated: u32,
    },
    Deregistered {
        revision: u64,
        removed: u32,
    },
    Expired {
        revision: u64,
        expired: u32,
    },
    ConfigSet {
        revision: u64,
    },
    /// `revision` 0: nothing was there.
    ConfigDeleted {
        revision: u64,
    },
    Failed(RegistryFailure),
}

impl RegistryResponse {
    /// The log index it changed state at (0 when it changed nothing).
    pub fn revision(&self) -> u64 {
        match self {
            RegistryResponse::Registered { revision, .. }
            | RegistryResponse::Deregistered { revision, .. }
            | RegistryResponse::Expired { revision, .. }
            | RegistryResponse::ConfigSet { revision }
            | RegistryResponse::ConfigDeleted { revision } => *revision,
            RegistryResponse::Failed(_) => 0,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    Update,
    Delete,
}

/// One node's change, with the service as it was (delete) or is (create, update).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    pub namespace: String,
    pub service: String,
    pub version: String,
    pub info: ServiceInfo,
    pub node: NodeInfo,
    pub ttl_ms: u64,
    pub change: Change,
    /// A delete because the node's lease ran out.
    pub expired: bool,
}

/// A config document's change: whole documents before and after (`None`: absent), JSON text
/// with secrets still encrypted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConfigEvent {
    pub namespace: String,
    pub key: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// A (service, version)'s own info (metadata, endpoints) changed; its nodes did not.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VersionEvent {
    pub namespace: String,
    pub service: String,
    pub version: String,
    pub info: ServiceInfo,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum RegistryEvent {
    Node(NodeEvent),
    Config(ConfigEvent),
    /// One event for the whole version however many nodes it has (added at the end: the
    /// encoding of history is on disk).
    Version(VersionEvent),
}

impl RegistryEvent {
    pub fn namespace(&self) -> &str {
        match self {
            RegistryEvent::Node(event) => &event.namespace,
            RegistryEvent::Config(event) => &event.namespace,
            RegistryEvent::Version(event) => &event.namespace,
        }
    }
}
