//! Membership calls an admin can get wrong must not wedge the cluster.

use std::time::Duration;

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
