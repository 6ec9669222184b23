//! The web dashboard every node serves on its HTTP port: `GET /dashboard` (one static page)
//! and `GET /api/v1/dashboard` (the JSON it polls every second): members with roles, leader,
//! term, lag and health; namespaces with their usage; topics with consumer groups and lag;
//! services with their nodes. Read-only. With auth on, the JSON needs a super-tenant admin's
//! token (`authorization: Bearer …`), checked by the same identity layer as every gRPC call;
//! the page asks for it and keeps it in the tab's session storage.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::identity::Gate;

/// The page (HTML, CSS and script in one file, no external resources).
pub const PAGE: &str = include_str!("dashboard.html");
/// The path the identity layer judges a dashboard read as (super admins only).
pub const PATH: &str = "/strata.dashboard.v1.Dashboard/Read";
/// How long the members' status may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Bounds on what one view reads and sends.
const MAX_TOPICS: usize = 1_000;
const MAX_GROUPS: usize = 1_000;
const MAX_NAMESPACES: usize = 1_000;
const MAX_SERVICE_NODES: usize = 2_000;
/// Views built at once on a node; more callers get 503 (each view asks every member).
const CONCURRENT_VIEWS: usize = 4;

#[derive(Serialize)]
pub struct View {
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub members: Vec<Member>,
    pub namespaces: Vec<NamespaceUsage>,
    pub topics: Vec<TopicView>,
    pub services: Vec<ServiceEntry>,
    /// Lists cut at their bound (the metrics and the CLI show everything).
    pub truncated: Vec<&'static str>,
}

#[derive(Serialize)]
pub struct Member {
    pub node_id: u64,
    pub peer_addr: String,
    pub client_addr: String,
    pub voter: bool,
    pub role: String,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// Entries behind the leader's last entry (when both answered).
    pub lag: Option<u64>,
    /// "ok", or why the member did not answer.
    pub health: String,
}

#[derive(Serialize)]
pub struct NamespaceUsage {
    pub namespace: String,
    pub usage: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
pub struct TopicView {
    pub namespace: String,
    pub topic: String,
    pub messages: u64,
    pub bytes: u64,
    pub last_sequence: u64,
    pub groups: Vec<GroupView>,
}

#[derive(Serialize)]
pub struct GroupView {
    pub group: String,
    pub lag: u64,
    pub pending: u64,
    pub delivered: u64,
    pub acked: u64,
}

#[derive(Serialize)]
pub struct ServiceEntry {
    pub namespace: String,
    pub service: String,
    pub version: String,
    pub nodes: Vec<ServiceNode>,
}

#[derive(Serialize)]
pub struct ServiceNode {
    pub id: String,
    pub address: String,
}

#[derive(Clone)]
pub struct Dashboard {
    node: strata_raft::RaftNode,
    gate: Arc<Gate>,
    views: Arc<tokio::sync::Semaphore>,
}

impl Dashboard {
    pub fn new(node: strata_raft::RaftNode, gate: Arc<Gate>) -> Self {
        Self {
            node,
            gate,
            views: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_VIEWS)),
        }
    }

    /// The JSON view for a caller presenting `headers`: (HTTP status, JSON body).
    pub async fn view(&self, headers: &HeaderMap) -> (StatusCode, String) {
        if let Err(status) = self.gate.admit(PATH, headers).await {
            let code = match status.code() {
                tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return (code, error_json(status.message()));
        }
        let Ok(_permit) = self.views.try_acquire() else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                error_json("too many dashboard views at once on this node; retry"),
            );
        };
        match self.build().await {
            Ok(view) => (
                StatusCode::OK,
                serde_json::to_string(&view).unwrap_or_else(|e| error_json(&e.to_string())),
            ),
            Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error_json(&error)),
        }
    }

    async fn build(&self) -> Result<View, String> {
        let node = &self.node;
        let views = node.cluster_status(STATUS_TIMEOUT).await;
        let members = super::cluster::members(&views)
            .into_iter()
            .map(|member| {
                let status = member.status.unwrap_or_default();
                Member {
                    node_id: member.node_id,
                    peer_addr: member.peer_addr,
                    client_addr: status.client_addr,
                    voter: member.voter,
                    role: if member.error.is_empty() {
                        status.role
                    } else {
                        "unreachable".into()
                    },
                    term: status.term,
                    commit_index: status.committed_index,
                    applied_index: status.applied_index,
                    lag: member.lag,
                    health: if member.error.is_empty() {
                        "ok".into()
                    } else {
                        member.error
                    },
                }
            })
            .collect();
        let metrics = node.raft.metrics().borrow().clone();
        let mut truncated = Vec::new();
        let quotas = node.quota().all();
        if quotas.len() > MAX_NAMESPACES {
            truncated.push("namespaces");
        }
        let namespaces = quotas
            .into_iter()
            .take(MAX_NAMESPACES)
            .map(|entry| NamespaceUsage {
                namespace: entry.namespace.clone(),
                usage: strata_storage::quota::Quota::COUNTED
                    .iter()
                    .map(|quota| (quota.name(), entry.usage.get(*quota)))
                    .collect(),
            })
            .collect();
        let (stream, registry) = (node.stream().clone(), node.registry().clone());
        let (topics, groups, services) = tokio::task::spawn_blocking(move || {
            Ok::<_, String>((
                stream
                    .topics_depth(MAX_TOPICS + 1)
                    .map_err(|e| e.to_string())?,
                stream
                    .groups_progress(MAX_GROUPS + 1)
                    .map_err(|e| e.to_string())?,
                registry
                    .services_page(None, None, MAX_SERVICE_NODES)
                    .map_err(|e| e.to_string())?,
            ))
        })
        .await
        .map_err(|e| e.to_string())??;
        if topics.len() > MAX_TOPICS {
            truncated.push("topics");
        }
        if groups.len() > MAX_GROUPS {
            truncated.push("groups");
        }
        if services.next.is_some() {
            truncated.push("services");
        }
        let mut topics: Vec<TopicView> = topics
            .into_iter()
            .take(MAX_TOPICS)
            .map(|t| TopicView {
                namespace: t.namespace,
                topic: t.topic,
                messages: t.messages,
                bytes: t.bytes,
                last_sequence: t.last_seq,
                groups: Vec::new(),
            })
            .collect();
        // Index the topics once: a view joins up to 1,000 groups to up to 1,000 topics.
        let index: std::collections::HashMap<(String, String), usize> = topics
            .iter()
            .enumerate()
            .map(|(at, t)| ((t.namespace.clone(), t.topic.clone()), at))
            .collect();
        for progress in groups.into_iter().take(MAX_GROUPS) {
            let key = (progress.namespace, progress.topic);
            if let Some(topic) = index.get(&key).map(|at| &mut topics[*at]) {
                topic.groups.push(GroupView {
                    group: progress.group,
                    lag: progress.lag,
                    pending: progress.record.pending,
                    delivered: progress.record.activity.delivered,
                    acked: progress.record.activity.acked,
                });
            }
        }
        let services = services
            .services
            .into_iter()
            .map(|view| ServiceEntry {
                namespace: view.namespace,
                service: view.service,
                version: view.version,
                nodes: view
                    .nodes
                    .into_iter()
                    .map(|(info, _)| ServiceNode {
                        id: info.id,
                        address: info.address,
                    })
                    .collect(),
            })
            .collect();
        Ok(View {
            node_id: node.node_id(),
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            members,
            namespaces,
            topics,
            services,
            truncated,
        })
    }
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}
