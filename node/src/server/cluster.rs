//! `strata.cluster.v1`: cluster status and membership changes for operators. Membership changes
//! run on the leader; a follower forwards them over the peer transport.

use std::sync::Arc;
use std::time::Duration;

use strata_proto::cluster::v1 as pb;
use strata_raft::backup::{BackupError, BackupPart};
use strata_raft::{MemberView, MembershipError, MembershipView, NodeStatus, RaftNode};
use tonic::{Request, Response, Status};

use super::metrics::Metrics;
use super::status;
use super::validate;

/// How long status waits for each member to answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Most voters a `SetVoters` may name (a Raft cluster of more is slower, never safer).
const MAX_VOTERS: usize = 15;

/// A backup reader that takes nothing for this long is cut (the export pins a RocksDB view).
const BACKUP_STALL: Duration = Duration::from_secs(60);
/// Backup parts buffered between the export and the client.
const BACKUP_QUEUE: usize = 4;

pub type SnapshotStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

pub struct ClusterService {
    node: RaftNode,
    metrics: Metrics,
    /// One backup at a time per node.
    backups: Arc<tokio::sync::Semaphore>,
}

impl ClusterService {
    pub fn new(node: RaftNode, metrics: Metrics) -> Self {
        Self {
            node,
            metrics,
            backups: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    async fn observed<T>(
        &self,
        method: &str,
        work: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        self.metrics.observed(method, work).await
    }
}

fn node_id(field: &str, id: u64) -> Result<u64, Status> {
    if id == 0 {
        return Err(validate::invalid(format!(
            "{field} must be a node id of 1 or more"
        )));
    }
    Ok(id)
}

fn status_of(status: &NodeStatus) -> pb::NodeStatus {
    pb::NodeStatus {
        role: status.role.clone(),
        term: status.term,
        leader_id: status.leader_id.unwrap_or(0),
        last_log_index: status.last_log_index,
        committed_index: status.committed_index,
        applied_index: status.applied_index,
        snapshot_index: status.snapshot_index,
        purged_index: status.purged_index,
        client_addr: status.client_addr.clone(),
    }
}

/// The members as the protocol shows them, with each one's lag behind the leader's last entry
/// when the leader answered.
pub fn members(views: &[MemberView]) -> Vec<pb::Member> {
    let leader_last_log = views.iter().find_map(|view| match &view.status {
        Ok(status) if status.role == "leader" => Some(status.last_log_index),
        _ => None,
    });
    views
        .iter()
        .map(|view| pb::Member {
            node_id: view.node_id,
            peer_addr: view.peer_addr.clone(),
            voter: view.voter,
            status: view.status.as_ref().ok().map(status_of),
            error: view.status.as_ref().err().cloned().unwrap_or_default(),
            lag: match (&view.status, leader_last_log) {
                (Ok(status), Some(last)) => Some(last.saturating_sub(status.applied_index)),
                _ => None,
            },
        })
        .collect()
}

pub fn membership_of(view: &MembershipView) -> pb::Membership {
    pb::Membership {
        voter_sets: view
            .voter_sets
            .iter()
            .map(|set| pb::VoterSet {
                node_ids: set.iter().copied().collect(),
            })
            .collect(),
        log_index: view.log_index,
        committed: view.committed,
    }
}

fn membership(error: MembershipError) -> Status {
    match error {
        MembershipError::Unavailable(message) => status::unavailable("no_leader", message),
        MembershipError::Rejected(message) => Status::failed_precondition(message),
        MembershipError::Unknown(message) => status::outcome_unknown(message),
    }
}

fn backup_error(error: BackupError) -> Status {
    match error {
        BackupError::Read(error) => status::read(error),
        BackupError::Io(error) if error.kind() == std::io::ErrorKind::TimedOut => {
            status::with_code(tonic::Code::Cancelled, "slow_reader", error.to_string())
        }
        other => Status::internal(format!("exporting the backup: {other}")),
    }
}

fn chunk_of(part: BackupPart) -> Result<pb::SnapshotChunk, Status> {
    Ok(match part {
        BackupPart::Header {
            header,
            estimated_entries,
        } => pb::SnapshotChunk {
            part: Some(pb::snapshot_chunk::Part::Header(pb::SnapshotHeader {
                json: serde_json::to_string(&header)
                    .map_err(|e| Status::internal(e.to_string()))?,
                revision: header.revision,
                applied_index: header.applied_index,
                source_node: header.source_node,
            })),
            entries: estimated_entries,
        },
        BackupPart::Data { bytes, entries } => pb::SnapshotChunk {
            part: Some(pb::snapshot_chunk::Part::Data(bytes)),
            entries,
        },
    })
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.observed("Cluster.Snapshot", async {
            let permit = self.backups.clone().try_acquire_owned().map_err(|_| {
                status::with_code(
                    tonic::Code::ResourceExhausted,
                    "backup_running",
                    "a backup is being taken from this node; wait for it, or ask another node"
                        .into(),
                )
            })?;
            let (parts, mut exported) = tokio::sync::mpsc::channel(BACKUP_QUEUE);
            let (out, stream) = tokio::sync::mpsc::channel(1);
            let node = self.node.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let forward = {
                    let out = out.clone();
                    async move {
                        while let Some(part) = exported.recv().await {
                            let sent = tokio::time::timeout(BACKUP_STALL, out.send(chunk_of(part)));
                            if !matches!(sent.await, Ok(Ok(()))) {
                                break; // gone or stalled: dropping `exported` stops the export
                            }
                        }
                    }
                };
                let (result, ()) = tokio::join!(node.backup(parts, BACKUP_STALL), forward);
                match result {
                    Ok(header) => tracing::info!(
                        revision = header.revision,
                        applied_index = header.applied_index,
                        "streamed a backup"
                    ),
                    Err(error) => {
                        tracing::warn!(%error, "a backup stopped");
                        let _ = out.try_send(Err(backup_error(error)));
                    }
                }
            });
            let stream: SnapshotStream =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(stream));
            Ok(stream)
        })
        .await
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.observed("Cluster.Status", async {
            let views = self.node.cluster_status(STATUS_TIMEOUT).await;
            let node_id = self.node.node_id();
            // This node's own view is among them (unless it is not a member any more).
            let leader_id = views
                .iter()
                .find(|view| view.node_id == node_id)
                .and_then(|view| view.status.as_ref().ok())
                .and_then(|status| status.leader_id)
                .or(self.node.raft.metrics().borrow().current_leader)
                .unwrap_or(0);
            Ok(pb::StatusResponse {
                node_id,
                leader_id,
                members: members(&views),
                membership: Some(membership_of(&self.node.membership_view().await)),
            })
        })
        .await
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.observed("Cluster.AddLearner", async {
            let request = request.into_inner();
            let id = node_id("node_id", request.node_id)?;
            validate::host_port("peer_addr", &request.peer_addr)?;
            let log_index = self
                .node
                .add_learner(id, request.peer_addr)
                .await
                .map_err(membership)?;
            Ok(pb::MembershipResponse { log_index })
        })
        .await
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.observed("Cluster.Promote", async {
            let id = node_id("node_id", request.into_inner().node_id)?;
            let log_index = self.node.promote(id).await.map_err(membership)?;
            Ok(pb::MembershipResponse { log_index })
        })
        .await
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.observed("Cluster.Remove", async {
            let id = node_id("node_id", request.into_inner().node_id)?;
            let log_index = self.node.remove(id).await.map_err(membership)?;
            Ok(pb::MembershipResponse { log_index })
        })
        .await
    }

    async fn set_voters(
        &self,
        request: Request<pb::SetVotersRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.observed("Cluster.SetVoters", async {
            let ids = request.into_inner().node_ids;
            if ids.is_empty() || ids.len() > MAX_VOTERS {
                return Err(validate::invalid(format!(
                    "node_ids must name 1 to {MAX_VOTERS} voters"
                )));
            }
            let ids = ids
                .into_iter()
                .map(|id| node_id("node_ids", id))
                .collect::<Result<std::collections::BTreeSet<u64>, Status>>()?;
            let log_index = self.node.set_voters(ids).await.map_err(membership)?;
            Ok(pb::MembershipResponse { log_index })
        })
        .await
    }
}
