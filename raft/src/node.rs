//! [`RaftNode`]: one member of a Strata cluster, as the server sees it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use strata_auth::{AuthCommand, AuthResponse, AuthState};
use strata_registry::{RegistryCommand, RegistryEvent, RegistryResponse, RegistryState};
use strata_storage::kv::{KvCommand, KvResponse, KvState, RevisionEvents};
use strata_storage::quota::{Exceeded, QuotaCommand, QuotaResponse, QuotaState};
use strata_storage::{Engine, LogStore};
use strata_stream::{Notice, StreamCommand, StreamResponse, StreamState};
use tokio::sync::broadcast;

use crate::leases::LeaseTable;

mod membership;
pub use membership::{MemberView, MembershipError, MembershipView};

use crate::batcher::{BatchCounts, BatchLimits, Batcher};
use crate::log_store::RaftLogStore;
use crate::network::message::{LeaderError, LeaderOp, LeaderReply, NodeStatus};
use crate::network::{
    CallError, PeerNetwork, PeerRequest, PeerResponse, PeerService, PeerTransport,
};
use crate::rounds::{RoundCounts, Rounds, ROUND_QUEUE};
use crate::state_machine::StateMachine;
use crate::types::{Command, Request, Response, TypeConfig};

/// The leader looks at stream retention every this many expiry-sweep ticks (1 s by default).
const RETENTION_EVERY_TICKS: u64 = 10;
/// Most topics given a `Retain` entry per retention sweep.
const RETENTION_BATCH_MAX: usize = 256;
/// The leader looks at registry leases every this many expiry-sweep ticks (1 s by default).
const LEASES_EVERY_TICKS: u64 = 10;
/// Most nodes expired by one log entry.
const LEASE_EXPIRY_BATCH_MAX: usize = 1_000;
/// How often every node compares the log appended since its last snapshot with
/// `snapshot_every_bytes`.
const SNAPSHOT_CHECK_EVERY: Duration = Duration::from_secs(1);
/// `--snapshot-every-bytes` by default: 256 MiB of log at most waits behind a snapshot (plus
/// the 1,000 entries kept after it).
pub const DEFAULT_SNAPSHOT_EVERY_BYTES: u64 = 256 * 1024 * 1024;

/// How a node forms or joins a cluster on its first start (later starts resume from disk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// A cluster of one (local mode).
    Single,
    /// The initial voters and their peer addresses; every initial member starts with the same.
    Cluster(BTreeMap<u64, String>),
    /// Start empty and wait to be added by `cluster add-learner`.
    Join,
}

/// Timing and policy knobs. Defaults suit a LAN or a laptop.
#[derive(Clone, Debug)]
pub struct RaftNodeConfig {
    pub node_id: u64,
    /// Address clients use to reach this node (reported in cluster status).
    pub client_addr: String,
    /// Address peers use to reach this node (QUIC), recorded in the membership.
    pub peer_addr: String,
    pub bootstrap: Bootstrap,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) after this many entries.
    pub snapshot_every_entries: u64,
    /// Also build one after this many bytes of entries were appended since the last (batch
    /// entries hold up to 1,024 commands; 0: by entries only).
    pub snapshot_every_bytes: u64,
    /// How often the leader looks for expired keys.
    pub expiry_sweep_interval_ms: u64,
    /// Most keys removed by one expiry entry.
    pub expiry_batch_max: usize,
    /// Revisions of watch history kept; must be the same on every node of a cluster.
    pub history_retain_revisions: u64,
    /// Longest wait for a write, read index or membership change, locally or on the leader.
    pub leader_op_timeout_ms: u64,
    /// A learner may be promoted only when it is at most this many entries behind the leader.
    pub promote_max_lag: u64,
    /// A deliberately broken mode for the chaos suite to catch: the leader acknowledges a write
    /// as soon as it is proposed, before it commits. Never set outside tests; the binary
    /// honours it only in debug builds.
    pub unsafe_ack_before_commit: bool,
    /// At start, read every table block of the database (checksums verified) before serving:
    /// one sequential read of the data. The replicated log, its metadata and the current
    /// snapshot are always verified.
    pub verify_tables_on_start: bool,
    /// As leader, refuse writes that add data while the data directory's disk has fewer free
    /// bytes than this (0: never); see `disk`.
    pub min_free_bytes: u64,
    /// Bytes kept in the data directory for the next start (see `disk::StartReserve`); 0: none.
    pub start_reserve_bytes: u64,
    /// Added to this node's wall clock, to test a node whose clock is wrong; the binary sets
    /// it only in debug builds.
    pub clock_skew_ms: i64,
    /// The other broken mode: linearizable reads skip the read index and are served from
    /// whatever this node has applied (a follower's or a deposed leader's stale state).
    pub unsafe_stale_reads: bool,
}

impl Default for RaftNodeConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            client_addr: "127.0.0.1:7420".into(),
            peer_addr: "127.0.0.1:7421".into(),
            bootstrap: Bootstrap::Single,
            verify_tables_on_start: true,
            clock_skew_ms: 0,
            min_free_bytes: 0,
            start_reserve_bytes: 0,
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_every_entries: 20_000,
            snapshot_every_bytes: DEFAULT_SNAPSHOT_EVERY_BYTES,
            expiry_sweep_interval_ms: 100,
            expiry_batch_max: 1_000,
            history_retain_revisions: strata_storage::kv::HISTORY_RETAIN_REVISIONS,
            leader_op_timeout_ms: 5_000,
            promote_max_lag: 1_000,
            unsafe_ack_before_commit: false,
            unsafe_stale_reads: false,
        }
    }
}

/// Why a write was not acknowledged. `Unknown` and `Fatal` leave its outcome unknown to the
/// caller; the others guarantee nothing was applied, so the write may be retried.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Nothing was done: this node does not lead and could not hand the request to a leader
    /// (`leader_id`: the leader it knows of, if any, which lost the lead meanwhile).
    #[error("not the leader (leader known: {leader_id:?})")]
    NotLeader { leader_id: Option<u64> },
    #[error("the leader could not be reached, nothing was sent: {0}")]
    LeaderUnreachable(String),
    #[error("the write's outcome is unknown: {0}")]
    Unknown(String),
    #[error("raft is shutting down or failed: {0}")]
    Fatal(String),
    #[error("unexpected raft response: {0}")]
    Unexpected(String),
    /// Nothing was done: the write would have taken its namespace past a limit.
    #[error("{0}")]
    QuotaExceeded(Exceeded),
    /// Nothing was done: the leader's disk is nearly full (see `disk`).
    #[error("{0}")]
    DiskFull(String),
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum ReadError {
    /// Nothing was done: this node does not lead and could not hand the request to a leader
    /// (`leader_id`: the leader it knows of, if any, which lost the lead meanwhile).
    #[error("not the leader (leader known: {leader_id:?})")]
    NotLeader { leader_id: Option<u64> },
    #[error("cannot confirm leadership with a quorum: {0}")]
    Unavailable(String),
}

/// Where a leader-only operation failed.
#[derive(Debug)]
enum RouteError {
    Leader(LeaderError),
    Call(CallError),
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Shown as the storage error itself (once: `{:#}` would print a wrapped one twice).
    #[error(transparent)]
    Storage(#[from] strata_storage::StorageError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("the data directory belongs to node {found}, not node {wanted}; start with --node-id {found} or use another directory")]
    WrongNode { found: u64, wanted: u64 },
}

/// Checks what a node would otherwise read only later (see `strata_storage::integrity`): the
/// whole replicated log and its metadata, and, if `tables`, every table block.
fn verify_on_start(engine: &Engine, tables: bool) -> Result<(), strata_storage::StorageError> {
    let started = std::time::Instant::now();
    let entries = LogStore::new(engine.clone()).verify()?;
    let report = if tables {
        engine.verify_tables()?
    } else {
        Default::default()
    };
    tracing::info!(
        log_entries = entries,
        table_entries = report.entries,
        table_bytes = report.bytes,
        tables_checked = tables,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "verified the data directory"
    );
    Ok(())
}

/// Records which node owns a data directory on first start, and refuses to open it as another:
/// a node restarted with the wrong id would never be elected and would look healthy.
pub(crate) fn claim_node_id(data_dir: &Path, node_id: u64) -> Result<(), OpenError> {
    std::fs::create_dir_all(data_dir)?;
    match read_node_id(data_dir)? {
        Some(found) if found != node_id => Err(OpenError::WrongNode {
            found,
            wanted: node_id,
        }),
        Some(_) => Ok(()),
        None => {
            let temporary = data_dir.join("node_id.tmp");
            std::fs::write(&temporary, format!("{node_id}\n"))?;
            std::fs::File::open(&temporary)?.sync_all()?;
            std::fs::rename(&temporary, data_dir.join("node_id"))?;
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(())
        }
    }
}

/// The node that owns `data_dir`, if one has claimed it.
pub(crate) fn read_node_id(data_dir: &Path) -> Result<Option<u64>, OpenError> {
    let path = data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            OpenError::Raft(format!(
                "{} does not hold a node id: {text:?}",
                path.display()
            ))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// A running Raft member with its storage and peer transport.
#[derive(Clone)]
pub struct RaftNode {
    pub raft: Raft<TypeConfig>,
    engine: Engine,
    config: Arc<RaftNodeConfig>,
    state_machine: StateMachine,
    transport: Arc<PeerTransport>,
    /// The registry leases this node keeps while it leads.
    leases: Arc<tokio::sync::Mutex<LeaseTable>>,
    /// Read-index rounds on this node while it leads (for its own callers and for the
    /// followers' forwarded reads): one quorum round for everyone waiting.
    leader_reads: Rounds<Raft<TypeConfig>, Result<u64, LeaderError>>,
    /// Read-index rounds for this node's linearizable reads, wherever the leader is: one round
    /// (a local quorum check, or one call to the leader) for everyone waiting.
    reads: Rounds<RaftNode, Result<u64, ReadError>>,
    /// Writes on this node while it leads (its own and the followers' forwarded ones): what
    /// waits while earlier proposals are in flight goes into one entry (see [`Batcher`]).
    writes: Batcher<Request, Result<Response, LeaderError>>,
    /// The leader's time (see `clock`): stamps commands this node proposes as leader, and
    /// judges expiry for reads.
    clock: Arc<crate::clock::ClusterClock>,
    /// Free space of the data directory's disk, checked before proposing growth.
    disk: Arc<crate::disk::DiskGuard>,
    /// Space kept for the next start.
    start_reserve: crate::disk::StartReserve,
    /// Bytes of entries appended since the process started (`run_snapshot_by_bytes`).
    log_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// Where the state machine keeps its snapshot files.
    snapshot_dir: PathBuf,
}

impl RaftNode {
    /// Opens the data directory, starts Raft and serves peers on `transport`. On first start it
    /// bootstraps as `config.bootstrap` says; on later starts it resumes from disk.
    pub async fn start(
        data_dir: &Path,
        config: RaftNodeConfig,
        transport: Arc<PeerTransport>,
    ) -> Result<Self, OpenError> {
        claim_node_id(data_dir, config.node_id)?;
        // The space kept for this moment: the open may write the WAL's contents out as tables.
        crate::disk::StartReserve::new(data_dir, config.start_reserve_bytes).release()?;
        let engine = Engine::open(&data_dir.join("db"))?;
        let verified = {
            let engine = engine.clone();
            let tables = config.verify_tables_on_start;
            tokio::task::spawn_blocking(move || verify_on_start(&engine, tables))
                .await
                .map_err(|e| OpenError::Raft(format!("verification task: {e}")))
        };
        let result = match verified {
            Ok(Ok(())) => Self::start_on(engine.clone(), data_dir, config, transport).await,
            Ok(Err(error)) => Err(error.into()),
            Err(error) => Err(error),
        };
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
        transport: Arc<PeerTransport>,
    ) -> Result<Self, OpenError> {
        let handle = engine.clone();
        let log_store = RaftLogStore::new(LogStore::new(engine.clone()));
        let log_bytes = log_store.appended_bytes();
        let state_machine = StateMachine::new(
            engine,
            data_dir.join("snapshots"),
            config.history_retain_revisions,
        )?;
        let clock = state_machine.clock();
        clock.set_skew(config.clock_skew_ms);
        let config_min_free_bytes = config.min_free_bytes;
        let config_start_reserve_bytes = config.start_reserve_bytes;
        let raft_config = Config {
            cluster_name: "strata".into(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            max_in_snapshot_log_to_keep: 1_000,
            // Per snapshot chunk; the last chunk waits for the whole import, which takes
            // seconds for a large state (openraft's 200 ms default would resend forever).
            install_snapshot_timeout: 120_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| OpenError::Raft(e.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            PeerNetwork::new(transport.clone()),
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|e| OpenError::Raft(e.to_string()))?;
        let op_timeout = Duration::from_millis(config.leader_op_timeout_ms);
        let leader_reads = Rounds::spawn(ROUND_QUEUE, move |raft: Raft<TypeConfig>| async move {
            match tokio::time::timeout(op_timeout, raft.get_read_log_id()).await {
                Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map_or(0, |id| id.index)),
                Ok(Err(error)) => Err(read_index_error(error)),
                Err(_) => Err(LeaderError::Timeout(op_timeout.as_millis() as u64)),
            }
        });
        let reads = Rounds::spawn(ROUND_QUEUE, |node: RaftNode| async move {
            node.read_index_round().await
        });
        let proposer = raft.clone();
        // A batch entry must reach a follower within one append RPC's time (a heartbeat
        // interval; see APPEND_BUDGET_BYTES): half that budget. Tried with 8 MiB, a three-node
        // cluster under a burst of publishes stopped replicating (every send of the entry timed
        // out half-way, and one entry cannot be split).
        let limits = BatchLimits {
            max_bytes: crate::network::APPEND_BUDGET_BYTES / 2,
            ..BatchLimits::default()
        };
        let writes = Batcher::spawn(limits, move |requests| propose(proposer.clone(), requests));
        let node = Self {
            raft,
            engine: handle,
            config: Arc::new(config),
            state_machine,
            transport: transport.clone(),
            leases: Arc::default(),
            leader_reads,
            reads,
            writes,
            clock,
            log_bytes,
            snapshot_dir: data_dir.join("snapshots"),
            start_reserve: crate::disk::StartReserve::new(data_dir, config_start_reserve_bytes),
            disk: Arc::new(crate::disk::DiskGuard::new(
                data_dir.to_path_buf(),
                config_min_free_bytes,
            )),
        };
        // Serve peers before bootstrapping: the others may already be asking for votes.
        tokio::spawn(transport.serve(node.clone()));
        node.bootstrap().await?;
        Ok(node)
    }

    async fn bootstrap(&self) -> Result<(), OpenError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| OpenError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = match &self.config.bootstrap {
            Bootstrap::Join => {
                tracing::info!(
                    node_id = self.config.node_id,
                    "waiting to be added to a cluster (strata cluster add-learner)"
                );
                return Ok(());
            }
            Bootstrap::Single => {
                BTreeMap::from([(self.config.node_id, BasicNode::new(&self.config.peer_addr))])
            }
            Bootstrap::Cluster(members) => members
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect(),
        };
        let count = members.len();
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(
                    node_id = self.config.node_id,
                    members = count,
                    "initialised a new cluster"
                );
                Ok(())
            }
            // Another initial member got there first and this node already holds its log.
            Err(RaftError::APIError(InitializeError::NotAllowed(reason))) => {
                tracing::info!(%reason, "cluster already initialised by a peer");
                Ok(())
            }
            Err(error) => Err(OpenError::Raft(error.to_string())),
        }
    }

    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn kv(&self) -> &KvState {
        self.state_machine.kv()
    }

    pub fn stream(&self) -> &StreamState {
        self.state_machine.stream()
    }

    pub fn registry(&self) -> &RegistryState {
        self.state_machine.registry()
    }

    /// Accounts, rules and keys as this node has applied them.
    pub fn auth(&self) -> &AuthState {
        self.state_machine.auth()
    }

    /// Usage and limits per namespace, as applied here.
    pub fn quota(&self) -> &QuotaState {
        self.state_machine.quota()
    }

    /// Registry node leases this node keeps (it keeps them only while it leads); `None` while
    /// the table is busy (a sweep holds it while it proposes expiries), so as never to wait.
    pub fn registry_lease_count(&self) -> Option<usize> {
        self.leases.try_lock().ok().map(|leases| leases.len())
    }

    /// Registry and config events of each applied entry; an empty list (after a snapshot
    /// install) means "read history from where you are".
    pub fn subscribe_registry(&self) -> broadcast::Receiver<Arc<(u64, Vec<RegistryEvent>)>> {
        self.state_machine.subscribe_registry()
    }

    /// Topics changed by each applied entry, for consumers attached to this node.
    pub fn subscribe_streams(&self) -> broadcast::Receiver<Arc<(u64, Vec<Notice>)>> {
        self.state_machine.subscribe_streams()
    }

    /// Live applied events; a receiver that falls behind gets `Lagged` and must catch up from
    /// history.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RevisionEvents>> {
        self.state_machine.subscribe()
    }

    /// The revision of the newest command this node applied: the revision reads reflect.
    pub fn applied_revision(&self) -> u64 {
        self.state_machine.revisions().applied()
    }

    /// Commands proposed, and in how many entries (many per entry under load).
    pub fn write_batches(&self) -> BatchCounts {
        self.writes.counts()
    }

    /// Waits until this node has a leader (itself or another), up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .is_ok()
    }

    fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.config.leader_op_timeout_ms)
    }

    /// Proposes a key-value command and waits until it is committed, durable on a majority and
    /// applied on the leader. On a follower the command is forwarded to the leader.
    pub async fn write_kv(&self, command: KvCommand) -> Result<KvResponse, WriteError> {
        match self.write(Command::Kv(command)).await? {
            Response::Kv(response) => Ok(response),
            other => Err(WriteError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Proposes a stream command, like [`Self::write_kv`].
    pub async fn write_stream(
        &self,
        command: StreamCommand,
    ) -> Result<(u64, StreamResponse), WriteError> {
        match self.write(Command::Stream(command)).await? {
            Response::Stream(response) => Ok((stream_revision(&response), response)),
            other => Err(WriteError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Proposes a registry or config command, like [`Self::write_kv`].
    pub async fn write_registry(
        &self,
        command: RegistryCommand,
    ) -> Result<RegistryResponse, WriteError> {
        match self.write(Command::Registry(command)).await? {
            Response::Registry(response) => Ok(response),
            other => Err(WriteError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Proposes an auth command, like [`Self::write_kv`].
    pub async fn write_auth(&self, command: AuthCommand) -> Result<AuthResponse, WriteError> {
        match self.write(Command::Auth(command)).await? {
            Response::Auth(response) => Ok(response),
            other => Err(WriteError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Proposes a change of limits, like [`Self::write_kv`].
    pub async fn write_quota(&self, command: QuotaCommand) -> Result<QuotaResponse, WriteError> {
        match self.write(Command::Quota(command)).await? {
            Response::Quota(response) => Ok(response),
            other => Err(WriteError::Unexpected(format!("{other:?}"))),
        }
    }

    /// A registration: on the leader, after a coalesced leadership check, a registration that
    /// would change nothing only refreshes its nodes' leases (no log entry); any other is
    /// written through the log. Returns revision 0 for a keepalive.
    pub async fn register(&self, command: RegistryCommand) -> Result<RegistryResponse, WriteError> {
        let request = Request {
            time_ms: now_ms(),
            command: Command::Registry(command),
        };
        match write_outcome(self.route(LeaderOp::Register(request)).await)? {
            Response::Registry(response) => Ok(response),
            other => Err(WriteError::Unexpected(format!("{other:?}"))),
        }
    }

    /// One write from the caller's side: routed to the leader, proposed (alone or in a batch),
    /// committed by a majority, applied, answered (the `raft.write` span of a trace).
    #[tracing::instrument(name = "raft.write", level = "debug", skip_all, fields(command = command.kind()))]
    async fn write(&self, command: Command) -> Result<Response, WriteError> {
        let request = Request {
            // Replaced by the leader's stamp before it is proposed (see `clock`).
            time_ms: now_ms(),
            command,
        };
        write_outcome(self.route(LeaderOp::Write(request)).await)
    }

    /// This node leads, its leadership was confirmed by a quorum after the call began (checks
    /// of concurrent callers share rounds), and it applied everything committed before.
    async fn confirmed_leader(&self) -> Result<(), LeaderError> {
        let index = self.leader_read_index().await?;
        self.raft
            .wait(Some(self.op_timeout()))
            .applied_index_at_least(Some(index), "registry keepalive")
            .await
            .map(|_| ())
            .map_err(|e| LeaderError::NoQuorum(format!("applying up to {index}: {e}")))
    }

    /// A read index confirmed by a quorum round that began after the call (shared with every
    /// caller waiting for the same round). Fails with `NotLeader` where this node does not lead.
    async fn leader_read_index(&self) -> Result<u64, LeaderError> {
        self.leader_reads
            .join(self.raft.clone())
            .await
            .unwrap_or_else(|| Err(LeaderError::Fatal("the read-index task stopped".into())))
    }

    /// How many read-index rounds served how many callers, on this node: as leader (its own
    /// and forwarded reads, keepalives) and for its own linearizable reads.
    pub fn read_rounds(&self) -> (RoundCounts, RoundCounts) {
        (self.leader_reads.counts(), self.reads.counts())
    }

    /// The keepalive path of [`Self::register`], on the leader.
    async fn register_as_leader(&self, request: Request) -> Result<LeaderReply, LeaderError> {
        let Command::Registry(command) = &request.command else {
            return Err(LeaderError::Rejected(
                "a registration carries a registry command".into(),
            ));
        };
        let term = self.raft.metrics().borrow().current_term;
        self.confirmed_leader().await?;
        {
            // Held while the keepalive is judged, so that the lease sweep (which holds it while
            // it proposes expiries) never expires a node between our check and our refresh.
            let mut leases = self.leases.lock().await;
            let unchanged = self
                .registry()
                .unchanged_by(command)
                .map_err(|e| LeaderError::Fatal(e.to_string()))?;
            if let Some(nodes) = unchanged {
                leases.refresh(term, &nodes, std::time::Instant::now());
                return Ok(LeaderReply::Written(Response::Registry(
                    RegistryResponse::Registered {
                        revision: 0,
                        created: 0,
                        updated: 0,
                    },
                )));
            }
        }
        let command = command.clone();
        let written = self
            .run_as_leader_unbounded(LeaderOp::Write(request))
            .await?;
        // Its nodes were just heard from, changed or not.
        if let Ok(Some(nodes)) = self.registry().unchanged_by(&command) {
            self.leases
                .lock()
                .await
                .refresh(term, &nodes, std::time::Instant::now());
        }
        Ok(written)
    }
}

/// Maps the outcome of a routed write.
fn write_outcome(outcome: Result<LeaderReply, RouteError>) -> Result<Response, WriteError> {
    match outcome {
        Ok(LeaderReply::Written(Response::QuotaExceeded(exceeded))) => {
            Err(WriteError::QuotaExceeded(exceeded))
        }
        Ok(LeaderReply::Written(response)) => Ok(response),
        Ok(other) => Err(WriteError::Unexpected(format!("{other:?}"))),
        Err(RouteError::Leader(LeaderError::NotLeader { leader_id })) => {
            Err(WriteError::NotLeader { leader_id })
        }
        Err(RouteError::Leader(LeaderError::Fatal(message))) => Err(WriteError::Fatal(message)),
        Err(RouteError::Leader(LeaderError::DiskFull(message))) => {
            Err(WriteError::DiskFull(message))
        }
        Err(RouteError::Leader(error @ LeaderError::Timeout(_))) => {
            Err(WriteError::Unknown(error.to_string()))
        }
        // Only a keepalive checks leadership first; nothing was done.
        Err(RouteError::Leader(error @ LeaderError::NoQuorum(_))) => {
            Err(WriteError::LeaderUnreachable(error.to_string()))
        }
        Err(RouteError::Leader(error)) => Err(WriteError::Unexpected(error.to_string())),
        Err(RouteError::Call(error)) if error.not_sent() => {
            Err(WriteError::LeaderUnreachable(error.to_string()))
        }
        Err(RouteError::Call(error)) => Err(WriteError::Unknown(error.to_string())),
    }
}

fn write_error(
    error: RaftError<u64, openraft::error::ClientWriteError<u64, BasicNode>>,
) -> LeaderError {
    match error {
        RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(forward)) => {
            LeaderError::NotLeader {
                leader_id: forward.leader_id,
            }
        }
        RaftError::APIError(openraft::error::ClientWriteError::ChangeMembershipError(e)) => {
            LeaderError::Rejected(e.to_string())
        }
        RaftError::Fatal(fatal) => LeaderError::Fatal(fatal.to_string()),
    }
}

/// Proposes one batch of writes as one entry (a lone write as itself) and answers each.
#[tracing::instrument(name = "raft.propose", level = "debug", skip_all, fields(commands = requests.len()))]
async fn propose(
    raft: Raft<TypeConfig>,
    mut requests: Vec<Request>,
) -> Vec<Result<Response, LeaderError>> {
    let count = requests.len();
    let entry = if count == 1 {
        requests.pop().expect("one request")
    } else {
        Request {
            time_ms: requests.iter().map(|r| r.time_ms).max().unwrap_or(0),
            command: Command::Batch(requests),
        }
    };
    match raft.client_write(entry).await {
        Ok(written) => match written.data {
            Response::Batch(answers) if count > 1 && answers.len() == count => {
                answers.into_iter().map(Ok).collect()
            }
            answer if count == 1 => vec![Ok(answer)],
            other => {
                let error = format!("a batch of {count} was answered with {other:?}");
                vec![Err(LeaderError::Fatal(error)); count]
            }
        },
        Err(error) => vec![Err(write_error(error)); count],
    }
}

fn read_index_error(
    error: RaftError<u64, openraft::error::CheckIsLeaderError<u64, BasicNode>>,
) -> LeaderError {
    use openraft::error::CheckIsLeaderError;
    match error {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)) => {
            LeaderError::NotLeader {
                leader_id: forward.leader_id,
            }
        }
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)) => {
            LeaderError::NoQuorum(e.to_string())
        }
        RaftError::Fatal(fatal) => LeaderError::Fatal(fatal.to_string()),
    }
}

impl RaftNode {
    /// Waits until this node has applied the command at `revision` (so its state reflects it).
    pub async fn wait_revision(&self, revision: u64) -> Result<(), ReadError> {
        self.state_machine
            .revisions()
            .wait_for(revision, self.op_timeout())
            .await
            .map_err(ReadError::Unavailable)
    }

    /// Whether this node believes it leads (it may have been deposed a moment ago).
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.current_leader == Some(self.config.node_id)
    }

    /// Whether this node is in the cluster's membership as it knows it (a voter or a learner).
    /// A node removed from the cluster may never learn of it (the leader stops replicating to
    /// it at once), so `true` proves little; `false` proves it must not serve.
    pub fn is_member(&self) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&self.config.node_id)
            .is_some()
    }

    /// Confirms that this node can still serve a long-lived session, within `bound`: it is a
    /// member, a leader with a quorum answers a read index, and this node applies up to it. A
    /// node that was removed (and never told), cut off, or left behind fails here, so its
    /// sessions end with an error instead of waiting in silence for entries that never come.
    pub async fn confirm_serving(&self, bound: Duration) -> Result<u64, ReadError> {
        if !self.is_member() {
            return Err(ReadError::Unavailable(format!(
                "node {} is not a member of the cluster (removed, or not yet added)",
                self.config.node_id
            )));
        }
        match tokio::time::timeout(bound, self.linearizable_barrier()).await {
            Ok(Ok(())) => Ok(self.applied_revision()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ReadError::Unavailable(format!(
                "could not confirm with the leader within {} ms that this node is current",
                bound.as_millis()
            ))),
        }
    }

    /// Returns once this node's applied state includes every write acknowledged before the
    /// call: the leader confirms its leadership with a quorum and names a read index (on a
    /// follower, over the peer transport); this node then waits to apply up to it.
    pub async fn linearizable_barrier(&self) -> Result<(), ReadError> {
        if self.config.unsafe_stale_reads {
            return Ok(()); // the broken mode (see RaftNodeConfig)
        }
        let index =
            self.reads.join(self.clone()).await.unwrap_or_else(|| {
                Err(ReadError::Unavailable("the read-index task stopped".into()))
            })?;
        self.raft
            .wait(Some(self.op_timeout()))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|e| {
                ReadError::Unavailable(format!("applying up to the read index {index}: {e}"))
            })
    }

    /// One read-index round for [`Self::reads`]: here if this node leads, else one call to the
    /// leader (where it joins the leader's own next round).
    async fn read_index_round(&self) -> Result<u64, ReadError> {
        match self.route(LeaderOp::ReadIndex).await {
            Ok(LeaderReply::ReadIndex(index)) => Ok(index),
            Ok(other) => Err(ReadError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
            Err(RouteError::Leader(LeaderError::NotLeader { leader_id })) => {
                Err(ReadError::NotLeader { leader_id })
            }
            Err(RouteError::Leader(error)) => Err(ReadError::Unavailable(error.to_string())),
            Err(RouteError::Call(error)) => Err(ReadError::Unavailable(error.to_string())),
        }
    }

    /// The cluster's time as this node knows it (the leader's clock, carried by the log): what
    /// reads judge expiry by. See `clock`.
    pub fn cluster_now(&self) -> u64 {
        self.clock.now()
    }

    /// Runs `op` here if this node leads, or on the leader it knows of. Never forwards twice: the
    /// leader runs a forwarded op only if it still leads.
    async fn route(&self, op: LeaderOp) -> Result<LeaderReply, RouteError> {
        let (leader, addr) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let leader = metrics.current_leader;
            let addr = leader.and_then(|id| {
                metrics
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|node| node.addr.clone())
            });
            (leader, addr)
        };
        match (leader, addr) {
            (Some(leader), _) if leader == self.config.node_id => {
                self.run_as_leader(op).await.map_err(RouteError::Leader)
            }
            (Some(leader), Some(addr)) => {
                let request = PeerRequest::Leader(op);
                // A little longer than the leader's own limit, so its answer wins the race.
                let timeout = self.op_timeout() + Duration::from_secs(1);
                let call = self.transport.call(leader, &addr, &request, timeout);
                // A leader that is replaced (crashed, partitioned) may never answer: stop waiting
                // when this node learns of another leader or term. The op's outcome is unknown.
                let mut metrics = self.raft.metrics();
                let term = metrics.borrow().current_term;
                let superseded = metrics
                    .wait_for(|m| m.current_term != term || m.current_leader != Some(leader));
                let answer = tokio::select! {
                    answer = call => answer,
                    _ = superseded => Err(CallError::Failed {
                        node: leader,
                        reason: "the leader was replaced while the call was in flight".into(),
                    }),
                };
                match answer {
                    Ok(PeerResponse::Leader(result)) => result.map_err(RouteError::Leader),
                    Ok(other) => Err(RouteError::Call(CallError::Failed {
                        node: leader,
                        reason: format!("unexpected answer {other:?}"),
                    })),
                    Err(error) => Err(RouteError::Call(error)),
                }
            }
            (leader_id, _) => Err(RouteError::Leader(LeaderError::NotLeader { leader_id })),
        }
    }

    /// Runs a leader-only operation on this node, failing with `NotLeader` if it does not lead.
    async fn run_as_leader(&self, op: LeaderOp) -> Result<LeaderReply, LeaderError> {
        let timeout = self.op_timeout();
        match tokio::time::timeout(timeout, self.run_as_leader_unbounded(op)).await {
            Ok(result) => result,
            Err(_) => Err(LeaderError::Timeout(timeout.as_millis() as u64)),
        }
    }

    async fn run_as_leader_unbounded(&self, op: LeaderOp) -> Result<LeaderReply, LeaderError> {
        match op {
            // Time is the leader's: whatever node a client reached, its command carries this
            // node's stamp (see `clock`).
            LeaderOp::Write(mut request)
                if self.config.unsafe_ack_before_commit
                    && matches!(request.command, Command::Kv(_)) =>
            {
                request.time_ms = self.clock.stamp();
                // The broken mode (see RaftNodeConfig): propose a key-value write, and answer
                // without waiting (other writes, logins among them, go through as usual).
                let _pending = self
                    .raft
                    .client_write_ff(request)
                    .await
                    .map_err(|fatal| LeaderError::Fatal(fatal.to_string()))?;
                Ok(LeaderReply::Written(Response::Kv(KvResponse::Put {
                    revision: 0,
                    version: 1,
                })))
            }
            LeaderOp::Write(mut request) => {
                if grows(&request.command) {
                    self.disk.check().map_err(LeaderError::DiskFull)?;
                }
                request.time_ms = self.clock.stamp();
                // Its size bounds the batch it joins; a size that cannot be told goes alone.
                let bytes = bincode::serialized_size(&request).map_or(usize::MAX, |n| n as usize);
                match self.writes.submit(request, bytes).await {
                    Some(outcome) => outcome.map(LeaderReply::Written),
                    None => Err(LeaderError::Fatal("the write batcher stopped".into())),
                }
            }
            LeaderOp::ReadIndex => self.leader_read_index().await.map(LeaderReply::ReadIndex),
            LeaderOp::Register(mut request) => {
                request.time_ms = self.clock.stamp();
                Box::pin(self.register_as_leader(request)).await
            }
            LeaderOp::AddLearner { .. }
            | LeaderOp::Promote { .. }
            | LeaderOp::Remove { .. }
            | LeaderOp::SetVoters { .. }
                if !self
                    .membership()
                    .voter_ids()
                    .any(|id| id == self.config.node_id) =>
            {
                // A leader that removed itself goes on leading until it steps down; openraft
                // 0.9 panics if such a leader is asked for another membership change
                // ("Only leader is allowed to call update_effective_membership", seen in our
                // 3 -> 5 -> 3 test). Refuse: nothing is done, and the caller retries on the next
                // leader.
                Err(LeaderError::NotLeader { leader_id: None })
            }
            LeaderOp::AddLearner { node_id, peer_addr } => {
                self.add_learner_as_leader(node_id, peer_addr).await
            }
            LeaderOp::Promote { node_id } => self.promote_as_leader(node_id).await,
            LeaderOp::Remove { node_id } => self.remove_as_leader(node_id).await,
            LeaderOp::SetVoters { node_ids } => self.set_voters_as_leader(node_ids).await,
        }
    }

    /// This node's own view of itself.
    pub async fn local_status(&self) -> NodeStatus {
        let committed_index = self
            .raft
            .with_raft_state(|state| state.committed.map_or(0, |id| id.index))
            .await
            .unwrap_or(0);
        let metrics = self.raft.metrics().borrow().clone();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        NodeStatus {
            node_id: self.config.node_id,
            role: role.to_string(),
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            committed_index,
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index),
            purged_index: metrics.purged.map_or(0, |id| id.index),
            client_addr: self.config.client_addr.clone(),
            peer_addr: self.config.peer_addr.clone(),
            replication: metrics
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, log_id)| (*id, log_id.map_or(0, |l| l.index)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Runs until `shutdown` fires: while this node leads, proposes the removal of keys whose
    /// expiry has passed by its clock. Apply re-checks expiry against the entry's time, so a
    /// key rewritten in the meantime is left alone.
    /// Runs until `shutdown` fires: keeps the space for the next start reserved, making the
    /// reserve again (off the async workers) whenever it is missing and the disk has room.
    pub async fn run_start_reserve(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let reserve = self.start_reserve.clone();
        // Made only with this much left free, so that making it fills no disk under the writes
        // going on (the write guard's own reserve, and at least 16 MiB).
        let keep_free = self.config.min_free_bytes.max(16 * 1024 * 1024);
        let mut warned = false;
        loop {
            if !reserve.is_held() {
                let attempt = reserve.clone();
                match off_worker(move || attempt.restore(keep_free)).await {
                    Ok(true) => {
                        warned = false;
                        tracing::info!(
                            bytes = self.config.start_reserve_bytes,
                            "reserved space for the next start"
                        );
                    }
                    Ok(false) if !warned => {
                        warned = true;
                        tracing::warn!(
                            bytes = self.config.start_reserve_bytes,
                            "too little free space to reserve for the next start; retrying every 10 s"
                        );
                    }
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, "reserving space for the next start"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Runs until `shutdown` fires: while this node leads, asks every other member (voters and
    /// learners) each second whether its disk has room, so that growth stops while any
    /// member's disk is nearly full, before its fsync would fail and stop it (etcd's
    /// cluster-wide NOSPACE alarm).
    pub async fn run_disk_watch(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(crate::disk::PEER_ASK_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            let members: Vec<(u64, String)> = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                if metrics.current_leader != Some(self.config.node_id) {
                    continue;
                }
                metrics
                    .membership_config
                    .membership()
                    .nodes()
                    .filter(|(id, _)| **id != self.config.node_id)
                    .map(|(id, node)| (*id, node.addr.clone()))
                    .collect()
            };
            let transport = &self.transport;
            let asks = members.into_iter().map(|(node_id, addr)| async move {
                let answer = transport
                    .call(
                        node_id,
                        &addr,
                        &PeerRequest::DiskSpace,
                        crate::disk::PEER_ASK_EVERY,
                    )
                    .await;
                (node_id, answer)
            });
            for (node_id, answer) in futures::future::join_all(asks).await {
                // No answer: the last one stands until it is too old to count.
                if let Ok(PeerResponse::DiskSpace(room)) = answer {
                    self.disk.record_peer(node_id, room.err());
                }
            }
        }
    }

    /// Runs until `shutdown` fires: on every node, builds a snapshot (which purges the log
    /// behind it) once the log appended since the last one this task saw or asked for passes
    /// `snapshot_every_bytes`, or the current snapshot's size if that is larger. openraft's own
    /// policy counts entries only, and with the write batcher an entry may carry up to
    /// 512 KiB: 20,000 entries could be gigabytes of log (a 10-million-key load kept 3 GB of it
    /// before this). A snapshot is a whole copy of the state, so one is built only when it lets
    /// at least as many bytes of log go as it writes: a large state is not rewritten for every
    /// 256 MiB of log.
    pub async fn run_snapshot_by_bytes(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let every = self.config.snapshot_every_bytes;
        if every == 0 {
            return;
        }
        let metrics = self.raft.metrics();
        let mut last_snapshot = metrics.borrow().snapshot;
        let mut mark = self.log_bytes.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SNAPSHOT_CHECK_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            let appended = self.log_bytes.load(std::sync::atomic::Ordering::Relaxed);
            let snapshot = metrics.borrow().snapshot;
            if snapshot != last_snapshot {
                // A snapshot was built (by either policy) or installed: count from here.
                last_snapshot = snapshot;
                mark = appended;
                continue;
            }
            if appended.saturating_sub(mark) < every {
                continue;
            }
            let current = current_snapshot_bytes(&self.snapshot_dir).await;
            if appended.saturating_sub(mark) < current {
                continue;
            }
            tracing::info!(
                bytes = appended - mark,
                "building a snapshot: the log grew past --snapshot-every-bytes"
            );
            mark = appended;
            if let Err(error) = self.raft.trigger().snapshot().await {
                tracing::warn!(%error, "asking for a snapshot failed");
                return;
            }
        }
    }

    pub async fn run_expiry_sweeper(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.config.expiry_sweep_interval_ms);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            if self.raft.metrics().borrow().current_leader != Some(self.config.node_id) {
                continue;
            }
            ticks += 1;
            if ticks.is_multiple_of(RETENTION_EVERY_TICKS) {
                self.sweep_retention().await;
            }
            if ticks.is_multiple_of(LEASES_EVERY_TICKS) {
                self.sweep_leases().await;
            }
            let (kv, now, max) = (
                self.kv().clone(),
                self.clock.stamp(),
                self.config.expiry_batch_max,
            );
            let due = match off_worker(move || kv.due_expirations(now, max)).await {
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

    /// Proposes a `Retain` for every topic whose limits or dedup window call for one by this
    /// (the leader's) clock. Apply judges age by the entry's time, never by its own clock.
    async fn sweep_retention(&self) {
        let (stream, now) = (self.stream().clone(), self.clock.stamp());
        let due = match off_worker(move || stream.retention_due(now, RETENTION_BATCH_MAX)).await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "reading stream retention state failed");
                return;
            }
        };
        for (namespace, topic) in due {
            let command = StreamCommand::Retain { namespace, topic };
            match self.write_stream(command).await {
                Ok((_, response)) => tracing::debug!(?response, "stream retention"),
                Err(error) => {
                    tracing::warn!(%error, "proposing stream retention failed");
                    return;
                }
            }
        }
    }

    /// Proposes the expiry of registry nodes whose lease ran out by this (the leader's) clock.
    /// Holds the lease table meanwhile, so that no keepalive is judged against a node that is
    /// being expired; a keepalive that then finds its node gone registers it again.
    async fn sweep_leases(&self) {
        let term = self.raft.metrics().borrow().current_term;
        let registry = self.registry().clone();
        let rows = match off_worker(move || registry.lease_rows()).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(%error, "reading registry leases failed");
                return;
            }
        };
        let mut leases = self.leases.lock().await;
        let due = leases.due(term, &rows, std::time::Instant::now());
        for batch in due.chunks(LEASE_EXPIRY_BATCH_MAX) {
            let command = RegistryCommand::Expire {
                nodes: batch.to_vec(),
            };
            match self.write_registry(command).await {
                Ok(response) => {
                    crate::metrics::REGISTRY_EXPIRATIONS.inc_by(batch.len() as u64);
                    tracing::info!(?response, "registry leases ran out")
                }
                Err(error) => {
                    tracing::warn!(%error, "proposing registry expiries failed");
                    return;
                }
            }
        }
    }

    /// Stops Raft and the peer endpoint, then quiesces storage so the process can exit safely.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown");
        }
        self.transport.close().await;
        if let Err(error) = self.engine.quiesce() {
            tracing::error!(%error, "syncing storage at shutdown failed");
        }
    }
}

impl PeerService for RaftNode {
    async fn handle(&self, request: PeerRequest) -> PeerResponse {
        match request {
            PeerRequest::AppendEntries(rpc) => {
                PeerResponse::AppendEntries(self.raft.append_entries(rpc).await)
            }
            PeerRequest::Vote(rpc) => PeerResponse::Vote(self.raft.vote(rpc).await),
            PeerRequest::InstallSnapshot(rpc) => {
                PeerResponse::InstallSnapshot(self.raft.install_snapshot(rpc).await)
            }
            PeerRequest::Leader(op) => PeerResponse::Leader(self.run_as_leader(op).await),
            PeerRequest::Status => PeerResponse::Status(self.local_status().await),
            PeerRequest::DiskSpace => PeerResponse::DiskSpace(self.disk.check_own()),
        }
    }
}

/// The log index a stream command was applied at (0 when it failed and changed nothing).
fn stream_revision(response: &StreamResponse) -> u64 {
    match response {
        StreamResponse::Published { revision, .. }
        | StreamResponse::TopicPut { revision, .. }
        | StreamResponse::Deleted { revision }
        | StreamResponse::Group { revision, .. }
        | StreamResponse::Retained { revision, .. } => *revision,
        StreamResponse::Failed(_) => 0,
    }
}

/// Milliseconds since the Unix epoch by this node's clock.
/// Whether a command adds data a client asked for (refused while the disk is nearly full).
/// Deletes, acks, expiry, retention, accounts and limits never are: they free space or are
/// needed to go on (a keepalive is not a write at all).
fn grows(command: &Command) -> bool {
    match command {
        Command::Kv(KvCommand::Put { .. } | KvCommand::Txn { .. }) => true,
        Command::Stream(StreamCommand::Publish { .. } | StreamCommand::PutTopic { .. }) => true,
        Command::Stream(StreamCommand::Group { settle, claim, .. }) => {
            settle.is_empty() && *claim == 0
        }
        Command::Registry(RegistryCommand::Register { .. } | RegistryCommand::ConfigSet { .. }) => {
            true
        }
        Command::Batch(requests) => requests.iter().any(|r| grows(&r.command)),
        _ => false,
    }
}

/// Bytes of the snapshot files in `dir` (the current one, and one being built or received):
/// 0 when there are none or the directory cannot be read.
async fn current_snapshot_bytes(dir: &Path) -> u64 {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return 0;
    };
    let mut total = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        if entry.path().extension().is_some_and(|e| e == "data") {
            if let Ok(meta) = entry.metadata().await {
                total += meta.len();
            }
        }
    }
    total
}

/// Runs storage work (a scan) on a blocking thread, off the async workers that carry
/// heartbeats and requests; a task that panicked reads as an error.
async fn off_worker<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|error| error.to_string()),
        Err(error) => Err(format!("the storage task failed: {error}")),
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
