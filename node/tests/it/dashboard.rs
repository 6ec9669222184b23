//! The web dashboard in headless Chromium (`node/tests/browser/dashboard_check.py`, Selenium
//! with Debian's chromium and chromedriver): against a live three-node cluster with auth on,
//! it needs an admin token, shows what the API shows, takes screenshots, and follows a leader
//! change without a reload. Plus the JSON endpoint's refusals, without a browser.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use strata_client::stream::Publish;
use strata_client::Client;

use crate::harness::auth::root_token;
use crate::harness::Cluster;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// GET `path` on `http` with an optional bearer token: (status, body).
fn get(http: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| ("authorization", b))
        .into_iter()
        .collect();
    crate::harness::http_get_with(http, path, &headers)
}

/// The leader every node's /readyz names (the cluster CLI would need a token).
async fn agreed_leader(cluster: &Cluster) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let named: Vec<Option<u64>> = cluster
            .nodes
            .values()
            .map(|server| {
                let (code, body) = get(&server.http, "/readyz", None);
                (code == 200)
                    .then(|| body.trim().rsplit(' ').next()?.parse().ok())
                    .flatten()
            })
            .collect();
        if let Some(Some(first)) = named.first() {
            if named.iter().all(|n| *n == Some(*first)) {
                return *first;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no agreed leader in 30 s: {named:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_cluster_in_a_browser_and_follows_a_leader_change() {
    let python = browser_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup (it installs node/tests/browser/requirements.txt)",
        python.display()
    );
    let mut cluster = Cluster::start(3, &["--auth", "on"]);
    let leader = agreed_leader(&cluster).await;
    let dirs: Vec<PathBuf> = (1..=3).map(|id| cluster.data_dir(id)).collect();
    let dir_refs: Vec<&std::path::Path> = dirs.iter().map(PathBuf::as_path).collect();
    let token = root_token(&cluster.node(leader).grpc, &dir_refs).await;
    let client = Client::builder(cluster.endpoints().join(","))
        .namespace("shop")
        .token(token.clone())
        .request_timeout(Duration::from_secs(15))
        .connect()
        .await
        .unwrap();
    for i in 0..5 {
        client
            .table("db", "t")
            .put(format!("k{i}"), "v")
            .await
            .unwrap();
    }
    let topic = client.topic("orders");
    for n in 0..4 {
        topic.publish(Publish::new(format!("m{n}"))).await.unwrap();
    }
    crate::harness::ack_first(&client, "orders", "billing").await;
    let service = crate::harness::service("api", "1.0", 2);
    client
        .registry()
        .register(&service, Duration::from_secs(300))
        .await
        .unwrap();

    // The page is served by a follower, which survives the leader's end.
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    let http = cluster.node(follower).http.clone();
    // Without a token the data is refused; the page itself is public (it holds no data).
    assert_eq!(get(&http, "/api/v1/dashboard", None).0, 401);
    assert_eq!(get(&http, "/api/v1/dashboard", Some("not-a-token")).0, 401);
    assert_eq!(get(&http, "/dashboard", None).0, 200);

    let screenshots = tempfile::tempdir().unwrap();
    let mut child = Command::new(&python)
        .arg(browser_dir().join("dashboard_check.py"))
        .args(["--http", &http, "--token", &token])
        .args(["--screenshots", screenshots.path().to_str().unwrap()])
        .args([
            "--expect-topic",
            "shop/orders",
            "--expect-service",
            "shop/api",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running dashboard_check.py");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let ready = tokio::task::spawn_blocking(move || {
        let read = stdout.read_line(&mut line).map(|_| line);
        (read, stdout)
    });
    let (read, mut stdout) = tokio::time::timeout(Duration::from_secs(120), ready)
        .await
        .expect("the browser check took over 120 s to show the cluster")
        .unwrap();
    let line = read.unwrap();
    if line.trim() != "READY_FOR_LEADER_CHANGE" {
        let output = child.wait_with_output().unwrap();
        panic!(
            "the browser check failed before the leader change: {line}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let first = screenshots.path().join("dashboard.png");
    let png = std::fs::read(&first).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    cluster.node_mut(leader).kill9();
    child.stdin.take().unwrap().write_all(b"killed\n").unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status,
            rest,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    });
    let (status, rest, stderr) = tokio::time::timeout(Duration::from_secs(90), status)
        .await
        .expect("the browser check took over 90 s to follow the leader change")
        .unwrap();
    assert!(
        status.success(),
        "the browser check failed: {rest}\n{stderr}"
    );
    let result: serde_json::Value = serde_json::from_str(rest.trim()).unwrap();
    assert_eq!(result["old_leader"], leader.to_string());
    assert_ne!(result["new_leader"], leader.to_string());
    assert!(screenshots.path().join("dashboard-after.png").exists());
    eprintln!(
        "dashboard followed the leader from {leader} to {}",
        result["new_leader"]
    );
}
