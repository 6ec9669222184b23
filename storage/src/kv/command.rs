//! Commands that change the key-value state, and their outcomes. These travel inside Raft log
//! entries, so their encoding is part of the on-disk format: add variants at the end only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a key lives: namespace, then database and table inside it. Names are validated at the
/// edge; the key encoding keeps them apart whatever they contain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub namespace: String,
    pub database: String,
    pub table: String,
}

impl Scope {
    pub fn new(namespace: &str, database: &str, table: &str) -> Self {
        Self {
            namespace: namespace.into(),
            database: database.into(),
            table: table.into(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// Relative to the command's time.
    TtlMs(u64),
    /// Absolute, in milliseconds since the Unix epoch.
    AtMs(u64),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Put {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub metadata: BTreeMap<String, String>,
    pub expiry: Expiry,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// The key's mod revision must equal this; 0 means the key must be absent.
    ModRevision(u64),
    /// The key must be absent (reported as AlreadyExists otherwise).
    Absent,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Value(Vec<u8>),
    ModRevision(u64),
    Version(u64),
    Exists(bool),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Put(Put),
    Delete { key: Vec<u8>, prefix: bool },
    Get { key: Vec<u8> },
}

/// A key scheduled for removal by TTL, identified by its storage key and the mod revision the
/// leader saw: a record written again since then is left alone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExpireKey {
    pub storage_key: Vec<u8>,
    pub mod_revision: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum KvCommand {
    Put {
        scope: Scope,
        put: Put,
        precondition: Precondition,
    },
    Delete {
        scope: Scope,
        key: Vec<u8>,
        prefix: bool,
        precondition: Precondition,
    },
    Txn {
        scope: Scope,
        compares: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    Expire {
        keys: Vec<ExpireKey>,
    },
    /// One step of a prefix delete: removes the first `limit` records (live or expired) under
    /// `prefix`, in key order, and says whether any remain. The edge repeats it until none do,
    /// so a prefix of any size costs entries of bounded size, and other writes run between
    /// them.
    DeletePrefix {
        scope: Scope,
        prefix: Vec<u8>,
        limit: u32,
    },
}

/// Records one [`KvCommand::DeletePrefix`] step removes at most.
pub const PREFIX_DELETE_STEP: u32 = 1_000;

/// Records a prefix delete inside a transaction may find (a transaction is one atomic step, so
/// it cannot be split); over this the transaction changes nothing and fails
/// ([`KvFailure::TooManyKeys`]).
pub const MAX_TXN_PREFIX_DELETE: u64 = 10_000;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResult {
    Put { version: u64 },
    Delete { deleted: u64 },
    Get { record: Option<crate::kv::Record> },
}

/// Why a conditional command changed nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum KvFailure {
    /// `actual` is 0 when the key is absent.
    ModRevisionMismatch {
        expected: u64,
        actual: u64,
    },
    AlreadyExists {
        mod_revision: u64,
    },
    /// A prefix delete inside a transaction found more than `limit` records.
    TooManyKeys {
        limit: u64,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum KvResponse {
    Put {
        revision: u64,
        version: u64,
    },
    Delete {
        revision: u64,
        deleted: u64,
    },
    Txn {
        revision: u64,
        succeeded: bool,
        results: Vec<TxnOpResult>,
    },
    Expire {
        revision: u64,
        expired: u64,
    },
    Failed(KvFailure),
    DeletePrefix {
        revision: u64,
        deleted: u64,
        /// Records remain under the prefix: run another step.
        more: bool,
    },
}
