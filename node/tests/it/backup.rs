//! Backups (`strata snapshot save|status|restore`): a backup taken from a live three-node
//! cluster becomes a new three-node cluster holding exactly the same keys, streams with their
//! groups, registry and config (secrets still sealed); damaged files are refused.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use strata_client::stream::{Publish, Start, SubscribeOptions};
use strata_client::{Client, Consistency, List, Txn};

use crate::harness::{strata, Cluster, BINARY};

const KEYS: usize = 1_000_000;
const TXN_OPS: usize = 128;
const WRITERS: usize = 16;
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
const SECRET: &str = "hunter2-backup-plaintext";

async fn client(endpoints: &[String], namespace: &str) -> Client {
    Client::builder(endpoints.join(","))
        .namespace(namespace)
        .request_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connecting")
}

/// Creates `KEYS` keys in transactions of `TXN_OPS` puts from `WRITERS` tasks.
async fn load_keys(client: &Client) {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (table, next) = (client.table("db", "t"), next.clone());
            tokio::spawn(async move {
                loop {
                    let first = next.fetch_add(TXN_OPS, std::sync::atomic::Ordering::Relaxed);
                    if first >= KEYS {
                        return;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(900),
                        "loading took too long"
                    );
                    let mut txn = Txn::new();
                    for i in first..(first + TXN_OPS).min(KEYS) {
                        txn = txn.then(Txn::put(format!("k{i:07}"), format!("v{i}")));
                    }
                    table.txn(txn).await.expect("a load transaction");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!("loaded {KEYS} keys in {:?}", started.elapsed());
}

/// Everything the test compares, read from a cluster.
#[derive(Debug, PartialEq)]
struct Everything {
    records: Vec<strata_client::proto::Record>,
    topic: strata_client::stream::proto::TopicInfoResponse,
    messages: Vec<(u64, Vec<u8>)>,
    services: Vec<strata_client::registry::Service>,
    config: serde_json::Value,
    config_masked: serde_json::Value,
}

async fn everything(endpoints: &[String]) -> Everything {
    let shop = client(endpoints, "shop").await;
    let records = shop
        .table("db", "t")
        .list_all(List::all().consistency(Consistency::Linearizable))
        .await
        .expect("listing the keys");
    let topic = shop.topic("orders");
    let info = topic.info().await.expect("topic info");
    let mut messages = Vec::new();
    let mut from = Start::Earliest;
    loop {
        let page = topic.read(from, 1_000).await.expect("reading the topic");
        let Some(last) = page.messages.last().map(|m| m.sequence) else {
            break;
        };
        messages.extend(page.messages.into_iter().map(|m| (m.sequence, m.payload)));
        from = Start::Sequence(last + 1);
    }
    let mut services = shop
        .registry()
        .list_services(Consistency::Linearizable)
        .await
        .expect("listing services");
    services.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let config = shop
        .config()
        .get_with_secrets("app", "")
        .await
        .expect("config");
    let config_masked = shop.config().get("app", "").await.expect("config");
    Everything {
        records,
        topic: info,
        messages,
        services,
        config,
        config_masked,
    }
}

fn contains(path: &Path, needle: &[u8]) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(needle.len()).any(|window| window == needle)
}

/// `strata ARGS`, expected to fail: its stderr.
fn strata_fails(args: &[&str]) -> String {
    let output = std::process::Command::new(BINARY)
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success(), "strata {args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_a_live_cluster_restores_into_a_new_cluster_with_everything() {
    let temp = tempfile::tempdir().unwrap();
    let key_file = temp.path().join("secret.key");
    strata(&["cert", "secret-key", "--file", key_file.to_str().unwrap()]);
    let key_arg = key_file.to_str().unwrap();
    let mut source = Cluster::start(3, &["--secret-key-file", key_arg]);
    let leader = source.wait_for_leader(LEADER_TIMEOUT);
    let endpoints = source.endpoints();
    let shop = client(&endpoints, "shop").await;

    load_keys(&shop).await;
    // A key with a TTL far away, and metadata: restored as it was.
    shop.table("db", "t")
        .put_with(
            strata_client::Put::new("ttl-key", "v")
                .ttl(Duration::from_secs(3_600))
                .metadata("owner", "ops"),
        )
        .await
        .unwrap();
    // A topic with a group part-way through: 300 acked of 500.
    let topic = shop.topic("orders");
    for batch in 0..5 {
        topic
            .publish_batch((0..100).map(|n| Publish::new(format!("order-{}", batch * 100 + n))))
            .await
            .unwrap();
    }
    let mut subscription = topic
        .subscribe(
            SubscribeOptions::group("billing")
                .earliest()
                .max_in_flight(50),
        )
        .await
        .unwrap();
    for _ in 0..300 {
        let delivery = subscription.next().await.unwrap().unwrap();
        delivery.ack().await.unwrap();
    }
    drop(subscription);
    // Services in the registry, and a config document with a secret.
    for (name, nodes) in [("api", 3), ("billing", 2)] {
        shop.registry()
            .register(
                &crate::harness::service(name, "1.0.0", nodes),
                Duration::from_secs(3_600),
            )
            .await
            .unwrap();
    }
    let config = shop.config();
    config
        .set(
            "app",
            "",
            &json!({"db": {"host": "db.internal", "pool": 8}, "features": ["a", "b"]}),
        )
        .await
        .unwrap();
    config
        .set_secret("app", "db.password", &json!(SECRET))
        .await
        .unwrap();
    let before = everything(&endpoints).await;
    assert_eq!(before.records.len(), KEYS + 1);
    let group = &before.topic.groups[0];
    assert_eq!((group.acked, group.ack_floor), (300, 300), "{group:?}");
    assert_eq!(before.config["db"]["password"], json!(SECRET));

    // Saved through a follower while writes go on: everything acknowledged before is in it.
    let follower = *source.nodes.keys().find(|id| **id != leader).unwrap();
    let backup = temp.path().join("cluster.snap");
    let writing = {
        let table = shop.table("db", "later");
        tokio::spawn(async move {
            for i in 0..200 {
                table.put(format!("l{i}"), "x").await.unwrap();
            }
        })
    };
    let saved = tokio::task::spawn_blocking({
        let (backup, endpoint) = (backup.clone(), source.node(follower).grpc.clone());
        move || {
            strata(&[
                "snapshot",
                "save",
                backup.to_str().unwrap(),
                "--endpoint",
                &endpoint,
                "--json",
            ])
        }
    })
    .await
    .unwrap();
    writing.await.unwrap();
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    let revision = saved["revision"].as_u64().unwrap();
    let status: serde_json::Value = serde_json::from_str(&strata(&[
        "snapshot",
        "status",
        backup.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(status["header"]["revision"].as_u64(), Some(revision));
    assert_eq!(status["sha256"], saved["sha256"]);
    assert_eq!(status["header"]["source_node"].as_u64(), Some(follower));
    assert!(
        status["entries"].as_u64().unwrap() > KEYS as u64,
        "{status}"
    );
    assert!(
        !contains(&backup, SECRET.as_bytes()),
        "the backup holds the secret in plain"
    );
    for (id, server) in &mut source.nodes {
        eprintln!("stopping source node {id}");
        server.terminate();
    }

    // Damaged copies are refused and change nothing.
    let bytes = std::fs::read(&backup).unwrap();
    let truncated = temp.path().join("truncated.snap");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let flipped = temp.path().join("flipped.snap");
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 3] ^= 0x10;
    std::fs::write(&flipped, &damaged).unwrap();
    for bad in [&truncated, &flipped] {
        let error = strata_fails(&["snapshot", "status", bad.to_str().unwrap()]);
        assert!(
            error.contains("SHA-256 mismatch: the file is truncated or damaged"),
            "{error}"
        );
        let target = temp.path().join("never");
        let error = strata_fails(&[
            "snapshot",
            "restore",
            bad.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
            "--node-id",
            "1",
            "--initial-cluster",
            "1=127.0.0.1:1",
        ]);
        assert!(error.contains("truncated or damaged"), "{error}");
        assert!(
            !target.exists(),
            "a refused restore made {}",
            target.display()
        );
    }

    // A new three-node cluster from the backup holds exactly what the old one did.
    let mut restored = Cluster::start_restored(3, &backup, &["--secret-key-file", key_arg]);
    restored.wait_for_leader(LEADER_TIMEOUT);
    let endpoints = restored.endpoints();
    let after = everything(&endpoints).await;
    assert_eq!(after.records.len(), before.records.len());
    for (old, new) in before.records.iter().zip(&after.records) {
        assert_eq!(old, new);
    }
    assert_eq!(after, before, "the restored cluster differs");
    assert_eq!(after.config_masked["db"]["password"], json!("[secret]"));
    // The keys written while the backup was taken: those at or below its revision, exactly.
    let shop = client(&endpoints, "shop").await;
    let later = shop
        .table("db", "later")
        .list_all(List::all())
        .await
        .unwrap();
    assert!(
        later.iter().all(|r| r.mod_revision <= revision),
        "{later:?}"
    );

    // It takes writes, with revisions after the backup's.
    let put = shop.table("db", "t").put("after", "restore").await.unwrap();
    assert!(put.revision > revision, "{put:?} after revision {revision}");
    // The group resumes where it was: nothing it acked comes again.
    let mut subscription = shop
        .topic("orders")
        .subscribe(SubscribeOptions::group("billing"))
        .await
        .unwrap();
    let delivery = subscription.next().await.unwrap().unwrap();
    let sequence = delivery.message.sequence;
    assert!(
        sequence > 300,
        "message {sequence} was acked before the backup"
    );
    assert_eq!(
        delivery.message.payload,
        format!("order-{}", sequence - 1).into_bytes()
    );
    drop(subscription);

    // A node added later has no log to replay from the start: it receives the restored base
    // as a Raft snapshot, and holds every key.
    restored.start_joining(4);
    let peer = restored.peer_addrs[&4].clone();
    restored
        .cluster_cli(&["add-learner", "--node-id", "4", "--peer-addr", &peer])
        .unwrap();
    restored.wait_for_applied(restored.last_log_index(), Duration::from_secs(120));
    let learner = client(&[restored.node(4).grpc.clone()], "shop").await;
    let on_learner = learner
        .table("db", "t")
        .list_all(List::all().consistency(Consistency::Serializable))
        .await
        .unwrap();
    assert_eq!(on_learner.len(), KEYS + 2, "the learner's keys");
    let mut expected = after.records.clone();
    expected.push(
        shop.table("db", "t")
            .get("after")
            .await
            .unwrap()
            .expect("the key written after the restore"),
    );
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert!(on_learner == expected, "the learner's keys differ");
}
