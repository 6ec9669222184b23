//! `deploy/observability/`: every metric the Grafana dashboard and the alert rules use exists
//! on a running three-node cluster (the rules' own syntax and behaviour are checked by
//! `promtool` in deploy/check.py).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use strata_client::stream::Publish;
use strata_client::Client;

use crate::harness::Cluster;

fn observability() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability")
}

/// Every `strata_…` identifier in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("strata_") {
        let boundary = at == 0 || {
            let before = rest.as_bytes()[at - 1];
            !(before.is_ascii_alphanumeric() || before == b'_')
        };
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_the_dashboard_and_alerts_use_exists_on_a_running_cluster() {
    let cluster = Cluster::start(3, &["--snapshot-every-entries", "100"]);
    cluster.wait_for_leader(Duration::from_secs(30));
    let client = Client::builder(cluster.endpoints().join(","))
        .namespace("shop")
        .request_timeout(Duration::from_secs(15))
        .connect()
        .await
        .unwrap();
    // Activity that makes every kind of metric appear: writes past a snapshot, a topic with a
    // group, a service.
    let table = client.table("db", "t");
    for i in 0..150 {
        table.put(format!("k{i}"), "v").await.unwrap();
    }
    let topic = client.topic("orders");
    topic.publish(Publish::new("m")).await.unwrap();
    crate::harness::ack_first(&client, "orders", "billing").await;
    let service = crate::harness::service("api", "1", 1);
    client
        .registry()
        .register(&service, Duration::from_secs(60))
        .await
        .unwrap();

    let mut exposed = BTreeSet::new();
    for server in cluster.nodes.values() {
        let (code, text) = server.http_get("/metrics");
        assert_eq!(code, 200);
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            exposed.insert(line[..end].to_string());
        }
    }

    let dashboard_text = std::fs::read_to_string(observability().join("grafana-dashboard.json"))
        .expect("the Grafana dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text).unwrap();
    let mut expressions = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("a panel with targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            assert!(target["expr"]
                .as_str()
                .is_some_and(|e| e.contains("strata_")));
            expressions += 1;
        }
    }
    assert!(expressions >= 40, "the dashboard has {expressions} queries");
    let alerts = std::fs::read_to_string(observability().join("alerts.yml")).unwrap();
    let mut referenced = metric_names_in(&dashboard_text);
    referenced.extend(metric_names_in(&alerts));
    assert!(referenced.len() >= 30, "only {referenced:?}");
    let missing: Vec<_> = referenced
        .iter()
        .filter(|name| !exposed.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or alerts use metrics no node exposes: {missing:?}\nexposed: {exposed:?}"
    );
}

#[test]
fn the_name_scan_finds_metric_names_only_at_word_starts() {
    let names = metric_names_in(r#"rate(strata_a_total{x="y"}[5m]) / my_strata_b + strata_c"#);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["strata_a_total".to_string(), "strata_c".to_string()]
    );
}
