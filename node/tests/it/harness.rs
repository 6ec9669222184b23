//! Starting, killing and restarting real server processes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_strata");

/// `strata serve` on ephemeral loopback ports over `data_dir`; add flags, then run it.
pub fn serve_command(data_dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args([
            "serve",
            "--client-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir);
    command
}

pub struct Server {
    child: Option<Child>,
    pub grpc: String,
    pub http: String,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
    /// Environment variables the process starts with (kept across restarts).
    env: Vec<(String, String)>,
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut server = Self::spawn(
            &data_dir,
            extra_args.iter().map(|s| s.to_string()).collect(),
        );
        server._temp = Some(temp);
        server
    }

    /// Starts a server over `data_dir` (kept by the caller) with `extra_args`.
    pub fn start_at(data_dir: &Path, extra_args: Vec<String>) -> Self {
        Self::spawn(data_dir, extra_args)
    }

    fn spawn(data_dir: &Path, extra_args: Vec<String>) -> Self {
        Self::try_spawn(data_dir, extra_args, Vec::new())
            .expect("the server did not print its ready line within 30 s")
    }

    /// Like `start_at`, but `None` when the process exits or stays silent instead of serving
    /// (a port taken by another test between choosing it and binding it, say).
    pub fn try_start_at(data_dir: &Path, extra_args: Vec<String>) -> Option<Self> {
        Self::try_spawn(data_dir, extra_args, Vec::new())
    }

    fn try_spawn(
        data_dir: &Path,
        extra_args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Option<Self> {
        let mut command = Command::new(BINARY);
        command.arg("serve").arg("--data-dir").arg(data_dir);
        // Ephemeral ports, unless the test chose its own.
        for flag in ["--client-addr", "--http-addr"] {
            if !extra_args.iter().any(|a| a == flag) {
                command.args([flag, "127.0.0.1:0"]);
            }
        }
        let mut child = command
            .args(&extra_args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "STRATA_LOG",
                // STRATA_TEST_NODE_LOG: another filter for the nodes, to look into a test.
                std::env::var("STRATA_TEST_NODE_LOG")
                    .unwrap_or_else(|_| "warn,openraft=error,openraft::replication=off".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning strata serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.starts_with("strata ready:") {
                    let _ = sender.send(line);
                }
            }
        });
        let Ok(line) = receiver.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .to_string()
        };
        Some(Self {
            grpc: field("grpc"),
            http: field("http"),
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            extra_args,
            env,
            _temp: None,
        })
    }

    /// SIGKILL: no shutdown path runs, like a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaping the server");
        }
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a new process on the same data directory (new ports).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let temp = self._temp.take();
        *self = Self::try_spawn(
            &self.data_dir.clone(),
            self.extra_args.clone(),
            self.env.clone(),
        )
        .expect("the server did not print its ready line within 30 s");
        self._temp = temp;
    }

    /// Starts a new process on the same data directory with `env` set (and kept for later
    /// restarts).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let temp = self._temp.take();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        *self = Self::try_spawn(&self.data_dir.clone(), self.extra_args.clone(), env)
            .expect("the server did not print its ready line within 30 s");
        self._temp = temp;
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the server process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("server running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's resident memory (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("server running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    pub async fn client(&self, namespace: &str) -> strata_client::Client {
        strata_client::Client::builder(self.grpc.clone())
            .namespace(namespace)
            .request_timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("connecting to the test server")
    }

    /// Runs the CLI against this server; returns (exit ok, stdout, stderr).
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        self.cli_in("kv", args, stdin)
    }

    /// Runs `strata <group> ARGS --endpoint <this node>`: (success, stdout, stderr).
    pub fn cli_in(
        &self,
        group: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> (bool, String, String) {
        let mut child = Command::new(BINARY)
            .arg(group)
            .args(args)
            .args(["--endpoint", &self.grpc])
            // Never a login saved by whoever runs the tests; `strata login` in a test saves here.
            .env(
                "STRATA_TOKEN_FILE",
                self.data_dir.with_file_name("token.json"),
            )
            .env_remove("STRATA_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the CLI");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// A plain HTTP/1.1 GET; returns (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get_with(&self.http, path, &[])
    }
}

/// `GET path` on the HTTP address `http` with extra `headers`: (status, body).
pub fn http_get_with(http: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(http).expect("connecting to HTTP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {http}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `strata` with `args` and returns its stdout; panics with stderr if it fails.
/// A bare gRPC client of the node at `grpc`, for calls the SDK would not make (raw bytes,
/// arbitrary paths and headers).
pub async fn raw_grpc(grpc: &str) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    client
}

pub fn strata(args: &[&str]) -> String {
    let output = Command::new(BINARY)
        .args(args)
        .output()
        .expect("running strata");
    assert!(
        output.status.success(),
        "strata {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A free UDP port on 127.0.0.1 (free when asked; the node binds it moments later).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("binding a UDP port")
        .local_addr()
        .unwrap()
        .port()
}

/// Real `strata serve` processes forming one cluster over QUIC on 127.0.0.1, with a CA and node
/// certificates made by `strata cert`.
pub struct Cluster {
    pub nodes: BTreeMap<u64, Server>,
    pub peer_addrs: BTreeMap<u64, String>,
    pub tls_dir: PathBuf,
    extra_args: Vec<String>,
    temp: tempfile::TempDir,
    /// Which formation attempt the data directories belong to.
    attempt: u32,
}

impl Cluster {
    /// Starts nodes 1..=size as the initial voters. Peer ports are chosen free but only bound
    /// by the nodes a moment later, so another test can take one in between: then the nodes
    /// are stopped and the cluster is formed again on new ports and fresh directories.
    pub fn start(size: u64, extra_args: &[&str]) -> Self {
        Self::form(size, extra_args, None)
    }

    /// Like [`Cluster::start`], but each node's data directory is first restored from the
    /// backup file `backup` (`strata snapshot restore` with the same `--initial-cluster`).
    pub fn start_restored(size: u64, backup: &Path, extra_args: &[&str]) -> Self {
        Self::form(size, extra_args, Some(backup))
    }

    fn form(size: u64, extra_args: &[&str], backup: Option<&Path>) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let tls_dir = temp.path().join("tls");
        strata(&["cert", "init", "--tls-dir", tls_dir.to_str().unwrap()]);
        let mut cluster = Self {
            nodes: BTreeMap::new(),
            peer_addrs: BTreeMap::new(),
            tls_dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            temp,
            attempt: 0,
        };
        for id in 1..=size {
            cluster.issue_cert(id);
        }
        for _ in 0..3 {
            cluster.attempt += 1;
            for id in 1..=size {
                cluster
                    .peer_addrs
                    .insert(id, format!("127.0.0.1:{}", free_udp_port()));
            }
            let initial: Vec<String> = cluster
                .peer_addrs
                .iter()
                .map(|(id, addr)| format!("{id}={addr}"))
                .collect();
            let initial = initial.join(",");
            let mut all_started = true;
            for id in 1..=size {
                if let Some(backup) = backup {
                    strata(&[
                        "snapshot",
                        "restore",
                        backup.to_str().unwrap(),
                        "--data-dir",
                        cluster.data_dir(id).to_str().unwrap(),
                        "--node-id",
                        &id.to_string(),
                        "--initial-cluster",
                        &initial,
                    ]);
                }
                let args = vec!["--initial-cluster".to_string(), initial.clone()];
                match cluster.try_spawn_node(id, args) {
                    Some(server) => {
                        cluster.nodes.insert(id, server);
                    }
                    None => {
                        all_started = false;
                        break;
                    }
                }
            }
            if all_started {
                return cluster;
            }
            eprintln!("a node did not start (port taken?); forming the cluster again");
            cluster.nodes.clear(); // kills them
        }
        panic!("could not start a {size}-node cluster in 3 attempts");
    }

    pub fn issue_cert(&self, id: u64) {
        strata(&[
            "cert",
            "node",
            "--tls-dir",
            self.tls_dir.to_str().unwrap(),
            "--node-id",
            &id.to_string(),
            "--name",
            "127.0.0.1",
        ]);
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.temp
            .path()
            .join(format!("attempt-{}", self.attempt))
            .join(format!("node-{id}"))
    }

    fn spawn_node(&self, id: u64, args: Vec<String>) -> Server {
        self.try_spawn_node(id, args)
            .unwrap_or_else(|| panic!("node {id} did not start"))
    }

    fn try_spawn_node(&self, id: u64, mut args: Vec<String>) -> Option<Server> {
        args.extend([
            "--node-id".to_string(),
            id.to_string(),
            "--peer-addr".to_string(),
            self.peer_addrs[&id].clone(),
            "--tls-dir".to_string(),
            self.tls_dir.to_str().unwrap().to_string(),
        ]);
        args.extend(self.extra_args.iter().cloned());
        // Clusters have auth on by default; the tests that are not about it turn it off.
        if !args.iter().any(|a| a == "--auth") {
            args.extend(["--auth".to_string(), "off".to_string()]);
        }
        // Likewise TLS on the client port (on wherever there is a --tls-dir).
        if !args.iter().any(|a| a == "--client-tls") {
            args.extend(["--client-tls".to_string(), "off".to_string()]);
        }
        Server::try_start_at(&self.data_dir(id), args)
    }

    /// Starts node `id` empty with --join, ready to be added with `cluster add-learner` (a
    /// node rejoining under its old id keeps its certificate).
    pub fn start_joining(&mut self, id: u64) {
        if !self.tls_dir.join(format!("node-{id}.key")).exists() {
            self.issue_cert(id);
        }
        self.peer_addrs
            .insert(id, format!("127.0.0.1:{}", free_udp_port()));
        let server = self.spawn_node(id, vec!["--join".to_string()]);
        self.nodes.insert(id, server);
    }

    pub fn node(&self, id: u64) -> &Server {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Server {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Every running node's gRPC address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|s| s.is_running())
            .map(|s| s.grpc.clone())
            .collect()
    }

    /// `strata cluster ARGS --json` against the running nodes, parsed.
    pub fn cluster_cli(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let output = Command::new(BINARY)
            .arg("cluster")
            .args(args)
            .args(["--json", "--endpoint", &self.endpoints().join(",")])
            .output()
            .expect("running strata cluster");
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(serde_json::from_slice(&output.stdout).expect("cluster CLI prints JSON"))
    }

    /// The highest last log index any member reports (`strata cluster status`).
    pub fn last_log_index(&self) -> u64 {
        let status = self.cluster_cli(&["status"]).unwrap();
        status["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["last_log_index"].as_u64())
            .max()
            .unwrap()
    }

    /// Waits until every running node names the same leader, which is running, and returns it.
    pub fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.agreed_leader() {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "the running nodes did not agree on a leader within {timeout:?}: {:?}",
                self.cluster_cli(&["status"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn agreed_leader(&self) -> Option<u64> {
        let mut leaders = BTreeMap::new();
        for (id, server) in &self.nodes {
            if !server.is_running() {
                continue;
            }
            let output = Command::new(BINARY)
                .args(["cluster", "status", "--json", "--endpoint", &server.grpc])
                .output()
                .ok()?;
            let status: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
            leaders.insert(*id, status["leader_id"].as_u64()?);
        }
        let first = *leaders.values().next()?;
        let running = self.nodes.get(&first).is_some_and(|s| s.is_running());
        (first != 0 && running && leaders.values().all(|l| *l == first)).then_some(first)
    }

    /// Waits until every running member has applied at least `index`.
    pub fn wait_for_applied(&self, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.cluster_cli(&["status"]).ok();
            let done = status.as_ref().is_some_and(|status| {
                status["members"].as_array().is_some_and(|members| {
                    members.iter().all(|m| {
                        let running = self
                            .nodes
                            .get(&m["node_id"].as_u64().unwrap_or(0))
                            .is_some_and(|s| s.is_running());
                        !running || m["applied_index"].as_u64().is_some_and(|a| a >= index)
                    })
                })
            });
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "members did not apply up to {index} within {timeout:?}: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Talking to a node's auth service as a test: root credentials, tokens, accounts.
pub mod auth {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use strata_proto::auth::v1 as pb;
    use strata_proto::auth::v1::auth_client::AuthClient;
    use tonic::metadata::MetadataValue;

    /// (namespace, id, secret) of the root account, from whichever data directory holds them
    /// (the node whose bootstrap won), waiting up to 30 s for them to appear.
    pub fn root_credentials(data_dirs: &[&Path]) -> (String, String, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for dir in data_dirs {
                let path = dir.join("root.credentials");
                if let Ok(text) = std::fs::read_to_string(&path) {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                    assert_eq!(mode & 0o777, 0o600, "root.credentials must be owner-only");
                    let field = |name: &str| {
                        text.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
                            .map(|v| v.trim_matches('"').to_string())
                            .unwrap_or_else(|| panic!("no {name} in root.credentials"))
                    };
                    return (field("namespace"), field("id"), field("secret"));
                }
            }
            assert!(Instant::now() < deadline, "no root.credentials after 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A raw auth client; `token` and `namespace` go in the headers when given.
    pub async fn client(
        grpc: &str,
        token: Option<&str>,
        namespace: Option<&str>,
    ) -> AuthClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
        >,
    > {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .expect("connecting to the auth service");
        let token = token.map(|t| MetadataValue::try_from(format!("Bearer {t}")).unwrap());
        let namespace = namespace.map(|n| MetadataValue::try_from(n).unwrap());
        AuthClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            if let Some(token) = &token {
                request
                    .metadata_mut()
                    .insert("authorization", token.clone());
            }
            if let Some(namespace) = &namespace {
                request
                    .metadata_mut()
                    .insert(strata_client::NAMESPACE_HEADER, namespace.clone());
            }
            Ok(request)
        })
    }

    /// Exchanges id and secret for a token (access, refresh), retrying while auth starts.
    pub async fn login(grpc: &str, namespace: &str, id: &str, secret: &str) -> pb::Token {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = client(grpc, None, None)
                .await
                .token(pb::TokenRequest {
                    id: id.into(),
                    secret: secret.into(),
                    namespace: namespace.into(),
                    ..Default::default()
                })
                .await;
            match answer {
                Ok(response) => return response.into_inner().token.unwrap(),
                Err(status)
                    if status.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(status) => panic!("login {namespace}/{id}: {status:?}"),
            }
        }
    }

    /// An access token of `namespace/id` that lives `ttl_s` seconds.
    pub async fn short_token(
        grpc: &str,
        namespace: &str,
        id: &str,
        secret: &str,
        ttl_s: i64,
    ) -> String {
        client(grpc, None, None)
            .await
            .token(pb::TokenRequest {
                id: id.into(),
                secret: secret.into(),
                namespace: namespace.into(),
                token_expiry: ttl_s,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("token for {namespace}/{id}: {s:?}"))
            .into_inner()
            .token
            .unwrap()
            .access_token
    }

    /// The root account's access token.
    pub async fn root_token(grpc: &str, data_dirs: &[&Path]) -> String {
        let (namespace, id, secret) = root_credentials(data_dirs);
        login(grpc, &namespace, &id, &secret).await.access_token
    }

    /// Creates `namespace/id` (as `admin_token`'s account) with `scopes`; returns its secret.
    pub async fn create_account(
        grpc: &str,
        admin_token: &str,
        namespace: &str,
        id: &str,
        kind: &str,
        scopes: &[&str],
    ) -> String {
        // A cluster just formed may still change leaders: a call the server says it did not
        // do (`not_leader`, `leader_unreachable`) is tried again, for up to 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let result = client(grpc, Some(admin_token), Some(namespace))
                .await
                .generate(pb::GenerateRequest {
                    id: id.into(),
                    r#type: kind.into(),
                    scopes: scopes.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                })
                .await;
            match result {
                Ok(response) => return response.into_inner().account.unwrap().secret,
                Err(status)
                    if Instant::now() < deadline
                        && status
                            .metadata()
                            .get("x-strata-error")
                            .is_some_and(|e| e == "not_leader" || e == "leader_unreachable") =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("creating {namespace}/{id}: {status:?}"),
            }
        }
    }

    /// A new account's access token.
    pub async fn account_token(
        grpc: &str,
        admin_token: &str,
        namespace: &str,
        id: &str,
        scopes: &[&str],
    ) -> String {
        let secret = create_account(grpc, admin_token, namespace, id, "user", scopes).await;
        login(grpc, namespace, id, &secret).await.access_token
    }
}

/// A registry service `name` at `version` with `nodes` nodes (`NAME-i` at `10.0.0.i:80`).
pub fn service(name: &str, version: &str, nodes: usize) -> strata_client::registry::Service {
    strata_client::registry::Service {
        name: name.into(),
        version: version.into(),
        nodes: (0..nodes)
            .map(|n| strata_client::registry::Node {
                id: format!("{name}-{n}"),
                address: format!("10.0.0.{n}:80"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Takes the first message of `topic` through consumer group `group` (from the earliest) and
/// acks it.
pub async fn ack_first(client: &strata_client::Client, topic: &str, group: &str) {
    use futures::StreamExt;
    let mut subscription = client
        .topic(topic)
        .subscribe(
            strata_client::stream::SubscribeOptions::group(group)
                .earliest()
                .max_in_flight(1),
        )
        .await
        .unwrap();
    let delivery = subscription.next().await.unwrap().unwrap();
    delivery.ack().await.unwrap();
}
