//! `strata`: the server (`strata serve`) and the operator CLI (`strata kv ...`).

mod cli;
mod serve_config;
mod server;
mod telemetry;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: replicated KV, streams, registry and config"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node. With no flags: single-node local mode on 127.0.0.1 with data in ./strata-data.
    Serve(ServeArgs),
    /// Key-value commands against a running node.
    Kv(cli::kv::KvArgs),
    /// Event streams: publish, consume, replay, topics.
    Stream(cli::stream::StreamArgs),
    /// Service registry: register with a TTL, look up, watch.
    Registry(cli::registry::RegistryArgs),
    /// Dynamic config: JSON documents by key and dotted path, with secrets.
    Config(cli::config::ConfigArgs),
    /// Cluster membership and status.
    Cluster(cli::cluster::ClusterArgs),
    /// Whether a node is ready (exit 0) or not (exit 1): for container health checks.
    Health(cli::health::HealthArgs),
    /// Backups: save one from a live cluster, check one, restore one into a new cluster.
    Snapshot(cli::snapshot::SnapshotArgs),
    /// Create a cluster CA and node certificates (for tests and small deployments).
    Cert(cli::cert::CertArgs),
    /// Exchange an account's id and secret for a token, kept for later commands.
    Login(cli::auth::LoginArgs),
    /// Accounts of a namespace: create, list, delete, change a secret.
    Account(cli::auth::AccountArgs),
    /// Access rules of a namespace.
    Rule(cli::auth::RuleArgs),
    /// Tokens: the one in use, inspect, revoke, the verification key.
    Token(cli::auth::TokenArgs),
    /// Namespaces: usage and limits (quotas).
    Ns(cli::ns::NsArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML file with any of these flags as keys (`data-dir = "/var/lib/strata"`). The
    /// environment overrides the file, and flags override both.
    #[arg(long, env = "STRATA_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (as TOML, with where each value came from) and exit.
    #[arg(long)]
    print_config: bool,
    /// Where this node keeps its data.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "./strata-data")]
    data_dir: PathBuf,
    /// gRPC address for clients.
    #[arg(long, env = "STRATA_CLIENT_ADDR", default_value = "127.0.0.1:7420")]
    client_addr: SocketAddr,
    /// HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, env = "STRATA_HTTP_ADDR", default_value = "127.0.0.1:7422")]
    http_addr: SocketAddr,
    /// This node's id in the cluster.
    #[arg(long, env = "STRATA_NODE_ID", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    node_id: u64,
    /// QUIC (UDP) address for other nodes; bound only with --tls-dir.
    #[arg(long, env = "STRATA_PEER_ADDR", default_value = "127.0.0.1:7421")]
    peer_addr: SocketAddr,
    /// The initial voters, ID=HOST:PORT of each one's peer address, comma-separated. Used on
    /// the first start only; every initial member gets the same list.
    #[arg(long, env = "STRATA_INITIAL_CLUSTER", value_parser = parse_initial_cluster)]
    initial_cluster: Option<BTreeMap<u64, String>>,
    /// Start empty and wait to be added to a running cluster (`strata cluster add-learner`).
    #[arg(long, env = "STRATA_JOIN")]
    join: bool,
    /// Directory with the cluster CA (ca.pem) and this node's certificate (node-N.pem,
    /// node-N.key). Required for a multi-node cluster.
    #[arg(long, env = "STRATA_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Largest value accepted, in bytes.
    #[arg(long, env = "STRATA_MAX_VALUE_BYTES", default_value_t = server::validate::DEFAULT_MAX_VALUE_BYTES)]
    max_value_bytes: usize,
    /// Largest stream message payload accepted, in bytes.
    #[arg(long, env = "STRATA_MAX_MESSAGE_BYTES", default_value_t = server::stream::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Build a snapshot and purge the log behind it after this many entries.
    #[arg(long, env = "STRATA_SNAPSHOT_EVERY_ENTRIES", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every_entries: u64,
    /// Also build one once this many bytes of log, and at least the current snapshot's size,
    /// were appended since the last (an entry may hold a batch of up to 1,024 writes); 0: by
    /// entries only.
    #[arg(long, env = "STRATA_SNAPSHOT_EVERY_BYTES", default_value_t = strata_raft::node::DEFAULT_SNAPSHOT_EVERY_BYTES)]
    snapshot_every_bytes: u64,
    /// Revisions of watch history kept for watchers to resume from (same on every node).
    #[arg(long, env = "STRATA_HISTORY_RETAIN_REVISIONS", default_value_t = strata_storage::kv::HISTORY_RETAIN_REVISIONS,
          value_parser = clap::value_parser!(u64).range(1..))]
    history_retain_revisions: u64,
    /// Most registry nodes per service (all versions together).
    #[arg(long, env = "STRATA_REGISTRY_MAX_NODES", default_value_t = server::registry::DEFAULT_MAX_NODES,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    registry_max_nodes: u64,
    /// Key file (32 random bytes, base64) that seals secret config values; the same file on
    /// every node. A single node without one creates DATA_DIR/secret.key.
    #[arg(long, env = "STRATA_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// TLS on the client port with this node's certificate from --tls-dir (`strata cert node
    /// --name HOST` adds the names clients dial). Unset: on when --tls-dir is given.
    #[arg(long, env = "STRATA_CLIENT_TLS", value_enum)]
    client_tls: Option<Switch>,
    /// With client TLS: only clients with a certificate signed by this CA (PEM) may connect.
    #[arg(long, env = "STRATA_CLIENT_CA_FILE")]
    client_ca_file: Option<PathBuf>,
    /// Whether every call needs a token. Unset: off for a single node (every caller acts as
    /// an admin), on for a cluster.
    #[arg(long, env = "STRATA_AUTH", value_enum)]
    auth: Option<Switch>,
    /// The platform's super-tenant namespace: its admin and service accounts act on every
    /// namespace; the root account is made in it.
    #[arg(long, env = "STRATA_SUPER_NAMESPACE", default_value = "micro")]
    super_namespace: String,
    /// Most long-lived calls (watch, consume, subscribe) open on this node at once; more get
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "STRATA_MAX_STREAMS", default_value_t = server::DEFAULT_MAX_STREAMS,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_streams: u64,
    /// Serve Micro v3's APIs (store.Store, ...) on the client port beside Strata's own, over
    /// the same data, so unmodified Micro services can use this cluster (docs/micro.md).
    #[arg(long, env = "STRATA_MICRO", value_enum, default_value = "on")]
    micro: Switch,
    /// Register this node in the registry's `micro` domain as Micro's core services (store,
    /// registry, events, config, auth, broker) at HOST:PORT, the address Micro clients dial,
    /// so that clients resolving them by name find it. Re-registered every 30 s, TTL 90 s.
    #[arg(long, env = "STRATA_MICRO_REGISTER")]
    micro_register: Option<String>,
    /// At start, read every block of the database with its checksum verified before serving
    /// (one sequential read of the data; a damaged file stops the start, naming it). The
    /// replicated log, its metadata and the current snapshot are verified either way.
    #[arg(long, env = "STRATA_VERIFY_ON_START", value_enum, default_value = "on")]
    verify_on_start: Switch,
    /// While the data directory's disk has fewer free bytes than this, writes that add data
    /// get RESOURCE_EXHAUSTED `disk_full` (reads, deletes, acks and keepalives go on; writes
    /// resume by themselves when space returns). 0: never refuse.
    #[arg(long, env = "STRATA_MIN_FREE_BYTES", default_value_t = 128 * 1024 * 1024)]
    min_free_bytes: u64,
    /// Bytes kept in the data directory (file `start-reserve`) and freed just before the next
    /// start opens the database, which after a crash writes up to 64 MiB of log out as tables:
    /// so a disk filled by something else cannot stop the start. 0: keep none.
    #[arg(long, env = "STRATA_START_RESERVE_BYTES", default_value_t = 96 * 1024 * 1024)]
    start_reserve_bytes: u64,
    /// Export the spans of every call (API → propose → append → fsync → apply) to this
    /// OpenTelemetry collector over OTLP/gRPC (`http://collector:4317`). Unset: no export.
    #[arg(long, env = "STRATA_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

fn main() -> std::process::ExitCode {
    let cli = parse_cli();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                // openraft logs every failed heartbeat to a down peer as an error; the transport logs
                // those failures itself, throttled.
                const LOGS: &str = "info,openraft=error,openraft::replication=off";
                match &args.otlp_endpoint {
                    Some(endpoint) => telemetry::init_with_spans(LOGS, endpoint, args.node_id)
                        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint}: {e}"))?,
                    None => telemetry::init(LOGS),
                }
                if let Err(status) =
                    server::validate::name("--super-namespace", &args.super_namespace)
                {
                    anyhow::bail!("{}", status.message());
                }
                if let Some(address) = &args.micro_register {
                    if let Err(status) = server::validate::host_port("--micro-register", address) {
                        anyhow::bail!("{}", status.message());
                    }
                }
                if args.max_value_bytes == 0 || args.max_value_bytes > 16 * 1024 * 1024 {
                    anyhow::bail!("--max-value-bytes must be between 1 and 16777216");
                }
                if args.max_message_bytes == 0 || args.max_message_bytes > 16 * 1024 * 1024 {
                    anyhow::bail!("--max-message-bytes must be between 1 and 16777216");
                }
                let served = server::run(server::ServeConfig {
                    data_dir: args.data_dir,
                    client_addr: args.client_addr,
                    http_addr: args.http_addr,
                    node_id: args.node_id,
                    peer_addr: args.peer_addr,
                    initial_cluster: args.initial_cluster,
                    join: args.join,
                    tls_dir: args.tls_dir,
                    max_value_bytes: args.max_value_bytes,
                    max_message_bytes: args.max_message_bytes,
                    history_retain_revisions: args.history_retain_revisions,
                    snapshot_every_entries: args.snapshot_every_entries,
                    snapshot_every_bytes: args.snapshot_every_bytes,
                    verify_on_start: args.verify_on_start == Switch::On,
                    min_free_bytes: args.min_free_bytes,
                    start_reserve_bytes: args.start_reserve_bytes,
                    registry_max_nodes: args.registry_max_nodes,
                    secret_key_file: args.secret_key_file,
                    auth: args.auth.map(|switch| switch == Switch::On),
                    client_tls: args.client_tls.map(|switch| switch == Switch::On),
                    client_ca_file: args.client_ca_file,
                    super_namespace: args.super_namespace,
                    max_streams: args.max_streams as usize,
                    micro: args.micro == Switch::On,
                    micro_register: args.micro_register,
                })
                .await;
                tokio::task::spawn_blocking(telemetry::flush).await?;
                served
            }
            Command::Login(args) => {
                telemetry::init("warn");
                cli::auth::login(args).await
            }
            Command::Account(args) => {
                telemetry::init("warn");
                cli::auth::account(args).await
            }
            Command::Rule(args) => {
                telemetry::init("warn");
                cli::auth::rule(args).await
            }
            Command::Token(args) => {
                telemetry::init("warn");
                cli::auth::token(args).await
            }
            Command::Ns(args) => {
                telemetry::init("warn");
                cli::ns::run(args).await
            }
            Command::Kv(args) => {
                telemetry::init("warn");
                cli::kv::run(args).await
            }
            Command::Stream(args) => {
                telemetry::init("warn");
                cli::stream::run(args).await
            }
            Command::Registry(args) => {
                telemetry::init("warn");
                cli::registry::run(args).await
            }
            Command::Config(args) => {
                telemetry::init("warn");
                cli::config::run(args).await
            }
            Command::Cluster(args) => {
                telemetry::init("warn");
                cli::cluster::run(args).await
            }
            Command::Snapshot(args) => {
                telemetry::init("warn");
                cli::snapshot::run(args).await
            }
            Command::Health(args) => cli::health::run(args).await,
            Command::Cert(args) => cli::cert::run(args),
        }
    });
    match result {
        // Through `_exit` too: a server returns here with RocksDB quiesced, but its pool
        // threads still race the static destructors of a normal exit.
        Ok(()) => exit_now(0),
        Err(error) => {
            eprintln!("error: {error:#}");
            exit_now(1)
        }
    }
}

/// Parses the command line; for `serve`, with the config file's values as the flags' defaults
/// (see [`serve_config`]), and answers `--print-config` here.
fn parse_cli() -> Cli {
    let cli = Cli::parse();
    let Command::Serve(args) = &cli.command else {
        return cli;
    };
    if args.config.is_none() && !args.print_config {
        return cli;
    }
    let mut command = Cli::command();
    if let Some(path) = &args.config {
        command = serve_config::apply_file(command, path).unwrap_or_else(|error| {
            eprintln!("error: {error:#}");
            std::process::exit(2)
        });
    }
    let matches = command.clone().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if args.print_config {
        let serve = command.find_subcommand(serve_config::SERVE);
        let serve_matches = matches.subcommand_matches(serve_config::SERVE);
        if let (Some(serve), Some(serve_matches)) = (serve, serve_matches) {
            print!("{}", serve_config::render(serve, serve_matches));
        }
        std::process::exit(0);
    }
    cli
}

/// Exits without running C++ static destructors. A node that fails after opening RocksDB (a
/// corrupt log, say) has quiesced it, but RocksDB's pool threads still exist, and a normal
/// exit destroys mutexes they use ("pthread lock: Invalid argument", an abort instead of the
/// exit code; seen in CI). A node whose Raft stopped on a fatal error leaves through here too.
/// Rust's stdout and stderr are flushed first; nothing else here buffers output, and
/// everything acknowledged is already durable.
pub(crate) fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; no Rust state is used afterwards.
    unsafe { libc::_exit(code) }
}

/// Parses `1=host:7421,2=host:7431,...`.
pub(crate) fn parse_initial_cluster(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut members = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| format!("{id:?} in {entry:?} is not a node id (1 or more)"))?;
        server::validate::host_port("--initial-cluster", addr.trim())
            .map_err(|status| status.message().to_string())?;
        if members.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if members.is_empty() {
        return Err("lists no node".into());
    }
    Ok(members)
}
