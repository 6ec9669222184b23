//! Membership: adding, promoting and removing members, setting the voters, and the views of
//! the membership and of every member that `Status` shows. Changes run on the leader (routed
//! there like writes); each refuses, with nothing done, what would leave a voter that cannot
//! vote.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};

use super::{write_error, RaftNode, RouteError};
use crate::network::message::{
    LeaderError, LeaderOp, LeaderReply, NodeStatus, PeerRequest, PeerResponse,
};

/// Why a membership change was not made.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("no leader is known, or it could not be reached: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Rejected(String),
    #[error("the change's outcome is unknown: {0}")]
    Unknown(String),
}

/// A member of the cluster and what it says of itself (or why it could not be asked).
#[derive(Debug, Clone)]
pub struct MemberView {
    pub node_id: u64,
    pub peer_addr: String,
    pub voter: bool,
    pub status: Result<NodeStatus, String>,
}

/// The membership in force: one voter set, or two while a change is in joint consensus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    pub voter_sets: Vec<BTreeSet<u64>>,
    /// The log index of the entry that set it (0: the initial one, never written).
    pub log_index: u64,
    /// Whether that entry is committed; if not, the change is still in progress.
    pub committed: bool,
}

impl RaftNode {
    /// Adds a node as a learner: it receives the log (or a snapshot) but does not vote.
    pub async fn add_learner(
        &self,
        node_id: u64,
        peer_addr: String,
    ) -> Result<u64, MembershipError> {
        self.change_membership(LeaderOp::AddLearner { node_id, peer_addr })
            .await
    }

    /// Makes a caught-up learner a voter (joint consensus).
    pub async fn promote(&self, node_id: u64) -> Result<u64, MembershipError> {
        self.change_membership(LeaderOp::Promote { node_id }).await
    }

    /// Removes a voter or learner from the cluster (joint consensus for voters).
    pub async fn remove(&self, node_id: u64) -> Result<u64, MembershipError> {
        self.change_membership(LeaderOp::Remove { node_id }).await
    }

    /// Makes the voters exactly `node_ids` (joint consensus): completes or rolls back a change
    /// left in a joint configuration. New voters must be caught-up learners.
    pub async fn set_voters(&self, node_ids: BTreeSet<u64>) -> Result<u64, MembershipError> {
        self.change_membership(LeaderOp::SetVoters { node_ids })
            .await
    }

    /// The membership in force as this node knows it, and whether its entry is committed.
    pub async fn membership_view(&self) -> MembershipView {
        let stored = self.raft.metrics().borrow().membership_config.clone();
        let log_index = stored.log_id().map(|id| id.index);
        let committed = self
            .raft
            .with_raft_state(|state| state.committed.map(|id| id.index))
            .await
            .unwrap_or(None);
        MembershipView {
            voter_sets: stored.membership().get_joint_config().clone(),
            log_index: log_index.unwrap_or(0),
            committed: log_index <= committed,
        }
    }

    async fn change_membership(&self, op: LeaderOp) -> Result<u64, MembershipError> {
        match self.route(op).await {
            Ok(LeaderReply::MembershipChanged(index)) => Ok(index),
            Ok(other) => Err(MembershipError::Unknown(format!(
                "unexpected reply {other:?}"
            ))),
            Err(RouteError::Leader(LeaderError::Rejected(reason))) => {
                Err(MembershipError::Rejected(reason))
            }
            Err(RouteError::Leader(error @ (LeaderError::Timeout(_) | LeaderError::Fatal(_)))) => {
                Err(MembershipError::Unknown(error.to_string()))
            }
            Err(RouteError::Leader(error)) => Err(MembershipError::Unavailable(error.to_string())),
            Err(RouteError::Call(error)) if error.not_sent() => {
                Err(MembershipError::Unavailable(error.to_string()))
            }
            Err(RouteError::Call(error)) => Err(MembershipError::Unknown(error.to_string())),
        }
    }

    /// Every member of the cluster as this node knows the membership, each asking itself.
    pub async fn cluster_status(&self, timeout: Duration) -> Vec<MemberView> {
        let membership = self.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members: Vec<(u64, String)> = membership
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let asks = members.into_iter().map(|(node_id, peer_addr)| {
            let voter = voters.contains(&node_id);
            async move {
                let status = if node_id == self.config.node_id {
                    Ok(self.local_status().await)
                } else {
                    match self
                        .transport
                        .call(node_id, &peer_addr, &PeerRequest::Status, timeout)
                        .await
                    {
                        Ok(PeerResponse::Status(status)) => Ok(status),
                        Ok(other) => Err(format!("unexpected answer {other:?}")),
                        Err(error) => Err(error.to_string()),
                    }
                };
                MemberView {
                    node_id,
                    peer_addr,
                    voter,
                    status,
                }
            }
        });
        futures::future::join_all(asks).await
    }

    pub(super) async fn add_learner_as_leader(
        &self,
        node_id: u64,
        peer_addr: String,
    ) -> Result<LeaderReply, LeaderError> {
        let membership = self.membership();
        if membership.voter_ids().any(|id| id == node_id) {
            return Err(LeaderError::Rejected(format!(
                "node {node_id} is already a voter"
            )));
        }
        let written = self
            .raft
            .add_learner(node_id, BasicNode::new(peer_addr), false)
            .await
            .map_err(write_error)?;
        Ok(LeaderReply::MembershipChanged(written.log_id.index))
    }

    pub(super) async fn promote_as_leader(&self, node_id: u64) -> Result<LeaderReply, LeaderError> {
        let membership = self.membership();
        if membership.voter_ids().any(|id| id == node_id) {
            return Err(LeaderError::Rejected(format!(
                "node {node_id} is already a voter"
            )));
        }
        if !membership.learner_ids().any(|id| id == node_id) {
            return Err(LeaderError::Rejected(format!(
                "node {node_id} is not a learner; add it with `strata cluster add-learner` first"
            )));
        }
        self.caught_up(node_id)?;
        let written = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
            .await
            .map_err(write_error)?;
        Ok(LeaderReply::MembershipChanged(written.log_id.index))
    }

    pub(super) async fn remove_as_leader(&self, node_id: u64) -> Result<LeaderReply, LeaderError> {
        let membership = self.membership();
        let change = if membership.voter_ids().any(|id| id == node_id) {
            if membership.voter_ids().count() == 1 {
                return Err(LeaderError::Rejected(format!(
                    "node {node_id} is the only voter; a cluster cannot remove its last voter"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else if membership.learner_ids().any(|id| id == node_id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        } else {
            return Err(LeaderError::Rejected(format!(
                "node {node_id} is not a member of the cluster"
            )));
        };
        let written = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        Ok(LeaderReply::MembershipChanged(written.log_id.index))
    }

    /// Makes the voters exactly `node_ids`: each must be a member already, and each that is not
    /// a voter yet must have caught up as `promote` requires. From a joint configuration whose
    /// first step committed (a change that answered "outcome unknown"), this completes it (the
    /// new set) or rolls it back (the old one).
    pub(super) async fn set_voters_as_leader(
        &self,
        node_ids: BTreeSet<u64>,
    ) -> Result<LeaderReply, LeaderError> {
        if node_ids.is_empty() {
            return Err(LeaderError::Rejected(
                "a cluster needs at least one voter".to_string(),
            ));
        }
        let (membership, log_index) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let stored = &metrics.membership_config;
            (
                stored.membership().clone(),
                stored.log_id().map_or(0, |id| id.index),
            )
        };
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        for &node_id in &node_ids {
            if membership.get_node(&node_id).is_none() {
                return Err(LeaderError::Rejected(format!(
                    "node {node_id} is not a member; add it with `strata cluster add-learner` first"
                )));
            }
            if !voters.contains(&node_id) {
                self.caught_up(node_id)?;
            }
        }
        let joint = membership.get_joint_config();
        if joint.len() == 1 && joint[0] == node_ids {
            // Already so: nothing to write (a retry of a change that did take effect).
            return Ok(LeaderReply::MembershipChanged(log_index));
        }
        let written = self
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(node_ids), false)
            .await
            .map_err(write_error)?;
        Ok(LeaderReply::MembershipChanged(written.log_id.index))
    }

    /// Refuses to make `node_id` a voter unless it has answered the leader and is at most
    /// `promote_max_lag` entries behind.
    fn caught_up(&self, node_id: u64) -> Result<(), LeaderError> {
        let (last_log, matched) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&node_id).copied().flatten())
                .map(|id| id.index);
            (metrics.last_log_index.unwrap_or(0), matched)
        };
        // A learner that never answered the leader (nothing listens at its address, or it cannot
        // reach us) would be a voter that never votes: with it, a cluster of three needs three
        // of four, and the next failure loses the quorum.
        let Some(matched) = matched else {
            return Err(LeaderError::Rejected(format!(
                "node {node_id} has not answered the leader yet (is it running, at the address \
                 it was added with?); see `strata cluster status`, then retry"
            )));
        };
        let lag = last_log.saturating_sub(matched);
        if lag > self.config.promote_max_lag {
            return Err(LeaderError::Rejected(format!(
                "node {node_id} is {lag} entries behind the leader (at most {} allowed); wait \
                 for it to catch up (see `strata cluster status`) and retry",
                self.config.promote_max_lag
            )));
        }
        Ok(())
    }

    pub(super) fn membership(&self) -> openraft::Membership<u64, BasicNode> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }
}
