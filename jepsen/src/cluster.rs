//! Real `strata serve` processes on 127.0.0.1 forming one cluster, with certificates made by
//! `strata cert`, logs in the run directory, and the faults the nemesis needs: kill -9, restart,
//! SIGSTOP/SIGCONT.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

pub struct Node {
    pub id: u64,
    pub grpc: String,
    pub peer: String,
    child: Option<Child>,
    paused: bool,
}

pub struct Cluster {
    binary: PathBuf,
    /// A deliberately broken server mode to run (see `--broken`).
    broken: Option<String>,
    dir: PathBuf,
    initial: String,
    pub nodes: BTreeMap<u64, Node>,
}

fn free_port(udp: bool) -> anyhow::Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    })
}

fn run(binary: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(binary).args(args).output()?;
    if !output.status.success() {
        bail!(
            "strata {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

impl Cluster {
    /// Creates certificates and starts `size` nodes as the initial voters.
    pub fn start(
        binary: &Path,
        dir: &Path,
        size: u64,
        broken: Option<String>,
    ) -> anyhow::Result<Self> {
        let tls = dir.join("tls");
        let tls_str = tls.to_str().context("run directory is not UTF-8")?;
        run(binary, &["cert", "init", "--tls-dir", tls_str])?;
        let mut nodes = BTreeMap::new();
        for id in 1..=size {
            run(
                binary,
                &[
                    "cert",
                    "node",
                    "--tls-dir",
                    tls_str,
                    "--node-id",
                    &id.to_string(),
                ],
            )?;
            nodes.insert(
                id,
                Node {
                    id,
                    grpc: format!("127.0.0.1:{}", free_port(false)?),
                    peer: format!("127.0.0.1:{}", free_port(true)?),
                    child: None,
                    paused: false,
                },
            );
        }
        let initial = nodes
            .values()
            .map(|n| format!("{}={}", n.id, n.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            binary: binary.to_owned(),
            broken,
            dir: dir.to_owned(),
            initial,
            nodes,
        };
        for id in 1..=size {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// Starts (or restarts) node `id` on its data directory and ports.
    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.get(&id).context("no such node")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))?;
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .args(["--node-id", &id.to_string()])
            .args(["--client-addr", &node.grpc])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--peer-addr", &node.peer])
            .args(["--initial-cluster", &self.initial])
            .arg("--tls-dir")
            .arg(self.dir.join("tls"))
            .arg("--data-dir")
            .arg(self.dir.join(format!("data-{id}")))
            .env(
                "STRATA_LOG",
                "info,openraft=error,openraft::replication=off",
            )
            .envs(
                self.broken
                    .iter()
                    .map(|mode| ("STRATA_UNSAFE_TEST_SWITCH", mode.as_str())),
            )
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("spawning strata serve")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (ready, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("strata ready:") {
                    let _ = ready.send(());
                }
            }
        });
        wait.recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("node {id} did not become ready within 30 s"))?;
        let node = self.nodes.get_mut(&id).expect("checked above");
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    pub fn is_up(&self, id: u64) -> bool {
        self.nodes[&id].child.is_some()
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            node.paused = false;
        }
    }

    fn signal(&self, id: u64, signal: &str) {
        if let Some(child) = &self.nodes[&id].child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
    }

    pub fn pause(&mut self, id: u64) {
        self.signal(id, "STOP");
        if let Some(node) = self.nodes.get_mut(&id) {
            node.paused = node.child.is_some();
        }
    }

    pub fn resume(&mut self, id: u64) {
        self.signal(id, "CONT");
        if let Some(node) = self.nodes.get_mut(&id) {
            node.paused = false;
        }
    }

    /// Resumes every paused node and restarts every killed one.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes[&id].paused {
                self.resume(id);
            }
            if !self.is_up(id) {
                self.spawn(id)?;
            }
        }
        Ok(())
    }

    pub fn endpoints(&self) -> String {
        self.nodes
            .values()
            .map(|n| n.grpc.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The leader as node `via` reports it (0: none known or no answer).
    pub fn leader(&self, via: u64) -> u64 {
        let output = Command::new(&self.binary)
            .args([
                "cluster",
                "status",
                "--json",
                "--endpoint",
                &self.nodes[&via].grpc,
            ])
            .output();
        output
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["leader_id"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.resume(id);
            self.kill(id);
        }
    }
}
