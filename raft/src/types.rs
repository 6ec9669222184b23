//! The openraft type configuration and the replicated log payload.

use serde::{Deserialize, Serialize};
use strata_auth::{AuthCommand, AuthResponse};
use strata_registry::{RegistryCommand, RegistryResponse};
use strata_storage::kv::{KvCommand, KvResponse};
use strata_storage::quota::{Exceeded, QuotaCommand, QuotaResponse};
use strata_stream::{StreamCommand, StreamResponse};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
);

/// One log entry's payload: a command and the proposer's wall-clock time, which is the only
/// time the apply path ever sees (TTL, expiry), so that every replica computes the same state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub time_ms: u64,
    pub command: Command,
}

/// What a log entry asks the state machine to do. Part of the on-disk format: add variants at the
/// end only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Kv(KvCommand),
    Stream(StreamCommand),
    Registry(RegistryCommand),
    /// Commands proposed together by the write batcher, each with its own time; applied one
    /// by one, each at a revision of its own (see `state_machine::apply`). Never nested.
    Batch(Vec<Request>),
    /// Accounts, rules, tokens (never a plaintext secret: only hashes and digests).
    Auth(AuthCommand),
    /// Namespace limits.
    Quota(QuotaCommand),
}

impl Command {
    /// The subsystem the command belongs to (a span field, a log field).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Kv(_) => "kv",
            Command::Stream(_) => "stream",
            Command::Registry(_) => "registry",
            Command::Batch(_) => "batch",
            Command::Auth(_) => "auth",
            Command::Quota(_) => "quota",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Blank and membership entries.
    None,
    Kv(KvResponse),
    Stream(StreamResponse),
    Registry(RegistryResponse),
    /// One answer per command of a `Command::Batch`, in order.
    Batch(Vec<Response>),
    Auth(AuthResponse),
    Quota(QuotaResponse),
    /// The command would have taken a namespace past a limit; nothing of it was applied.
    QuotaExceeded(Exceeded),
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Command::Kv(command) => {
                let kind = match command {
                    KvCommand::Put { .. } => "put",
                    KvCommand::Delete { .. } => "delete",
                    KvCommand::Txn { .. } => "txn",
                    KvCommand::Expire { .. } => "expire",
                    KvCommand::DeletePrefix { .. } => "delete_prefix",
                };
                write!(f, "kv.{kind}@{}", self.time_ms)
            }
            Command::Stream(command) => write!(f, "stream.{}@{}", command.kind(), self.time_ms),
            Command::Registry(command) => {
                write!(f, "registry.{}@{}", command.kind(), self.time_ms)
            }
            Command::Batch(requests) => write!(f, "batch[{}]@{}", requests.len(), self.time_ms),
            Command::Auth(command) => write!(f, "auth.{}@{}", command.kind(), self.time_ms),
            Command::Quota(_) => write!(f, "quota.set_limits@{}", self.time_ms),
        }
    }
}
