//! Prometheus metrics: requests per method and namespace (count by code, latency), Raft
//! progress, registry registrations by kind and the leader's lease count, group progress,
//! namespace usage; what the node reports about itself at each scrape is in `metrics_node.rs`.
//! Every name starts with `strata_` and ends in its unit where it has one.

use std::time::Instant;

use strata_storage::quota::Quota;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    namespace_latency: HistogramVec,
    raft: IntGaugeVec,
    registrations: IntCounterVec,
    leases: prometheus::IntGauge,
    queued: prometheus::IntGauge,
    groups: IntGaugeVec,
    usage: IntGaugeVec,
    limits: IntGaugeVec,
    quota_refusals: IntCounterVec,
    node: super::metrics_node::NodeMetrics,
    /// Namespaces seen as a label of the request counter (bounded: see `namespace_label`).
    namespaces: std::sync::Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
}

tokio::task_local! {
    /// The namespace of the call being served: set by the identity layer around each call,
    /// read when the call's metrics are recorded.
    pub static CALL_NAMESPACE: std::sync::Arc<str>;
}

/// Distinct namespaces labelled in the request counter; calls of any further namespace count
/// under `_other` (a scrape stays bounded whatever the tenants do).
const MAX_NAMESPACE_LABELS: usize = 1_000;

/// Consumer groups reported per scrape, at most (in key order).
const MAX_GROUPS_REPORTED: usize = 1_000;
/// Namespaces whose usage and limits are reported per scrape, at most (in name order).
const MAX_NAMESPACES_REPORTED: usize = 1_000;

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "strata_grpc_requests_total",
                "gRPC requests by method, status code and namespace (at most 1,000 namespaces; \
             the rest as _other)",
            ),
            &["method", "code", "namespace"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "strata_grpc_request_duration_seconds",
                "gRPC request latency",
            )
            .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 18).expect("valid buckets")),
            &["method"],
        )
        .expect("valid metric");
        let namespace_latency = HistogramVec::new(
            HistogramOpts::new(
                "strata_grpc_namespace_request_duration_seconds",
                "gRPC request latency per namespace (coarse buckets; per method: \
                 strata_grpc_request_duration_seconds)",
            )
            .buckets(vec![0.001, 0.005, 0.025, 0.1, 0.5, 2.5]),
            &["namespace"],
        )
        .expect("valid metric");
        let raft = IntGaugeVec::new(
            Opts::new("strata_raft", "Raft progress of this node"),
            &["field"],
        )
        .expect("valid metric");
        let registrations = IntCounterVec::new(
            Opts::new(
                "strata_registry_registrations_total",
                "Registry registrations answered here: keepalive (nothing written) or written",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let leases = prometheus::IntGauge::new(
            "strata_registry_leases",
            "Registry node leases this node keeps (non-zero only on the leader)",
        )
        .expect("valid metric");
        let queued = prometheus::IntGauge::new(
            "strata_session_queued_bytes",
            "Bytes of responses queued for watch and consume sessions, all together (at most \
             256 MiB; past it a session waits, then is cut slow_reader)",
        )
        .expect("valid metric");
        let groups = IntGaugeVec::new(
            Opts::new(
                "strata_stream_group",
                "Consumer group progress from this node's applied state (at most 1,000 groups, \
                 in key order): lag (retained messages never delivered), pending (delivered, \
                 unacked), delivered, acked, redelivered and dead_lettered (counts), last_delivery_ms and \
                 last_ack_ms (ms since the Unix epoch; 0: never). A lag that grows while \
                 last_delivery_ms stands still is a stalled group",
            ),
            &["namespace", "topic", "group", "field"],
        )
        .expect("valid metric");
        let usage = IntGaugeVec::new(
            Opts::new(
                "strata_namespace_usage",
                "What each namespace holds, per quota (keys, bytes, topics, stream_bytes, \
                 nodes), from this node's applied state; at most 1,000 namespaces, by name",
            ),
            &["namespace", "quota"],
        )
        .expect("valid metric");
        let limits = IntGaugeVec::new(
            Opts::new(
                "strata_namespace_limit",
                "The limits in force per namespace and quota (only those set; \"*\": the \
                 defaults)",
            ),
            &["namespace", "quota"],
        )
        .expect("valid metric");
        let quota_refusals = IntCounterVec::new(
            Opts::new(
                "strata_quota_refusals_total",
                "Calls refused on this node with RESOURCE_EXHAUSTED, by quota",
            ),
            &["quota"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(usage.clone()),
            Box::new(limits.clone()),
            Box::new(quota_refusals.clone()),
            Box::new(latency.clone()),
            Box::new(namespace_latency.clone()),
            Box::new(raft.clone()),
            Box::new(registrations.clone()),
            Box::new(leases.clone()),
            Box::new(queued.clone()),
            Box::new(groups.clone()),
        ] {
            registry.register(metric).expect("unique metric names");
        }
        // Every quota's refusals from 0, so that rates and alerts see them from the start.
        for quota in Quota::ALL {
            quota_refusals.with_label_values(&[quota.name()]);
        }
        let node = super::metrics_node::NodeMetrics::new(&registry);
        Self {
            node,
            namespaces: Default::default(),
            registry,
            requests,
            latency,
            namespace_latency,
            raft,
            registrations,
            leases,
            queued,
            groups,
            usage,
            limits,
            quota_refusals,
        }
    }

    /// Counts a call refused for `quota`.
    pub fn quota_refused(&self, quota: &str) {
        self.quota_refusals.with_label_values(&[quota]).inc();
    }

    /// Counts one successful registration: a keepalive, or one written through the log.
    pub fn registered(&self, written: bool) {
        let kind = if written { "written" } else { "keepalive" };
        self.registrations.with_label_values(&[kind]).inc();
    }

    /// Runs one request's work and records its outcome and latency under `method`.
    pub async fn observed<T>(
        &self,
        method: &str,
        work: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let started = Instant::now();
        let result = work.await;
        let code = result
            .as_ref()
            .map_or_else(tonic::Status::code, |_| tonic::Code::Ok);
        if let Err(status) = &result {
            if let Some(quota) = status
                .metadata()
                .get(strata_client::error_headers::QUOTA_HEADER)
            {
                self.quota_refused(quota.to_str().unwrap_or("unknown"));
            }
        }
        self.observe(method, code, started);
        result.map(tonic::Response::new)
    }

    /// Records one finished request (under the namespace of the call being served, if any).
    pub fn observe(&self, method: &str, code: tonic::Code, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        let record = |namespace: &str| {
            self.requests
                .with_label_values(&[method, code_name(code), namespace])
                .inc();
            self.namespace_latency
                .with_label_values(&[namespace])
                .observe(elapsed);
        };
        if CALL_NAMESPACE
            .try_with(|namespace| record(self.namespace_label(namespace)))
            .is_err()
        {
            record("");
        }
        self.latency.with_label_values(&[method]).observe(elapsed);
    }

    /// `namespace`, or `_other` once `MAX_NAMESPACE_LABELS` others are labelled. Every call
    /// asks: a shared lock for a namespace seen before, the exclusive one only for a new one.
    fn namespace_label<'a>(&self, namespace: &'a str) -> &'a str {
        if self
            .namespaces
            .read()
            .expect("not poisoned")
            .contains(namespace)
        {
            return namespace;
        }
        let mut seen = self.namespaces.write().expect("not poisoned");
        if seen.contains(namespace) || seen.len() < MAX_NAMESPACE_LABELS {
            seen.insert(namespace.to_string());
            return namespace;
        }
        "_other"
    }

    /// Counts leader changes from now on (see `metrics_node`).
    pub fn track_leader_changes(&self, node: &strata_raft::RaftNode) {
        self.node.track_leader_changes(node);
    }

    /// Renders the Prometheus text format, refreshing the Raft gauges first.
    pub async fn render(&self, node: &strata_raft::RaftNode) -> String {
        let status = node.local_status().await;
        let set = |field: &str, value: u64| self.raft.with_label_values(&[field]).set(value as i64);
        set("term", status.term);
        set("last_log_index", status.last_log_index);
        set("commit_index", status.committed_index);
        set("applied_index", status.applied_index);
        set("snapshot_index", status.snapshot_index);
        set("purged_index", status.purged_index);
        set("is_leader", u64::from(status.role == "leader"));
        // Read-index rounds and the callers they served (many per round under load).
        let (as_leader, reads) = node.read_rounds();
        set("leader_read_index_rounds", as_leader.rounds);
        set("leader_read_index_waiters", as_leader.waiters);
        set("read_index_rounds", reads.rounds);
        set("read_index_waiters", reads.waiters);
        // Writes proposed on this node as leader, and the entries they took.
        let writes = node.write_batches();
        set("proposed_writes", writes.commands);
        set("write_proposals", writes.proposals);
        let namespaces = node.quota().all();
        self.node
            .refresh(node, status.last_log_index, &namespaces)
            .await;
        if let Some(leases) = node.registry_lease_count() {
            self.leases.set(leases as i64);
        }
        self.queued
            .set(super::outbox::node_queued_bytes().min(i64::MAX as usize) as i64);
        let state = node.stream().clone();
        let progress =
            tokio::task::spawn_blocking(move || state.groups_progress(MAX_GROUPS_REPORTED)).await;
        self.groups.reset();
        match progress {
            Ok(Ok(groups)) => {
                for progress in groups {
                    let activity = &progress.record.activity;
                    for (field, value) in [
                        ("lag", progress.lag),
                        ("pending", progress.record.pending),
                        ("delivered", activity.delivered),
                        ("acked", activity.acked),
                        ("last_delivery_ms", activity.last_delivery_ms),
                        ("last_ack_ms", activity.last_ack_ms),
                        ("redelivered", activity.redelivered),
                        ("dead_lettered", activity.dead_lettered),
                    ] {
                        self.groups
                            .with_label_values(&[
                                &progress.namespace,
                                &progress.topic,
                                &progress.group,
                                field,
                            ])
                            .set(value.min(i64::MAX as u64) as i64);
                    }
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "reading group progress for the metrics"),
            Err(error) => tracing::warn!(%error, "the group progress reader failed"),
        }
        self.usage.reset();
        self.limits.reset();
        for entry in namespaces.into_iter().take(MAX_NAMESPACES_REPORTED) {
            for quota in Quota::COUNTED {
                self.usage
                    .with_label_values(&[&entry.namespace, quota.name()])
                    .set(entry.usage.get(quota).min(i64::MAX as u64) as i64);
            }
            for quota in Quota::ALL {
                let limit = entry.effective.get(quota);
                if limit > 0 {
                    self.limits
                        .with_label_values(&[&entry.namespace, quota.name()])
                        .set(limit.min(i64::MAX as u64) as i64);
                }
            }
        }
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding to a Vec cannot fail");
        String::from_utf8(out).expect("Prometheus text is UTF-8")
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
