//! Offline recovery of a cluster that lost its quorum for good (etcd's `--force-new-cluster`):
//! one stopped node's data becomes a cluster of that node alone.
//!
//! [`force_new_cluster`] appends one membership entry, "the voters are this node", after the
//! node's last log entry, under a term above every term it has seen, and records an
//! (uncommitted) vote for itself in that term. On its next start openraft takes the newest
//! membership in the log as the one in force, so the node is the only voter: it elects itself
//! and commits everything its log holds, the new membership included. Nothing in its log is
//! dropped; whatever other members acknowledged and it never received is lost, so the node to
//! force is the one with the highest last log entry ([`inspect`] tells).
//!
//! Guarded: RocksDB's lock refuses a running node's directory, a damaged log is refused, and
//! the CLI asks for `--yes` after showing what it found.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::RaftLogStorage;
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader,
    StoredMembership, Vote,
};
use strata_storage::kv::KvState;
use strata_storage::{Engine, LogStore};

use crate::log_store::RaftLogStore;
use crate::node::OpenError;
use crate::types::TypeConfig;

/// What a stopped node's data directory holds, as recovery sees it.
#[derive(Debug, Clone)]
pub struct DataState {
    pub node_id: u64,
    /// The newest term this node voted in or saw.
    pub term: u64,
    pub last_log_index: u64,
    pub last_log_term: u64,
    pub applied_index: u64,
    /// The membership in force: the newest in the log, else the applied one.
    pub voter_sets: Vec<BTreeSet<u64>>,
    pub members: BTreeMap<u64, String>,
}

/// Reads what `dir` holds without changing what it holds (RocksDB's open still replays its
/// WAL). Fails if the node is running.
pub async fn inspect(dir: &Path) -> Result<DataState, OpenError> {
    Ok(open(dir).await?.state)
}

/// Makes the node whose data is in `dir` the only voter of a new cluster (see the module
/// notes). Its peer address stays the one recorded in the membership. Returns what it found.
pub async fn force_new_cluster(dir: &Path) -> Result<DataState, OpenError> {
    let opened = open(dir).await?;
    let state = &opened.state;
    let addr = state.members.get(&state.node_id).cloned().ok_or_else(|| {
        OpenError::Raft(format!(
            "node {} is not in the membership its data holds (it was removed, or never \
             added): it has no address to keep; start it empty with --join instead",
            state.node_id
        ))
    })?;
    let term = state.term.max(state.last_log_term) + 1;
    let entry = Entry::<TypeConfig> {
        log_id: LogId::new(
            CommittedLeaderId::new(term, state.node_id),
            state.last_log_index + 1,
        ),
        payload: EntryPayload::Membership(Membership::new(
            vec![BTreeSet::from([state.node_id])],
            BTreeMap::from([(state.node_id, BasicNode::new(addr))]),
        )),
    };
    let vote = Vote::new(term, state.node_id);
    let result = opened
        .log
        .write_outside_raft(&entry, &vote)
        .map_err(|e| OpenError::Raft(format!("writing the new membership: {e}")));
    let _ = opened.engine.quiesce();
    result?;
    tracing::warn!(
        node_id = state.node_id,
        term,
        log_index = entry.log_id.index,
        "forced a new one-voter cluster from this node's data"
    );
    Ok(opened.state.clone())
}

struct Opened {
    engine: Engine,
    log: RaftLogStore,
    state: DataState,
}

async fn open(dir: &Path) -> Result<Opened, OpenError> {
    let node_id = crate::node::read_node_id(dir)?.ok_or_else(|| {
        OpenError::Raft(format!(
            "{} holds no node's data (no node_id file)",
            dir.display()
        ))
    })?;
    let engine = Engine::open(&dir.join("db")).map_err(|e| {
        OpenError::Raft(format!(
            "opening {}: {e} (is the node still running? stop it first)",
            dir.display()
        ))
    })?;
    match read_state(&engine, node_id).await {
        Ok((log, state)) => Ok(Opened { engine, log, state }),
        Err(error) => {
            let _ = engine.quiesce();
            Err(error)
        }
    }
}

async fn read_state(engine: &Engine, node_id: u64) -> Result<(RaftLogStore, DataState), OpenError> {
    // Recovery from a damaged log would spread the damage: refuse it (see integrity).
    LogStore::new(engine.clone()).verify()?;
    let mut log = RaftLogStore::new(LogStore::new(engine.clone()));
    let storage = |e: openraft::StorageError<u64>| OpenError::Raft(e.to_string());
    let vote = log.read_vote().await.map_err(storage)?.unwrap_or_default();
    let log_state = log.get_log_state().await.map_err(storage)?;
    let (applied, applied_membership) =
        crate::state_machine::applied_in(&KvState::new(engine.clone())).map_err(storage)?;
    let membership = newest_membership(&mut log, &log_state, applied, applied_membership)
        .await
        .map_err(storage)?;
    let last = log_state.last_log_id;
    let state = DataState {
        node_id,
        term: vote.leader_id().term,
        last_log_index: last.map_or(0, |id| id.index),
        last_log_term: last.map_or(0, |id| id.leader_id.term),
        applied_index: applied.map_or(0, |id| id.index),
        voter_sets: membership.membership().get_joint_config().clone(),
        members: membership
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect(),
    };
    Ok((log, state))
}

/// The newest membership entry in the log after `applied`, else the applied membership: the
/// one openraft takes as in force at start.
async fn newest_membership(
    log: &mut RaftLogStore,
    log_state: &openraft::storage::LogState<TypeConfig>,
    applied: Option<LogId<u64>>,
    applied_membership: StoredMembership<u64, BasicNode>,
) -> Result<StoredMembership<u64, BasicNode>, openraft::StorageError<u64>> {
    const STEP: u64 = 256;
    let floor = applied
        .map_or(0, |id| id.index + 1)
        .max(log_state.last_purged_log_id.map_or(0, |id| id.index + 1));
    let mut end = log_state.last_log_id.map_or(0, |id| id.index + 1);
    while end > floor {
        let start = end.saturating_sub(STEP).max(floor);
        let entries = log.try_get_log_entries(start..end).await?;
        if let Some(entry) = entries.iter().rev().find_map(|entry| match &entry.payload {
            EntryPayload::Membership(membership) => Some(StoredMembership::new(
                Some(entry.log_id),
                membership.clone(),
            )),
            _ => None,
        }) {
            return Ok(entry);
        }
        end = start;
    }
    Ok(applied_membership)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = inspect(dir.path()).await.unwrap_err();
        assert!(error.to_string().contains("no node_id file"), "{error}");
    }
}
