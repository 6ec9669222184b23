//! Membership calls an admin can get wrong must not wedge the cluster.

use std::time::{Duration, Instant};

use strata_client::Consistency;

use super::retry;
use crate::harness::{free_udp_port, Cluster};

/// Adding a learner where nothing listens and promoting it would make a voter that never
/// votes: the promotion is refused, writes go on, and the learner can be removed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_that_never_answered_is_not_promoted() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_for_leader(Duration::from_secs(20));
    let table = cluster.node(1).client("default").await.table("db", "t");
    table.put("before", "1").await.unwrap();

    let nowhere = format!("127.0.0.1:{}", free_udp_port());
    cluster
        .cluster_cli(&["add-learner", "--node-id", "9", "--peer-addr", &nowhere])
        .unwrap();
    for _ in 0..3 {
        let error = cluster
            .cluster_cli(&["promote", "--node-id", "9"])
            .expect_err("a learner that never answered was promoted");
        assert!(error.contains("has not answered the leader"), "{error}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    super::assert_voters(&cluster, 3);
    // The cluster still commits, and the learner goes again.
    for i in 0..20 {
        table.put(format!("after-{i}"), "1").await.unwrap();
    }
    cluster.cluster_cli(&["remove", "--node-id", "9"]).unwrap();
    table.put("removed", "1").await.unwrap();
}

/// The voter sets `strata cluster status` shows, and whether their entry is committed.
fn membership(cluster: &Cluster) -> (Vec<Vec<u64>>, bool) {
    let status = cluster.cluster_cli(&["status"]).unwrap();
    let sets = serde_json::from_value(status["membership"]["voter_sets"].clone()).unwrap();
    (sets, status["membership"]["committed"] == true)
}

/// Waits up to 20 s for the membership `status` shows to be `want`.
async fn await_membership(cluster: &Cluster, want: (Vec<Vec<u64>>, bool)) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = membership(cluster);
        if seen == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "membership {seen:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A promotion whose joint configuration cannot commit (the new voter and one old one are
/// down) answers "outcome unknown". `status` shows the change in progress; `set-voters` is
/// refused while it is; once the old voter is back the joint configuration commits, `status`
/// says so, and `set-voters` with the old set rolls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_of_unknown_outcome_is_shown_and_rolled_back() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    cluster.start_joining(4);
    let peer = cluster.peer_addrs[&4].clone();
    retry(|| cluster.cluster_cli(&["add-learner", "--node-id", "4", "--peer-addr", &peer])).await;
    let table = cluster
        .node(leader)
        .client("default")
        .await
        .table("db", "t");
    table.put("before", "1").await.unwrap();
    // Wait until the leader has heard from the learner (promote would refuse it otherwise).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down = (1..=3).find(|id| *id != leader).unwrap();
    cluster.node_mut(4).kill9();
    cluster.node_mut(down).kill9();

    let error = cluster
        .cluster_cli(&["promote", "--node-id", "4"])
        .expect_err("a joint configuration without its quorum was committed");
    assert!(error.contains("outcome"), "{error}");
    let old: Vec<u64> = vec![1, 2, 3];
    let joint = vec![old.clone(), vec![1, 2, 3, 4]];
    assert_eq!(membership(&cluster), (joint.clone(), false));
    let refused = cluster
        .cluster_cli(&["set-voters", "--voters", "1,2,3"])
        .expect_err("a change was made over one in progress");
    assert!(refused.contains("FailedPrecondition"), "{refused}");

    cluster.node_mut(down).restart();
    await_membership(&cluster, (joint, true)).await;
    let rolled_back = cluster
        .cluster_cli(&["set-voters", "--voters", "1,2,3"])
        .unwrap();
    assert!(
        rolled_back["log_index"].as_u64().unwrap() > 0,
        "{rolled_back}"
    );
    assert_eq!(membership(&cluster), (vec![old], true));
    // Setting the voters in force again writes nothing and says where they were set.
    let again = cluster
        .cluster_cli(&["set-voters", "--voters", "1,2,3"])
        .unwrap();
    assert_eq!(again["log_index"], rolled_back["log_index"]);
    table.put("after", "1").await.unwrap();
    super::assert_voters(&cluster, 3);
}

/// Two of three nodes are gone for good: the survivor cannot write. Stopped, it is forced to be
/// a cluster of its own (`force-new-cluster`, refused while it runs and without `--yes`); it
/// starts as the only voter with every acknowledged write, and a second node joins it again
/// with an empty directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_quorum_is_recovered_from_one_node_by_force_new_cluster() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_for_leader(Duration::from_secs(20));
    let table = cluster.node(1).client("default").await.table("db", "t");
    let count = 300;
    for i in 0..count {
        table
            .put(format!("k{i:04}"), format!("v{i}"))
            .await
            .unwrap();
    }
    cluster.node_mut(2).kill9();
    cluster.node_mut(3).kill9();
    let stalled = tokio::time::timeout(Duration::from_secs(3), table.put("lost", "1")).await;
    assert!(
        !matches!(stalled, Ok(Ok(_))),
        "a write was acknowledged without a quorum"
    );

    let dir = cluster.data_dir(1);
    let dir_arg = dir.to_str().unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("cluster")
            .args(args)
            .args(["--data-dir", dir_arg, "--json"])
            .output()
            .unwrap()
    };
    let running = cli(&["force-new-cluster", "--yes"]);
    assert!(!running.status.success());
    let stderr = String::from_utf8_lossy(&running.stderr);
    assert!(stderr.contains("still running"), "{stderr}");

    cluster.node_mut(1).kill9();
    let inspected: serde_json::Value =
        serde_json::from_slice(&cli(&["inspect-data"]).stdout).unwrap();
    assert_eq!(inspected["node_id"], 1);
    assert_eq!(inspected["voter_sets"], serde_json::json!([[1, 2, 3]]));
    let last = inspected["last_log_index"].as_u64().unwrap();
    assert!(last >= count, "{inspected}");

    let unconfirmed = cli(&["force-new-cluster"]);
    assert!(!unconfirmed.status.success());
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));
    let unchanged: serde_json::Value =
        serde_json::from_slice(&cli(&["inspect-data"]).stdout).unwrap();
    assert_eq!(unchanged["voter_sets"], serde_json::json!([[1, 2, 3]]));
    assert_eq!(unchanged["last_log_index"], last);

    let forced = cli(&["force-new-cluster", "--yes"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let after: serde_json::Value = serde_json::from_slice(&cli(&["inspect-data"]).stdout).unwrap();
    assert_eq!(after["voter_sets"], serde_json::json!([[1]]));
    assert_eq!(after["last_log_index"], last + 1);

    cluster.node_mut(1).restart();
    cluster.wait_for_leader(Duration::from_secs(20));
    let table = cluster.node(1).client("default").await.table("db", "t");
    for i in 0..count {
        let record = table
            .get_with(format!("k{i:04}"), Consistency::Linearizable)
            .await
            .unwrap();
        assert!(
            record.is_some_and(|r| r.value == format!("v{i}").as_bytes()),
            "acknowledged key {i} is missing after the forced recovery"
        );
    }
    table.put("alone", "1").await.unwrap();
    await_membership(&cluster, (vec![vec![1]], true)).await;

    // A member comes back only with an empty directory, as a learner, then a voter.
    std::fs::remove_dir_all(cluster.data_dir(2)).unwrap();
    cluster.start_joining(2);
    let peer = cluster.peer_addrs[&2].clone();
    retry(|| cluster.cluster_cli(&["add-learner", "--node-id", "2", "--peer-addr", &peer])).await;
    retry(|| cluster.cluster_cli(&["set-voters", "--voters", "1,2"])).await;
    await_membership(&cluster, (vec![vec![1, 2]], true)).await;
    table.put("together", "1").await.unwrap();
}
