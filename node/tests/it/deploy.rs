//! `deploy/`: the validators of `deploy/check.py` (Kubernetes schemas, the compose linter,
//! `systemd-analyze verify`, yamllint, and every flag and variable against `strata serve`), and
//! a rolling restart under writes of a three-node cluster run as the systemd unit runs it:
//! its ExecStart arguments and its config file, with only this machine's addresses and paths
//! put in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strata_client::{Client, Consistency};

use crate::cluster::{assert_all_present, Load};
use crate::harness::{free_udp_port, strata, Server, BINARY};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn every_deployment_file_validates_and_strata_serve_accepts_its_configuration() {
    let python = deploy().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup (it installs deploy/requirements.txt)",
        python.display()
    );
    let output = Command::new(&python)
        .arg(deploy().join("check.py"))
        .args(["--strata", BINARY])
        .output()
        .expect("running deploy/check.py");
    assert!(
        output.status.success(),
        "deploy/check.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A free TCP port on 127.0.0.1 (free when asked; the node binds it moments later).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The unit's `strata` arguments (after the binary), with the config file path.
fn exec_start(unit: &str) -> (Vec<String>, String) {
    let line = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    let mut words = line.split_whitespace();
    assert!(words.next().unwrap().ends_with("/strata"), "{line}");
    let args: Vec<String> = words.map(str::to_string).collect();
    let config = args
        .iter()
        .position(|a| a == "--config")
        .map(|at| args[at + 1].clone())
        .expect("ExecStart names a --config file");
    (args, config)
}

struct Node {
    server: Server,
    client: Client,
}

async fn client(grpc: &str, ca: &[u8], credentials: &(String, String, String)) -> Client {
    let (namespace, id, secret) = credentials;
    Client::builder(grpc)
        .ca_pem(ca.to_vec())
        .credentials(namespace, id, secret)
        .request_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connecting over TLS")
}

/// Waits until the node behind `client` serves a linearizable read (a leader is known, and
/// it has applied up to the read index).
async fn wait_serving(client: &Client, node: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client
            .table("db", "t")
            .get_with("probe", Consistency::Linearizable)
            .await
        {
            Ok(_) => return,
            Err(error) => assert!(
                Instant::now() < deadline,
                "node {node} serves no linearizable read after 60 s: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_run_as_the_systemd_unit_survives_a_rolling_restart_under_writes() {
    let unit = std::fs::read_to_string(deploy().join("systemd/strata.service")).unwrap();
    let (args, installed_config) = exec_start(&unit);
    assert_eq!(args[0], "serve");
    let config: toml::Table = std::fs::read_to_string(deploy().join("systemd/strata.toml"))
        .unwrap()
        .parse()
        .unwrap();
    // Only what differs on one machine is replaced; everything else is the file's.
    let local = [
        "data-dir",
        "node-id",
        "client-addr",
        "http-addr",
        "peer-addr",
        "tls-dir",
        "secret-key-file",
        "initial-cluster",
    ];
    for key in local {
        assert!(config.contains_key(key), "strata.toml sets no {key}");
    }

    let temp = tempfile::tempdir().unwrap();
    let tls = temp.path().join("tls");
    let tls_dir = tls.to_str().unwrap();
    strata(&["cert", "init", "--tls-dir", tls_dir]);
    let key_file = temp.path().join("secret.key");
    strata(&["cert", "secret-key", "--file", key_file.to_str().unwrap()]);
    let peers: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_udp_port())))
        .collect();
    let mut starts = BTreeMap::new();
    for id in 1..=3u64 {
        strata(&[
            "cert",
            "node",
            "--tls-dir",
            tls_dir,
            "--node-id",
            &id.to_string(),
            "--name",
            "127.0.0.1",
        ]);
        let data_dir = temp.path().join(format!("node-{id}"));
        let (grpc, http) = (
            format!("127.0.0.1:{}", free_tcp_port()),
            format!("127.0.0.1:{}", free_tcp_port()),
        );
        let mut node = config.clone();
        let text = |s: &str| toml::Value::String(s.to_string());
        node.insert("data-dir".into(), text(data_dir.to_str().unwrap()));
        node.insert("node-id".into(), toml::Value::Integer(id as i64));
        node.insert("client-addr".into(), text(&grpc));
        node.insert("http-addr".into(), text(&http));
        node.insert("peer-addr".into(), text(&peers[&id]));
        node.insert("tls-dir".into(), text(tls_dir));
        node.insert("secret-key-file".into(), text(key_file.to_str().unwrap()));
        node.insert(
            "initial-cluster".into(),
            toml::Value::Table(
                peers
                    .iter()
                    .map(|(id, addr)| (id.to_string(), text(addr)))
                    .collect(),
            ),
        );
        let path = temp.path().join(format!("node-{id}.toml"));
        std::fs::write(&path, toml::to_string(&node).unwrap()).unwrap();
        let mut node_args: Vec<String> = args[1..]
            .iter()
            .map(|a| {
                if *a == installed_config {
                    path.to_str().unwrap().to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        // The test harness binds ephemeral client ports unless told: the file's, again.
        node_args.extend(["--client-addr".into(), grpc, "--http-addr".into(), http]);
        starts.insert(id, (data_dir, node_args));
    }
    // Started together, as three machines would be.
    let servers: BTreeMap<u64, Server> = std::thread::scope(|scope| {
        let handles: Vec<_> = starts
            .iter()
            .map(|(id, (dir, args))| (*id, scope.spawn(|| Server::start_at(dir, args.clone()))))
            .collect();
        handles
            .into_iter()
            .map(|(id, handle)| (id, handle.join().expect("starting a node")))
            .collect()
    });
    let dirs: Vec<&Path> = servers.values().map(|s| s.data_dir.as_path()).collect();
    let credentials = crate::harness::auth::root_credentials(&dirs);
    let ca = std::fs::read(tls.join("ca.pem")).unwrap();
    let mut nodes = BTreeMap::new();
    for (id, server) in servers {
        let client = client(&server.grpc, &ca, &credentials).await;
        wait_serving(&client, id).await;
        nodes.insert(id, Node { server, client });
    }

    let load = Load::start(
        nodes.values().map(|n| n.client.clone()).collect(),
        6,
        5_000,
        Duration::from_secs(120),
    );
    load.wait_for_acks(200, Duration::from_secs(30)).await;
    for id in 1..=3u64 {
        let node = nodes.get_mut(&id).unwrap();
        // systemctl restart: SIGTERM (the unit's KillSignal), then the same command again.
        let status = node.server.terminate();
        assert!(status.success(), "node {id} stopped with {status}");
        let before = load.acked_count();
        load.wait_for_acks(before + 100, Duration::from_secs(30))
            .await;
        node.server.restart();
        wait_serving(&node.client, id).await;
        eprintln!(
            "node {id} restarted; {} writes acknowledged",
            load.acked_count()
        );
    }
    let before = load.acked_count();
    load.wait_for_acks(before + 100, Duration::from_secs(30))
        .await;
    let acked = load.finish().await;
    for (id, node) in &nodes {
        assert_all_present(
            &node.client,
            &acked,
            Consistency::Linearizable,
            &format!("node {id}"),
        )
        .await;
    }
    eprintln!(
        "{} acknowledged writes, all present on every node",
        acked.len()
    );
}
