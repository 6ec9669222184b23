//! `registry.Registry` (shared/MICRO_API.md §3.2) over the native registry: Micro's domain D is
//! the namespace D, so a service registered either way is read and watched both ways. An
//! identical re-registration is a lease refresh with no event, as natively; a node's lease
//! runs out after `options.ttl` seconds without one (0: never) and its `delete` is watched.

use std::collections::HashMap;

use strata_proto::micro::registry as pb;
use strata_proto::registry::v1 as native;
use strata_raft::RaftNode;
use strata_registry::{
    Change, NodeEvent, NodeInfo, RegistryCommand, RegistryEvent, RegistryResponse, ServiceInfo,
    ServiceView, TypeInfo, LIST_NODES_MAX,
};
use tonic::{Request, Response, Status, Streaming};

use super::{authorize, authorize_admin, caller_of, first, or_default};
use crate::server::history::{self, Follower, Pump};
use crate::server::metrics::Metrics;
use crate::server::namespace::{Caller, ALL};
use crate::server::registry::{self as registry_service, MAX_TTL_SECONDS};
use crate::server::{status, validate};

/// Micro's metadata key naming where a service and each of its nodes were registered.
const DOMAIN_KEY: &str = "domain";

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
}

/// The domain a write names (default `micro`), authorized as `AuthorizeAdmin(domain)`.
fn write_domain(caller: &Caller, options: Option<&pb::Options>) -> Result<String, Status> {
    let domain = or_default(options.map_or("", |o| o.domain.as_str()));
    validate::name("options.domain", domain)?;
    authorize_admin(caller, domain)?;
    Ok(domain.to_string())
}

/// The domain a read or watch names: `Some(namespace)`, or `None` for `*` (every domain, for
/// the super-tenant's admins), authorized as `Authorize(domain)`.
fn read_domain(caller: &Caller, options: Option<&pb::Options>) -> Result<Option<String>, Status> {
    let domain = or_default(options.map_or("", |o| o.domain.as_str()));
    if domain != ALL {
        validate::name("options.domain", domain)?;
    }
    authorize(caller, domain)?;
    Ok((domain != ALL).then(|| domain.to_string()))
}

fn value_to_native(value: pb::Value) -> native::TypeInfo {
    native::TypeInfo {
        name: value.name,
        r#type: value.r#type,
        values: value.values.into_iter().map(value_to_native).collect(),
    }
}

/// Micro's service as the native registration (checked there against every input limit).
fn to_native(service: pb::Service) -> native::Service {
    native::Service {
        name: service.name,
        version: service.version,
        metadata: service.metadata,
        endpoints: service
            .endpoints
            .into_iter()
            .map(|e| native::Endpoint {
                name: e.name,
                request: e.request.map(value_to_native),
                response: e.response.map(value_to_native),
                metadata: e.metadata,
            })
            .collect(),
        nodes: service
            .nodes
            .into_iter()
            .map(|n| native::Node {
                id: n.id,
                address: n.address,
                metadata: n.metadata,
            })
            .collect(),
        namespace: String::new(),
        ttl_seconds: 0,
    }
}

fn value_pb(value: &TypeInfo) -> pb::Value {
    pb::Value {
        name: value.name.clone(),
        r#type: value.type_name.clone(),
        values: value.values.iter().map(value_pb).collect(),
    }
}

fn with_domain(
    metadata: impl IntoIterator<Item = (String, String)>,
    domain: &str,
) -> HashMap<String, String> {
    let mut metadata: HashMap<String, String> = metadata.into_iter().collect();
    metadata.insert(DOMAIN_KEY.into(), domain.into());
    metadata
}

fn node_pb(node: &NodeInfo, domain: &str) -> pb::Node {
    pb::Node {
        id: node.id.clone(),
        address: node.address.clone(),
        port: 0,
        metadata: with_domain(node.metadata.clone(), domain),
    }
}

/// Micro's service: `metadata.domain` on it and on each node, as Micro's backends write it.
fn service_pb(
    domain: &str,
    name: &str,
    version: &str,
    info: &ServiceInfo,
    nodes: Vec<pb::Node>,
    options: Option<pb::Options>,
) -> pb::Service {
    pb::Service {
        name: name.into(),
        version: version.into(),
        metadata: with_domain(info.metadata.clone(), domain),
        endpoints: info
            .endpoints
            .iter()
            .map(|e| pb::Endpoint {
                name: e.name.clone(),
                request: e.request.as_ref().map(value_pb),
                response: e.response.as_ref().map(value_pb),
                metadata: e.metadata.clone().into_iter().collect(),
            })
            .collect(),
        nodes,
        options,
    }
}

fn view_pb(view: &ServiceView) -> pb::Service {
    service_pb(
        &view.namespace,
        &view.service,
        &view.version,
        &view.record.info,
        view.nodes
            .iter()
            .map(|(node, _)| node_pb(node, &view.namespace))
            .collect(),
        None,
    )
}

/// One `Result` per node change, as etcd's watch gives one per node key: create, update, or
/// delete (an expiry too) carrying the node. A service-level change (metadata, endpoints)
/// is an update with no nodes, which Micro's caches merge as nothing.
struct MicroFollower {
    namespace: Option<String>,
    service: Option<String>,
}

impl MicroFollower {
    fn wanted(&self, namespace: &str, service: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| namespace == ns)
            && self.service.as_deref().is_none_or(|s| service == s)
    }
}

fn node_result(event: &NodeEvent, timestamp: i64) -> pb::Result {
    let action = match event.change {
        Change::Create => "create",
        Change::Update => "update",
        Change::Delete => "delete",
    };
    pb::Result {
        action: action.into(),
        service: Some(service_pb(
            &event.namespace,
            &event.service,
            &event.version,
            &event.info,
            vec![node_pb(&event.node, &event.namespace)],
            Some(pb::Options::default()),
        )),
        timestamp,
    }
}

impl Follower for MicroFollower {
    type Feed = history::RegistryFeed;
    type Response = pb::Result;

    fn render(
        &mut self,
        _revision: u64,
        events: &[RegistryEvent],
    ) -> Result<Vec<pb::Result>, Status> {
        let timestamp = (strata_raft::node::now_ms() / 1000) as i64;
        Ok(events
            .iter()
            .filter_map(|event| match event {
                RegistryEvent::Node(node) if self.wanted(&node.namespace, &node.service) => {
                    Some(node_result(node, timestamp))
                }
                RegistryEvent::Version(version)
                    if self.wanted(&version.namespace, &version.service) =>
                {
                    Some(pb::Result {
                        action: "update".into(),
                        service: Some(service_pb(
                            &version.namespace,
                            &version.service,
                            &version.version,
                            &version.info,
                            Vec::new(),
                            Some(pb::Options::default()),
                        )),
                        timestamp,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Micro's watch has no progress message; the pump still ends the stream when this node
    /// turns out stale, and Micro's watcher opens it again.
    fn progress(&self, _revision: u64) -> Option<pb::Result> {
        None
    }
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn get_service(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.metrics
            .observed("registry.GetService", async {
                let caller = caller_of(&request)?;
                let req = request.into_inner();
                let namespace = read_domain(&caller, req.options.as_ref())?;
                validate::name("service", &req.service)?;
                self.node
                    .linearizable_barrier()
                    .await
                    .map_err(status::read)?;
                let (registry, scope, name) = (
                    self.node.registry().clone(),
                    namespace.clone(),
                    req.service.clone(),
                );
                let (_, views) =
                    status::blocking(move || registry.services_at(scope.as_deref(), Some(&name)))
                        .await?;
                if views.is_empty() {
                    return Err(Status::not_found("service not found"));
                }
                Ok(pb::GetResponse {
                    services: views.iter().map(view_pb).collect(),
                })
            })
            .await
    }

    async fn register(
        &self,
        request: Request<pb::Service>,
    ) -> Result<Response<pb::EmptyResponse>, Status> {
        self.metrics
            .observed("registry.Register", async {
                let caller = caller_of(&request)?;
                let service = request.into_inner();
                let namespace = write_domain(&caller, service.options.as_ref())?;
                let ttl = service.options.as_ref().map_or(0, |o| o.ttl);
                if !(0..=i64::from(MAX_TTL_SECONDS)).contains(&ttl) {
                    return Err(validate::invalid(format!(
                        "options.ttl must be 0 (never expires) to {MAX_TTL_SECONDS} seconds, \
                         got {ttl}"
                    )));
                }
                let command = registry_service::register_command(
                    namespace,
                    to_native(service),
                    ttl as u64 * 1000,
                    self.max_nodes,
                )?;
                match self.node.register(command).await.map_err(status::write)? {
                    RegistryResponse::Registered { revision, .. } => {
                        self.metrics.registered(revision != 0);
                        Ok(pb::EmptyResponse {})
                    }
                    RegistryResponse::Failed(f) => Err(registry_service::failure(&f)),
                    other => Err(Status::internal(format!("unexpected response {other:?}"))),
                }
            })
            .await
    }

    async fn deregister(
        &self,
        request: Request<pb::Service>,
    ) -> Result<Response<pb::EmptyResponse>, Status> {
        self.metrics
            .observed("registry.Deregister", async {
                let caller = caller_of(&request)?;
                let service = request.into_inner();
                let namespace = write_domain(&caller, service.options.as_ref())?;
                validate::name("name", &service.name)?;
                let version = registry_service::version_of(&service.version)?;
                // Micro removes the nodes it names; none named is an error (as etcd's
                // backend says), never "every node" as Strata's own Deregister means.
                if service.nodes.is_empty() {
                    return Err(validate::invalid("Require at least one node".into()));
                }
                if service.nodes.len() as u64 > self.max_nodes {
                    return Err(validate::invalid(format!(
                        "{} nodes; the limit is {}",
                        service.nodes.len(),
                        self.max_nodes
                    )));
                }
                for node in &service.nodes {
                    registry_service::id("node id", &node.id)?;
                }
                let command = RegistryCommand::Deregister {
                    namespace,
                    service: service.name,
                    version,
                    node_ids: service.nodes.into_iter().map(|n| n.id).collect(),
                };
                match self
                    .node
                    .write_registry(command)
                    .await
                    .map_err(status::write)?
                {
                    RegistryResponse::Deregistered { .. } => Ok(pb::EmptyResponse {}),
                    RegistryResponse::Failed(f) => Err(registry_service::failure(&f)),
                    other => Err(Status::internal(format!("unexpected response {other:?}"))),
                }
            })
            .await
    }

    async fn list_services(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.metrics
            .observed("registry.ListServices", async {
                let caller = caller_of(&request)?;
                let namespace = read_domain(&caller, request.get_ref().options.as_ref())?;
                self.node
                    .linearizable_barrier()
                    .await
                    .map_err(status::read)?;
                let (registry, scope) = (self.node.registry().clone(), namespace.clone());
                let page = status::blocking(move || {
                    registry.services_page(scope.as_deref(), None, LIST_NODES_MAX)
                })
                .await?;
                if page.next.is_some() {
                    // Micro's List has no pages: refuse rather than read without bound.
                    return Err(status::with_code(
                        tonic::Code::ResourceExhausted,
                        "response_too_large",
                        format!(
                            "the registry holds more than {LIST_NODES_MAX} nodes, more than \
                             one answer lists; list by pages with strata.registry.v1 \
                             ListServices (page_token), or look services up one by one"
                        ),
                    ));
                }
                Ok(pb::ListResponse {
                    services: page.services.iter().map(view_pb).collect(),
                })
            })
            .await
    }

    type WatchStream = crate::server::outbox::Inbox<pb::Result>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.metrics
            .observed("registry.Watch", async {
                let (caller, req) = first(request).await?;
                let namespace = read_domain(&caller, req.options.as_ref())?;
                if !req.service.is_empty() {
                    validate::name("service", &req.service)?;
                }
                let service = (!req.service.is_empty()).then_some(req.service);
                // Future changes only (Micro's clients read first, then watch); subscribe
                // before choosing the start so that nothing falls between.
                let live = self.node.subscribe_registry();
                let start = history::start_revision(&self.node, 0)?;
                let (sender, receiver) = crate::server::outbox::channel();
                let pump = Pump {
                    node: self.node.clone(),
                    follower: MicroFollower { namespace, service },
                    next: start,
                    sender,
                    progress: history::progress_interval(0),
                    stopping: self.stopping.clone(),
                };
                tokio::spawn(pump.run(live));
                Ok(receiver)
            })
            .await
    }
}
