//! `strata ns usage|limits`: what namespaces hold and the limits they are held to.

use anyhow::Context;
use byte_unit::{Byte, UnitType};
use strata_proto::namespace::v1 as pb;
use strata_proto::namespace::v1::namespaces_client::NamespacesClient;

use super::auth::{interceptor, BoxedInterceptor};
use super::{status, ClientArgs};

type Namespaces = NamespacesClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BoxedInterceptor>,
>;

#[derive(clap::Args)]
pub struct NsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: NsCommand,
}

#[derive(clap::Subcommand)]
enum NsCommand {
    /// What a namespace holds against its limits: the token's namespace, the one
    /// `--namespace` names, or every namespace with `--all` (super-tenant admins).
    Usage {
        #[arg(long)]
        all: bool,
    },
    /// Shows a namespace's limits, or sets those given (0 removes one). NAMESPACE `*` holds
    /// the defaults for namespaces without limits of their own. Super-tenant admins only.
    Limits {
        namespace: String,
        /// Keys stored (key-value records and config documents).
        #[arg(long)]
        keys: Option<u64>,
        /// Bytes of keys, values and metadata (units allowed: 512MiB, 10GB).
        #[arg(long, value_parser = parse_bytes)]
        bytes: Option<u64>,
        /// Stream topics.
        #[arg(long)]
        topics: Option<u64>,
        /// Bytes of retained stream messages (units allowed).
        #[arg(long, value_parser = parse_bytes)]
        stream_bytes: Option<u64>,
        /// Registered service nodes.
        #[arg(long)]
        nodes: Option<u64>,
        /// Calls per second on each node.
        #[arg(long)]
        requests_per_second: Option<u64>,
    },
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    Byte::parse_str(text, true)
        .map(|bytes| bytes.as_u64())
        .map_err(|error| {
            format!("{text:?} is not a byte size (e.g. 1048576, 512MiB, 10GB): {error}")
        })
}

fn show_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return bytes.to_string();
    }
    format!(
        "{:.1}",
        Byte::from_u64(bytes).get_appropriate_unit(UnitType::Binary)
    )
}

/// The rows of a namespace: quota, usage, limit (`-`: none).
fn rows(entry: &pb::NamespaceUsage) -> Vec<(&'static str, String, String)> {
    let usage = entry.usage.unwrap_or_default();
    let limits = entry.limits.unwrap_or_default();
    let limit = |value: u64, bytes: bool| match (value, bytes) {
        (0, _) => "-".to_string(),
        (value, true) => show_bytes(value),
        (value, false) => value.to_string(),
    };
    vec![
        ("keys", usage.keys.to_string(), limit(limits.keys, false)),
        ("bytes", show_bytes(usage.bytes), limit(limits.bytes, true)),
        (
            "topics",
            usage.topics.to_string(),
            limit(limits.topics, false),
        ),
        (
            "stream_bytes",
            show_bytes(usage.stream_bytes),
            limit(limits.stream_bytes, true),
        ),
        ("nodes", usage.nodes.to_string(), limit(limits.nodes, false)),
        (
            "requests_per_second",
            "-".to_string(),
            limit(limits.requests_per_second, false),
        ),
    ]
}

fn quotas_json(quotas: Option<&pb::Quotas>) -> serde_json::Value {
    let q = quotas.copied().unwrap_or_default();
    serde_json::json!({
        "keys": q.keys, "bytes": q.bytes, "topics": q.topics, "stream_bytes": q.stream_bytes,
        "nodes": q.nodes, "requests_per_second": q.requests_per_second,
    })
}

fn print(entry: &pb::NamespaceUsage, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "namespace": entry.namespace,
                "usage": quotas_json(entry.usage.as_ref()),
                "limits": quotas_json(entry.limits.as_ref()),
                "own_limits": entry.own_limits,
            })
        );
        return;
    }
    let whose = if entry.own_limits {
        "its own limits"
    } else {
        "default limits"
    };
    println!("namespace {} ({whose})", entry.namespace);
    for (quota, used, limit) in rows(entry) {
        println!("  {quota:<20} {used:>12} / {limit}");
    }
}

async fn connect(args: &ClientArgs) -> anyhow::Result<Namespaces> {
    let token = args.token().await?;
    let channel = super::channel(&args.endpoint, args.ca_file.as_deref()).await?;
    Ok(NamespacesClient::with_interceptor(
        channel,
        interceptor(token, args.namespace.as_deref())?,
    ))
}

pub async fn run(args: NsArgs) -> anyhow::Result<()> {
    let json = args.client.json;
    let mut client = connect(&args.client).await?;
    match args.command {
        NsCommand::Usage { all } => {
            let mut start_after = String::new();
            loop {
                let page = client
                    .usage(pb::UsageRequest {
                        all,
                        limit: 0,
                        start_after: start_after.clone(),
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                for entry in &page.namespaces {
                    print(entry, json);
                }
                if page.next.is_empty() {
                    break;
                }
                start_after = page.next;
            }
        }
        NsCommand::Limits {
            namespace,
            keys,
            bytes,
            topics,
            stream_bytes,
            nodes,
            requests_per_second,
        } => {
            let changes = pb::LimitChanges {
                keys,
                bytes,
                topics,
                stream_bytes,
                nodes,
                requests_per_second,
            };
            if changes != pb::LimitChanges::default() {
                let set = client
                    .set_limits(pb::SetLimitsRequest {
                        namespace: namespace.clone(),
                        limits: Some(changes),
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                let entry = pb::NamespaceUsage {
                    namespace: namespace.clone(),
                    usage: None,
                    limits: set.limits,
                    own_limits: true,
                };
                if json {
                    print(&entry, true);
                } else {
                    println!("limits of {namespace} set at revision {}:", set.revision);
                    for (quota, _, limit) in rows(&entry) {
                        println!("  {quota:<20} {limit}");
                    }
                }
                return Ok(());
            }
            let mut request = tonic::Request::new(pb::UsageRequest {
                all: namespace == "*",
                limit: 0,
                start_after: String::new(),
            });
            if namespace != "*" {
                request.metadata_mut().insert(
                    strata_client::NAMESPACE_HEADER,
                    namespace.parse().context("the namespace is not ASCII")?,
                );
            }
            let page = client.usage(request).await.map_err(status)?.into_inner();
            match page.namespaces.iter().find(|e| e.namespace == namespace) {
                Some(entry) => print(entry, json),
                // Only the defaults can be absent: no namespace `*` has been given limits.
                None if json => println!("{}", serde_json::json!({"namespace": namespace})),
                None => println!("namespace {namespace}: no limits set"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_take_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1_048_576));
        assert_eq!(parse_bytes("1MiB"), Ok(1_048_576));
        assert_eq!(parse_bytes("10GB"), Ok(10_000_000_000));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(show_bytes(512), "512");
        assert_eq!(show_bytes(1_048_576), "1.0 MiB");
    }
}
