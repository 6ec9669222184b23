//! Operator commands. They talk to a node through gRPC, like any other client.

pub mod cert;
pub mod cluster;
pub mod config;
pub mod kv;
pub mod registry;
pub mod stream;

use std::time::Duration;

/// Where and as whom a client command talks, shared by every client command.
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
    /// Sent as `authorization: Bearer TOKEN`; the admin token allows namespace "*" (every
    /// namespace) for registry reads and watches.
    #[arg(long, env = "STRATA_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    pub async fn connect(&self) -> anyhow::Result<strata_client::Client> {
        let mut builder =
            strata_client::Client::builder(self.endpoint.clone()).namespace(self.namespace.clone());
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        Ok(builder
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await?)
    }
}
