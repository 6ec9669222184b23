//! `strata health`: asks a node's HTTP port whether it is ready (or live), for container
//! health checks and scripts: exit status 0 when it answers 200, 1 otherwise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Empty};

#[derive(clap::Args)]
pub struct HealthArgs {
    /// The node's HTTP address (the same variable as `strata serve`'s, so a container's own
    /// setting is used); an unspecified address (0.0.0.0) means this machine.
    #[arg(long, env = "STRATA_HTTP_ADDR", default_value = "127.0.0.1:7422")]
    http_addr: SocketAddr,
    /// Ask /healthz (the process serves) instead of /readyz (a leader is known).
    #[arg(long)]
    live: bool,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let mut addr = args.http_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let path = if args.live { "/healthz" } else { "/readyz" };
    let uri: http::Uri = format!("http://{addr}{path}").parse()?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let response = tokio::time::timeout(args.timeout, client.get(uri.clone()))
        .await
        .with_context(|| format!("{uri}: no answer within {:?}", args.timeout))?
        .with_context(|| format!("{uri}"))?;
    let status = response.status();
    let body = tokio::time::timeout(args.timeout, response.into_body().collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|body| String::from_utf8_lossy(&body.to_bytes()).trim().to_string())
        .unwrap_or_default();
    if !status.is_success() {
        bail!("{uri}: {status} {body}");
    }
    println!("{uri}: {status} {body}");
    Ok(())
}
