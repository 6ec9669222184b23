//! `strata.registry.v1.Registry`: parse and validate, delegate to Raft (registrations go through
//! the leader, which turns identical ones into lease refreshes) or the registry state (reads),
//! and encode.

use std::collections::HashSet;

use strata_proto::registry::v1 as pb;
use strata_raft::RaftNode;
use strata_registry::{
    Change, Endpoint, NodeEvent, NodeInfo, RegistryCommand, RegistryEvent, RegistryFailure,
    RegistryResponse, ServiceInfo, ServiceView, TypeInfo, LIST_NODES_MAX,
};
use tonic::{Request, Response, Status};

use super::history::{self, Follower, Pump};
use super::metrics::Metrics;
use super::{namespace, status, validate};

/// The version a service without one registers as (Micro's default).
pub const DEFAULT_VERSION: &str = "latest";
/// TTL bounds, in seconds.
pub const MAX_TTL_SECONDS: u32 = 86_400;
/// Default for `--registry-max-nodes`: nodes per service, all versions together.
pub const DEFAULT_MAX_NODES: u64 = 10_000;
/// Most endpoints a service may describe, and most type descriptions in all of them.
const MAX_ENDPOINTS: usize = 1_024;
const MAX_TYPE_INFOS: usize = 16_384;
const MAX_TYPE_DEPTH: usize = 32;
/// Node ids, endpoint and type names.
const MAX_ID_BYTES: usize = 256;
/// Longest `ListServices` page token (one is a namespace and a service name, encoded).
const MAX_PAGE_TOKEN_BYTES: usize = 4_096;
/// Nodes per snapshot message of a watch.
const SNAPSHOT_CHUNK_NODES: usize = 1_000;

#[derive(Clone)]
pub struct RegistryService {
    node: RaftNode,
    metrics: Metrics,
    max_nodes: u64,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl RegistryService {
    pub fn new(
        node: RaftNode,
        metrics: Metrics,
        max_nodes: u64,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            node,
            metrics,
            max_nodes,
            stopping,
        }
    }

    async fn read_barrier(&self, consistency: i32) -> Result<(), Status> {
        match validate::enumeration::<pb::Consistency>("consistency", consistency)? {
            pb::Consistency::Serializable => Ok(()),
            pb::Consistency::Unspecified | pb::Consistency::Linearizable => {
                self.node.linearizable_barrier().await.map_err(status::read)
            }
        }
    }

    fn register_command(
        &self,
        namespace: String,
        request: pb::RegisterRequest,
    ) -> Result<RegistryCommand, Status> {
        let service = request
            .service
            .ok_or_else(|| validate::invalid("service is required".into()))?;
        if request.permanent && request.ttl_seconds != 0 {
            return Err(validate::invalid(format!(
                "a permanent registration has no TTL, got ttl_seconds {}",
                request.ttl_seconds
            )));
        }
        if !request.permanent && (request.ttl_seconds == 0 || request.ttl_seconds > MAX_TTL_SECONDS)
        {
            return Err(validate::invalid(format!(
                "ttl_seconds must be 1 to {MAX_TTL_SECONDS} (a day), got {}; a node must \
                 re-register within its TTL to stay (or register it as permanent)",
                request.ttl_seconds
            )));
        }
        register_command(
            namespace,
            service,
            u64::from(request.ttl_seconds) * 1000,
            self.max_nodes,
        )
    }
}

/// A registration of `service`'s nodes in `namespace` for `ttl_ms` (0: no expiry, for Micro's
/// registrations without a TTL), checked against every input limit.
pub fn register_command(
    namespace: String,
    service: pb::Service,
    ttl_ms: u64,
    max_nodes: u64,
) -> Result<RegistryCommand, Status> {
    validate::name("service.name", &service.name)?;
    let version = version_of(&service.version)?;
    if service.nodes.is_empty() {
        return Err(validate::invalid(
            "service.nodes is empty: register at least one node".into(),
        ));
    }
    if service.nodes.len() as u64 > max_nodes {
        return Err(validate::invalid(format!(
            "{} nodes in one registration; the limit is {} per service (--registry-max-nodes)",
            service.nodes.len(),
            max_nodes
        )));
    }
    let mut seen = HashSet::new();
    let mut nodes = Vec::with_capacity(service.nodes.len());
    for node in service.nodes {
        id("node id", &node.id)?;
        if !seen.insert(node.id.clone()) {
            return Err(validate::invalid(format!(
                "node id {:?} appears twice in one registration",
                node.id
            )));
        }
        validate::host_port(&format!("address of node {:?}", node.id), &node.address)?;
        nodes.push(NodeInfo {
            id: node.id,
            address: node.address,
            metadata: validate::metadata(&node.metadata)?,
        });
    }
    if service.endpoints.len() > MAX_ENDPOINTS {
        return Err(validate::invalid(format!(
            "{} endpoints; the limit is {MAX_ENDPOINTS}",
            service.endpoints.len()
        )));
    }
    let mut budget = MAX_TYPE_INFOS;
    let mut endpoints = Vec::with_capacity(service.endpoints.len());
    for endpoint in service.endpoints {
        id("endpoint name", &endpoint.name)?;
        endpoints.push(Endpoint {
            request: endpoint
                .request
                .map(|t| type_info(t, 0, &mut budget))
                .transpose()?,
            response: endpoint
                .response
                .map(|t| type_info(t, 0, &mut budget))
                .transpose()?,
            metadata: validate::metadata(&endpoint.metadata)?,
            name: endpoint.name,
        });
    }
    Ok(RegistryCommand::Register {
        namespace,
        service: service.name,
        version,
        info: ServiceInfo {
            metadata: validate::metadata(&service.metadata)?,
            endpoints,
        },
        nodes,
        ttl_ms,
        max_nodes,
    })
}

pub fn version_of(version: &str) -> Result<String, Status> {
    if version.is_empty() {
        return Ok(DEFAULT_VERSION.into());
    }
    validate::name("service.version", version)?;
    Ok(version.into())
}

pub fn id(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() || value.len() > MAX_ID_BYTES {
        return Err(validate::invalid(format!(
            "{field} must be 1 to {MAX_ID_BYTES} bytes, got {}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(validate::invalid(format!(
            "{field} {value:?} contains a control character"
        )));
    }
    Ok(())
}

fn type_info(value: pb::TypeInfo, depth: usize, budget: &mut usize) -> Result<TypeInfo, Status> {
    if depth >= MAX_TYPE_DEPTH {
        return Err(validate::invalid(format!(
            "an endpoint type description is nested deeper than {MAX_TYPE_DEPTH}"
        )));
    }
    *budget = budget.checked_sub(1).ok_or_else(|| {
        validate::invalid(format!(
            "endpoint type descriptions hold more than {MAX_TYPE_INFOS} values in all"
        ))
    })?;
    if value.name.len() > MAX_ID_BYTES || value.r#type.len() > MAX_ID_BYTES {
        return Err(validate::invalid(format!(
            "a type description's name and type must be at most {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(TypeInfo {
        name: value.name,
        type_name: value.r#type,
        values: value
            .values
            .into_iter()
            .map(|v| type_info(v, depth + 1, budget))
            .collect::<Result<_, _>>()?,
    })
}

fn type_info_pb(value: &TypeInfo) -> pb::TypeInfo {
    pb::TypeInfo {
        name: value.name.clone(),
        r#type: value.type_name.clone(),
        values: value.values.iter().map(type_info_pb).collect(),
    }
}

fn node_pb(node: &NodeInfo) -> pb::Node {
    pb::Node {
        id: node.id.clone(),
        address: node.address.clone(),
        metadata: node.metadata.clone().into_iter().collect(),
    }
}

fn service_pb(
    namespace: &str,
    name: &str,
    version: &str,
    info: &ServiceInfo,
    nodes: Vec<pb::Node>,
    ttl_ms: u64,
) -> pb::Service {
    pb::Service {
        name: name.into(),
        version: version.into(),
        metadata: info.metadata.clone().into_iter().collect(),
        endpoints: info
            .endpoints
            .iter()
            .map(|e| pb::Endpoint {
                name: e.name.clone(),
                request: e.request.as_ref().map(type_info_pb),
                response: e.response.as_ref().map(type_info_pb),
                metadata: e.metadata.clone().into_iter().collect(),
            })
            .collect(),
        nodes,
        namespace: namespace.into(),
        ttl_seconds: (ttl_ms / 1000) as u32,
    }
}

fn view_pb(view: &ServiceView) -> pb::Service {
    service_pb(
        &view.namespace,
        &view.service,
        &view.version,
        &view.record.info,
        view.nodes.iter().map(|(node, _)| node_pb(node)).collect(),
        view.nodes.first().map_or(0, |(_, record)| record.ttl_ms),
    )
}

fn event_pb(event: &NodeEvent) -> pb::Event {
    let kind = match event.change {
        Change::Create => pb::event::Type::Create,
        Change::Update => pb::event::Type::Update,
        Change::Delete => pb::event::Type::Delete,
    };
    pb::Event {
        r#type: kind as i32,
        service: Some(service_pb(
            &event.namespace,
            &event.service,
            &event.version,
            &event.info,
            vec![node_pb(&event.node)],
            event.ttl_ms,
        )),
        expired: event.expired,
    }
}

pub fn failure(failure: &RegistryFailure) -> Status {
    match failure {
        RegistryFailure::TooManyNodes { .. } => status::with_code(
            tonic::Code::ResourceExhausted,
            "too_many_nodes",
            failure.to_string(),
        ),
        RegistryFailure::NotAnObject { .. } => status::with_code(
            tonic::Code::FailedPrecondition,
            "not_an_object",
            failure.to_string(),
        ),
        RegistryFailure::DocumentTooLarge { .. } => status::with_code(
            tonic::Code::ResourceExhausted,
            "document_too_large",
            failure.to_string(),
        ),
        RegistryFailure::RootNotObject | RegistryFailure::InvalidJson(_) => status::with_code(
            tonic::Code::InvalidArgument,
            "invalid_argument",
            failure.to_string(),
        ),
    }
}

/// Which node events a watcher wants.
struct RegistryFollower {
    namespace: Option<String>,
    service: Option<String>,
}

impl Follower for RegistryFollower {
    type Feed = history::RegistryFeed;
    type Response = pb::WatchResponse;

    fn render(
        &mut self,
        revision: u64,
        events: &[RegistryEvent],
    ) -> Result<Vec<pb::WatchResponse>, Status> {
        let wanted = |namespace: &String, service: &String| {
            self.namespace.as_ref().is_none_or(|ns| namespace == ns)
                && self.service.as_ref().is_none_or(|s| service == s)
        };
        let events: Vec<pb::Event> = events
            .iter()
            .filter_map(|event| match event {
                RegistryEvent::Node(node) if wanted(&node.namespace, &node.service) => {
                    Some(event_pb(node))
                }
                RegistryEvent::Version(version) if wanted(&version.namespace, &version.service) => {
                    Some(pb::Event {
                        r#type: pb::event::Type::Update as i32,
                        service: Some(service_pb(
                            &version.namespace,
                            &version.service,
                            &version.version,
                            &version.info,
                            Vec::new(),
                            0,
                        )),
                        expired: false,
                    })
                }
                _ => None,
            })
            .collect();
        if events.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![pb::WatchResponse {
            events,
            revision,
            snapshot: false,
            snapshot_complete: false,
        }])
    }

    fn progress(&self, revision: u64) -> Option<pb::WatchResponse> {
        Some(pb::WatchResponse {
            events: Vec::new(),
            revision,
            snapshot: false,
            snapshot_complete: false,
        })
    }
}

/// The current state as CREATE events, in messages of at most [`SNAPSHOT_CHUNK_NODES`] nodes;
/// always at least one message, the last marked complete.
fn snapshot_messages(revision: u64, views: &[ServiceView]) -> Vec<pb::WatchResponse> {
    let mut events = Vec::new();
    for view in views {
        for (node, record) in &view.nodes {
            events.push(pb::Event {
                r#type: pb::event::Type::Create as i32,
                service: Some(service_pb(
                    &view.namespace,
                    &view.service,
                    &view.version,
                    &view.record.info,
                    vec![node_pb(node)],
                    record.ttl_ms,
                )),
                expired: false,
            });
        }
    }
    let mut messages: Vec<pb::WatchResponse> = events
        .chunks(SNAPSHOT_CHUNK_NODES)
        .map(|chunk| pb::WatchResponse {
            events: chunk.to_vec(),
            revision,
            snapshot: true,
            snapshot_complete: false,
        })
        .collect();
    if messages.is_empty() {
        messages.push(pb::WatchResponse {
            events: Vec::new(),
            revision,
            snapshot: true,
            snapshot_complete: false,
        });
    }
    messages.last_mut().expect("at least one").snapshot_complete = true;
    messages
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.metrics
            .observed("Register", async {
                let namespace = namespace::of(&request)?;
                let command = self.register_command(namespace, request.into_inner())?;
                match self.node.register(command).await.map_err(status::write)? {
                    RegistryResponse::Registered {
                        revision,
                        created,
                        updated,
                    } => {
                        self.metrics.registered(revision != 0);
                        Ok(pb::RegisterResponse {
                            changed: revision != 0,
                            revision,
                            created,
                            updated,
                        })
                    }
                    RegistryResponse::Failed(f) => Err(failure(&f)),
                    other => Err(Status::internal(format!("unexpected response {other:?}"))),
                }
            })
            .await
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        self.metrics
            .observed("Deregister", async {
                let namespace = namespace::of(&request)?;
                let request = request.into_inner();
                validate::name("name", &request.name)?;
                let version = version_of(&request.version)?;
                if request.node_ids.len() as u64 > self.max_nodes {
                    return Err(validate::invalid(format!(
                        "{} node ids; the limit is {}",
                        request.node_ids.len(),
                        self.max_nodes
                    )));
                }
                for node_id in &request.node_ids {
                    id("node id", node_id)?;
                }
                let command = RegistryCommand::Deregister {
                    namespace,
                    service: request.name,
                    version,
                    node_ids: request.node_ids,
                };
                match self
                    .node
                    .write_registry(command)
                    .await
                    .map_err(status::write)?
                {
                    RegistryResponse::Deregistered { revision, removed } => {
                        Ok(pb::DeregisterResponse { removed, revision })
                    }
                    RegistryResponse::Failed(f) => Err(failure(&f)),
                    other => Err(Status::internal(format!("unexpected response {other:?}"))),
                }
            })
            .await
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::GetServiceResponse>, Status> {
        self.metrics
            .observed("GetService", async {
                let namespace = namespace::scope_of(&request)?;
                let request = request.into_inner();
                validate::name("name", &request.name)?;
                self.read_barrier(request.consistency).await?;
                let (registry, scope, name) = (
                    self.node.registry().clone(),
                    namespace.clone(),
                    request.name.clone(),
                );
                let (revision, views) =
                    status::blocking(move || registry.services_at(scope.as_deref(), Some(&name)))
                        .await?;
                if views.is_empty() {
                    return Err(status::with_code(
                        tonic::Code::NotFound,
                        "not_found",
                        format!("service {:?} has no registered nodes", request.name),
                    ));
                }
                Ok(pb::GetServiceResponse {
                    services: views.iter().map(view_pb).collect(),
                    revision,
                })
            })
            .await
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        self.metrics
            .observed("ListServices", async {
                let namespace = namespace::scope_of(&request)?;
                self.read_barrier(request.get_ref().consistency).await?;
                let request = request.into_inner();
                if request.page_token.len() > MAX_PAGE_TOKEN_BYTES {
                    return Err(validate::invalid(format!(
                        "page_token is over {MAX_PAGE_TOKEN_BYTES} bytes: pass the \
                         next_page_token of the page before"
                    )));
                }
                let page_nodes = match request.page_nodes as usize {
                    0 => LIST_NODES_MAX,
                    n => n.min(LIST_NODES_MAX),
                };
                let (registry, scope) = (self.node.registry().clone(), namespace.clone());
                let token = (!request.page_token.is_empty()).then_some(request.page_token);
                let page = status::blocking(move || {
                    registry.services_page(scope.as_deref(), token.as_deref(), page_nodes)
                })
                .await?;
                Ok(pb::ListServicesResponse {
                    services: page.services.iter().map(view_pb).collect(),
                    revision: page.revision,
                    next_page_token: page.next.unwrap_or_default(),
                })
            })
            .await
    }

    type WatchStream = crate::server::outbox::Inbox<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.metrics
            .observed("Watch", async {
                let namespace = namespace::scope_of(&request)?;
                let request = request.into_inner();
                if !request.service.is_empty() {
                    validate::name("service", &request.service)?;
                }
                if request.initial_snapshot && request.start_revision != 0 {
                    return Err(validate::invalid(
                        "initial_snapshot starts from the current state; leave start_revision 0"
                            .into(),
                    ));
                }
                let service = (!request.service.is_empty()).then_some(request.service);
                // Subscribe before choosing the start, so that nothing falls between.
                let live = self.node.subscribe_registry();
                let (sender, receiver) = crate::server::outbox::channel();
                let (start, snapshot) = if request.initial_snapshot {
                    let (registry, scope, name) = (
                        self.node.registry().clone(),
                        namespace.clone(),
                        service.clone(),
                    );
                    let (revision, views) = status::blocking(move || {
                        registry.services_at(scope.as_deref(), name.as_deref())
                    })
                    .await?;
                    (revision + 1, snapshot_messages(revision, &views))
                } else {
                    let start = history::start_revision(&self.node, request.start_revision)?;
                    (start, Vec::new())
                };
                let pump = Pump {
                    node: self.node.clone(),
                    follower: RegistryFollower { namespace, service },
                    next: start,
                    sender,
                    progress: history::progress_interval(request.progress_interval_ms),
                    stopping: self.stopping.clone(),
                };
                // The snapshot goes out first, from the pump's task.
                tokio::spawn(async move {
                    let mut pump = pump;
                    for message in snapshot {
                        if pump.sender.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    pump.run(live).await;
                });
                Ok(receiver)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_come_in_bounded_messages_and_always_end() {
        assert_eq!(snapshot_messages(7, &[]).len(), 1);
        assert!(snapshot_messages(7, &[])[0].snapshot_complete);
        let view = ServiceView {
            namespace: "ns".into(),
            service: "s".into(),
            version: "v".into(),
            record: strata_registry::VersionRecord {
                info: ServiceInfo::default(),
                node_count: 2_500,
                create_revision: 1,
                mod_revision: 1,
            },
            nodes: (0..2_500)
                .map(|i| {
                    (
                        NodeInfo {
                            id: format!("n{i}"),
                            address: "h:1".into(),
                            metadata: Default::default(),
                        },
                        strata_registry::NodeRecord {
                            address: "h:1".into(),
                            metadata: Default::default(),
                            ttl_ms: 30_000,
                            create_revision: 1,
                            mod_revision: 1,
                        },
                    )
                })
                .collect(),
        };
        let messages = snapshot_messages(9, &[view]);
        assert_eq!(messages.len(), 3);
        assert_eq!(
            messages.iter().map(|m| m.events.len()).sum::<usize>(),
            2_500
        );
        assert!(messages.iter().all(|m| m.snapshot && m.revision == 9));
        assert_eq!(messages.iter().filter(|m| m.snapshot_complete).count(), 1);
        assert!(messages.last().unwrap().snapshot_complete);
    }

    #[test]
    fn type_descriptions_are_bounded() {
        let mut deep = pb::TypeInfo::default();
        for _ in 0..40 {
            deep = pb::TypeInfo {
                name: "x".into(),
                r#type: "t".into(),
                values: vec![deep],
            };
        }
        let mut budget = MAX_TYPE_INFOS;
        assert!(type_info(deep, 0, &mut budget).is_err());
        let mut budget = 1;
        let wide = pb::TypeInfo {
            values: vec![pb::TypeInfo::default()],
            ..Default::default()
        };
        assert!(type_info(wide, 0, &mut budget).is_err());
    }
}
