//! Operator commands. They talk to a node through gRPC, like any other client.

pub mod auth;
pub mod cert;
pub mod cluster;
pub mod config;
pub mod health;
pub mod kv;
pub mod ns;
pub mod registry;
pub mod snapshot;
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
    /// The namespace to act on. Unset: the token's (or `default` on a node without auth);
    /// naming another needs a super-tenant admin's token.
    #[arg(long, env = "STRATA_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// Access token, sent as `authorization: Bearer TOKEN`. Unset: the one `strata login`
    /// saved, if any.
    #[arg(long, env = "STRATA_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) of a cluster whose client port serves TLS (`tls/ca.pem`).
    #[arg(long, env = "STRATA_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A gRPC endpoint for `name` (`host:port` or a URI), with TLS trusting `ca` when given.
pub fn endpoint(
    name: &str,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<tonic::transport::Endpoint> {
    use anyhow::Context;
    let scheme = if ca.is_some() { "https" } else { "http" };
    let uri = if name.contains("://") {
        name.to_string()
    } else {
        format!("{scheme}://{name}")
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(uri)
        .with_context(|| format!("endpoint {name:?}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        endpoint = endpoint.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        )?;
    }
    Ok(endpoint)
}

/// A refusal from a raw gRPC client, for the operator: its code and message.
pub fn status(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

/// A channel to the first of comma-separated `endpoints`.
pub async fn channel(
    endpoints: &str,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<tonic::transport::Channel> {
    use anyhow::Context;
    let first = endpoints
        .split(',')
        .map(str::trim)
        .find(|e| !e.is_empty())
        .context("no endpoint")?;
    endpoint(first, ca)?
        .connect()
        .await
        .with_context(|| format!("connecting to {first}"))
}

impl ClientArgs {
    /// `--token`, else the saved login's (refreshed when about to expire), else none.
    pub async fn token(&self) -> anyhow::Result<Option<String>> {
        match &self.token {
            Some(token) => Ok(Some(token.clone())),
            None => auth::saved_token(&self.endpoint, self.ca_file.as_deref()).await,
        }
    }

    pub async fn connect(&self) -> anyhow::Result<strata_client::Client> {
        let mut builder = strata_client::Client::builder(self.endpoint.clone());
        if let Some(namespace) = &self.namespace {
            builder = builder.namespace(namespace.clone());
        }
        if let Some(token) = self.token().await? {
            builder = builder.token(token);
        }
        if let Some(ca) = &self.ca_file {
            use anyhow::Context;
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            builder = builder.ca_pem(pem);
        }
        Ok(builder
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await?)
    }
}
