//! Prometheus metrics: per-method request counts and latency, and Raft progress.

use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    raft: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "strata_grpc_requests_total",
                "gRPC requests by method and status code",
            ),
            &["method", "code"],
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
        let raft = IntGaugeVec::new(
            Opts::new("strata_raft", "Raft progress of this node"),
            &["field"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(raft.clone()),
        ] {
            registry.register(metric).expect("unique metric names");
        }
        Self {
            registry,
            requests,
            latency,
            raft,
        }
    }

    /// Records one finished request.
    pub fn observe(&self, method: &str, code: tonic::Code, started: Instant) {
        self.requests
            .with_label_values(&[method, code_name(code)])
            .inc();
        self.latency
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Renders the Prometheus text format, refreshing the Raft gauges first.
    pub async fn render(&self, node: &strata_raft::RaftNode) -> String {
        // The committed index lives in Raft's state, not in its metrics.
        let committed = node
            .raft
            .with_raft_state(|state| state.committed.map_or(0, |id| id.index))
            .await
            .unwrap_or(0);
        let metrics = node.raft.metrics().borrow().clone();
        let set = |field: &str, value: u64| self.raft.with_label_values(&[field]).set(value as i64);
        set("term", metrics.current_term);
        set("last_log_index", metrics.last_log_index.unwrap_or(0));
        set("commit_index", committed);
        set(
            "applied_index",
            metrics.last_applied.map_or(0, |id| id.index),
        );
        set("snapshot_index", metrics.snapshot.map_or(0, |id| id.index));
        set("purged_index", metrics.purged.map_or(0, |id| id.index));
        set(
            "is_leader",
            u64::from(metrics.current_leader == Some(metrics.id)),
        );
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
