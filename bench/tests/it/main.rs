//! Runs each workload briefly against a real single-node server and checks the report.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `strata` binary, built by the same `cargo test --workspace` that built this test
/// (it sits next to this crate's own binary).
fn strata_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_strata-bench"));
    let strata = bench.with_file_name("strata");
    assert!(
        strata.exists(),
        "{} is missing: run the tests with --workspace",
        strata.display()
    );
    strata
}

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(data_dir: &std::path::Path) -> Server {
    let mut child = Command::new(strata_binary())
        .args([
            "serve",
            "--client-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("STRATA_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning strata serve");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("strata ready:") {
                let _ = sender.send(line);
            }
        }
    });
    let line = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("server ready line");
    let grpc = line
        .split_whitespace()
        .find_map(|part| part.strip_prefix("grpc="))
        .expect("grpc address")
        .to_string();
    Server(child, grpc)
}

#[test]
fn every_workload_reports_completed_operations() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    for workload in [
        "kv-put",
        "kv-get",
        "kv-get-serializable",
        "kv-mixed",
        "kv-txn",
        "kv-load",
        "stream-pub",
        "stream-pub-batch",
        "stream-e2e",
        "stream-consume",
        "registry-heartbeat",
        "watch-fanout",
        "micro-store-write",
        "micro-store-read",
        "micro-events-pub",
    ] {
        // Small registry shapes: 50 nodes refreshing unpaced; 20 watchers.
        let extra: &[&str] = match workload {
            "registry-heartbeat" => &["--nodes", "50", "--services", "5", "--interval", "0s"],
            "watch-fanout" => &["--watchers", "20"],
            _ => &[],
        };
        let report_path = dir.path().join(format!("{workload}.json"));
        let output = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
            .args([
                "--workload",
                workload,
                "--endpoint",
                &server.1,
                "--clients",
                "4",
            ])
            .args([
                "--ops",
                "200",
                "--keys",
                "20",
                "--duration",
                "30s",
                "--json",
            ])
            .arg(&report_path)
            .args(["--server-pid", &server.0.id().to_string()])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{workload}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
        assert_eq!(report["ops"], 200, "{workload}: {report}");
        let outcomes = report["outcomes"].as_object().unwrap();
        assert!(
            outcomes.keys().all(|k| k == "ok" || k == "cas_conflict"),
            "{workload}: unexpected outcomes {outcomes:?}"
        );
        assert!(
            outcomes["ok"].as_u64().unwrap() > 0,
            "{workload}: {outcomes:?}"
        );
        assert!(report["ops_per_s"].as_f64().unwrap() > 0.0);
        assert!(
            report["latency_ms"]["p50"].as_f64().unwrap()
                <= report["latency_ms"]["max"].as_f64().unwrap()
        );
        assert!(report["server_cpu_s_per_1000_ops"].as_f64().unwrap() >= 0.0);
        if workload == "stream-pub-batch" {
            // 100 messages per operation by default.
            let items = report["items_per_s"].as_f64().unwrap();
            let ops = report["ops_per_s"].as_f64().unwrap();
            assert!((items / ops - 100.0).abs() < 1e-6, "{report}");
        }
        if workload == "registry-heartbeat" {
            // Refreshes of unchanged registrations: none may write, none may expire.
            assert_eq!(report["nodes_alive"], 50, "{report}");
            assert_eq!(outcomes["ok"], 200, "{report}");
        }
        if workload == "watch-fanout" {
            assert_eq!(report["delivery_ms"]["deliveries"], 200 * 20, "{report}");
        }
        if workload == "stream-consume" {
            // Four consumers of one group drained the 200 pre-filled messages, each once.
            assert_eq!(report["consumed"], 200, "{report}");
            assert_eq!(report["complete"], true, "{report}");
        }
        if workload == "stream-e2e" {
            let e2e = &report["publish_to_delivery_ms"];
            assert_eq!(e2e["messages"], 200, "{report}");
            assert!(e2e["p50"].as_f64().unwrap() <= e2e["max"].as_f64().unwrap());
        }
    }
}

#[test]
fn rejects_unknown_workloads() {
    let output = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .args(["--workload", "kv-nonsense", "--endpoint", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown workload"));
}

/// A free loopback port (bound, then released for the peer to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn installed(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs `strata-bench --system SYSTEM` and returns its JSON report, asserting every operation
/// succeeded.
fn run_peer(
    dir: &std::path::Path,
    system: &str,
    endpoint: &str,
    workload: &str,
) -> serde_json::Value {
    let report_path = dir.join(format!("{system}-{workload}.json"));
    let output = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .args([
            "--system",
            system,
            "--endpoint",
            endpoint,
            "--workload",
            workload,
        ])
        .args([
            "--clients",
            "4",
            "--ops",
            "200",
            "--keys",
            "20",
            "--batch",
            "10",
        ])
        .args(["--duration", "30s", "--json"])
        .arg(&report_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{system} {workload}: {} {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["system"], system, "{report}");
    assert_eq!(report["ops"], 200, "{system} {workload}: {report}");
    let outcomes = report["outcomes"].as_object().unwrap();
    assert!(
        outcomes.keys().all(|k| k == "ok" || k == "cas_conflict"),
        "{system} {workload}: unexpected outcomes {outcomes:?}"
    );
    report
}

/// The etcd and NATS drivers of bench/compare.sh, against real servers when they are installed
/// (`.ci/run` installs Debian's etcd-server and nats-server; without them this says so).
#[test]
fn peers_run_the_same_shapes_when_installed() {
    let dir = tempfile::tempdir().unwrap();
    if installed("etcd") {
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args(["--name", "e", "--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e={peer_url}")])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting etcd");
        let _etcd = Server(etcd, client_url.clone());
        wait_for_port(client);
        for workload in [
            "kv-put",
            "kv-get",
            "kv-get-serializable",
            "kv-mixed",
            "kv-txn",
        ] {
            run_peer(dir.path(), "etcd", &client_url, workload);
        }
    } else {
        eprintln!("etcd is not installed: its driver was not run (apt-get install etcd-server)");
    }
    if installed("nats-server") {
        let port = free_port();
        let nats = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path().join("nats"))
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        let url = format!("nats://127.0.0.1:{port}");
        let _nats = Server(nats, url.clone());
        wait_for_port(port);
        for workload in ["stream-pub", "stream-pub-batch", "stream-consume"] {
            let report = run_peer(dir.path(), "nats", &url, workload);
            if workload == "stream-pub-batch" {
                let (items, ops) = (report["items_per_s"].as_f64(), report["ops_per_s"].as_f64());
                assert!(
                    (items.unwrap() / ops.unwrap() - 10.0).abs() < 1e-6,
                    "{report}"
                );
            }
            if workload == "stream-consume" {
                assert_eq!(report["consumed"], 200, "{report}");
            }
        }
    } else {
        eprintln!(
            "nats-server is not installed: its driver was not run (apt-get install nats-server)"
        );
    }
}

fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
