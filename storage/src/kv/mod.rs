//! The namespaced key-value model: commands, their deterministic application, and reads.
//!
//! Layout (all in [`crate::engine`] column families):
//! - record: `0x01 seg(namespace) seg(database) seg(table) seg(key)` -> `FORMAT_V1 ++ Record`;
//! - expiry index: `expires_at_ms (u64 BE) ++ record key` -> mod revision (u64 BE);
//! - catalog: `seg(namespace) seg(database) seg(table)` -> live key count (u64 BE);
//! - history: `revision (u64 BE)` -> `FORMAT_V1 ++ RevisionEvents`.

mod command;
mod record;
mod state;

pub use command::*;
pub use record::{Event, EventKind, Record, RevisionEvents};
pub use state::{
    record_key, HistoryPage, KvState, ListPage, ListQuery, StateTxn, HISTORY_RETAIN_REVISIONS,
    MAX_SCAN_PER_PAGE,
};

/// Leading byte of every key-value record key, so that other subsystems can share a keyspace.
pub const SUBSYSTEM_KV: u8 = 0x01;
