//! What the registry stores, and how. Every value starts with a format byte; the rest is
//! bincode (JSON documents are kept as text: bincode cannot carry `serde_json::Value`).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strata_storage::StorageError;

use crate::command::ServiceInfo;

const FORMAT_V1: u8 = 1;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    bincode::serialize_into(&mut out, value).expect("serialising into a Vec cannot fail");
    out
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => Ok(bincode::deserialize(rest)?),
        Some((format, _)) => Err(StorageError::Corrupt(format!(
            "registry record of unknown format {format}"
        ))),
        None => Err(StorageError::Corrupt("empty registry record".into())),
    }
}

/// A (service, version): its shared info and how many nodes it has.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VersionRecord {
    pub info: ServiceInfo,
    pub node_count: u64,
    pub create_revision: u64,
    /// The last revision that changed its info or its nodes.
    pub mod_revision: u64,
}

/// One node of a (service, version).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub address: String,
    pub metadata: BTreeMap<String, String>,
    pub ttl_ms: u64,
    pub create_revision: u64,
    pub mod_revision: u64,
}

/// A config document: a JSON object, as text.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConfigRecord {
    pub document: String,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}
