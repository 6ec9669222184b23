//! Issue 21: a durable consumer group stopped delivering for good after a membership change.
//!
//! The sequence the chaos suite hit: a consumer's stream is served by node V; V is removed from
//! the cluster but keeps running (the remove's answer was lost, or nobody stopped the node). The
//! leader stops replicating to V at once, and V is never told, so V's group session waits for
//! entries that never come while its client hears nothing: no error, no message, no end. Every
//! message published after the removal stays undelivered.
//!
//! Fixed on both sides: the session proves itself every heartbeat interval (V's node is no longer
//! current with the leader, so the session ends with UNAVAILABLE `stale_node`), and the SDK takes
//! a broken or silent stream as a reason to subscribe again on the next endpoint.

use std::time::{Duration, Instant};

use futures::StreamExt;
use strata_client::stream::{Publish, SubscribeOptions};
use strata_client::Client;

use crate::harness::Cluster;

const TOPIC: &str = "orders";

/// Every node's endpoint, `victim`'s first: a client reaches it first and the others after.
fn victim_first(cluster: &Cluster, victim: u64) -> Vec<String> {
    let mut endpoints = vec![cluster.node(victim).grpc.clone()];
    endpoints.extend(
        (1..=3)
            .filter(|id| *id != victim)
            .map(|id| cluster.node(id).grpc.clone()),
    );
    endpoints
}

async fn connect(endpoints: &[String]) -> Client {
    Client::builder(endpoints.join(","))
        .namespace("stall")
        .request_timeout(Duration::from_secs(3))
        .connect()
        .await
        .expect("connecting")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_consumer_on_a_removed_node_moves_on_instead_of_stalling() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    // The consumer reaches the victim first, the other nodes after it.
    let endpoints = victim_first(&cluster, victim);
    let consumer = connect(&endpoints).await;
    let publisher = connect(&[cluster.node(leader).grpc.clone()]).await;
    let topic = publisher.topic(TOPIC);
    for n in 0..10 {
        topic
            .publish(Publish::new(format!("before-{n}")))
            .await
            .expect("publish");
    }
    let mut subscription = consumer
        .topic(TOPIC)
        .subscribe(
            SubscribeOptions::group("billing")
                .earliest()
                .heartbeat(Duration::from_secs(1)),
        )
        .await
        .expect("subscribe on the victim");
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 10 {
        let delivery = tokio::time::timeout_at(deadline.into(), subscription.next())
            .await
            .expect("the first ten arrive")
            .expect("the stream goes on")
            .expect("a delivery");
        delivery.ack().await.expect("ack");
        seen.insert(delivery.message.sequence);
    }

    // The victim leaves the cluster but keeps running, and nobody tells it.
    cluster
        .cluster_cli(&["remove", "--node-id", &victim.to_string()])
        .expect("removing the victim");
    for n in 0..20 {
        topic
            .publish(Publish::new(format!("after-{n}")))
            .await
            .expect("publish after the removal");
    }

    // Every message published after the removal must still reach the group: the stream on the
    // victim ends within a few heartbeats and the subscription moves to another node.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 30 {
        match tokio::time::timeout_at(deadline.into(), subscription.next()).await {
            Ok(Some(Ok(delivery))) => {
                let _ = delivery.ack().await;
                seen.insert(delivery.message.sequence);
            }
            Ok(Some(Err(error))) => panic!("the subscription failed instead of moving on: {error}"),
            Ok(None) => panic!("the subscription ended"),
            Err(_) => panic!(
                "stalled: {} of 30 messages delivered 30 s after the removal, and no error",
                seen.len()
            ),
        }
    }
    assert!(
        subscription.resubscribed() >= 1,
        "the subscription moved off the removed node"
    );
    assert_eq!(seen, (1..=30).collect(), "every message, once acked");
    // The group drains: nothing pending, nothing left behind.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = publisher.topic(TOPIC).info().await.expect("topic info");
        let group = info
            .groups
            .iter()
            .find(|g| g.name == "billing")
            .expect("the group");
        if group.pending == 0 && group.lag == 0 && group.ack_floor == 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not drain: {group:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A watch served by a node that freezes (SIGSTOP: no error, no end, just silence) moves to
/// another node by itself once three progress intervals pass without a word, resuming after the
/// last revision it delivered: every write is seen once, in order, before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_frozen_node_moves_on_and_misses_nothing() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    let endpoints = victim_first(&cluster, victim);
    let watcher = connect(&endpoints).await;
    let mut watch = watcher.table("db", "t").watch("k", true, 0).await.unwrap();
    let writer = connect(&[cluster.node(leader).grpc.clone()]).await;
    let table = writer.table("db", "t");
    let mut seen: Vec<(u64, Vec<u8>)> = Vec::new();
    for i in 0..10 {
        table.put(format!("k{i:02}"), "v").await.unwrap();
    }
    take_until(&mut seen, 10, &mut watch).await;
    cluster.node(victim).signal("STOP");
    for i in 10..20 {
        table.put(format!("k{i:02}"), "v").await.unwrap();
    }
    take_until(&mut seen, 20, &mut watch).await;
    cluster.node(victim).signal("CONT");
    let keys: Vec<Vec<u8>> = seen.iter().map(|(_, key)| key.clone()).collect();
    let expected: Vec<Vec<u8>> = (0..20).map(|i| format!("k{i:02}").into_bytes()).collect();
    assert_eq!(keys, expected, "every write once, in order");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions only grow"
    );
}

/// Reads `watch` until `seen` holds `count` events (within 40 s).
async fn take_until(
    seen: &mut Vec<(u64, Vec<u8>)>,
    count: usize,
    watch: &mut strata_client::WatchStream,
) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while seen.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, watch.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events arrived", seen.len()))
            .expect("the watch ended")
            .expect("the watch failed");
        for event in item.events {
            seen.push((
                item.revision,
                event.record.expect("a put has its record").key,
            ));
        }
    }
}
