//! Strata's storage layer: one RocksDB instance holding the replicated log and the state machine.
//!
//! Owns: the on-disk layout (column families, key encoding, record formats), the checksummed
//! log store, and the key-value model (how a command changes state, how reads are served).
//!
//! Must not: know about Raft, the network, gRPC or an async runtime. Apply functions are
//! synchronous and deterministic: they read no clock; time comes from the command.

pub mod engine;
pub mod integrity;
pub mod keys;
pub mod kv;
pub mod log;
pub mod quota;

pub use engine::{Engine, MAX_WAL_BYTES};
pub use log::LogStore;

/// Errors from the storage layer. `Corrupt` and `Rocks` are environmental: callers on the write
/// path must stop the node rather than continue with state that may be wrong.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt data on disk: {0}")]
    Corrupt(String),
    /// RocksDB found damage (a checksum, a record, a table) in the files under `dir`.
    #[error("the data in {dir} is damaged: {detail}{files}. Nothing was changed; see {guide}", guide = integrity::DAMAGE_GUIDE)]
    Damaged {
        dir: String,
        detail: String,
        files: String,
    },
    #[error("encoding: {0}")]
    Codec(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<bincode::Error> for StorageError {
    fn from(error: bincode::Error) -> Self {
        StorageError::Codec(error.to_string())
    }
}

impl From<prost::DecodeError> for StorageError {
    fn from(error: prost::DecodeError) -> Self {
        StorageError::Corrupt(format!("undecodable record: {error}"))
    }
}
