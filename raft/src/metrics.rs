//! Prometheus instruments of the Raft layer (the log's fsyncs, apply, snapshots, registry
//! expiries): process-wide, registered into the node's registry by the server
//! ([`instruments`]).

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGaugeVec, Opts};

fn histogram(name: &str, help: &str, start: f64, count: usize) -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(name, help)
            .buckets(prometheus::exponential_buckets(start, 2.0, count).expect("valid buckets")),
    )
    .expect("valid metric")
}

/// One log fsync (group commit: every append queued meanwhile).
pub static LOG_FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "strata_raft_log_fsync_duration_seconds",
        "Log fsyncs (one makes every append queued meanwhile durable)",
        0.000_05,
        18,
    )
});

/// Appends made durable per fsync.
pub static LOG_FSYNC_APPENDS: LazyLock<Histogram> = LazyLock::new(|| {
    Histogram::with_opts(
        HistogramOpts::new(
            "strata_raft_log_appends_per_fsync",
            "Log appends made durable by one fsync",
        )
        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
    )
    .expect("valid metric")
});

/// Writing one append's entries to the log (before its fsync).
pub static LOG_APPEND_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "strata_raft_log_append_duration_seconds",
        "Writing an append's entries to the log, before the fsync",
        0.000_01,
        18,
    )
});

/// Applying one run of committed entries to the state machine.
pub static APPLY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "strata_raft_apply_duration_seconds",
        "Applying a run of committed entries to the state machine",
        0.000_01,
        20,
    )
});

pub static APPLIED_ENTRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "strata_raft_applied_entries_total",
        "Log entries applied to the state machine on this node",
    )
    .expect("valid metric")
});

/// Snapshot builds and installs: durations, and the size of the last of each.
pub static SNAPSHOT_SECONDS: LazyLock<prometheus::HistogramVec> = LazyLock::new(|| {
    prometheus::HistogramVec::new(
        HistogramOpts::new(
            "strata_raft_snapshot_duration_seconds",
            "Snapshot builds and installs (kind=build|install)",
        )
        .buckets(prometheus::exponential_buckets(0.001, 2.0, 18).expect("valid buckets")),
        &["kind"],
    )
    .expect("valid metric")
});

pub static SNAPSHOT_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    IntGaugeVec::new(
        Opts::new(
            "strata_raft_snapshot_bytes",
            "Size of the last snapshot built or installed here (kind=build|install)",
        ),
        &["kind"],
    )
    .expect("valid metric")
});

pub static REGISTRY_EXPIRATIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "strata_registry_expirations_total",
        "Registry nodes whose lease ran out, proposed for removal by this node as leader",
    )
    .expect("valid metric")
});

/// Every instrument above, for registering.
pub fn instruments() -> Vec<Box<dyn prometheus::core::Collector>> {
    vec![
        Box::new(LOG_FSYNC_SECONDS.clone()),
        Box::new(LOG_FSYNC_APPENDS.clone()),
        Box::new(LOG_APPEND_SECONDS.clone()),
        Box::new(APPLY_SECONDS.clone()),
        Box::new(APPLIED_ENTRIES.clone()),
        Box::new(SNAPSHOT_SECONDS.clone()),
        Box::new(SNAPSHOT_BYTES.clone()),
        Box::new(REGISTRY_EXPIRATIONS.clone()),
    ]
}
