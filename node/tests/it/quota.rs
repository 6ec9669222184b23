//! Quotas per namespace against real nodes: limits set with `strata ns limits` trip with
//! RESOURCE_EXHAUSTED naming the quota, exactly at the limit under concurrent writers, with
//! nothing of a refused call applied; usage is in `strata ns usage` and /metrics, survives a
//! restart, and reaches a node that catches up by snapshot.

use std::time::Duration;

use strata_client::registry::{Node, Service};
use strata_client::stream::Publish;
use strata_client::{Error, List};

use crate::harness::{Cluster, Server};

fn quota_of(error: &Error) -> &str {
    match error {
        Error::QuotaExceeded { quota, .. } => quota,
        other => panic!("expected a quota refusal, got {other:?}"),
    }
}

/// `strata ns usage --json` for `namespace`: (usage, limits) objects.
fn usage(server: &Server, namespace: &str) -> (serde_json::Value, serde_json::Value) {
    let (ok, out, err) = server.cli_in("ns", &["usage", "--namespace", namespace, "--json"], None);
    assert!(ok, "strata ns usage: {err}");
    let entry: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    (entry["usage"].clone(), entry["limits"].clone())
}

fn set_limits(server: &Server, namespace: &str, limits: &[&str]) {
    let mut args = vec!["limits", namespace];
    args.extend_from_slice(limits);
    let (ok, out, err) = server.cli_in("ns", &args, None);
    assert!(ok, "strata ns limits: {out} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotas_trip_exactly_at_the_limit_under_concurrent_writers() {
    let mut server = Server::start();
    set_limits(
        &server,
        "q",
        &[
            "--keys",
            "50",
            "--topics",
            "2",
            "--stream-bytes",
            "1KiB",
            "--nodes",
            "2",
        ],
    );
    let client = server.client("q").await;

    // 8 writers race for 50 keys with 160 distinct keys: exactly 50 land.
    let mut writers = Vec::new();
    for writer in 0..8 {
        let table = client.table("db", "t");
        writers.push(tokio::spawn(async move {
            let (mut stored, mut refused) = (0, 0);
            for i in 0..20 {
                match table.put(format!("w{writer}-{i}"), "v").await {
                    Ok(_) => stored += 1,
                    Err(error) => {
                        assert_eq!(quota_of(&error), "keys");
                        refused += 1;
                    }
                }
            }
            (stored, refused)
        }));
    }
    let (mut stored, mut refused) = (0, 0);
    for writer in writers {
        let (s, r) = writer.await.unwrap();
        stored += s;
        refused += r;
    }
    assert_eq!((stored, refused), (50, 110));
    let listed = client
        .table("db", "t")
        .list_all(List::prefix(""))
        .await
        .unwrap();
    assert_eq!(listed.len(), 50);
    // Overwriting a key adds no key; freeing one makes room for one.
    client.table("db", "t").put("w0-0", "again").await.unwrap();
    let first = listed[0].key.clone();
    client.table("db", "t").delete(first).await.unwrap();
    client.table("db", "t").put("fresh", "v").await.unwrap();
    let error = client
        .table("db", "t")
        .put("one-too-many", "v")
        .await
        .unwrap_err();
    assert_eq!(quota_of(&error), "keys");
    assert!(error.to_string().contains("namespace \"q\""), "{error}");

    // Topics: two, then the third is refused; and nothing of a refused batch is stored.
    for topic in ["t1", "t2"] {
        client
            .topic(topic)
            .publish(Publish::new("x"))
            .await
            .unwrap();
    }
    let error = client
        .topic("t3")
        .publish(Publish::new("x"))
        .await
        .unwrap_err();
    assert_eq!(quota_of(&error), "topics");
    assert!(client.topics("").await.unwrap().len() == 2);
    let big: Vec<Publish> = (0..4).map(|_| Publish::new(vec![b'p'; 300])).collect();
    let error = client.topic("t1").publish_batch(big).await.unwrap_err();
    assert_eq!(quota_of(&error), "stream_bytes");
    let info = client.topic("t1").info().await.unwrap().topic.unwrap();
    assert_eq!(info.last_sequence, 1, "a refused batch stored nothing");

    // Nodes: a registration of three nodes against a limit of two registers none of them.
    let nodes = |ids: &[&str]| Service {
        name: "svc".into(),
        version: "1".into(),
        nodes: ids
            .iter()
            .map(|id| Node {
                id: id.to_string(),
                address: "127.0.0.1:1".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let registry = client.registry();
    let error = registry
        .register(&nodes(&["a", "b", "c"]), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(quota_of(&error), "nodes");
    assert!(registry
        .list_services(strata_client::Consistency::Linearizable)
        .await
        .unwrap()
        .is_empty());
    registry
        .register(&nodes(&["a", "b"]), Duration::from_secs(60))
        .await
        .unwrap();

    // Usage as admins see it, and in /metrics; another namespace is untouched.
    let (used, limits) = usage(&server, "q");
    assert_eq!(used["keys"], 50);
    assert_eq!(used["topics"], 2);
    assert_eq!(used["nodes"], 2);
    assert_eq!(limits["keys"], 50);
    assert_eq!(limits["stream_bytes"], 1024);
    let other = server.client("other").await;
    other.table("db", "t").put("k", "v").await.unwrap();
    let (_, body) = server.http_get("/metrics");
    assert!(
        body.contains("strata_namespace_usage{namespace=\"q\",quota=\"keys\"} 50"),
        "{body}"
    );
    assert!(body.contains("strata_namespace_limit{namespace=\"q\",quota=\"topics\"} 2"));
    assert!(body.contains("strata_quota_refusals_total{quota=\"keys\"}"));

    // Usage survives a restart, and limits still hold.
    let before = usage(&server, "q");
    assert!(server.terminate().success());
    server.restart();
    assert_eq!(usage(&server, "q"), before);
    let client = server.client("q").await;
    let error = client
        .table("db", "t")
        .put("after-restart", "v")
        .await
        .unwrap_err();
    assert_eq!(quota_of(&error), "keys");
    // Raising the limit lets writes through again; 0 removes it.
    set_limits(&server, "q", &["--keys", "0"]);
    client
        .table("db", "t")
        .put("after-restart", "v")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn defaults_and_the_request_rate() {
    let server = Server::start();
    // Defaults bind every namespace without limits of its own.
    set_limits(&server, "*", &["--requests-per-second", "20"]);
    set_limits(&server, "vip", &["--requests-per-second", "100000"]);
    let client = server.client("plain").await;
    let (mut served, mut refused) = (0, 0);
    for _ in 0..200 {
        match client.table("db", "t").get("k").await {
            Ok(_) => served += 1,
            Err(error) => {
                assert_eq!(quota_of(&error), "requests_per_second");
                refused += 1;
            }
        }
    }
    // A burst of 20 plus what refills meanwhile; most of 200 quick calls are refused.
    assert!(
        served >= 20 && refused > 100,
        "{served} served, {refused} refused"
    );
    let vip = server.client("vip").await;
    for _ in 0..200 {
        vip.table("db", "t").get("k").await.unwrap();
    }
    // Management calls are never throttled: limits can always be raised.
    set_limits(&server, "*", &["--requests-per-second", "0"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.table("db", "t").get("k").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_and_limits_reach_a_node_that_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, &["--snapshot-every-entries", "100"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let client = cluster.node(leader).client("t").await;
    // Enough entries that node 4 catches up from a snapshot, not the log.
    for i in 0..300 {
        client
            .table("db", "t")
            .put(format!("k{i:03}"), vec![b'v'; 10])
            .await
            .unwrap();
    }
    set_limits(cluster.node(leader), "t", &["--keys", "300"]);
    let last = cluster.last_log_index();
    cluster.start_joining(4);
    let addr = cluster.peer_addrs[&4].clone();
    cluster
        .cluster_cli(&["add-learner", "--node-id", "4", "--peer-addr", &addr])
        .unwrap();
    cluster.wait_for_applied(last, Duration::from_secs(30));
    let status = cluster.cluster_cli(&["status"]).unwrap();
    let learner = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == 4)
        .cloned()
        .unwrap();
    assert!(
        learner["snapshot_index"].as_u64().unwrap() > 0,
        "node 4 caught up without a snapshot: {learner}"
    );
    for id in [1, 2, 3, 4] {
        let (used, limits) = usage(cluster.node(id), "t");
        assert_eq!(used["keys"], 300, "node {id}");
        assert_eq!(used["bytes"], 300 * (4 + 10), "node {id}: keys and values");
        assert_eq!(limits["keys"], 300, "node {id}");
    }
    let error = client.table("db", "t").put("k300", "v").await.unwrap_err();
    assert_eq!(quota_of(&error), "keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_read_their_own_usage_and_only_super_admins_set_limits() {
    use crate::harness::auth::{account_token, root_token};
    let server = Server::start_with(&["--auth", "on"]);
    let root = root_token(&server.grpc, &[&server.data_dir]).await;
    let tenant = account_token(&server.grpc, &root, "acme", "ops", &["admin"]).await;
    let reader = account_token(&server.grpc, &root, "acme", "app", &["read"]).await;
    let as_account = |token: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--token", token, "--json"]);
        server.cli_in("ns", &all, None)
    };
    // The super-tenant's admin sets acme's limits; acme's own admin may not.
    let (ok, _, err) = as_account(&root, &["limits", "acme", "--keys", "7"]);
    assert!(ok, "{err}");
    let (ok, _, err) = as_account(&tenant, &["limits", "acme", "--keys", "70"]);
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    // acme's admin sees acme's usage and limits, not every namespace's, not another's.
    let (ok, out, err) = as_account(&tenant, &["usage"]);
    assert!(ok, "{err}");
    let entry: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(entry["namespace"], "acme");
    assert_eq!(entry["limits"]["keys"], 7);
    let (ok, _, err) = as_account(&tenant, &["usage", "--all"]);
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    let (ok, _, err) = as_account(&tenant, &["usage", "--namespace", "micro"]);
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    // An account without admin scope does not see its namespace's usage either.
    let (ok, _, err) = as_account(&reader, &["usage"]);
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    // The super admin lists every namespace.
    let (ok, out, err) = as_account(&root, &["usage", "--all"]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l.contains("\"namespace\":\"acme\"")),
        "{out}"
    );
}
