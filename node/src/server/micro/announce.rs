//! `--micro-register ADDRESS`: the node registers itself in the registry's `micro` domain as
//! Micro's core services (`store`, `registry`, `events`, `config`, `auth`, `broker`) with
//! `protocol=grpc`, so that Micro clients that resolve those services by name (the events,
//! config and blob-store clients have no address option; MICRO_API.md §10) find it. It
//! re-registers every 30 s with a 90 s TTL, Micro's own heartbeat: an unchanged registration
//! is a lease refresh, and a node that stops is dropped when its lease runs out.

use std::collections::HashMap;
use std::time::Duration;

use strata_proto::registry::v1 as native;
use strata_raft::RaftNode;

use super::DEFAULT;
use crate::server::registry::register_command;

/// The services Micro resolves by name.
pub const SERVICES: &[&str] = &["store", "registry", "events", "config", "auth", "broker"];
const EVERY: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(90);

/// Registers this node as each of [`SERVICES`] at `address` until the server stops.
pub async fn run(
    node: RaftNode,
    address: String,
    max_nodes: u64,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let node_id = format!("strata-{}", node.node_id());
    loop {
        let mut failed = None;
        for service in SERVICES {
            let registration = native::Service {
                name: service.to_string(),
                version: "latest".into(),
                nodes: vec![native::Node {
                    id: format!("{service}-{node_id}"),
                    address: address.clone(),
                    metadata: HashMap::from(
                        [
                            ("protocol", "grpc"),
                            ("server", "grpc"),
                            ("transport", "grpc"),
                            ("registry", "strata"),
                        ]
                        .map(|(k, v)| (k.to_string(), v.to_string())),
                    ),
                }],
                ..Default::default()
            };
            let outcome = match register_command(
                DEFAULT.into(),
                registration,
                TTL.as_millis() as u64,
                max_nodes,
            ) {
                Ok(command) => node
                    .register(command)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(status) => Err(status.message().to_string()),
            };
            if let Err(error) = outcome {
                failed = Some(error);
            }
        }
        // Retry soon while the cluster is finding its leader; then Micro's own pace.
        let wait = match failed {
            Some(error) => {
                tracing::debug!(%error, "registering as Micro's services; retrying");
                Duration::from_secs(1)
            }
            None => EVERY,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}
