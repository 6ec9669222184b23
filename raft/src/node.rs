//! [`RaftNode`]: one member of a Strata cluster, as the server sees it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use strata_storage::kv::{KvCommand, KvResponse, KvState, RevisionEvents};
use strata_storage::{Engine, LogStore};
use tokio::sync::broadcast;

use crate::log_store::RaftLogStore;
use crate::network::NoPeers;
use crate::state_machine::StateMachine;
use crate::types::{Command, Request, Response, TypeConfig};

/// Timing and policy knobs. Defaults suit a LAN or a laptop.
#[derive(Clone, Debug)]
pub struct RaftNodeConfig {
    pub node_id: u64,
    /// Address clients use to reach this node, advertised in the membership.
    pub client_addr: String,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) after this many entries.
    pub snapshot_every_entries: u64,
    /// How often the leader looks for expired keys.
    pub expiry_sweep_interval_ms: u64,
    /// Most keys removed by one expiry entry.
    pub expiry_batch_max: usize,
    /// Revisions of watch history kept; must be the same on every node of a cluster.
    pub history_retain_revisions: u64,
}

impl Default for RaftNodeConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            client_addr: "127.0.0.1:7420".into(),
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_every_entries: 20_000,
            expiry_sweep_interval_ms: 100,
            expiry_batch_max: 1_000,
            history_retain_revisions: strata_storage::kv::HISTORY_RETAIN_REVISIONS,
        }
    }
}

/// Why a write was not acknowledged. Only `Fatal` and `Storage` leave its outcome unknown to
/// the caller; the others guarantee nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("not the leader; the leader is {leader_id:?} at {leader_addr:?}")]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    #[error("raft is shutting down or failed: {0}")]
    Fatal(String),
    #[error("unexpected raft response: {0}")]
    Unexpected(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not the leader; the leader is {leader_id:?} at {leader_addr:?}")]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    #[error("cannot confirm leadership with a quorum: {0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("storage: {0}")]
    Storage(#[from] strata_storage::StorageError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("the data directory belongs to node {found}, not node {wanted}; start with --node-id {found} or use another directory")]
    WrongNode { found: u64, wanted: u64 },
}

/// Records which node owns a data directory on first start, and refuses to open it as another:
/// a node restarted with the wrong id would never be elected and would look healthy.
fn claim_node_id(data_dir: &Path, node_id: u64) -> Result<(), OpenError> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found: u64 = text.trim().parse().map_err(|_| {
                OpenError::Raft(format!(
                    "{} does not hold a node id: {text:?}",
                    path.display()
                ))
            })?;
            if found != node_id {
                return Err(OpenError::WrongNode {
                    found,
                    wanted: node_id,
                });
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let temporary = data_dir.join("node_id.tmp");
            std::fs::write(&temporary, format!("{node_id}\n"))?;
            std::fs::File::open(&temporary)?.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// A running Raft member with its storage.
#[derive(Clone)]
pub struct RaftNode {
    pub raft: Raft<TypeConfig>,
    engine: Engine,
    config: Arc<RaftNodeConfig>,
    state_machine: StateMachine,
}

impl RaftNode {
    /// Opens the data directory and starts Raft. On first start it bootstraps a cluster of one
    /// with this node as its only voter; on later starts it resumes from disk.
    pub async fn start(data_dir: &Path, config: RaftNodeConfig) -> Result<Self, OpenError> {
        claim_node_id(data_dir, config.node_id)?;
        let engine = Engine::open(&data_dir.join("db"))?;
        let result = Self::start_on(engine.clone(), data_dir, config).await;
        if result.is_err() {
            // The caller will likely exit: stop RocksDB's threads first (see Engine::quiesce).
            let _ = engine.quiesce();
        }
        result
    }

    async fn start_on(
        engine: Engine,
        data_dir: &Path,
        config: RaftNodeConfig,
    ) -> Result<Self, OpenError> {
        let handle = engine.clone();
        let log_store = RaftLogStore::new(LogStore::new(engine.clone()));
        let state_machine = StateMachine::new(
            engine,
            data_dir.join("snapshots"),
            config.history_retain_revisions,
        )?;
        let raft_config = Config {
            cluster_name: "strata".into(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| OpenError::Raft(e.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            NoPeers,
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|e| OpenError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| OpenError::Raft(e.to_string()))?;
        if !initialized {
            let members = BTreeMap::from([(
                config.node_id,
                BasicNode {
                    addr: config.client_addr.clone(),
                },
            )]);
            raft.initialize(members)
                .await
                .map_err(|e| OpenError::Raft(e.to_string()))?;
            tracing::info!(node_id = config.node_id, "initialised a new cluster of one");
        }
        Ok(Self {
            raft,
            engine: handle,
            config: Arc::new(config),
            state_machine,
        })
    }

    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    pub fn kv(&self) -> &KvState {
        self.state_machine.kv()
    }

    /// Live applied events; a receiver that falls behind gets `Lagged` and must catch up from
    /// history.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RevisionEvents>> {
        self.state_machine.subscribe()
    }

    /// The index of the last applied entry: the revision reads reflect.
    pub fn applied_revision(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |id| id.index)
    }

    /// Waits until this node has a leader (itself or another), up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .is_ok()
    }

    /// Proposes a key-value command and waits until it is committed, durable on a majority and
    /// applied here.
    pub async fn write_kv(&self, command: KvCommand) -> Result<KvResponse, WriteError> {
        let request = Request {
            time_ms: now_ms(),
            command: Command::Kv(command),
        };
        match self.raft.client_write(request).await {
            Ok(written) => match written.data {
                Response::Kv(response) => Ok(response),
                other => Err(WriteError::Unexpected(format!("{other:?}"))),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(WriteError::NotLeader {
                    leader_id: forward.leader_id,
                    leader_addr: forward.leader_node.map(|n| n.addr),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(WriteError::Unexpected(e.to_string()))
            }
            Err(RaftError::Fatal(fatal)) => Err(WriteError::Fatal(fatal.to_string())),
        }
    }

    /// Returns once this node's applied state includes every write acknowledged before the
    /// call (read index confirmed with a quorum).
    pub async fn linearizable_barrier(&self) -> Result<(), ReadError> {
        use openraft::error::CheckIsLeaderError;
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(ReadError::NotLeader {
                    leader_id: forward.leader_id,
                    leader_addr: forward.leader_node.map(|n| n.addr),
                })
            }
            Err(error) => Err(ReadError::Unavailable(error.to_string())),
        }
    }

    /// Runs until `shutdown` fires: while this node leads, proposes the removal of keys whose
    /// expiry has passed by its clock. Apply re-checks expiry against the entry's time, so a
    /// key rewritten in the meantime is left alone.
    pub async fn run_expiry_sweeper(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.config.expiry_sweep_interval_ms);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            if self.raft.metrics().borrow().current_leader != Some(self.config.node_id) {
                continue;
            }
            let due = match self
                .kv()
                .due_expirations(now_ms(), self.config.expiry_batch_max)
            {
                Ok(due) => due,
                Err(error) => {
                    tracing::error!(%error, "reading the expiry index failed");
                    continue;
                }
            };
            if due.is_empty() {
                continue;
            }
            let count = due.len();
            match self.write_kv(KvCommand::Expire { keys: due }).await {
                Ok(_) => tracing::debug!(count, "expired keys"),
                Err(error) => tracing::warn!(%error, "proposing expirations failed"),
            }
        }
    }

    /// Stops Raft, then quiesces storage so the process can exit safely.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown");
        }
        if let Err(error) = self.engine.quiesce() {
            tracing::error!(%error, "syncing storage at shutdown failed");
        }
    }
}

/// Milliseconds since the Unix epoch by this node's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
