//! Operator commands. They talk to a node through gRPC, like any other client.

pub mod cert;
pub mod cluster;
pub mod kv;
pub mod stream;

use std::time::Duration;

/// Where and as whom a client command talks, shared by `kv` and `stream`.
#[derive(clap::Args)]
pub struct ClientArgs {
    /// Nodes to talk to, comma-separated; the first that answers is used, the others on failover.
    #[arg(
        long,
        env = "STRATA_ENDPOINT",
        default_value = "127.0.0.1:7420",
        global = true
    )]
    pub endpoint: String,
    #[arg(
        long,
        env = "STRATA_NAMESPACE",
        default_value = "default",
        global = true
    )]
    pub namespace: String,
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    pub async fn connect(&self) -> anyhow::Result<strata_client::Client> {
        Ok(strata_client::Client::builder(self.endpoint.clone())
            .namespace(self.namespace.clone())
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await?)
    }
}
