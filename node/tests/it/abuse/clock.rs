//! Time is the leader's: a node whose clock is wrong moves nothing.

use std::time::{Duration, Instant};

use strata_client::{Consistency, Put};

use crate::harness::Cluster;

/// A follower an hour ahead, then one an hour behind, takes writes with a TTL: the keys live
/// for their TTL by the leader's clock, seen through every node, and expire on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skewed_follower_moves_no_ttl() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    for (round, skew) in [3_600_000i64, -3_600_000].into_iter().enumerate() {
        let skewed = (1..=3).find(|id| *id != leader).unwrap();
        let node = cluster.node_mut(skewed);
        node.kill9();
        node.restart_with_env(&[("STRATA_TEST_CLOCK_SKEW_MS", &skew.to_string())]);
        let leader = cluster.wait_for_leader(Duration::from_secs(20));
        assert_ne!(leader, skewed, "the test wants a skewed follower");
        let through_skewed = cluster
            .node(skewed)
            .client("default")
            .await
            .table("db", "t");
        let key = format!("session-{round}");
        let put = through_skewed
            .put_with(Put::new(key.clone(), "token").ttl(Duration::from_secs(3)))
            .await
            .unwrap();
        let written = Instant::now();
        // The record's expiry is the leader's time plus the TTL, not the skewed node's.
        let record = through_skewed
            .get(key.clone())
            .await
            .unwrap()
            .expect("alive");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            record.expires_at_ms.abs_diff(now_ms + 3_000) < 2_000,
            "expires at {} for a 3 s TTL written at {now_ms} (revision {})",
            record.expires_at_ms,
            put.revision
        );
        // Alive on every node, read through the skewed one too, until the TTL nears.
        for id in 1..=3 {
            let table = cluster.node(id).client("default").await.table("db", "t");
            for consistency in [Consistency::Linearizable, Consistency::Serializable] {
                let found = table.get_with(key.clone(), consistency).await.unwrap();
                if written.elapsed() < Duration::from_millis(2_500) {
                    assert!(found.is_some(), "node {id} ({consistency:?}) lost it early");
                }
            }
        }
        // Gone everywhere soon after the TTL, by the leader's clock.
        let deadline = written + Duration::from_secs(10);
        for id in 1..=3 {
            let table = cluster.node(id).client("default").await.table("db", "t");
            while table.get(key.clone()).await.unwrap().is_some() {
                assert!(
                    Instant::now() < deadline,
                    "node {id} still has it after 10 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(
            written.elapsed() > Duration::from_millis(2_500),
            "expired early"
        );
    }
}

/// A follower restarted with its clock an hour ahead, in a quiet cluster (no new stamp reaches
/// it): it judges expiry by the newest time it had applied, stored with its state, not by its
/// own clock, so a key with a minute left is still there through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_skewed_follower_judges_expiry_by_the_stored_cluster_time() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let table = cluster
        .node(leader)
        .client("default")
        .await
        .table("db", "t");
    table
        .put_with(Put::new("session", "token").ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    // Every member has applied the write (and its time) before the restart.
    let last = cluster.last_log_index();
    cluster.wait_for_applied(last, Duration::from_secs(10));
    let node = cluster.node_mut(follower);
    node.kill9();
    node.restart_with_env(&[("STRATA_TEST_CLOCK_SKEW_MS", "3600000")]);
    let through_follower = cluster
        .node(follower)
        .client("default")
        .await
        .table("db", "t");
    for consistency in [Consistency::Serializable, Consistency::Linearizable] {
        let found = through_follower
            .get_with("session", consistency)
            .await
            .unwrap();
        assert!(
            found.is_some(),
            "the follower hid a live key by its own clock ({consistency:?})"
        );
    }
}
