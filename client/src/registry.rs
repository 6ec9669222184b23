//! The service registry: register with a TTL (re-register to stay), look up, watch.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strata_client::Error> {
//! use std::time::Duration;
//! use futures::StreamExt;
//! use strata_client::registry::{Node, Service, WatchOptions};
//!
//! let client = strata_client::Client::connect("127.0.0.1:7420").await?;
//! let registry = client.registry();
//! let service = Service {
//!     name: "greeter".into(),
//!     version: "1.0.0".into(),
//!     nodes: vec![Node { id: "greeter-1".into(), address: "10.0.0.5:9000".into(), ..Default::default() }],
//!     ..Default::default()
//! };
//! registry.register(&service, Duration::from_secs(90)).await?; // again every 30 s
//! let found = registry.get_service("greeter", Default::default()).await?;
//! let mut changes = registry.watch(WatchOptions { service: Some("greeter".into()), ..Default::default() }).await?;
//! while let Some(change) = changes.next().await { println!("{:?}", change?); }
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
pub use strata_proto::registry::v1 as proto;
pub use strata_proto::registry::v1::{Endpoint, Event, Node, Service, TypeInfo};

use crate::retry::{Endpoints, Safety};
use crate::{Consistency, Error, RegistryGrpc};

/// What a registration did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    /// False for a pure keepalive (nothing changed; no event).
    pub changed: bool,
    /// The revision of the change; 0 for a keepalive.
    pub revision: u64,
    pub created: u32,
    pub updated: u32,
}

#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// Only this service; `None`: every service.
    pub service: Option<String>,
    /// Deliver events from this revision on; 0: from now.
    pub start_revision: u64,
    /// First the current state as create events (`snapshot` responses), then the changes.
    pub initial_snapshot: bool,
    /// How often an idle watch says how far it got; `None`: every 10 s.
    pub progress_interval: Option<Duration>,
}

#[derive(Clone)]
pub struct Registry {
    endpoints: Arc<Endpoints<RegistryGrpc>>,
}

impl Registry {
    pub(crate) fn new(endpoints: Arc<Endpoints<RegistryGrpc>>) -> Self {
        Self { endpoints }
    }

    /// Registers (or refreshes) `service` and its nodes, which stay for `ttl` (whole seconds,
    /// rounded up) unless registered again; a `ttl` of zero registers them as permanent
    /// (Micro's TTL 0): they stay until deregistered. Safe to retry: repeating a registration
    /// is a keepalive.
    pub async fn register(&self, service: &Service, ttl: Duration) -> Result<Registered, Error> {
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let request = proto::RegisterRequest {
            service: Some(service.clone()),
            ttl_seconds: u32::try_from(seconds).unwrap_or(u32::MAX),
            permanent: ttl.is_zero(),
        };
        let response = self
            .endpoints
            .call(Safety::Idempotent, |mut client| {
                let request = request.clone();
                async move { client.register(request).await }
            })
            .await?;
        Ok(Registered {
            changed: response.changed,
            revision: response.revision,
            created: response.created,
            updated: response.updated,
        })
    }

    /// Registers `service` and keeps it registered: a task of its own registers it again every
    /// `ttl / 3` (a keepalive: nothing is written while nothing changed) until
    /// [`Registration::deregister`] (which removes the nodes) or drop (which stops refreshing;
    /// the nodes then go when their TTL runs out). The first registration's error is returned.
    pub async fn keep_registered(
        &self,
        service: Service,
        ttl: Duration,
    ) -> Result<Registration, Error> {
        if ttl.is_zero() {
            return Err(Error::InvalidArgument(
                "a kept registration needs a TTL (a permanent one needs no keeping: register it \
                 with a TTL of zero)"
                    .into(),
            ));
        }
        let first = self.register(&service, ttl).await?;
        let last_error = Arc::new(std::sync::Mutex::new(None));
        let every = (ttl / 3).max(Duration::from_millis(100));
        let task = {
            let (registry, service, last_error) =
                (self.clone(), service.clone(), last_error.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let outcome = registry.register(&service, ttl).await.err();
                    *last_error.lock().expect("not poisoned") = outcome.map(|e| e.to_string());
                }
            })
        };
        Ok(Registration {
            registry: self.clone(),
            service,
            first,
            last_error,
            task,
        })
    }

    /// Removes the listed nodes of (name, version), or every node of it when `node_ids` is
    /// empty. Returns how many were removed.
    pub async fn deregister(
        &self,
        name: &str,
        version: &str,
        node_ids: &[String],
    ) -> Result<u32, Error> {
        let request = proto::DeregisterRequest {
            name: name.into(),
            version: version.into(),
            node_ids: node_ids.to_vec(),
        };
        let response = self
            .endpoints
            .call(Safety::Idempotent, |mut client| {
                let request = request.clone();
                async move { client.deregister(request).await }
            })
            .await?;
        Ok(response.removed)
    }

    /// Every version of `name` with its nodes; [`Error::NotFound`] when it has none.
    pub async fn get_service(
        &self,
        name: &str,
        consistency: Consistency,
    ) -> Result<Vec<Service>, Error> {
        let request = proto::GetServiceRequest {
            name: name.into(),
            consistency: consistency.proto(),
        };
        let response = self
            .endpoints
            .call(Safety::Read, |mut client| {
                let request = request.clone();
                async move { client.get_service(request).await }
            })
            .await?;
        Ok(response.services)
    }

    /// Every (service, version) with its nodes.
    pub async fn list_services(&self, consistency: Consistency) -> Result<Vec<Service>, Error> {
        Ok(self.list_services_at(consistency).await?.1)
    }

    /// Like [`Self::list_services`], with the registry revision the list reflects: watching
    /// from that revision + 1 then misses nothing (a cache's list-then-watch). A registry of
    /// more than one page (10,000 nodes) is read page by page; the revision is the first
    /// page's, so the watch may repeat changes that later pages already show.
    pub async fn list_services_at(
        &self,
        consistency: Consistency,
    ) -> Result<(u64, Vec<Service>), Error> {
        let mut services = Vec::new();
        let mut first_revision = None;
        let mut page_token = Vec::new();
        loop {
            let request = proto::ListServicesRequest {
                consistency: consistency.proto(),
                page_token: std::mem::take(&mut page_token),
                page_nodes: 0,
            };
            let response = self
                .endpoints
                .call(Safety::Read, |mut client| {
                    let request = request.clone();
                    async move { client.list_services(request).await }
                })
                .await?;
            first_revision.get_or_insert(response.revision);
            services.extend(response.services);
            if response.next_page_token.is_empty() {
                return Ok((first_revision.unwrap_or(0), services));
            }
            page_token = response.next_page_token;
        }
    }

    /// Per-node changes as a stream. It ends only with an error (the node stopped, or the start
    /// revision was compacted); resume from the last revision seen + 1.
    pub async fn watch(&self, options: WatchOptions) -> Result<RegistryWatch, Error> {
        let request = proto::WatchRequest {
            service: options.service.unwrap_or_default(),
            start_revision: options.start_revision,
            initial_snapshot: options.initial_snapshot,
            progress_interval_ms: options
                .progress_interval
                .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
        };
        let inner = crate::watch::open(
            self.endpoints.clone(),
            request,
            |mut client, request| async move { client.watch(request).await },
        )
        .await?;
        Ok(RegistryWatch { inner })
    }
}

impl crate::watch::Request for proto::WatchRequest {
    fn resume_after(&mut self, revision: u64) {
        self.start_revision = revision + 1;
        self.initial_snapshot = false;
    }

    fn progress_ms(&self) -> u32 {
        self.progress_interval_ms
    }
}

impl crate::watch::Response for proto::WatchResponse {
    /// A snapshot's parts say nothing until its last one.
    fn seen_up_to(&self) -> Option<u64> {
        (!self.snapshot || self.snapshot_complete).then_some(self.revision)
    }
}

/// Watch responses: the events of one revision, a part of the initial snapshot, or a progress
/// message (no events) saying everything up to `revision` was examined.
pub struct RegistryWatch {
    inner: crate::watch::Resumable<proto::WatchResponse>,
}

impl Stream for RegistryWatch {
    type Item = Result<proto::WatchResponse, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// A registration kept alive by [`Registry::keep_registered`].
pub struct Registration {
    registry: Registry,
    service: Service,
    first: Registered,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Registration {
    /// What the first registration did.
    pub fn first(&self) -> Registered {
        self.first
    }

    /// The error of the latest refresh, if it failed (the next one is tried all the same).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("not poisoned").clone()
    }

    /// Stops refreshing and removes the nodes; returns how many were removed.
    pub async fn deregister(self) -> Result<u32, Error> {
        self.task.abort();
        let ids: Vec<String> = self.service.nodes.iter().map(|n| n.id.clone()).collect();
        self.registry
            .deregister(&self.service.name, &self.service.version, &ids)
            .await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}
