//! `strata registry register|deregister|get|list|watch`.
//!
//! Human output by default; `--json` prints one JSON object per service, result or event.

use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use strata_client::registry::{proto, Node, Service, WatchOptions};
use strata_client::Consistency;

use super::kv::parse_pair;

#[derive(clap::Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    client: super::ClientArgs,
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(clap::Subcommand)]
enum RegistryCommand {
    /// Register (or refresh) nodes of a service version. Without --keepalive the nodes go
    /// when their TTL runs out; with it, this command re-registers every TTL/3 until Ctrl-C,
    /// then deregisters them.
    Register {
        name: String,
        /// Default "latest".
        #[arg(long, default_value = "")]
        version: String,
        /// A node, ID=HOST:PORT (repeatable, at least one).
        #[arg(long = "node", value_parser = parse_pair, required = true)]
        nodes: Vec<(String, String)>,
        /// Service metadata, KEY=VALUE (repeatable).
        #[arg(long = "meta", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        /// Metadata of every node given, KEY=VALUE (repeatable).
        #[arg(long = "node-meta", value_parser = parse_pair)]
        node_metadata: Vec<(String, String)>,
        /// How long the nodes stay without another registration (1s to 1d).
        #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Keep the registration alive until interrupted, then deregister.
        #[arg(long)]
        keepalive: bool,
    },
    /// Remove nodes of a service version (every node of it when none is given).
    Deregister {
        name: String,
        #[arg(long, default_value = "")]
        version: String,
        /// A node id (repeatable).
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// Every version of a service with its nodes.
    Get {
        name: String,
        /// Answer from this node's state, possibly behind the leader.
        #[arg(long)]
        serializable: bool,
    },
    /// Every service version with its nodes (namespace "*" with --token: every namespace).
    List {
        #[arg(long)]
        serializable: bool,
    },
    /// Print per-node changes, of one service or all, as they happen.
    Watch {
        name: Option<String>,
        /// Start at this revision (0: from now).
        #[arg(long, default_value_t = 0)]
        from_rev: u64,
        /// First print the current state (as create events), then the changes after it.
        #[arg(long)]
        snapshot: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

fn consistency(serializable: bool) -> Consistency {
    if serializable {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    }
}

fn service_json(service: &Service) -> Value {
    let nodes: Vec<Value> = service
        .nodes
        .iter()
        .map(|node| json!({"id": node.id, "address": node.address, "metadata": node.metadata}))
        .collect();
    let endpoints: Vec<Value> = service
        .endpoints
        .iter()
        .map(|endpoint| json!({"name": endpoint.name, "metadata": endpoint.metadata}))
        .collect();
    json!({
        "namespace": service.namespace,
        "name": service.name,
        "version": service.version,
        "metadata": service.metadata,
        "endpoints": endpoints,
        "ttl_seconds": service.ttl_seconds,
        "nodes": nodes,
    })
}

fn print_services(services: &[Service], json: bool) {
    for service in services {
        if json {
            println!("{}", service_json(service));
            continue;
        }
        println!(
            "{}/{} {} ({} nodes, ttl {}s)",
            service.namespace,
            service.name,
            service.version,
            service.nodes.len(),
            service.ttl_seconds
        );
        for node in &service.nodes {
            println!("  {} {}", node.id, node.address);
        }
    }
}

fn event_kind(event: &proto::Event) -> &'static str {
    match proto::event::Type::try_from(event.r#type) {
        Ok(proto::event::Type::Create) => "create",
        Ok(proto::event::Type::Update) => "update",
        Ok(proto::event::Type::Delete) => "delete",
        _ => "unknown",
    }
}

pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let client = args.client.connect().await?;
    let json = args.client.json;
    let registry = client.registry();
    match args.command {
        RegistryCommand::Register {
            name,
            version,
            nodes,
            metadata,
            node_metadata,
            ttl,
            keepalive,
        } => {
            let service = Service {
                name,
                version,
                metadata: metadata.into_iter().collect(),
                nodes: nodes
                    .into_iter()
                    .map(|(id, address)| Node {
                        id,
                        address,
                        metadata: node_metadata.iter().cloned().collect(),
                    })
                    .collect(),
                ..Default::default()
            };
            if keepalive {
                let kept = registry.keep_registered(service, ttl).await?;
                println!("OK registered; refreshing every {:?} until Ctrl-C", ttl / 3);
                tokio::signal::ctrl_c()
                    .await
                    .context("waiting for Ctrl-C")?;
                if let Some(error) = kept.last_error() {
                    eprintln!("warning: the last refresh failed: {error}");
                }
                let removed = kept.deregister().await?;
                println!("deregistered {removed} nodes");
                return Ok(());
            }
            let result = registry.register(&service, ttl).await?;
            if json {
                println!(
                    "{}",
                    json!({"changed": result.changed, "revision": result.revision,
                           "created": result.created, "updated": result.updated})
                );
            } else if result.changed {
                println!(
                    "OK revision={} created={} updated={}",
                    result.revision, result.created, result.updated
                );
            } else {
                println!("OK unchanged (lease refreshed)");
            }
        }
        RegistryCommand::Deregister {
            name,
            version,
            nodes,
        } => {
            let removed = registry.deregister(&name, &version, &nodes).await?;
            if json {
                println!("{}", json!({"removed": removed}));
            } else {
                println!("OK removed={removed}");
            }
        }
        RegistryCommand::Get { name, serializable } => {
            let services = registry
                .get_service(&name, consistency(serializable))
                .await?;
            print_services(&services, json);
        }
        RegistryCommand::List { serializable } => {
            let services = registry.list_services(consistency(serializable)).await?;
            if services.is_empty() && !json {
                println!("(no services)");
            }
            print_services(&services, json);
        }
        RegistryCommand::Watch {
            name,
            from_rev,
            snapshot,
            count,
        } => {
            if snapshot && from_rev != 0 {
                bail!("--snapshot starts from the current state; leave out --from-rev");
            }
            let mut watch = registry
                .watch(WatchOptions {
                    service: name,
                    start_revision: from_rev,
                    initial_snapshot: snapshot,
                    progress_interval: None,
                })
                .await?;
            let mut seen = 0u64;
            while let Some(response) = watch.next().await {
                let response = response?;
                for event in &response.events {
                    let Some(service) = &event.service else {
                        continue;
                    };
                    let node = service.nodes.first();
                    if json {
                        println!(
                            "{}",
                            json!({"type": event_kind(event), "revision": response.revision,
                                   "snapshot": response.snapshot, "expired": event.expired,
                                   "service": service_json(service)})
                        );
                    } else {
                        println!(
                            "{} {}/{} {} {} {}{} rev={}",
                            event_kind(event),
                            service.namespace,
                            service.name,
                            service.version,
                            node.map_or("", |n| n.id.as_str()),
                            node.map_or("", |n| n.address.as_str()),
                            if event.expired { " (expired)" } else { "" },
                            response.revision
                        );
                    }
                    seen += 1;
                    if count.is_some_and(|count| seen >= count) {
                        return Ok(());
                    }
                }
            }
            bail!("the watch ended: the server closed it");
        }
    }
    Ok(())
}
