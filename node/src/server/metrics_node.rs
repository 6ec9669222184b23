//! The metrics read at each scrape from the node itself: Raft replication per follower, topic
//! depth, RocksDB's figures and the process's resources. `metrics.rs` registers and renders
//! them with the request metrics.

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use strata_storage::engine::STATS_DB_WIDE;

/// Topics reported per scrape, at most (in key order).
const MAX_TOPICS_REPORTED: usize = 1_000;

/// RocksDB property (see `Engine::stats`) → metric name and help.
const ROCKSDB: &[(&str, &str, &str)] = &[
    (
        "total-sst-files-size",
        "strata_rocksdb_sst_bytes",
        "Bytes of table files, per column family",
    ),
    (
        "live-sst-files-size",
        "strata_rocksdb_live_sst_bytes",
        "Bytes of table files of the current version, per column family",
    ),
    (
        "cur-size-all-mem-tables",
        "strata_rocksdb_memtable_bytes",
        "Bytes of memtables, per column family",
    ),
    (
        "estimate-pending-compaction-bytes",
        "strata_rocksdb_pending_compaction_bytes",
        "Compaction debt: bytes compaction must rewrite to settle, per column family",
    ),
    (
        "estimate-num-keys",
        "strata_rocksdb_keys",
        "Estimated keys, per column family",
    ),
    (
        "num-files-at-level0",
        "strata_rocksdb_level0_files",
        "Level-0 table files (writes slow, then stop, as these pile up), per column family",
    ),
    (
        "is-write-stopped",
        "strata_rocksdb_write_stopped",
        "1 while RocksDB stops writes (a stall)",
    ),
    (
        "actual-delayed-write-rate",
        "strata_rocksdb_delayed_write_rate_bytes_per_second",
        "The rate RocksDB slows writes to while it delays them; 0 when it does not",
    ),
    (
        "num-running-compactions",
        "strata_rocksdb_running_compactions",
        "Compactions running",
    ),
    (
        "num-running-flushes",
        "strata_rocksdb_running_flushes",
        "Memtable flushes running",
    ),
    (
        "background-errors",
        "strata_rocksdb_background_errors",
        "Background errors RocksDB has met (non-zero: look at the log)",
    ),
];

#[derive(Clone)]
pub struct NodeMetrics {
    follower_lag: IntGaugeVec,
    follower_matched: IntGaugeVec,
    leader_changes: prometheus::IntCounter,
    topic_messages: IntGaugeVec,
    topic_bytes: IntGaugeVec,
    topic_last_seq: IntGaugeVec,
    registry_nodes: IntGauge,
    registry_services: IntGauge,
    rocksdb_per_cf: Vec<(&'static str, IntGaugeVec)>,
    rocksdb_wide: Vec<(&'static str, IntGauge)>,
    rss: IntGauge,
    open_fds: IntGauge,
    cpu_seconds: prometheus::Counter,
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

impl NodeMetrics {
    pub fn new(registry: &Registry) -> Self {
        let rocksdb_per_cf: Vec<_> = ROCKSDB
            .iter()
            .filter(|(property, _, _)| !STATS_DB_WIDE.contains(property))
            .map(|(property, name, help)| (*property, gauge_vec(name, help, &["cf"])))
            .collect();
        let rocksdb_wide: Vec<_> = ROCKSDB
            .iter()
            .filter(|(property, _, _)| STATS_DB_WIDE.contains(property))
            .map(|(property, name, help)| {
                (
                    *property,
                    IntGauge::new(*name, *help).expect("valid metric"),
                )
            })
            .collect();
        let metrics = Self {
            follower_lag: gauge_vec(
                "strata_raft_follower_lag_entries",
                "Entries each member's replication is behind the leader's last log entry (only on the leader)",
                &["follower"],
            ),
            follower_matched: gauge_vec(
                "strata_raft_follower_matched_index",
                "The last log index the leader knows each member holds (only on the leader)",
                &["follower"],
            ),
            leader_changes: prometheus::IntCounter::new(
                "strata_raft_leader_changes_total",
                "Times this node saw the leader change (elections that moved the lead)",
            )
            .expect("valid metric"),
            topic_messages: gauge_vec(
                "strata_stream_topic_messages",
                "Retained messages per topic (at most 1,000 topics, in key order)",
                &["namespace", "topic"],
            ),
            topic_bytes: gauge_vec(
                "strata_stream_topic_bytes",
                "Retained message bytes per topic",
                &["namespace", "topic"],
            ),
            topic_last_seq: gauge_vec(
                "strata_stream_topic_last_sequence",
                "The last sequence assigned per topic (its rate is the publish rate)",
                &["namespace", "topic"],
            ),
            registry_nodes: IntGauge::new(
                "strata_registry_nodes",
                "Registered service nodes in all namespaces (per namespace: strata_namespace_usage{quota=\"nodes\"})",
            )
            .expect("valid metric"),
            registry_services: IntGauge::new(
                "strata_registry_services",
                "Registered services (name and version) in all namespaces, counted over at most \
                 100,000 nodes per scrape",
            )
            .expect("valid metric"),
            rocksdb_per_cf,
            rocksdb_wide,
            rss: IntGauge::new("strata_process_resident_memory_bytes", "Resident memory of the process")
                .expect("valid metric"),
            open_fds: IntGauge::new("strata_process_open_fds", "Open file descriptors of the process")
                .expect("valid metric"),
            cpu_seconds: prometheus::Counter::new(
                "strata_process_cpu_seconds_total",
                "CPU time the process used, user and system",
            )
            .expect("valid metric"),
        };
        let mut collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.follower_lag.clone()),
            Box::new(metrics.follower_matched.clone()),
            Box::new(metrics.leader_changes.clone()),
            Box::new(metrics.topic_messages.clone()),
            Box::new(metrics.topic_bytes.clone()),
            Box::new(metrics.topic_last_seq.clone()),
            Box::new(metrics.registry_nodes.clone()),
            Box::new(metrics.registry_services.clone()),
            Box::new(metrics.rss.clone()),
            Box::new(metrics.open_fds.clone()),
            Box::new(metrics.cpu_seconds.clone()),
        ];
        for (_, gauge) in &metrics.rocksdb_per_cf {
            collectors.push(Box::new(gauge.clone()));
        }
        for (_, gauge) in &metrics.rocksdb_wide {
            collectors.push(Box::new(gauge.clone()));
        }
        collectors.extend(strata_raft::metrics::instruments());
        for collector in collectors {
            registry.register(collector).expect("unique metric names");
        }
        metrics
    }

    /// Counts leader changes as this node sees them, until the node stops.
    pub fn track_leader_changes(&self, node: &strata_raft::RaftNode) {
        let mut watch = node.raft.metrics();
        let counter = self.leader_changes.clone();
        tokio::spawn(async move {
            let mut last = watch.borrow_and_update().current_leader;
            while watch.changed().await.is_ok() {
                let leader = watch.borrow_and_update().current_leader;
                if leader.is_some() && leader != last {
                    if last.is_some() {
                        counter.inc();
                    }
                    last = leader;
                }
            }
        });
    }

    /// Refreshes every gauge from the node (blocking reads on a blocking thread).
    /// `namespaces`: every namespace's usage and limits, as the caller read them.
    pub async fn refresh(
        &self,
        node: &strata_raft::RaftNode,
        last_log_index: u64,
        namespaces: &[strata_storage::quota::NamespaceQuota],
    ) {
        self.follower_lag.reset();
        self.follower_matched.reset();
        let replication = node.raft.metrics().borrow().replication.clone();
        for (follower, matched) in replication.into_iter().flatten() {
            let matched = matched.map_or(0, |id| id.index);
            let label = follower.to_string();
            self.follower_matched
                .with_label_values(&[&label])
                .set(clamp(matched));
            self.follower_lag
                .with_label_values(&[&label])
                .set(clamp(last_log_index.saturating_sub(matched)));
        }
        let nodes: u64 = namespaces
            .iter()
            .map(|entry| entry.usage.get(strata_storage::quota::Quota::Nodes))
            .sum();
        self.registry_nodes.set(clamp(nodes));
        let (stream, engine, registry) = (
            node.stream().clone(),
            node.engine().clone(),
            node.registry().clone(),
        );
        let read = tokio::task::spawn_blocking(move || {
            (
                stream.topics_depth(MAX_TOPICS_REPORTED),
                engine.stats(),
                count_services(&registry),
            )
        })
        .await;
        self.topic_messages.reset();
        self.topic_bytes.reset();
        self.topic_last_seq.reset();
        match read {
            Ok((topics, stats, services)) => {
                match services {
                    Ok(services) => self.registry_services.set(clamp(services)),
                    Err(error) => tracing::warn!(%error, "counting services for the metrics"),
                }
                match topics {
                    Ok(topics) => {
                        for topic in topics {
                            let labels = [topic.namespace.as_str(), topic.topic.as_str()];
                            self.topic_messages
                                .with_label_values(&labels)
                                .set(clamp(topic.messages));
                            self.topic_bytes
                                .with_label_values(&labels)
                                .set(clamp(topic.bytes));
                            self.topic_last_seq
                                .with_label_values(&labels)
                                .set(clamp(topic.last_seq));
                        }
                    }
                    Err(error) => tracing::warn!(%error, "reading topic depth for the metrics"),
                }
                for (cf, property, value) in stats {
                    match cf {
                        Some(cf) => {
                            if let Some((_, gauge)) =
                                self.rocksdb_per_cf.iter().find(|(p, _)| *p == property)
                            {
                                gauge.with_label_values(&[cf]).set(clamp(value));
                            }
                        }
                        None => {
                            if let Some((_, gauge)) =
                                self.rocksdb_wide.iter().find(|(p, _)| *p == property)
                            {
                                gauge.set(clamp(value));
                            }
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "the metrics reader failed"),
        }
        self.refresh_process();
    }

    fn refresh_process(&self) {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            if let Some(kib) = status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<i64>()
                        .ok()
                })
            {
                self.rss.set(kib * 1024);
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(entries.count() as i64);
        }
        // Fields 14 and 15 of /proc/self/stat (after the command name in parentheses): user
        // and system time in clock ticks.
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after.split_whitespace().collect();
            // SAFETY: sysconf only reads a configuration value.
            let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
            if let (Some(user), Some(system), true) = (
                fields.get(11).and_then(|v| v.parse::<f64>().ok()),
                fields.get(12).and_then(|v| v.parse::<f64>().ok()),
                ticks > 0,
            ) {
                // A counter: it moves by what was used since the last scrape.
                let used = (user + system) / ticks as f64 - self.cpu_seconds.get();
                if used > 0.0 {
                    self.cpu_seconds.inc_by(used);
                }
            }
        }
    }
}

/// Services (name and version) in every namespace, reading at most ten pages of 10,000 nodes.
fn count_services(
    registry: &strata_registry::RegistryState,
) -> Result<u64, strata_storage::StorageError> {
    let (mut count, mut after) = (0u64, None);
    for _ in 0..10 {
        let page = registry.services_page(None, after.as_deref(), 10_000)?;
        count += page.services.len() as u64;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(count)
}

fn clamp(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}
