//! `strata-bench`: drives a running Strata node through the Rust SDK with a named workload, many
//! concurrent clients, a fixed operation count and a time cap, and reports throughput, latency
//! percentiles, errors by kind and the server's CPU time per 1,000 operations.
//!
//! Workloads so far: `kv-put`, `kv-get` (linearizable), `kv-get-serializable`, `kv-mixed`
//! (90 % reads, 10 % writes over a key set), `kv-txn` (read, then compare-and-swap on a few
//! contended keys; lost races count as `cas_conflict`, not errors), `kv-load` (bulk load: each
//! operation is one transaction creating `--batch` new keys), `stream-pub` (one publish per
//! operation), `stream-pub-batch` (one PublishBatch of `--batch` messages per operation) and
//! `stream-e2e` (publishes while one group consumer acks them; reports publish-to-delivery
//! latency as well), `stream-consume` (a group of `--clients` consumers draining a topic
//! pre-filled with `--ops` messages), `registry-heartbeat` and `watch-fanout` (see
//! `registry.rs`).
//!
//! `--system etcd` and `--system nats` run the same shapes against etcd and NATS JetStream
//! through their own Rust clients (see `peers.rs`), so that one harness measures all three.

mod micro;
mod peers;
mod registry;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use strata_client::stream::{Publish, SubscribeOptions};
use strata_client::{Client, Consistency, Error, Put, Table};

#[derive(Parser, Debug, Clone)]
#[command(name = "strata-bench", about = "Load generator for Strata")]
struct Args {
    /// kv-put, kv-get, kv-get-serializable, kv-mixed, kv-txn, kv-load, stream-pub,
    /// stream-pub-batch, stream-e2e, stream-consume, registry-heartbeat or watch-fanout.
    #[arg(long)]
    workload: String,
    /// The system under load: strata, etcd (kv-* workloads but kv-load) or nats (JetStream:
    /// stream-pub, stream-pub-batch, stream-consume).
    #[arg(long, default_value = "strata", value_parser = ["strata", "etcd", "nats"])]
    system: String,
    /// Comma-separated: Strata's gRPC `host:port`s, etcd's client URLs or NATS server URLs.
    #[arg(long, default_value = "127.0.0.1:7420")]
    endpoint: String,
    /// nats: the stream's replicas (R1 on one server, R3 on a three-server cluster).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=5))]
    replicas: u32,
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Access token for a node with auth on (`strata login`; the gate's cost is measured so).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Concurrent clients (each its own connection).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Operations to run in all (the run also stops at --duration).
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Time cap for the measured phase.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keys preloaded for reads (kv-get, kv-mixed) or contended (kv-txn).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// The preload writes keys from this index on (those below were loaded by an earlier run
    /// into the same --table): a keyspace grows step by step without rewriting it.
    #[arg(long, default_value_t = 0)]
    preload_from: u64,
    /// The table (Strata) or key prefix (etcd) the kv workloads use; the workload's name by
    /// default. Runs that name the same table share its keys.
    #[arg(long)]
    table: Option<String>,
    /// Keys written by one kv-load transaction (1 to 128), or messages per stream-pub-batch
    /// operation (1 to 1,000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    /// registry-heartbeat: service nodes, each registering itself.
    #[arg(long, default_value_t = 10_000)]
    nodes: u64,
    /// registry-heartbeat: services the nodes are spread over.
    #[arg(long, default_value_t = 100)]
    services: u64,
    /// registry-heartbeat: how often each node re-registers (0s: as fast as possible).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// registry workloads: the TTL nodes register with.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// registry-heartbeat: change every node's metadata on each refresh (each one a log
    /// write), the baseline for keepalives.
    #[arg(long)]
    changing: bool,
    /// With several --endpoint nodes: client i starts at the i-th (round robin) instead of all
    /// at the first.
    #[arg(long)]
    spread: bool,
    /// watch-fanout: concurrent watchers of the changed service.
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// Server process ids whose CPU time to report per 1,000 operations (repeatable).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

impl Args {
    /// The kv workloads' table (Strata) or key prefix (etcd).
    pub(crate) fn table_name(&self) -> &str {
        self.table.as_deref().unwrap_or(&self.workload)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Put,
    Get(Consistency),
    Mixed,
    Txn,
    /// Transactions of this many new keys each.
    Load(u32),
    Publish,
    /// Batches of this many messages each.
    PublishBatch(u32),
    /// Publishes, with a consumer measuring publish-to-delivery latency.
    EndToEnd,
    /// A consumer group draining a pre-filled topic.
    Consume,
    /// Service nodes refreshing their registrations.
    Heartbeat,
    /// One registry change, many watchers.
    Fanout,
}

impl Workload {
    fn parse(name: &str, batch: u32) -> anyhow::Result<Self> {
        Ok(match name {
            "kv-load" if batch > 128 => bail!("kv-load takes --batch up to 128"),
            "kv-load" => Workload::Load(batch),
            "stream-pub" => Workload::Publish,
            "stream-pub-batch" => Workload::PublishBatch(batch),
            "stream-e2e" => Workload::EndToEnd,
            "stream-consume" => Workload::Consume,
            "kv-put" => Workload::Put,
            "kv-get" => Workload::Get(Consistency::Linearizable),
            "kv-get-serializable" => Workload::Get(Consistency::Serializable),
            "kv-mixed" => Workload::Mixed,
            "kv-txn" => Workload::Txn,
            "registry-heartbeat" => Workload::Heartbeat,
            "watch-fanout" => Workload::Fanout,
            other => bail!(
                "unknown workload {other:?}: kv-put, kv-get, kv-get-serializable, kv-mixed, \
                 kv-txn, kv-load, stream-pub, stream-pub-batch, stream-e2e, stream-consume, \
                 registry-heartbeat, watch-fanout, micro-store-write, micro-store-read, \
                 micro-events-pub"
            ),
        })
    }

    fn preloads(self) -> bool {
        matches!(self, Workload::Get(_) | Workload::Mixed | Workload::Txn)
    }

    /// Messages or keys written by one operation.
    fn items_per_op(self) -> u64 {
        match self {
            Workload::Load(n) | Workload::PublishBatch(n) => n.into(),
            _ => 1,
        }
    }
}

/// A measured phase, ready to report.
pub(crate) struct Measured {
    latency_us: Histogram<u64>,
    outcomes: BTreeMap<&'static str, u64>,
    elapsed: Duration,
    /// Server CPU seconds before and after (None without --server-pid).
    cpu: (Option<f64>, Option<f64>),
    /// Workload-specific figures for the JSON report.
    extra: Vec<(&'static str, serde_json::Value)>,
}

/// What one client saw.
struct ClientResult {
    latency_us: Histogram<u64>,
    outcomes: BTreeMap<&'static str, u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(micro) = micro::MicroWorkload::parse(&args.workload) {
        return report(&args, micro::run(&args, micro).await?);
    }
    let workload = Workload::parse(&args.workload, args.batch)?;
    if args.clients == 0 || args.ops == 0 || args.keys == 0 {
        bail!("--clients, --ops and --keys must be at least 1");
    }
    match args.system.as_str() {
        "etcd" => return report(&args, peers::etcd(&args, workload).await?),
        "nats" => return report(&args, peers::nats(&args, workload).await?),
        _ => {}
    }
    let mut clients = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        clients.push(connect(&args, index).await?);
    }
    match workload {
        Workload::Heartbeat => return report(&args, registry::heartbeat(&args, &clients).await?),
        Workload::Fanout => return report(&args, registry::fanout(&args, &clients).await?),
        Workload::Consume => return report(&args, consume(&args, &clients).await?),
        _ => {}
    }
    let mut tables = Vec::with_capacity(args.clients);
    let topic_name = format!("bench.{}.{}", args.workload, std::process::id());
    for client in clients {
        tables.push((
            client.table("bench", args.table_name()),
            client.topic(&topic_name),
        ));
    }
    // stream-e2e: one group consumer on its own connection, subscribed before the first publish.
    let e2e = match workload {
        Workload::EndToEnd => {
            let mut builder =
                Client::builder(args.endpoint.clone()).namespace(args.namespace.clone());
            if let Some(token) = &args.token {
                builder = builder.token(token.clone());
            }
            let client = builder.connect().await?;
            let subscription = client
                .topic(&topic_name)
                .subscribe(
                    SubscribeOptions::group("bench")
                        .earliest()
                        .max_in_flight(1_000),
                )
                .await?;
            Some(tokio::spawn(consume_e2e(subscription, args.ops)))
        }
        _ => None,
    };
    let value = value_bytes(args.value_size);
    if workload.preloads() {
        let only_tables: Vec<Table> = tables.iter().map(|(t, _)| t.clone()).collect();
        preload(&only_tables, args.preload_from..args.keys, &value)
            .await
            .context("preloading keys")?;
    }

    let value = Arc::new(value);
    let Measured {
        latency_us,
        outcomes,
        elapsed,
        cpu,
        ..
    } = measure(
        &args,
        tables
            .into_iter()
            .map(|(table, topic)| {
                let value = value.clone();
                let keys = args.keys;
                move |op, random| {
                    strata_op(
                        table.clone(),
                        topic.clone(),
                        workload,
                        op,
                        random,
                        keys,
                        value.clone(),
                    )
                }
            })
            .collect(),
    )
    .await?;
    let e2e_us = match e2e {
        Some(consumer) => {
            let published = outcomes.get("ok").copied().unwrap_or(0);
            Some(
                tokio::time::timeout(Duration::from_secs(30), consumer)
                    .await
                    .context("the consumer did not get every message within 30 s")???
                    .finish(published)?,
            )
        }
        None => None,
    };

    let e2e_ms = e2e_us.as_ref().map(|h| {
        let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "publish-to-delivery: {} messages p50={:.3}ms p99={:.3}ms max={:.3}ms",
            h.len(),
            q(0.5),
            q(0.99),
            h.max() as f64 / 1000.0
        );
        json!({"p50": q(0.5), "p99": q(0.99), "max": h.max() as f64 / 1000.0, "messages": h.len()})
    });
    let extra = vec![("publish_to_delivery_ms", json!(e2e_ms))];
    report(
        &args,
        Measured {
            latency_us,
            outcomes,
            elapsed,
            cpu,
            extra,
        },
    )
}

/// Client `index`'s connection: every --endpoint node, starting at the `index`-th with --spread.
async fn connect(args: &Args, index: usize) -> anyhow::Result<Client> {
    let mut endpoints: Vec<&str> = args.endpoint.split(',').map(str::trim).collect();
    if args.spread {
        let first = index % endpoints.len();
        endpoints.rotate_left(first);
    }
    let mut builder = Client::builder(endpoints.join(","))
        .namespace(args.namespace.clone())
        .request_timeout(Duration::from_secs(10));
    if let Some(token) = &args.token {
        builder = builder.token(token.clone());
    }
    Ok(builder.connect().await?)
}

/// Prints the summary line and outcomes, and writes the JSON report when asked.
fn report(args: &Args, measured: Measured) -> anyhow::Result<()> {
    let Measured {
        latency_us,
        outcomes,
        elapsed,
        cpu,
        extra,
    } = measured;
    let done = latency_us.len();
    let ops_per_second = done as f64 / elapsed.as_secs_f64();
    // Messages or keys per second: what a batch of N is worth.
    let items_per_op = match micro::MicroWorkload::parse(&args.workload) {
        Some(_) => 1,
        None => Workload::parse(&args.workload, args.batch)?.items_per_op(),
    };
    let items_per_second = ops_per_second * items_per_op as f64;
    if items_per_op > 1 {
        println!("{items_per_second:.0} messages or keys/s");
    }
    let cpu_per_1000_ops = match cpu {
        (Some(before), Some(after)) if done > 0 => Some((after - before) / done as f64 * 1000.0),
        _ => None,
    };
    let cpu_per_second = match cpu {
        (Some(before), Some(after)) => Some((after - before) / elapsed.as_secs_f64()),
        _ => None,
    };
    let ms = |q: f64| latency_us.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{} {} clients={} ops={done} in {:.2}s: {:.0} ops/s  p50={:.3}ms p99={:.3}ms p999={:.3}ms max={:.3}ms{}",
        args.system,
        args.workload,
        args.clients,
        elapsed.as_secs_f64(),
        ops_per_second,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latency_us.max() as f64 / 1000.0,
        match (cpu_per_1000_ops, cpu_per_second) {
            (Some(per_ops), Some(per_s)) => {
                format!("  server_cpu={per_ops:.3}s/1000ops ({per_s:.2} cores)")
            }
            _ => String::new(),
        },
    );
    println!("outcomes: {outcomes:?}");
    if let Some(path) = &args.json {
        let mut report = json!({
            "system": args.system,
            "workload": args.workload,
            "clients": args.clients,
            "value_size": args.value_size,
            "ops": done,
            "elapsed_s": elapsed.as_secs_f64(),
            "ops_per_s": ops_per_second,
            "items_per_s": items_per_second,
            "latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": latency_us.max() as f64 / 1000.0},
            "outcomes": outcomes,
            "server_cpu_s_per_1000_ops": cpu_per_1000_ops,
            "server_cpu_cores": cpu_per_second,
        });
        for (name, value) in extra {
            report[name] = value;
        }
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if outcomes.keys().any(|kind| kind.starts_with("error")) {
        eprintln!("some operations failed; see outcomes");
    }
    Ok(())
}

/// Runs the measured phase: each of `clients` is called with an operation number (unique over
/// the run, from 0) and a random number until `--ops` operations are done or `--duration` is
/// up, and returns the outcome it saw.
pub(crate) async fn measure<F, Fut>(args: &Args, clients: Vec<F>) -> anyhow::Result<Measured>
where
    F: FnMut(u64, u64) -> Fut + Send + 'static,
    Fut: Future<Output = &'static str> + Send,
{
    let cpu_before = cpu_seconds(&args.server_pid)?;
    let next_op = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + args.duration;
    let ops = args.ops;
    let mut handles = Vec::new();
    for (index, mut client) in clients.into_iter().enumerate() {
        let next_op = next_op.clone();
        handles.push(tokio::spawn(async move {
            let mut latency_us = histogram();
            let mut outcomes = BTreeMap::new();
            // A cheap per-client generator (xorshift); the key choice needs spread, not quality.
            let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (index as u64 + 1);
            loop {
                let op = next_op.fetch_add(1, Ordering::Relaxed);
                if op >= ops || Instant::now() >= deadline {
                    break;
                }
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let started = Instant::now();
                let outcome = client(op, state).await;
                latency_us.record(micros(started)).expect("within bounds");
                *outcomes.entry(outcome).or_default() += 1;
            }
            ClientResult {
                latency_us,
                outcomes,
            }
        }));
    }
    let (latency_us, outcomes) = gather(handles).await?;
    let elapsed = started.elapsed();
    Ok(Measured {
        latency_us,
        outcomes,
        elapsed,
        cpu: (cpu_before, cpu_seconds(&args.server_pid)?),
        extra: Vec::new(),
    })
}

/// What one consumer's next delivery was.
pub(crate) enum Next {
    /// A message arrived and was acked; the outcome counts it.
    Got(&'static str),
    /// Nothing arrived within the poll interval.
    Idle,
    /// A transient error, counted; the consumer goes on after a pause.
    Error(&'static str),
    /// The consumer can go no further (its stream ended or failed).
    Ended(&'static str),
}

/// Runs a drain: each consumer is asked for its next delivery until `--ops` messages counted
/// `ok` arrived over all of them or `--duration` is up. An operation is one delivery, its
/// latency the wait for it.
pub(crate) async fn measure_drain<F, Fut>(
    args: &Args,
    consumers: Vec<F>,
) -> anyhow::Result<Measured>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Next> + Send,
{
    let cpu_before = cpu_seconds(&args.server_pid)?;
    let consumed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + args.duration;
    let ops = args.ops;
    let mut handles = Vec::new();
    for mut consumer in consumers {
        let consumed = consumed.clone();
        handles.push(tokio::spawn(async move {
            let mut latency_us = histogram();
            let mut outcomes = BTreeMap::new();
            let mut waiting = Instant::now();
            while consumed.load(Ordering::Relaxed) < ops && Instant::now() < deadline {
                match consumer().await {
                    Next::Idle => continue,
                    Next::Error(outcome) => {
                        *outcomes.entry(outcome).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Next::Got(outcome) => {
                        latency_us.record(micros(waiting)).expect("within bounds");
                        waiting = Instant::now();
                        if outcome == "ok" {
                            consumed.fetch_add(1, Ordering::Relaxed);
                        }
                        *outcomes.entry(outcome).or_default() += 1;
                    }
                    Next::Ended(outcome) => {
                        *outcomes.entry(outcome).or_default() += 1;
                        break;
                    }
                }
            }
            ClientResult {
                latency_us,
                outcomes,
            }
        }));
    }
    let (latency_us, outcomes) = gather(handles).await?;
    let elapsed = started.elapsed();
    let got = consumed.load(Ordering::Relaxed);
    Ok(Measured {
        latency_us,
        outcomes,
        elapsed,
        cpu: (cpu_before, cpu_seconds(&args.server_pid)?),
        extra: vec![("consumed", json!(got)), ("complete", json!(got >= ops))],
    })
}

/// The clients' latencies and outcomes, summed.
async fn gather(
    handles: Vec<tokio::task::JoinHandle<ClientResult>>,
) -> anyhow::Result<(Histogram<u64>, BTreeMap<&'static str, u64>)> {
    let mut latency_us = histogram();
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    for handle in handles {
        let result = handle.await?;
        latency_us.add(&result.latency_us)?;
        for (kind, count) in result.outcomes {
            *outcomes.entry(kind).or_default() += count;
        }
    }
    Ok((latency_us, outcomes))
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

pub(crate) fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros().clamp(1, 60_000_000) as u64
}

/// One Strata operation of `workload`.
async fn strata_op(
    table: Table,
    topic: strata_client::stream::Topic,
    workload: Workload,
    op: u64,
    random: u64,
    keys: u64,
    value: Arc<Vec<u8>>,
) -> &'static str {
    match workload {
        Workload::Put => put(&table, format!("put-{op:012}"), &value).await,
        Workload::Get(consistency) => get(&table, random % keys, consistency).await,
        Workload::Mixed if random.is_multiple_of(10) => {
            put(&table, key_name(random % keys), &value).await
        }
        Workload::Mixed => get(&table, random % keys, Consistency::Linearizable).await,
        Workload::Txn => cas(&table, random % keys, &value).await,
        Workload::Load(batch) => load(&table, op, batch, &value).await,
        Workload::Publish | Workload::EndToEnd => {
            let message = Publish::new(value.to_vec()).metadata("sent_us", sent_us());
            classify(topic.publish(message).await.map(|_| "ok"))
        }
        Workload::PublishBatch(batch) => {
            let messages = (0..batch).map(|_| Publish::new(value.to_vec()));
            classify(topic.publish_batch(messages).await.map(|_| "ok"))
        }
        Workload::Consume | Workload::Heartbeat | Workload::Fanout => {
            unreachable!("these workloads have their own loops")
        }
    }
}

/// Microseconds since this process started its clock, for publish-to-delivery latency (the
/// consumer runs in the same process).
fn sent_us() -> String {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(Instant::now)
        .elapsed()
        .as_micros()
        .to_string()
}

/// What the stream-e2e consumer saw.
struct Consumed {
    latency_us: Histogram<u64>,
    error: Option<String>,
}

impl Consumed {
    /// The latencies, if every acknowledged publish was delivered.
    fn finish(self, published: u64) -> anyhow::Result<Histogram<u64>> {
        if let Some(error) = self.error {
            bail!("the consumer failed: {error}");
        }
        if self.latency_us.len() < published {
            bail!(
                "the consumer got {} of {published} acknowledged messages",
                self.latency_us.len()
            );
        }
        Ok(self.latency_us)
    }
}

/// Consumes until `expected` messages arrived (or the stream fails), acking each.
async fn consume_e2e(
    mut subscription: strata_client::stream::Subscription,
    expected: u64,
) -> anyhow::Result<Consumed> {
    use futures::StreamExt;
    let mut latency_us = histogram();
    let mut error = None;
    // Stops at `expected` or when the stream goes quiet for 5 s after the load.
    while latency_us.len() < expected {
        let item = match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_) => break,
        };
        let delivery = match item {
            Ok(delivery) => delivery,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        };
        let now = sent_us().parse::<u64>()?;
        if delivery.message.delivery_count == 1 {
            let sent: u64 = delivery.message.metadata["sent_us"].parse()?;
            latency_us.record(now.saturating_sub(sent).clamp(1, 60_000_000))?;
        }
        delivery.ack_nowait().await?;
    }
    Ok(Consumed { latency_us, error })
}

/// `stream-consume`: pre-fills a fresh topic with `--ops` messages (not measured), then
/// `--clients` consumers of one group drain it, acking each message.
async fn consume(args: &Args, clients: &[Client]) -> anyhow::Result<Measured> {
    let topic_name = format!("bench.stream-consume.{}", std::process::id());
    let value = value_bytes(args.value_size);
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for client in clients {
        let (topic, next, value, ops) = (
            client.topic(&topic_name),
            next.clone(),
            value.clone(),
            args.ops,
        );
        handles.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(PREFILL_BATCH, Ordering::Relaxed);
                if first >= ops {
                    return Ok::<_, Error>(());
                }
                let count = PREFILL_BATCH.min(ops - first);
                topic
                    .publish_batch((0..count).map(|_| Publish::new(value.clone())))
                    .await?;
            }
        }));
    }
    for handle in handles {
        handle.await?.context("pre-filling the topic")?;
    }
    let consumers = clients
        .iter()
        .map(|client| {
            let topic = client.topic(&topic_name);
            let subscription = Arc::new(tokio::sync::Mutex::new(None));
            move || {
                let (topic, subscription) = (topic.clone(), subscription.clone());
                async move {
                    let mut subscription = subscription.lock().await;
                    next_delivery(&topic, &mut subscription).await
                }
            }
        })
        .collect();
    measure_drain(args, consumers).await
}

/// Messages per PublishBatch when pre-filling a topic.
const PREFILL_BATCH: u64 = 500;

/// The consumer's next delivery, acked without waiting for the ack's commit (acks in flight
/// share log entries, as a NATS pull consumer's acks are fire-and-forget). Subscribes on the
/// first call, so that the drain's clock includes joining the group.
async fn next_delivery(
    topic: &strata_client::stream::Topic,
    subscription: &mut Option<strata_client::stream::Subscription>,
) -> Next {
    use futures::StreamExt;
    if subscription.is_none() {
        let options = SubscribeOptions::group("bench")
            .earliest()
            .max_in_flight(256);
        match topic.subscribe(options).await {
            Ok(joined) => *subscription = Some(joined),
            Err(error) => return Next::Ended(classify(Err(error))),
        }
    }
    let joined = subscription.as_mut().expect("subscribed above");
    match tokio::time::timeout(Duration::from_millis(500), joined.next()).await {
        Err(_) => Next::Idle,
        Ok(None) => Next::Ended("error_stream_ended"),
        Ok(Some(Err(error))) => Next::Ended(classify(Err(error))),
        Ok(Some(Ok(delivery))) => match delivery.ack_nowait().await {
            Err(error) => Next::Ended(classify(Err(error))),
            Ok(()) if delivery.message.delivery_count == 1 => Next::Got("ok"),
            Ok(()) => Next::Got("redelivered"),
        },
    }
}

fn key_name(index: u64) -> String {
    format!("key-{index:010}")
}

/// `size` pseudo-random bytes (xorshift; the same every run): incompressible, so a store that
/// compresses (RocksDB's LZ4) keeps as many bytes as one that does not (etcd's bbolt).
pub(crate) fn value_bytes(size: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// Keys per preload transaction: up to 100, and about 256 KiB of values at most.
pub(crate) fn preload_batch(value_size: usize) -> u64 {
    (256 * 1024 / (value_size + 32)).clamp(1, 100) as u64
}

async fn put(table: &Table, key: String, value: &[u8]) -> &'static str {
    classify(table.put(key, value.to_vec()).await.map(|_| "ok"))
}

async fn get(table: &Table, key: u64, consistency: Consistency) -> &'static str {
    classify(
        table
            .get_with(key_name(key), consistency)
            .await
            .map(|found| {
                if found.is_some() {
                    "ok"
                } else {
                    "error_missing_key"
                }
            }),
    )
}

async fn cas(table: &Table, key: u64, value: &[u8]) -> &'static str {
    let current = match table
        .get_with(key_name(key), Consistency::Serializable)
        .await
    {
        Ok(Some(record)) => record.mod_revision,
        Ok(None) => return "error_missing_key",
        Err(error) => return classify(Err(error)),
    };
    let put = Put::new(key_name(key), value.to_vec()).expect_mod_revision(current);
    match table.put_with(put).await {
        Ok(_) => "ok",
        Err(Error::PreconditionFailed { .. }) => "cas_conflict",
        Err(error) => classify(Err(error)),
    }
}

async fn load(table: &Table, op: u64, batch: u32, value: &[u8]) -> &'static str {
    let mut txn = strata_client::Txn::new();
    for i in 0..batch {
        txn = txn.then(strata_client::Txn::put(
            format!("load-{op:012}-{i:03}"),
            value.to_vec(),
        ));
    }
    classify(table.txn(txn).await.map(|_| "ok"))
}

pub(crate) fn classify(result: Result<&'static str, Error>) -> &'static str {
    match result {
        Ok(outcome) => outcome,
        Err(Error::Unavailable { .. }) => "error_unavailable",
        Err(Error::InvalidArgument(_)) => "error_invalid_argument",
        Err(Error::Connect { .. }) => "error_connect",
        Err(Error::OutcomeUnknown { .. }) => "error_outcome_unknown",
        Err(Error::Timeout { .. }) => "error_timeout",
        Err(Error::Status(status)) if status.code() == tonic::Code::DeadlineExceeded => {
            "error_timeout"
        }
        Err(_) => "error_other",
    }
}

/// Writes the keys in `range`, every client working on its share, in transactions of up to
/// 100 keys (a 10-million-key load takes minutes, not hours).
async fn preload(
    tables: &[Table],
    range: std::ops::Range<u64>,
    value: &[u8],
) -> anyhow::Result<()> {
    let batch = preload_batch(value.len());
    let next = Arc::new(AtomicU64::new(range.start));
    let mut handles = Vec::new();
    for table in tables {
        let (table, next, value, end) = (table.clone(), next.clone(), value.to_vec(), range.end);
        handles.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= end {
                    return Ok::<_, Error>(());
                }
                let mut txn = strata_client::Txn::new();
                for key in first..(first + batch).min(end) {
                    txn = txn.then(strata_client::Txn::put(key_name(key), value.clone()));
                }
                table.txn(txn).await?;
            }
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(())
}

/// User plus system CPU seconds of the given processes, from /proc (None when none given).
pub(crate) fn cpu_seconds(pids: &[u32]) -> anyhow::Result<Option<f64>> {
    if pids.is_empty() {
        return Ok(None);
    }
    // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
    const TICKS_PER_SECOND: f64 = 100.0;
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading the CPU time of process {pid}"))?;
        // Fields after the command name (which may hold spaces) start at field 3.
        let after_name = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |n: usize| -> anyhow::Result<u64> {
            fields
                .get(n - 3)
                .context("short /proc stat")?
                .parse()
                .context("bad /proc stat")
        };
        ticks += field(14)? + field(15)?;
    }
    Ok(Some(ticks as f64 / TICKS_PER_SECOND))
}
