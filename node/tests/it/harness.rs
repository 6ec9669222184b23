//! Starting, killing and restarting real server processes.

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

    fn spawn(data_dir: &Path, extra_args: Vec<String>) -> Self {
        let mut child = serve_command(data_dir)
            .args(&extra_args)
            .env("STRATA_LOG", "warn")
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
        let line = receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("the server did not print its ready line within 30 s");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .to_string()
        };
        Self {
            grpc: field("grpc"),
            http: field("http"),
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            extra_args,
            _temp: None,
        }
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
        *self = Self::spawn(&self.data_dir.clone(), self.extra_args.clone());
        self._temp = temp;
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
        let mut child = Command::new(BINARY)
            .arg("kv")
            .args(args)
            .args(["--endpoint", &self.grpc])
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
        let mut stream = std::net::TcpStream::connect(&self.http).expect("connecting to HTTP");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
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
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
