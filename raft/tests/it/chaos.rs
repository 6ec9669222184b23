//! Randomized in-process clusters whose network drops, delays, duplicates and partitions
//! messages under a seed (in the spirit of TiKV's transport filters), running real openraft over
//! our RocksDB log store and state machine. Each run checks Raft's safety properties and that
//! every acknowledged write survives:
//! - votes never go backwards, and a node leads only under a quorum-granted vote for itself
//!   (openraft's (term, node) leader ids make per-term uniqueness the wrong property);
//! - log matching: after healing, any two nodes agree on every log id they both hold;
//! - state machine safety: every node ends with the same value for every key written;
//! - durability: every acknowledged put is present on every node, applied exactly once.
//!
//! Reproduce a failure with `STRATA_CHAOS_SEED=<seed printed on failure>`: the seed fixes every
//! random choice (faults, delays, drops), though not tokio's scheduling, so a rerun follows the
//! same fault schedule without replaying the exact interleaving.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftLogReader;
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use strata_raft::log_store::RaftLogStore;
use strata_raft::state_machine::StateMachine;
use strata_raft::{Command, Request, Response, TypeConfig};
use strata_storage::kv::{Expiry, KvCommand, KvResponse, Precondition, Put, Scope};
use strata_storage::{Engine, LogStore};

const NODES: u64 = 5;
const CHAOS: Duration = Duration::from_secs(6);
const WRITERS: usize = 6;

#[derive(Default)]
struct Faults {
    /// Directed links that deliver nothing.
    blocked: BTreeSet<(u64, u64)>,
    drop_rate: f64,
    duplicate_rate: f64,
    max_delay_ms: u64,
}

struct Net {
    rafts: Mutex<BTreeMap<u64, Raft<TypeConfig>>>,
    faults: Mutex<Faults>,
    rng: Mutex<TestRng>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SimFault(&'static str);

impl Net {
    fn roll(&self, probability: f64) -> bool {
        probability > 0.0 && self.rng.lock().unwrap().random_bool(probability.min(1.0))
    }

    fn delay(&self) -> Duration {
        let max = self.faults.lock().unwrap().max_delay_ms;
        Duration::from_millis(self.rng.lock().unwrap().random_range(0..=max))
    }

    fn blocked(&self, from: u64, to: u64) -> bool {
        self.faults.lock().unwrap().blocked.contains(&(from, to))
    }

    /// Delivers one request from `from` to `to` through the faults.
    async fn deliver<T, F, Fut>(&self, from: u64, to: u64, call: F) -> Result<T, Lost>
    where
        F: FnOnce(Raft<TypeConfig>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let drop_rate = self.faults.lock().unwrap().drop_rate;
        tokio::time::sleep(self.delay()).await;
        if self.blocked(from, to) || self.roll(drop_rate) {
            return Err(Lost::Request);
        }
        let raft = self.rafts.lock().unwrap().get(&to).cloned();
        let Some(raft) = raft else {
            return Err(Lost::Request);
        };
        let result = call(raft).await;
        tokio::time::sleep(self.delay()).await;
        if self.blocked(to, from) || self.roll(drop_rate) {
            return Err(Lost::Response);
        }
        Ok(result)
    }
}

/// How a message was lost: before it arrived, or its answer on the way back.
enum Lost {
    Request,
    Response,
}

// openraft fixes the RPC error type that RaftNetwork returns.
#[allow(clippy::result_large_err)]
fn unpack<T, E: std::error::Error>(
    target: u64,
    delivered: Result<Result<T, RaftError<u64, E>>, Lost>,
) -> Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>> {
    match delivered {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(error)) => Err(RPCError::RemoteError(openraft::error::RemoteError::new(
            target, error,
        ))),
        Err(Lost::Request) => Err(RPCError::Unreachable(Unreachable::new(&SimFault(
            "request lost",
        )))),
        Err(Lost::Response) => Err(RPCError::Network(NetworkError::new(&SimFault(
            "response lost",
        )))),
    }
}

#[derive(Clone)]
struct SimNetwork {
    from: u64,
    net: Arc<Net>,
}

struct SimClient {
    from: u64,
    to: u64,
    net: Arc<Net>,
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = SimClient;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> SimClient {
        SimClient {
            from: self.from,
            to: target,
            net: self.net.clone(),
        }
    }
}

impl SimClient {
    /// Maybe delivers a copy of a request again later, its answer thrown away.
    fn maybe_duplicate<F, Fut>(&self, call: F)
    where
        F: FnOnce(Raft<TypeConfig>) -> Fut + Send + 'static,
        Fut: std::future::Future + Send,
    {
        let rate = self.net.faults.lock().unwrap().duplicate_rate;
        if !self.net.roll(rate) {
            return;
        }
        let (net, from, to) = (self.net.clone(), self.from, self.to);
        tokio::spawn(async move {
            tokio::time::sleep(net.delay() * 2).await;
            if net.blocked(from, to) {
                return;
            }
            let raft = net.rafts.lock().unwrap().get(&to).cloned();
            if let Some(raft) = raft {
                let _ = call(raft).await;
            }
        });
    }
}

type Rpc<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl RaftNetwork<TypeConfig> for SimClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<u64>> {
        let copy = rpc.clone();
        self.maybe_duplicate(move |raft| async move { raft.append_entries(copy).await });
        let delivered = self
            .net
            .deliver(self.from, self.to, |raft| async move {
                raft.append_entries(rpc).await
            })
            .await;
        unpack(self.to, delivered)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        let delivered = self
            .net
            .deliver(self.from, self.to, |raft| async move {
                raft.install_snapshot(rpc).await
            })
            .await;
        unpack(self.to, delivered)
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, _option: RPCOption) -> Rpc<VoteResponse<u64>> {
        let copy = rpc.clone();
        self.maybe_duplicate(move |raft| async move { raft.vote(copy).await });
        let delivered = self
            .net
            .deliver(
                self.from,
                self.to,
                |raft| async move { raft.vote(rpc).await },
            )
            .await;
        unpack(self.to, delivered)
    }
}

struct Node {
    raft: Raft<TypeConfig>,
    state_machine: StateMachine,
    log: RaftLogStore,
}

fn scope() -> Scope {
    Scope::new("chaos", "db", "t")
}

fn put(key: &str) -> Request {
    Request {
        time_ms: 1,
        command: Command::Kv(KvCommand::Put {
            scope: scope(),
            put: Put {
                key: key.as_bytes().to_vec(),
                value: format!("v-{key}").into_bytes(),
                metadata: BTreeMap::new(),
                expiry: Expiry::Never,
            },
            precondition: Precondition::None,
        }),
    }
}

async fn run(seed: u64) {
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let net = Arc::new(Net {
        rafts: Mutex::default(),
        faults: Mutex::default(),
        rng: Mutex::new(TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes)),
    });
    let temp = tempfile::tempdir().unwrap();
    let config = Arc::new(
        Config {
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(100),
            max_in_snapshot_log_to_keep: 20,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    );
    let mut nodes = BTreeMap::new();
    for id in 1..=NODES {
        let dir = temp.path().join(format!("node-{id}"));
        let engine = Engine::open(&dir.join("db")).unwrap();
        let log = RaftLogStore::new(LogStore::new(engine.clone()));
        let state_machine = StateMachine::new(engine, dir.join("snapshots"), 10_000).unwrap();
        let network = SimNetwork {
            from: id,
            net: net.clone(),
        };
        let raft = Raft::new(
            id,
            config.clone(),
            network,
            log.clone(),
            state_machine.clone(),
        )
        .await
        .unwrap();
        net.rafts.lock().unwrap().insert(id, raft.clone());
        nodes.insert(
            id,
            Node {
                raft,
                state_machine,
                log,
            },
        );
    }
    let members: BTreeMap<u64, BasicNode> =
        (1..=NODES).map(|id| (id, BasicNode::new(""))).collect();
    nodes[&1].raft.initialize(members).await.unwrap();

    // Watched for the whole run on every node: its vote never goes backwards, and it acts as
    // leader only under a vote for itself that a quorum granted. (openraft's default leader ids
    // are (term, node): two nodes may each win a quorum in one term, and log ids carry the node,
    // so Raft's one-leader-per-term becomes one leader per (term, node), which holds by
    // construction; the log-matching and state checks below are what catch a split brain.)
    let leaders: Arc<Mutex<BTreeSet<(u64, u64)>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    for (id, node) in &nodes {
        let mut metrics = node.raft.metrics();
        let (id, leaders, violations) = (*id, leaders.clone(), violations.clone());
        tokio::spawn(async move {
            let mut last_vote = None;
            loop {
                let (state, vote) = {
                    let m = metrics.borrow_and_update();
                    (m.state, m.vote)
                };
                if let Some(last) = &last_vote {
                    if vote < *last {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("node {id}'s vote went back from {last} to {vote}"));
                    }
                }
                if state == ServerState::Leader {
                    if vote.leader_id().voted_for() != Some(id) || !vote.is_committed() {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("node {id} leads under vote {vote}"));
                    }
                    leaders.lock().unwrap().insert((vote.leader_id().term, id));
                }
                last_vote = Some(vote);
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    // Writers: unique keys, sent to the node they believe leads; never retried once the outcome
    // is unknown, so a key written twice would show as version 2.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let attempted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let deadline = Instant::now() + CHAOS;
    let rafts: Vec<Raft<TypeConfig>> = nodes.values().map(|n| n.raft.clone()).collect();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (rafts, acked, attempted) = (rafts.clone(), acked.clone(), attempted.clone());
        writers.push(tokio::spawn(async move {
            let mut target = writer % rafts.len();
            for i in 0.. {
                if Instant::now() > deadline {
                    return;
                }
                let key = format!("w{writer}/{i:05}");
                attempted.lock().unwrap().insert(key.clone());
                loop {
                    if Instant::now() > deadline {
                        return;
                    }
                    let write = rafts[target].client_write(put(&key));
                    match tokio::time::timeout(Duration::from_secs(1), write).await {
                        Ok(Ok(reply)) => {
                            let expected = Response::Kv(KvResponse::Put {
                                revision: reply.log_id.index,
                                version: 1,
                            });
                            if reply.data != expected {
                                panic!("{key} answered {:?}, not {expected:?}", reply.data);
                            }
                            acked.lock().unwrap().insert(key);
                            break;
                        }
                        Ok(Err(RaftError::APIError(
                            openraft::error::ClientWriteError::ForwardToLeader(forward),
                        ))) => {
                            // Certainly not applied: try the named leader, or another node.
                            target = match forward.leader_id {
                                Some(leader) => (leader - 1) as usize,
                                None => (target + 1) % rafts.len(),
                            };
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        // Outcome unknown: move on to a new key.
                        Ok(Err(_)) | Err(_) => {
                            target = (target + 1) % rafts.len();
                            break;
                        }
                    }
                }
            }
        }));
    }

    // The nemesis: every 0.1-1.5 s, a new fault mix, then a healthy spell; often the leader is cut off, to force
    // elections while writes are in flight.
    let mut step = 0u64;
    while Instant::now() < deadline {
        step += 1;
        if step.is_multiple_of(2) {
            // Every other step heals everything for a while, so writes make progress and the run
            // tests something under any seed.
            *net.faults.lock().unwrap() = Faults::default();
            let pause = net.rng.lock().unwrap().random_range(300..700);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            continue;
        }
        let leader = rafts
            .iter()
            .find_map(|raft| raft.metrics().borrow().current_leader);
        let pause = {
            let mut rng = net.rng.lock().unwrap();
            let mut faults = net.faults.lock().unwrap();
            faults.blocked.clear();
            let action = rng.random_range(0..6);
            match action {
                0 => {} // healthy
                1 | 5 => {
                    // Isolate the leader, or a random node.
                    let victim = leader
                        .filter(|_| rng.random_bool(0.7))
                        .unwrap_or_else(|| rng.random_range(1..=NODES));
                    for other in (1..=NODES).filter(|o| *o != victim) {
                        faults.blocked.insert((victim, other));
                        faults.blocked.insert((other, victim));
                    }
                }
                2 => {
                    // Split into a majority and a minority.
                    let minority: BTreeSet<u64> =
                        (0..2).map(|_| rng.random_range(1..=NODES)).collect();
                    for a in &minority {
                        for b in (1..=NODES).filter(|b| !minority.contains(b)) {
                            faults.blocked.insert((*a, b));
                            faults.blocked.insert((b, *a));
                        }
                    }
                }
                3 => {
                    // Cut single directed links.
                    for _ in 0..3 {
                        let (a, b) = (rng.random_range(1..=NODES), rng.random_range(1..=NODES));
                        faults.blocked.insert((a, b));
                    }
                }
                _ => {}
            }
            faults.drop_rate = [0.0, 0.05, 0.2][rng.random_range(0..3)];
            faults.duplicate_rate = [0.0, 0.1, 0.3][rng.random_range(0..3)];
            faults.max_delay_ms = [0, 5, 30][rng.random_range(0..3)];
            // A cut-off leader is replaced only after an election timeout: hold those longer.
            let millis = if matches!(action, 1 | 2 | 5) {
                rng.random_range(500..1_500)
            } else {
                rng.random_range(100..400)
            };
            Duration::from_millis(millis)
        };
        tokio::time::sleep(pause).await;
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    // Heal, and let everyone converge.
    *net.faults.lock().unwrap() = Faults::default();
    let converge_by = Instant::now() + Duration::from_secs(30);
    let final_index = loop {
        // A blank write through the leader commits everything before it.
        let leader = rafts[0].metrics().borrow().current_leader;
        if let Some(leader) = leader {
            let raft = &nodes[&leader].raft;
            if let Ok(Ok(reply)) =
                tokio::time::timeout(Duration::from_secs(1), raft.client_write(put("final"))).await
            {
                break reply.log_id.index;
            }
        }
        assert!(
            Instant::now() < converge_by,
            "seed {seed}: no leader after healing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (id, node) in &nodes {
        node.raft
            .wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(Some(final_index), "convergence")
            .await
            .unwrap_or_else(|e| {
                let state = node.raft.metrics().borrow().running_state.clone();
                panic!("seed {seed}: node {id} did not apply up to {final_index}: {e} (raft: {state:?})")
            });
    }

    let violations = violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "seed {seed}: vote or leadership invariant violated: {violations:?}"
    );

    // Log matching: entries both nodes still hold have the same log id.
    let mut logs = BTreeMap::new();
    for (id, node) in &nodes {
        let mut reader = node.log.clone();
        let entries = reader.try_get_log_entries(0..=final_index).await.unwrap();
        logs.insert(
            *id,
            entries
                .into_iter()
                .map(|e| (e.log_id.index, e.log_id))
                .collect::<BTreeMap<_, _>>(),
        );
    }
    for (a, log_a) in &logs {
        for (b, log_b) in &logs {
            for (index, id_a) in log_a {
                if let Some(id_b) = log_b.get(index) {
                    assert_eq!(
                        id_a, id_b,
                        "seed {seed}: nodes {a} and {b} disagree at index {index}"
                    );
                }
            }
        }
    }

    // Every key attempted reads the same on every node; acknowledged ones exist, once.
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "seed {seed}: only {} writes acknowledged; the run proves little",
        acked.len()
    );
    for key in &attempted {
        let mut seen = BTreeMap::new();
        for (id, node) in &nodes {
            let record = node
                .state_machine
                .kv()
                .get(&scope(), key.as_bytes(), 0)
                .unwrap();
            if let Some(record) = &record {
                assert_eq!(
                    record.version, 1,
                    "seed {seed}: {key} applied twice on node {id}"
                );
                assert_eq!(record.value, format!("v-{key}").into_bytes());
            }
            seen.insert(*id, record.map(|r| r.mod_revision));
        }
        let first = seen.values().next().unwrap();
        assert!(
            seen.values().all(|s| s == first),
            "seed {seed}: nodes disagree on {key}: {seen:?}"
        );
        if acked.contains(key) {
            assert!(
                first.is_some(),
                "seed {seed}: acknowledged key {key} was lost"
            );
        }
    }
    println!(
        "seed {seed}: {} acknowledged, {} attempted, {} leaderships, final index {final_index}",
        acked.len(),
        attempted.len(),
        leaders.lock().unwrap().len()
    );
    for node in nodes.values() {
        node.raft.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_faults_keep_raft_safe_and_acknowledged_writes() {
    let seeds: Vec<u64> = match std::env::var("STRATA_CHAOS_SEED") {
        Ok(seed) => vec![seed.parse().expect("STRATA_CHAOS_SEED must be a number")],
        Err(_) => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            (0..3).map(|i| base.wrapping_add(i)).collect()
        }
    };
    for seed in seeds {
        println!("chaos run with STRATA_CHAOS_SEED={seed}");
        run(seed).await;
    }
}
