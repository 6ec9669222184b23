//! `strata`: the server (`strata serve`) and the operator CLI (`strata kv ...`).

mod cli;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
}

#[derive(clap::Args)]
struct ServeArgs {
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
    #[arg(long, env = "STRATA_NODE_ID", default_value_t = 1)]
    node_id: u64,
    /// Largest value accepted, in bytes.
    #[arg(long, env = "STRATA_MAX_VALUE_BYTES", default_value_t = server::validate::DEFAULT_MAX_VALUE_BYTES)]
    max_value_bytes: usize,
    /// Revisions of watch history kept for watchers to resume from (same on every node).
    #[arg(long, env = "STRATA_HISTORY_RETAIN_REVISIONS", default_value_t = strata_storage::kv::HISTORY_RETAIN_REVISIONS,
          value_parser = clap::value_parser!(u64).range(1..))]
    history_retain_revisions: u64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                init_tracing("info,openraft=warn");
                if args.max_value_bytes == 0 || args.max_value_bytes > 16 * 1024 * 1024 {
                    anyhow::bail!("--max-value-bytes must be between 1 and 16777216");
                }
                server::run(server::ServeConfig {
                    data_dir: args.data_dir,
                    client_addr: args.client_addr,
                    http_addr: args.http_addr,
                    node_id: args.node_id,
                    max_value_bytes: args.max_value_bytes,
                    history_retain_revisions: args.history_retain_revisions,
                })
                .await
            }
            Command::Kv(args) => {
                init_tracing("warn");
                cli::kv::run(args).await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
