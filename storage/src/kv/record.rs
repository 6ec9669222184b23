//! Persisted formats of records and history events: protobuf messages (prost), each stored
//! behind a format byte so that a later format can be told apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::StorageError;

pub(crate) const FORMAT_V1: u8 = 1;

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct Record {
    #[prost(bytes = "vec", tag = "1")]
    pub value: Vec<u8>,
    #[prost(btree_map = "string, string", tag = "2")]
    pub metadata: BTreeMap<String, String>,
    #[prost(uint64, tag = "3")]
    pub create_revision: u64,
    #[prost(uint64, tag = "4")]
    pub mod_revision: u64,
    #[prost(uint64, tag = "5")]
    pub version: u64,
    /// Milliseconds since the Unix epoch; 0 means never.
    #[prost(uint64, tag = "6")]
    pub expires_at_ms: u64,
}

impl Record {
    /// Whether the record is past its expiry at `now_ms` (and so invisible).
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum EventKind {
    Unspecified = 0,
    Put = 1,
    Delete = 2,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Event {
    #[prost(enumeration = "EventKind", tag = "1")]
    pub kind: i32,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub database: String,
    #[prost(string, tag = "4")]
    pub table: String,
    #[prost(bytes = "vec", tag = "5")]
    pub key: Vec<u8>,
    /// The new record of a put; absent for deletes.
    #[prost(message, optional, tag = "6")]
    pub record: Option<Record>,
    /// A delete done by TTL expiry.
    #[prost(bool, tag = "7")]
    pub expired: bool,
}

/// Every event of one revision, in the order they happened.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RevisionEvents {
    #[prost(uint64, tag = "1")]
    pub revision: u64,
    #[prost(message, repeated, tag = "2")]
    pub events: Vec<Event>,
}

pub(crate) fn encode<M: prost::Message>(message: &M) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.encoded_len() + 1);
    out.push(FORMAT_V1);
    message.encode(&mut out).expect("a Vec grows as needed");
    out
}

pub(crate) fn decode<M: prost::Message + Default>(stored: &[u8]) -> Result<M, StorageError> {
    match stored.split_first() {
        Some((&FORMAT_V1, body)) => Ok(M::decode(body)?),
        Some((format, _)) => Err(StorageError::Corrupt(format!(
            "unknown record format {format}"
        ))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}
