//! Multi-process clusters over QUIC on 127.0.0.1: formation, forwarding, failover, restarts,
//! membership changes, snapshot catch-up and certificate checks. Every test checks each
//! acknowledged write on every node afterwards, and that none was applied twice (version 1:
//! writers only create keys, retrying with create-only so a retry can never apply twice).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_client::{Client, Consistency, Error, Put};

use crate::harness::{strata, Cluster, Server};

const LEADER_TIMEOUT: Duration = Duration::from_secs(20);

async fn clients(cluster: &Cluster) -> Vec<Client> {
    let mut clients = Vec::new();
    for endpoint in cluster.endpoints() {
        clients.push(
            Client::builder(endpoint)
                .request_timeout(Duration::from_secs(15))
                .connect()
                .await
                .expect("connecting to a node"),
        );
    }
    clients
}

/// Writers that create unique keys through a rotating choice of nodes, retrying each key with
/// create-only until its outcome is known. Records which keys are acknowledged.
pub(crate) struct Load {
    acked: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    /// Milliseconds since the load began of the latest acknowledged write, per writer.
    last_ack_ms: Arc<Vec<AtomicU64>>,
    started: Instant,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(
        clients: Vec<Client>,
        writers: usize,
        per_writer: usize,
        deadline: Duration,
    ) -> Self {
        let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let last_ack_ms = Arc::new((0..writers).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let started = Instant::now();
        let clients = Arc::new(Mutex::new(clients));
        let handles = (0..writers)
            .map(|writer| {
                let (acked, stop, last_ack_ms, clients) = (
                    acked.clone(),
                    stop.clone(),
                    last_ack_ms.clone(),
                    clients.clone(),
                );
                tokio::spawn(async move {
                    let mut choice = writer;
                    for i in 0..per_writer {
                        let key = format!("w{writer:02}/{i:05}");
                        loop {
                            if stop.load(Ordering::SeqCst) || started.elapsed() > deadline {
                                return;
                            }
                            let client = {
                                let clients = clients.lock().unwrap();
                                clients[choice % clients.len()].clone()
                            };
                            let put = Put::new(key.clone(), format!("v-{key}")).create_only();
                            match client.table("db", "t").put_with(put).await {
                                Ok(_) | Err(Error::AlreadyExists { .. }) => {
                                    acked.lock().unwrap().insert(key.clone());
                                    last_ack_ms[writer].store(
                                        started.elapsed().as_millis() as u64,
                                        Ordering::SeqCst,
                                    );
                                    break;
                                }
                                Err(_) => {
                                    choice += 1;
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            acked,
            stop,
            last_ack_ms,
            started,
            writers: handles,
        }
    }

    pub(crate) fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub(crate) async fn wait_for_acks(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.acked_count() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} writes acknowledged within {timeout:?}",
                self.acked_count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn finish(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::SeqCst);
        for writer in self.writers {
            writer.await.expect("writer task");
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

/// Every acknowledged key is on the node behind `client`, created exactly once.
pub(crate) async fn assert_all_present(
    client: &Client,
    acked: &BTreeSet<String>,
    consistency: Consistency,
    node: &str,
) {
    let table = client.table("db", "t");
    let stored: BTreeMap<Vec<u8>, strata_client::proto::Record> = table
        .list_all(strata_client::List::all().consistency(consistency))
        .await
        .unwrap_or_else(|e| panic!("listing on {node}: {e}"))
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    for key in acked {
        let record = stored
            .get(key.as_bytes())
            .unwrap_or_else(|| panic!("acknowledged key {key} is missing on {node}"));
        assert_eq!(
            record.value,
            format!("v-{key}").as_bytes(),
            "{key} on {node}"
        );
        assert_eq!(
            record.version, 1,
            "{key} was applied more than once on {node}"
        );
    }
}

fn members(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["members"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_form_a_cluster_and_serve_writes_through_every_node() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);

    let status = cluster.cluster_cli(&["status"]).unwrap();
    let members = members(&status);
    assert_eq!(members.len(), 3, "{status}");
    for member in &members {
        assert_eq!(member["voter"], true, "{member}");
        let role = member["role"].as_str().unwrap();
        let expected = if member["node_id"] == leader {
            "leader"
        } else {
            "follower"
        };
        assert_eq!(role, expected, "{member}");
        assert_eq!(member["leader_id"], leader, "{member}");
    }

    let clients = clients(&cluster).await;
    let mut acked = BTreeSet::new();
    for (n, client) in clients.iter().enumerate() {
        for i in 0..20 {
            let key = format!("n{n}/{i:03}");
            client
                .table("db", "t")
                .put_with(Put::new(key.clone(), format!("v-{key}")).create_only())
                .await
                .unwrap_or_else(|e| panic!("write through node {} failed: {e}", n + 1));
            acked.insert(key);
        }
    }
    // Linearizable reads on every node (followers ask the leader for a read index) see every
    // write at once, wherever it was sent.
    for (n, client) in clients.iter().enumerate() {
        assert_all_present(
            client,
            &acked,
            Consistency::Linearizable,
            &format!("node {}", n + 1),
        )
        .await;
    }
    // A CAS through a follower is decided on the leader like any other write.
    let follower = clients
        .iter()
        .enumerate()
        .find(|(n, _)| *n as u64 + 1 != leader)
        .map(|(_, c)| c)
        .unwrap();
    let table = follower.table("db", "t");
    let first = table.put(b"cas", b"1").await.unwrap();
    let stale = table
        .put_with(Put::new(b"cas".to_vec(), b"2".to_vec()).expect_mod_revision(first.revision - 1))
        .await;
    assert!(
        matches!(stale, Err(Error::PreconditionFailed { .. })),
        "{stale:?}"
    );
    table
        .put_with(Put::new(b"cas".to_vec(), b"2".to_vec()).expect_mod_revision(first.revision))
        .await
        .unwrap();

    // Concurrent linearizable reads on a follower share read-index rounds (issue 18), and each
    // still sees the write acknowledged just before it began.
    let follower_id = (1..=3).find(|id| *id != leader).unwrap();
    let follower_node = cluster.node(follower_id);
    let before = read_rounds(follower_node);
    let writer = clients[leader as usize - 1].table("db", "t");
    let reader = clients[follower_id as usize - 1].table("db", "t");
    for burst in 0..8 {
        let key = format!("burst/{burst}");
        writer.put(key.clone(), format!("v{burst}")).await.unwrap();
        let reads = (0..32).map(|_| {
            let (reader, key) = (reader.clone(), key.clone());
            tokio::spawn(async move { reader.get(key).await })
        });
        for read in futures::future::join_all(reads).await {
            let record = read
                .unwrap()
                .unwrap()
                .expect("an acknowledged write is read back");
            assert_eq!(record.value, format!("v{burst}").as_bytes());
        }
    }
    let after = read_rounds(follower_node);
    let (waiters, rounds) = (after.0 - before.0, after.1 - before.1);
    assert!(waiters >= 8 * 32, "{waiters} readers counted");
    assert!(
        rounds * 2 <= waiters,
        "{waiters} concurrent reads took {rounds} read-index rounds: they did not share"
    );

    // A burst of large writes: batched, but never into an entry too big to reach a follower
    // within one append RPC (with 8 MiB batches, a cluster under such a burst stopped
    // replicating: every send of the one entry timed out half-way).
    let value = vec![b'v'; 100 * 1024];
    let puts = (0..64).map(|i| {
        let (writer, value) = (writer.clone(), value.clone());
        tokio::spawn(async move { writer.put(format!("large/{i:02}"), value).await })
    });
    let started = Instant::now();
    for put in futures::future::join_all(puts).await {
        put.unwrap()
            .expect("a large write in a burst is acknowledged");
    }
    let elapsed = started.elapsed();
    let listed = reader
        .list_all(strata_client::List::prefix(b"large/".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        listed.len(),
        64,
        "a follower reads the whole burst (took {elapsed:?})"
    );
}

/// (callers, rounds) of a node's read-index rounds for its own linearizable reads.
fn read_rounds(node: &Server) -> (u64, u64) {
    let (code, metrics) = node.http_get("/metrics");
    assert_eq!(code, 200);
    let gauge = |field: &str| -> u64 {
        let prefix = format!("strata_raft{{field=\"{field}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {field} in metrics"))
            .parse()
            .unwrap()
    };
    (gauge("read_index_waiters"), gauge("read_index_rounds"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let load = Load::start(clients(&cluster).await, 8, 400, Duration::from_secs(60));
    load.wait_for_acks(300, Duration::from_secs(30)).await;

    cluster.node_mut(leader).kill9();
    let killed_at = load.started.elapsed().as_millis() as u64;
    let acked_at_kill = load.acked_count();
    // Failover: from the kill to the first write acknowledged after it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let failover_ms = loop {
        let first_after = load
            .last_ack_ms
            .iter()
            .map(|t| t.load(Ordering::SeqCst))
            .filter(|t| *t > killed_at)
            .min();
        if let Some(at) = first_after {
            break at - killed_at;
        }
        assert!(
            Instant::now() < deadline,
            "no write succeeded within 30 s of killing the leader"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("leader failover: kill -9 to first acknowledged write took {failover_ms} ms");
    load.wait_for_acks(acked_at_kill + 300, Duration::from_secs(30))
        .await;
    let acked = load.finish().await;

    let new_leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    assert_ne!(new_leader, leader);
    for client in clients(&cluster).await {
        assert_all_present(&client, &acked, Consistency::Linearizable, "a survivor").await;
    }
    // The old leader comes back as a follower with everything.
    cluster.node_mut(leader).restart();
    cluster.wait_for_leader(LEADER_TIMEOUT);
    let client = cluster.node(leader).client("default").await;
    assert_all_present(&client, &acked, Consistency::Linearizable, "the old leader").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_every_node_at_once_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_for_leader(LEADER_TIMEOUT);
    let load = Load::start(clients(&cluster).await, 8, 1_000, Duration::from_secs(60));
    load.wait_for_acks(400, Duration::from_secs(30)).await;
    for id in 1..=3 {
        cluster.node_mut(id).kill9();
    }
    let acked = load.finish().await;
    for id in 1..=3 {
        cluster.node_mut(id).restart();
    }
    cluster.wait_for_leader(LEADER_TIMEOUT);
    for client in clients(&cluster).await {
        assert_all_present(
            &client,
            &acked,
            Consistency::Linearizable,
            "a restarted node",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_goes_from_three_to_five_to_three_under_load() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_for_leader(LEADER_TIMEOUT);
    // Writes go through node 3, which stays a member throughout (and forwards to the leader).
    let node3 = vec![cluster.node(3).client("default").await];
    let load = Load::start(node3, 6, 2_000, Duration::from_secs(90));
    load.wait_for_acks(100, Duration::from_secs(30)).await;

    for id in [4, 5] {
        cluster.start_joining(id);
        let addr = cluster.peer_addrs[&id].clone();
        cluster
            .cluster_cli(&[
                "add-learner",
                "--node-id",
                &id.to_string(),
                "--peer-addr",
                &addr,
            ])
            .unwrap();
        // Promotion waits for the learner to catch up.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match cluster.cluster_cli(&["promote", "--node-id", &id.to_string()]) {
                Ok(_) => break,
                Err(error) => {
                    assert!(Instant::now() < deadline, "promoting {id}: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let status = cluster.cluster_cli(&["status"]).unwrap();
    let voters: BTreeSet<u64> = members(&status)
        .iter()
        .filter(|m| m["voter"] == true)
        .map(|m| m["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3, 4, 5]), "{status}");
    let at_five = load.acked_count();
    load.wait_for_acks(at_five + 100, Duration::from_secs(30))
        .await;

    // Remove two nodes, the leader first when it can go (writes flow through node 3, which
    // stays): a leader removing itself is the delicate case.
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let removed: Vec<u64> = if leader == 3 {
        vec![1, 2]
    } else {
        let other = [1, 2, 4, 5].into_iter().find(|id| *id != leader).unwrap();
        vec![leader, other]
    };
    for id in &removed {
        // After removing itself, a leader refuses further changes until the next one takes
        // over: UNAVAILABLE, nothing done, retry.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match cluster.cluster_cli(&["remove", "--node-id", &id.to_string()]) {
                Ok(_) => break,
                Err(error) if error.contains("Unavailable") => {
                    assert!(Instant::now() < deadline, "removing {id}: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("removing {id}: {error}"),
            }
        }
    }
    let at_three = load.acked_count();
    load.wait_for_acks(at_three + 100, Duration::from_secs(30))
        .await;
    let acked = load.finish().await;
    for id in &removed {
        cluster.node_mut(*id).kill9();
    }
    let remaining: BTreeSet<u64> = (1..=5).filter(|id| !removed.contains(id)).collect();
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    assert!(remaining.contains(&leader), "leader {leader}");
    let status = cluster.cluster_cli(&["status"]).unwrap();
    let ids: BTreeSet<u64> = members(&status)
        .iter()
        .map(|m| m["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, remaining, "{status}");
    for client in clients(&cluster).await {
        assert_all_present(
            &client,
            &acked,
            Consistency::Linearizable,
            "a remaining member",
        )
        .await;
    }
}

/// Snapshot indices of every member, from `cluster status`.
fn snapshot_indices(cluster: &Cluster) -> Vec<u64> {
    let status = cluster.cluster_cli(&["status"]).unwrap();
    members(&status)
        .iter()
        .map(|m| m["snapshot_index"].as_u64().unwrap_or(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_snapshots_once_its_log_grows_past_snapshot_every_bytes() {
    // Far too many entries for the entry count to trigger anything: only bytes can.
    let cluster = Cluster::start(
        3,
        &[
            "--snapshot-every-entries",
            "1000000",
            "--snapshot-every-bytes",
            "2097152",
        ],
    );
    cluster.wait_for_leader(LEADER_TIMEOUT);
    let client = clients(&cluster).await.remove(0);
    let table = client.table("db", "big");
    let value = vec![7u8; 100 * 1024];
    // 1 MiB: below the bound. Every node checks each second; none may snapshot.
    for i in 0..10 {
        table.put(format!("a{i}"), value.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let before = snapshot_indices(&cluster);
    assert_eq!(before, vec![0, 0, 0], "a snapshot below the bound");
    // 1.5 MiB more: past it on every node.
    for i in 0..15 {
        table.put(format!("b{i}"), value.clone()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let indices = snapshot_indices(&cluster);
        if indices.len() == 3 && indices.iter().all(|&index| index > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every node built a snapshot after 2.5 MiB of log: {indices:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_added_after_the_log_was_purged_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, &["--snapshot-every-entries", "300"]);
    cluster.wait_for_leader(LEADER_TIMEOUT);
    let load = Load::start(clients(&cluster).await, 8, 250, Duration::from_secs(60));
    load.wait_for_acks(2_000, Duration::from_secs(60)).await;
    let acked = load.finish().await;
    let status = cluster.cluster_cli(&["status"]).unwrap();
    let leader_status = members(&status)
        .into_iter()
        .find(|m| m["role"] == "leader")
        .unwrap();
    assert!(
        leader_status["purged_index"].as_u64().unwrap() > 0,
        "the leader has not purged its log: {status}"
    );
    let last = leader_status["last_log_index"].as_u64().unwrap();

    cluster.start_joining(4);
    let addr = cluster.peer_addrs[&4].clone();
    cluster
        .cluster_cli(&["add-learner", "--node-id", "4", "--peer-addr", &addr])
        .unwrap();
    cluster.wait_for_applied(last, Duration::from_secs(30));
    let status = cluster.cluster_cli(&["status"]).unwrap();
    let learner = members(&status)
        .into_iter()
        .find(|m| m["node_id"] == 4)
        .unwrap();
    assert_eq!(learner["voter"], false, "{learner}");
    assert!(
        learner["snapshot_index"].as_u64().unwrap() > 0,
        "node 4 caught up without a snapshot: {learner}"
    );
    let client = cluster.node(4).client("default").await;
    assert_all_present(
        &client,
        &acked,
        Consistency::Serializable,
        "the new learner",
    )
    .await;
    assert_all_present(
        &client,
        &acked,
        Consistency::Linearizable,
        "the new learner",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_a_certificate_from_another_ca_cannot_take_part() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_for_leader(LEADER_TIMEOUT);
    let client = cluster.node(1).client("default").await;
    client.table("db", "t").put(b"before", b"1").await.unwrap();

    // Node 4 gets a certificate from a CA of its own.
    let rogue = tempfile::tempdir().unwrap();
    let rogue_tls = rogue.path().join("tls");
    let rogue_tls = rogue_tls.to_str().unwrap();
    strata(&["cert", "init", "--tls-dir", rogue_tls]);
    strata(&["cert", "node", "--tls-dir", rogue_tls, "--node-id", "4"]);
    let peer = format!("127.0.0.1:{}", crate::harness::free_udp_port());
    let data = rogue.path().join("data");
    let mut rogue_node = Server::start_at(
        &data,
        [
            "--node-id",
            "4",
            "--peer-addr",
            &peer,
            "--tls-dir",
            rogue_tls,
            "--join",
            "--auth",
            "off",
            "--client-tls",
            "off",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    // Even once it is in the membership, the cluster cannot talk to it nor it to the cluster.
    cluster
        .cluster_cli(&["add-learner", "--node-id", "4", "--peer-addr", &peer])
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = cluster.cluster_cli(&["status"]).unwrap();
    let member = members(&status)
        .into_iter()
        .find(|m| m["node_id"] == 4)
        .unwrap();
    assert!(
        member["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the cluster reached a node with a foreign certificate: {member}"
    );
    let rogue_client = rogue_node.client("default").await;
    let read = rogue_client
        .table("db", "t")
        .get_with(b"before".to_vec(), Consistency::Serializable)
        .await
        .unwrap();
    assert!(read.is_none(), "the rogue node received data: {read:?}");
    assert!(rogue_client
        .table("db", "t")
        .put(b"rogue", b"1")
        .await
        .is_err());
    rogue_node.kill9();
    cluster.cluster_cli(&["remove", "--node-id", "4"]).unwrap();
    client.table("db", "t").put(b"after", b"1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sdk_fails_over_to_another_endpoint_when_its_node_dies() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    // The leader first: the client prefers it, then loses it.
    let mut endpoints = vec![cluster.node(leader).grpc.clone()];
    endpoints.extend(
        cluster
            .nodes
            .iter()
            .filter(|(id, _)| **id != leader)
            .map(|(_, s)| s.grpc.clone()),
    );
    let client = Client::builder(endpoints.join(","))
        .request_timeout(Duration::from_secs(15))
        .connect()
        .await
        .unwrap();
    let table = client.table("db", "t");
    table.put(b"a", b"1").await.unwrap();
    cluster.node_mut(leader).kill9();
    let started = Instant::now();
    // The SDK retries what is safe by itself (a refused connection, `not_leader`). A write
    // forwarded to the dying leader has an unknown outcome and comes back to the caller, who
    // may retry it here because it is create-only.
    let mut unknown = 0;
    loop {
        match table
            .put_with(Put::new(b"b".to_vec(), b"2".to_vec()).create_only())
            .await
        {
            Ok(_) | Err(Error::AlreadyExists { .. }) => break,
            Err(Error::OutcomeUnknown { .. }) if unknown < 5 => unknown += 1,
            Err(error) => panic!("the write failed after {unknown} unknown outcomes: {error}"),
        }
    }
    println!(
        "write after losing the leader took {:?} ({unknown} unknown outcomes)",
        started.elapsed()
    );
    let record = table.get(b"b").await.unwrap().unwrap();
    assert_eq!((record.value.as_slice(), record.version), (&b"2"[..], 1));
    let record = table.get(b"a").await.unwrap().unwrap();
    assert_eq!(record.value, b"1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_the_majority_acknowledges_nothing() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let client = cluster.node(leader).client("default").await;
    let table = client.table("db", "t");
    table.put(b"before", b"1").await.unwrap();
    // Freeze both followers: the leader can reach no majority.
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &followers {
        cluster.node(*id).signal("STOP");
    }
    let write = table.put(b"cut-off", b"1").await;
    assert!(
        matches!(write, Err(Error::OutcomeUnknown { .. })),
        "a write without a majority must not be acknowledged: {write:?}"
    );
    let read = table.get(b"before").await;
    assert!(
        matches!(read, Err(Error::Unavailable { .. })),
        "a linearizable read without a majority must fail: {read:?}"
    );
    // Its own applied state is still readable when the caller accepts staleness.
    let stale = table
        .get_with(b"before".to_vec(), Consistency::Serializable)
        .await
        .unwrap();
    assert!(stale.is_some());
    for id in &followers {
        cluster.node(*id).signal("CONT");
    }
    // Healed, the cluster serves again; the unacknowledged write may or may not have landed,
    // but if it did, exactly once.
    cluster.wait_for_leader(LEADER_TIMEOUT);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match table.put(b"after", b"1").await {
            Ok(_) => break,
            Err(error) => {
                assert!(Instant::now() < deadline, "no write after healing: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if let Some(record) = table.get(b"cut-off").await.unwrap() {
        assert_eq!(record.version, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_far_behind_catches_up_on_large_entries() {
    // openraft gives each append RPC one heartbeat interval; a backlog of large entries must be
    // sent in slices that fit, or the follower never catches up.
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.node(lagging).signal("STOP");
    let client = cluster.node(leader).client("default").await;
    let table = client.table("db", "t");
    let value = vec![b'x'; 200 * 1024];
    let mut last = 0;
    for i in 0..150 {
        last = table
            .put(format!("big/{i:03}"), value.clone())
            .await
            .unwrap()
            .revision;
    }
    cluster.node(lagging).signal("CONT");
    cluster.wait_for_applied(last, Duration::from_secs(30));
    let follower = cluster.node(lagging).client("default").await;
    let record = follower
        .table("db", "t")
        .get_with(b"big/149".to_vec(), Consistency::Serializable)
        .await
        .unwrap()
        .expect("the last big entry reached the follower");
    assert_eq!(record.value.len(), value.len());
}
