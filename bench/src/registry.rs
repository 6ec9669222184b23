//! Registry workloads:
//! - `registry-heartbeat`: `--nodes` service nodes (spread over `--services` services) are
//!   registered with `--ttl`, then each re-registers every `--interval` (as Micro's services do),
//!   paced evenly over the clients; `--interval 0s` refreshes as fast as the clients can. An
//!   operation is one refresh. At the end every node must still be registered. With
//!   `--changing` every refresh also changes the node's metadata, so that each one is written
//!   through the log: the baseline a keepalive is measured against.
//! - `watch-fanout`: `--watchers` registry watches on one service, spread over the clients'
//!   connections; each operation changes that service once and waits until every watcher got
//!   the change. The latency of an operation is the time until the last watcher had it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use strata_client::registry::{Node, Service, WatchOptions};
use strata_client::{Client, Consistency};
use tokio::sync::mpsc;

use crate::{classify, histogram, micros, Args, Measured};

const FANOUT_SERVICE: &str = "bench-fanout";

fn node_service(index: u64, services: u64) -> Service {
    Service {
        name: format!("bench-svc-{:04}", index % services),
        version: "1.0.0".into(),
        nodes: vec![Node {
            id: format!("node-{index:06}"),
            address: format!("node-{index:06}.bench.invalid:8080"),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub async fn heartbeat(args: &Args, clients: &[Client]) -> anyhow::Result<Measured> {
    let (nodes, services) = (args.nodes, args.services.clamp(1, args.nodes));
    let ttl = args.ttl;
    // Register every node first (not measured), each client its share.
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for client in clients {
        let (registry, next) = (client.registry(), next.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= nodes {
                    return Ok::<_, strata_client::Error>(());
                }
                registry
                    .register(&node_service(index, services), ttl)
                    .await?;
            }
        }));
    }
    for handle in handles {
        handle.await?.context("registering the nodes")?;
    }

    let cpu_before = crate::cpu_seconds(&args.server_pid)?;
    let started = Instant::now();
    let deadline = started + args.duration;
    let done_ops = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let count = clients.len() as u64;
    for (index, client) in clients.iter().enumerate() {
        let mine: Vec<Service> = (index as u64..nodes)
            .step_by(count as usize)
            .map(|i| node_service(i, services))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let registry = client.registry();
        let (done_ops, ops, changing) = (done_ops.clone(), args.ops, args.changing);
        // Each node once per interval: this client's nodes evenly spaced within it.
        let period = (args.interval / mine.len() as u32).max(Duration::from_micros(1));
        let paced = !args.interval.is_zero();
        handles.push(tokio::spawn(async move {
            let mut latency_us = histogram();
            let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
            // Start at a different point of the interval per client, as real services do.
            let offset = period.mul_f64(index as f64 / count as f64);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            for service in mine.iter().cycle() {
                if paced {
                    ticks.tick().await;
                }
                if Instant::now() >= deadline || done_ops.fetch_add(1, Ordering::Relaxed) >= ops {
                    break;
                }
                let begun = Instant::now();
                let changed;
                let service = if changing {
                    let mut service = service.clone();
                    let beat = done_ops.load(Ordering::Relaxed).to_string();
                    service.nodes[0].metadata.insert("beat".into(), beat);
                    changed = service;
                    &changed
                } else {
                    service
                };
                let outcome = classify(registry.register(service, ttl).await.map(|r| {
                    if r.changed {
                        "changed"
                    } else {
                        "ok"
                    }
                }));
                latency_us.record(micros(begun)).expect("within bounds");
                *outcomes.entry(outcome).or_default() += 1;
            }
            (latency_us, outcomes)
        }));
    }
    let mut latency_us = histogram();
    let mut outcomes = BTreeMap::new();
    for handle in handles {
        let (histogram, counts) = handle.await?;
        latency_us.add(&histogram)?;
        for (kind, n) in counts {
            *outcomes.entry(kind).or_default() += n;
        }
    }
    let elapsed = started.elapsed();
    let cpu_after = crate::cpu_seconds(&args.server_pid)?;
    let alive: u64 = clients[0]
        .registry()
        .list_services(Consistency::Linearizable)
        .await?
        .iter()
        .filter(|s| s.name.starts_with("bench-svc-"))
        .map(|s| s.nodes.len() as u64)
        .sum();
    println!("registry-heartbeat: {alive} of {nodes} nodes registered after the run");
    if alive < nodes {
        *outcomes.entry("error_node_expired").or_default() += nodes - alive;
    }
    let target = if args.interval.is_zero() {
        Value::Null
    } else {
        json!(nodes as f64 / args.interval.as_secs_f64())
    };
    Ok(Measured {
        latency_us,
        outcomes,
        elapsed,
        cpu: (cpu_before, cpu_after),
        extra: vec![
            ("nodes", json!(nodes)),
            ("services", json!(services)),
            ("nodes_alive", json!(alive)),
            ("changing", json!(args.changing)),
            ("target_refreshes_per_s", target),
        ],
    })
}

pub async fn fanout(args: &Args, clients: &[Client]) -> anyhow::Result<Measured> {
    if args.watchers == 0 {
        bail!("--watchers must be at least 1");
    }
    let registry = clients[0].registry();
    let service = |op: u64| Service {
        name: FANOUT_SERVICE.into(),
        version: "1.0.0".into(),
        nodes: vec![Node {
            id: "fanout-0".into(),
            address: "fanout-0.bench.invalid:8080".into(),
            metadata: [("change".to_string(), op.to_string())].into(),
        }],
        ..Default::default()
    };
    registry.register(&service(u64::MAX), args.ttl).await?;
    // Every watch is subscribed once `watch` returns, so none can miss the first change.
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<(u64, Instant)>();
    let mut watchers = Vec::with_capacity(args.watchers);
    for index in 0..args.watchers {
        let mut watch = clients[index % clients.len()]
            .registry()
            .watch(WatchOptions {
                service: Some(FANOUT_SERVICE.into()),
                ..Default::default()
            })
            .await
            .with_context(|| format!("opening watcher {index}"))?;
        let arrivals = arrivals.clone();
        watchers.push(tokio::spawn(async move {
            while let Some(Ok(response)) = watch.next().await {
                if !response.events.is_empty()
                    && arrivals.send((response.revision, Instant::now())).is_err()
                {
                    return;
                }
            }
        }));
    }
    drop(arrivals);

    let cpu_before = crate::cpu_seconds(&args.server_pid)?;
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut latency_us = histogram();
    let mut every_delivery_us = histogram();
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut early: HashMap<u64, Vec<Instant>> = HashMap::new();
    for op in 0..args.ops {
        if Instant::now() >= deadline {
            break;
        }
        let begun = Instant::now();
        let revision = match registry.register(&service(op), args.ttl).await {
            Ok(result) if result.changed => result.revision,
            Ok(_) => bail!("a fan-out change registered as unchanged"),
            Err(error) => {
                *outcomes.entry(classify(Err(error))).or_default() += 1;
                continue;
            }
        };
        let mut times = early.remove(&revision).unwrap_or_default();
        let cutoff = tokio::time::Instant::now() + Duration::from_secs(10);
        while times.len() < args.watchers {
            match tokio::time::timeout_at(cutoff, arrived.recv()).await {
                Ok(Some((r, at))) if r == revision => times.push(at),
                Ok(Some((r, at))) => early.entry(r).or_default().push(at),
                Ok(None) | Err(_) => break,
            }
        }
        for at in &times {
            let us = at
                .saturating_duration_since(begun)
                .as_micros()
                .clamp(1, 60_000_000);
            every_delivery_us.record(us as u64)?;
        }
        if times.len() < args.watchers {
            *outcomes.entry("error_watchers_missed_change").or_default() += 1;
            continue;
        }
        let last = times.iter().max().expect("at least one watcher");
        let us = last
            .saturating_duration_since(begun)
            .as_micros()
            .clamp(1, 60_000_000);
        latency_us.record(us as u64)?;
        *outcomes.entry("ok").or_default() += 1;
    }
    let elapsed = started.elapsed();
    let cpu_after = crate::cpu_seconds(&args.server_pid)?;
    for watcher in watchers {
        watcher.abort();
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "watch-fanout: {} watchers; time for a change to reach all: p50={:.3}ms p99={:.3}ms; \
         each delivery: p50={:.3}ms p99={:.3}ms",
        args.watchers,
        ms(&latency_us, 0.5),
        ms(&latency_us, 0.99),
        ms(&every_delivery_us, 0.5),
        ms(&every_delivery_us, 0.99),
    );
    Ok(Measured {
        latency_us,
        outcomes,
        elapsed,
        cpu: (cpu_before, cpu_after),
        extra: vec![
            ("watchers", json!(args.watchers)),
            (
                "delivery_ms",
                json!({"p50": ms(&every_delivery_us, 0.5), "p99": ms(&every_delivery_us, 0.99),
                       "max": every_delivery_us.max() as f64 / 1000.0,
                       "deliveries": every_delivery_us.len()}),
            ),
        ],
    })
}
