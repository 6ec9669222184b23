//! What nodes say to each other. Encoded with bincode inside a [`super::frame`]; the ALPN
//! protocol name is bumped when these change incompatibly.

use std::collections::BTreeMap;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::types::{Request, Response, TypeConfig};

#[derive(Serialize, Deserialize, Debug)]
pub enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Something only the leader can do, forwarded by a node that is not the leader. The
    /// receiver runs it only if it leads; it never forwards it further.
    Leader(LeaderOp),
    /// The receiver's own view of itself.
    Status,
    /// Whether the receiver's disk has room for writes that add data (its `--min-free-bytes`).
    DiskSpace,
}

#[derive(Serialize, Deserialize, Debug)]
pub enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Leader(Result<LeaderReply, LeaderError>),
    Status(NodeStatus),
    /// The request could not be decoded.
    Refused(String),
    /// `Err`: the receiver's disk is below its reserve (the message names it).
    DiskSpace(Result<(), String>),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum LeaderOp {
    /// Propose a command.
    Write(Request),
    /// Confirm leadership with a quorum and say which log index a linearizable read must wait
    /// for.
    ReadIndex,
    AddLearner {
        node_id: u64,
        peer_addr: String,
    },
    Promote {
        node_id: u64,
    },
    Remove {
        node_id: u64,
    },
    /// A registry registration: a keepalive when it would change nothing (the leader refreshes
    /// the nodes' leases, no log entry), else written like `Write`.
    Register(Request),
    /// Make the voters exactly these (joint consensus): completes or rolls back a change.
    SetVoters {
        node_ids: std::collections::BTreeSet<u64>,
    },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum LeaderReply {
    Written(Response),
    ReadIndex(u64),
    /// A membership change was committed at this log index.
    MembershipChanged(u64),
}

/// Why the leader did not do it. Every variant but `Fatal` and `Timeout` means the operation
/// certainly had no effect.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaderError {
    #[error("not the leader (leader: {leader_id:?})")]
    NotLeader { leader_id: Option<u64> },
    #[error("cannot reach a quorum: {0}")]
    NoQuorum(String),
    #[error("{0}")]
    Rejected(String),
    #[error("raft stopped: {0}")]
    Fatal(String),
    #[error("no outcome within {0} ms; the operation may or may not take effect")]
    Timeout(u64),
    /// Nothing was done: the leader's disk is below its free-space reserve.
    #[error("{0}")]
    DiskFull(String),
}

/// One node's view of itself, from its Raft metrics.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: u64,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub role: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub client_addr: String,
    pub peer_addr: String,
    /// On the leader: the last log index known replicated to each member.
    pub replication: BTreeMap<u64, u64>,
}
