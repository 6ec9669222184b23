//! Real `strata serve` processes forming one cluster, with certificates made by `strata cert`,
//! logs in the run directory, and the faults the nemesis needs: kill -9, restart,
//! SIGSTOP/SIGCONT, and (with network namespaces, see `net.rs`) cut links and lossy ones. The
//! nodes listen on 127.0.0.1, or each on its own address in its own namespace.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

pub struct Node {
    pub id: u64,
    pub grpc: String,
    /// Where the other nodes reach this one (the initial cluster and the membership).
    pub peer: String,
    /// Where it binds its peer socket: `peer`, but for the proxy's front.
    bind: String,
    child: Option<Child>,
    paused: bool,
    /// Started with failpoints armed or a skewed clock (the heal restarts it without).
    armed: bool,
}

/// How clients reach a cluster with auth and client TLS on: its CA and the root account
/// (from the bootstrap's `root.credentials`).
#[derive(Clone)]
pub struct Access {
    ca_pem: Vec<u8>,
    ca_file: PathBuf,
    /// Where `strata login` keeps the CLI's token (`STRATA_TOKEN_FILE`).
    token_file: PathBuf,
    namespace: String,
    id: String,
    secret: String,
}

/// A client builder for `endpoints`, with the CA and the root's credentials when the cluster
/// has auth on (the SDK exchanges them for a token and renews it).
pub fn client(access: Option<&Access>, endpoints: &str) -> strata_client::ClientBuilder {
    let builder = strata_client::Client::builder(endpoints);
    match access {
        Some(access) => builder.ca_pem(access.ca_pem.clone()).credentials(
            access.namespace.clone(),
            access.id.clone(),
            access.secret.clone(),
        ),
        None => builder,
    }
}

impl Access {
    /// The cluster CA's certificate (PEM).
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// The root's `Basic` credentials (`namespace/id:secret`), for raw gRPC clients.
    pub fn basic(&self) -> String {
        use base64::Engine as _;
        let credential = format!("{}/{}:{}", self.namespace, self.id, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credential)
        )
    }

    /// Reads the root's credentials from whichever data directory the bootstrap wrote them
    /// to (waiting up to 30 s), and logs the CLI in with them.
    fn establish(binary: &Path, dir: &Path, ids: &[u64], endpoints: &str) -> anyhow::Result<Self> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let text = loop {
            let found = ids.iter().find_map(|id| {
                std::fs::read_to_string(dir.join(format!("data-{id}/root.credentials"))).ok()
            });
            match found {
                Some(text) => break text,
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                None => bail!("no root.credentials in any data directory after 30 s"),
            }
        };
        let field = |name: &str| -> anyhow::Result<String> {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = ")))
                .map(|v| v.trim_matches('"').to_string())
                .with_context(|| format!("no {name} in root.credentials"))
        };
        let ca_file = dir.join("tls").join("ca.pem");
        let access = Self {
            ca_pem: std::fs::read(&ca_file).context("reading the cluster CA")?,
            ca_file,
            token_file: dir.join("token.json"),
            namespace: field("namespace")?,
            id: field("id")?,
            secret: field("secret")?,
        };
        // The CLI (membership changes, status) uses a saved login, renewed when it runs out.
        let mut attempts = 0;
        loop {
            let output = access
                .cli(binary)
                .args([
                    "login",
                    "--namespace",
                    &access.namespace,
                    "--id",
                    &access.id,
                ])
                .args(["--endpoint", endpoints])
                .env("STRATA_SECRET", &access.secret)
                .output()?;
            if output.status.success() {
                return Ok(access);
            }
            attempts += 1;
            if attempts >= 50 {
                bail!(
                    "strata login: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A `strata` command that trusts the cluster CA and uses the saved login.
    fn cli(&self, binary: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .env("STRATA_CA_FILE", &self.ca_file)
            .env("STRATA_TOKEN_FILE", &self.token_file)
            .env_remove("STRATA_TOKEN");
        command
    }
}

pub struct Cluster {
    binary: PathBuf,
    /// With auth and client TLS on: how clients get in.
    pub access: Option<Access>,
    /// Auth and client TLS on (the default; `--insecure` turns both off).
    secure: bool,
    /// A deliberately broken server mode to run (see `--broken`).
    broken: Option<String>,
    dir: PathBuf,
    initial: String,
    pub nodes: BTreeMap<u64, Node>,
    /// `--snapshot-every-entries` of every node.
    pub snapshot_every: u64,
    /// Nodes removed and added back by the membership nemesis: they start with `--join`.
    joined: std::collections::BTreeSet<u64>,
    /// A node the membership nemesis has not finished adding back (the heal finishes it).
    pub rejoining: Option<u64>,
    /// Where network faults are made, when they can be (dropped after the nodes).
    pub net: Option<crate::net::Network>,
    /// Each node's data directory is a small tmpfs of its own (the disk-full nemesis),
    /// unmounted after the nodes stop.
    small_disks: bool,
}

/// Size of each node's tmpfs under the disk-full nemesis, and the free space the nodes keep.
const SMALL_DISK_MIB: u64 = 256;
const SMALL_DISK_MIN_FREE: &str = "16777216";
/// What a disk-full fault leaves free: under the nodes' 16 MiB.
const FILLED_LEAVES_BYTES: u64 = 6 * 1024 * 1024;

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
        net: Option<crate::net::Network>,
        secure: bool,
        small_disks: bool,
    ) -> anyhow::Result<Self> {
        let tls = dir.join("tls");
        let tls_str = tls.to_str().context("run directory is not UTF-8")?;
        run(binary, &["cert", "init", "--tls-dir", tls_str])?;
        let mut nodes = BTreeMap::new();
        for id in 1..=size {
            // The client port's certificate names the address clients dial.
            let host = match &net {
                Some(crate::net::Network::Namespaces(net)) => net.address(id),
                _ => "127.0.0.1".to_string(),
            };
            run(
                binary,
                &[
                    "cert",
                    "node",
                    "--tls-dir",
                    tls_str,
                    "--node-id",
                    &id.to_string(),
                    "--name",
                    &host,
                ],
            )?;
            // In a namespace of its own a node has its address and every port to itself.
            let (grpc, peer, bind) = match &net {
                Some(crate::net::Network::Namespaces(net)) => {
                    let peer = format!("{}:7421", net.address(id));
                    (format!("{}:7420", net.address(id)), peer.clone(), peer)
                }
                Some(crate::net::Network::Proxy(proxy)) => (
                    format!("127.0.0.1:{}", free_port(false)?),
                    proxy.front[&id].to_string(),
                    proxy.real[&id].to_string(),
                ),
                None => {
                    let peer = format!("127.0.0.1:{}", free_port(true)?);
                    (
                        format!("127.0.0.1:{}", free_port(false)?),
                        peer.clone(),
                        peer,
                    )
                }
            };
            nodes.insert(
                id,
                Node {
                    id,
                    grpc,
                    peer,
                    bind,
                    child: None,
                    paused: false,
                    armed: false,
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
            access: None,
            secure,
            broken,
            dir: dir.to_owned(),
            initial,
            nodes,
            snapshot_every: 2_000,
            joined: Default::default(),
            rejoining: None,
            net,
            small_disks,
        };
        if small_disks {
            for id in 1..=size {
                let data = cluster.data_dir(id);
                std::fs::create_dir_all(&data)?;
                let status = Command::new("mount")
                    .args([
                        "-t",
                        "tmpfs",
                        "-o",
                        &format!("size={SMALL_DISK_MIB}m"),
                        "tmpfs",
                    ])
                    .arg(&data)
                    .status()
                    .context("running mount")?;
                if !status.success() {
                    bail!("mounting a tmpfs for the disk-full nemesis (needs root): {status}");
                }
            }
        }
        for id in 1..=size {
            cluster.spawn(id)?;
        }
        if secure {
            let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
            cluster.access = Some(Access::establish(binary, dir, &ids, &cluster.endpoints())?);
        }
        Ok(cluster)
    }

    /// A `strata` command with the cluster's CA and login, when it has them.
    fn cli(&self) -> Command {
        match &self.access {
            Some(access) => access.cli(&self.binary),
            None => Command::new(&self.binary),
        }
    }

    /// Starts (or restarts) node `id` on its data directory and ports.
    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn_armed(id, None)
    }

    /// Restarts node `id` with failpoints armed (`FAILPOINTS`, the `fail` crate's syntax, e.g.
    /// `log-after-fsync=5%return`): it crashes by itself when one fires.
    pub fn restart_armed(&mut self, id: u64, failpoints: &str) -> anyhow::Result<()> {
        self.kill(id);
        self.spawn_with(id, Some(failpoints), None)
    }

    /// Restarts node `id` with its wall clock `skew_ms` off (a debug build's
    /// `STRATA_TEST_CLOCK_SKEW_MS`); the heal restarts it with the right time.
    pub fn restart_skewed(&mut self, id: u64, skew_ms: i64) -> anyhow::Result<()> {
        self.kill(id);
        self.spawn_with(id, None, Some(skew_ms))
    }

    fn spawn_armed(&mut self, id: u64, failpoints: Option<&str>) -> anyhow::Result<()> {
        self.spawn_with(id, failpoints, None)
    }

    fn spawn_with(
        &mut self,
        id: u64,
        failpoints: Option<&str>,
        skew_ms: Option<i64>,
    ) -> anyhow::Result<()> {
        let node = self.nodes.get(&id).context("no such node")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))?;
        // `ip netns exec` execs the binary in place, so the child is the server itself (signals
        // reach it).
        let mut command = match &self.net {
            Some(crate::net::Network::Namespaces(net)) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &net.namespace(id)])
                    .arg(&self.binary);
                command
            }
            _ => Command::new(&self.binary),
        };
        crate::guard::die_with_parent(&mut command);
        let mut child = command
            .arg("serve")
            .args(["--node-id", &id.to_string()])
            .args(["--client-addr", &node.grpc])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--peer-addr", &node.bind])
            .args(if self.joined.contains(&id) {
                vec!["--join"]
            } else {
                vec!["--initial-cluster", &self.initial]
            })
            .arg("--tls-dir")
            .arg(self.dir.join("tls"))
            // A cluster's defaults are auth and client TLS on.
            .args(if self.secure {
                vec![]
            } else {
                vec!["--auth", "off", "--client-tls", "off"]
            })
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(if self.small_disks {
                vec![
                    "--min-free-bytes",
                    SMALL_DISK_MIN_FREE,
                    "--start-reserve-bytes",
                    SMALL_DISK_MIN_FREE,
                ]
            } else {
                vec![]
            })
            .env(
                "STRATA_LOG",
                // STRATA_JEPSEN_NODE_LOG: another filter for the nodes, to look into a run.
                std::env::var("STRATA_JEPSEN_NODE_LOG")
                    .unwrap_or_else(|_| "info,openraft=error,openraft::replication=off".into()),
            )
            .args(["--snapshot-every-entries", &self.snapshot_every.to_string()])
            .envs(
                self.broken
                    .iter()
                    .map(|mode| ("STRATA_UNSAFE_TEST_SWITCH", mode.as_str())),
            )
            .envs(failpoints.map(|points| ("FAILPOINTS", points.to_string())))
            .envs(skew_ms.map(|skew| ("STRATA_TEST_CLOCK_SKEW_MS", skew.to_string())))
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
        if wait.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            let status = child.wait();
            bail!("node {id} did not become ready within 30 s ({status:?})");
        }
        let node = self.nodes.get_mut(&id).expect("checked above");
        node.child = Some(child);
        node.paused = false;
        node.armed = failpoints.is_some() || skew_ms.is_some();
        Ok(())
    }

    /// Whether node `id` runs (a node an armed failpoint crashed counts as down).
    pub fn is_up(&mut self, id: u64) -> bool {
        let node = self.nodes.get_mut(&id).expect("a node of the cluster");
        if let Some(child) = &mut node.child {
            if let Ok(Some(status)) = child.try_wait() {
                println!("  node {id} exited by itself ({status})");
                node.child = None;
            }
        }
        node.child.is_some()
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            node.paused = false;
            node.armed = false;
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

    /// `strata cluster ARGS --json` against every node but `except`, parsed.
    fn cluster_cli(&self, args: &[&str], except: u64) -> anyhow::Result<serde_json::Value> {
        let endpoints: Vec<&str> = self
            .nodes
            .values()
            .filter(|n| n.id != except)
            .map(|n| n.grpc.as_str())
            .collect();
        let output = self
            .cli()
            .arg("cluster")
            .args(args)
            .args(["--json", "--endpoint", &endpoints.join(",")])
            .output()?;
        if !output.status.success() {
            bail!(
                "strata cluster {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// The membership nemesis: removes node `id` from the cluster, kills it, wipes its data and
    /// starts it again to join as a new learner; `rejoin` then makes it a voter. With
    /// `disturbed`, that node is paused for that long as the re-add begins, so the re-add and
    /// the promotion happen during a fault (with three nodes, the change then waits for it).
    pub fn remove_and_wipe(
        &mut self,
        id: u64,
        disturbed: Option<(u64, Duration)>,
    ) -> anyhow::Result<()> {
        if let Err(error) = self.cluster_cli(&["remove", "--node-id", &id.to_string()], id) {
            // The answer may be lost while the change still goes through (a leader paused or
            // replaced mid-change). A node the cluster removed must not be left running: it
            // would never hear of its removal. Find out which it was before going on.
            if !self.removed(id, Duration::from_secs(10)) {
                return Err(error);
            }
        }
        self.rejoining = Some(id);
        self.kill(id);
        let data = self.data_dir(id);
        if data.exists() {
            // Its contents: the directory may be a mount point (the disk-full nemesis).
            for entry in std::fs::read_dir(&data)? {
                let path = entry?.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.with_context(|| format!("wiping {}", path.display()))?;
            }
        }
        self.joined.insert(id);
        self.spawn(id)?;
        if let Some((other, pause)) = disturbed {
            if let Some(pid) = self.nodes[&other].child.as_ref().map(Child::id) {
                self.signal(other, "STOP");
                std::thread::spawn(move || {
                    std::thread::sleep(pause);
                    let _ = Command::new("kill")
                        .args(["-CONT", &pid.to_string()])
                        .status();
                });
            }
        }
        self.rejoin()
    }

    /// Whether the other nodes' membership no longer has node `id`, asking until `within`
    /// passes (a change in flight settles); false while it is still a member or nobody answers.
    fn removed(&self, id: u64, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(status) = self.cluster_cli(&["status"], id) {
                let members = status["members"].as_array().cloned().unwrap_or_default();
                let leader = status["leader_id"].as_u64().unwrap_or(0);
                if leader != 0 && !members.iter().any(|m| m["node_id"].as_u64() == Some(id)) {
                    return true;
                }
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Adds the node being rejoined back as a learner and promotes it once it has caught up
    /// (within 30 s). Safe to call again after a failure.
    pub fn rejoin(&mut self) -> anyhow::Result<()> {
        let Some(id) = self.rejoining else {
            return Ok(());
        };
        let peer = self.nodes[&id].peer.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut added = false;
        loop {
            let step = if added {
                self.cluster_cli(&["promote", "--node-id", &id.to_string()], id)
            } else {
                self.cluster_cli(
                    &[
                        "add-learner",
                        "--node-id",
                        &id.to_string(),
                        "--peer-addr",
                        &peer,
                    ],
                    id,
                )
            };
            match step {
                Ok(_) if added => break,
                Ok(_) => added = true,
                // An earlier attempt got that far (its answer was lost).
                Err(error) if error.to_string().contains("already a voter") => break,
                Err(error) if std::time::Instant::now() >= deadline => {
                    return Err(error.context(format!("node {id} did not rejoin within 30 s")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
        self.rejoining = None;
        Ok(())
    }

    /// Removes every network fault, resumes every paused node, restarts every killed one and
    /// finishes a membership change.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        if let Some(net) = &self.net {
            net.heal()?;
        }
        for id in self.nodes.keys() {
            let filler = self.data_dir(*id).join(FILLER);
            if filler.exists() {
                std::fs::remove_file(&filler)?;
            }
        }
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes[&id].paused {
                self.resume(id);
            }
            // An armed node that is still up is restarted without its failpoints (`is_up`
            // reports one that a failpoint already crashed).
            if self.nodes[&id].armed && self.is_up(id) {
                self.kill(id);
            }
            if !self.is_up(id) {
                self.spawn(id)?;
            }
        }
        self.rejoin()
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
        let output = self
            .cli()
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
            if self.small_disks {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(self.data_dir(id))
                    .status();
            }
        }
    }
}

/// The file the disk-full nemesis fills a node's disk with; the heal removes it.
const FILLER: &str = "jepsen-filler";

impl Cluster {
    fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("data-{id}"))
    }

    /// Fills node `id`'s disk (its own tmpfs) until less than its `--min-free-bytes` is free:
    /// growth must stop cluster-wide (the leader asks every voter), with nothing lost and the
    /// node up. Returns how much was written.
    pub fn fill_disk(&mut self, id: u64) -> anyhow::Result<u64> {
        if !self.small_disks {
            bail!("the disk-full nemesis needs the nodes on small disks");
        }
        let data = self.data_dir(id);
        let output = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&data)
            .output()?;
        let free: u64 = String::from_utf8_lossy(&output.stdout)
            .lines()
            .nth(1)
            .context("df printed no free space")?
            .trim()
            .parse()?;
        let take = free.saturating_sub(FILLED_LEAVES_BYTES);
        let file = std::fs::File::create(data.join(FILLER))?;
        use std::io::Write;
        let mut writer = std::io::BufWriter::new(file);
        let block = vec![0u8; 1 << 20];
        let mut written = 0u64;
        while written < take {
            let n = (take - written).min(block.len() as u64) as usize;
            if writer.write_all(&block[..n]).is_err() {
                break;
            }
            written += n as u64;
        }
        let _ = writer.flush();
        Ok(written)
    }

    /// Kills node `id`, flips one bit of one of its data files (a table, the write-ahead log
    /// or a snapshot), and starts it again. A node that finds the damage refuses to start; it
    /// is then rebuilt from its peers by the documented steps (removed, emptied, added back;
    /// the heal finishes it). Returns what was flipped and what followed.
    pub fn bitflip(&mut self, id: u64, random: u64) -> anyhow::Result<String> {
        self.kill(id);
        let data = self.data_dir(id);
        let mut files = Vec::new();
        for (dir, ends) in [("db", [".sst", ".log"]), ("snapshots", [".data", ".data"])] {
            if let Ok(entries) = std::fs::read_dir(data.join(dir)) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    let size = entry.metadata().map_or(0, |m| m.len());
                    if size > 0 && ends.iter().any(|end| name.ends_with(end)) {
                        files.push((path, size));
                    }
                }
            }
        }
        files.sort();
        let Some((path, size)) = files
            .get((random % files.len().max(1) as u64) as usize)
            .cloned()
        else {
            self.spawn(id)?;
            return Ok("no data file to damage yet".into());
        };
        let offset = (random >> 16) % size;
        let mask = 1u8 << ((random >> 8) % 8);
        {
            use std::io::{Read, Seek, SeekFrom, Write};
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?;
            let mut byte = [0u8];
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut byte)?;
            byte[0] ^= mask;
            file.seek(SeekFrom::Start(offset))?;
            file.write_all(&byte)?;
            file.sync_all()?;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let flipped = format!("{name} byte {offset} of {size}");
        match self.spawn(id) {
            Ok(()) => {
                let aside = path.with_file_name(format!("{name}.damaged"));
                Ok(if aside.exists() {
                    format!("{flipped}: the snapshot was set aside; started")
                } else {
                    format!("{flipped}: started (the bit was in no data it reads)")
                })
            }
            Err(_) => {
                self.remove_and_wipe(id, None)
                    .context("rebuilding the damaged node")?;
                Ok(format!(
                    "{flipped}: refused to start; rebuilt from its peers"
                ))
            }
        }
    }
}
