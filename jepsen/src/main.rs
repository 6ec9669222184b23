//! `strata-jepsen`: starts a cluster of real `strata` processes, runs concurrent clients through
//! the Rust SDK while a nemesis injects faults on a seeded schedule, records every operation
//! (invoke, ok, fail or indeterminate, with times), checks the history and exits non-zero on
//! any anomaly. See jepsen/README.md.

mod cluster;
mod guard;
mod linear;
mod micro;
mod net;
mod proxy;
mod registry;
mod stream;
mod timeline;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde::Serialize;
use serde_json::json;
use strata_client::{Consistency, Error, List, Put, RetryPolicy, Txn};

#[derive(Parser, Debug)]
#[command(name = "strata-jepsen", about = "Chaos suite for Strata")]
struct Args {
    /// Nodes in the cluster (3 or 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=net::MAX_NODES))]
    nodes: u64,
    /// How long operations and faults run before the heal.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    time_limit: Duration,
    /// A run not finished this long after it started is hung: it is ended (exit code 4,
    /// naming what it was doing) and cleaned up. Default: the time limit plus 240 s, what the
    /// heal, recovery, stream drain and checks may take at worst.
    #[arg(long, value_parser = humantime::parse_duration)]
    run_bound: Option<Duration>,
    /// `register` (reads, writes, CAS on a few keys; linearizability), `set` (unique writes;
    /// every acknowledged one present at the end) or `stream` (unique publishes while a
    /// durable group consumes; nothing lost, duplicated, reordered or left undelivered) or
    /// `registry` (registrations and config writes on per-client keys; every key explained,
    /// every node converged, every node's watch history rebuilding its state).
    #[arg(long, default_value = "register")]
    workload: String,
    /// Comma list of `kill`, `kill-leader`, `kill-all`, `pause`, `pause-leader`, `partition`
    /// (a random minority cut off), `partition-leader` (the leader cut off), `bridge` (two
    /// halves that cannot talk, one node talking to both), `asymmetric` (the leader's packets
    /// to the others are lost, theirs still reach it), `netem` (a node loses 20 % of its peers'
    /// packets, and with kernel netem its own are delayed), `membership` (a node removed,
    /// wiped, added back as a learner and promoted while another is paused), `failpoint` (a node restarted with a
    /// crash point armed: before or after the log fsync, between commit and apply, while
    /// building or installing a snapshot; needs a strata built with `--features failpoints`,
    /// as the test build is), or `none`. The network faults need
    /// network namespaces (see --net).
    #[arg(long, default_value = "kill,pause")]
    nemesis: String,
    /// Where the nodes run and network faults are made: `namespaces` (each node in its own
    /// network namespace on a bridge, faults by nftables; needs root, iproute2 and nftables),
    /// `proxy` (all on 127.0.0.1, the nodes' QUIC traffic through a fault-injecting UDP proxy
    /// in this process; no privileges), or `auto` (namespaces when they can be had, else the
    /// proxy).
    #[arg(long, default_value = "auto", value_parser = ["auto", "namespaces", "proxy"])]
    net: String,
    /// Seed of the fault schedule and of the clients' choices.
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Most operations per client (a bound besides the time limit, which usually ends a run).
    #[arg(long, default_value_t = 50_000)]
    max_ops: usize,
    /// Where the run directory goes (history, schedule, node logs, verdict).
    #[arg(long, default_value = "jepsen-runs")]
    out: PathBuf,
    /// Run a deliberately broken server (debug builds only) to show the checkers catch it:
    /// `ack-before-commit` (the leader acknowledges writes before they commit) or
    /// `stale-reads` (linearizable reads served from the node's own state, without the read
    /// index).
    #[arg(long)]
    broken: Option<String>,
    /// The strata binary (default: next to this one).
    #[arg(long)]
    strata: Option<PathBuf>,
    /// Run the cluster with auth and client TLS off (a cluster's defaults are on: clients
    /// then log in as the root account and trust the cluster CA).
    #[arg(long)]
    insecure: bool,
}

/// A seeded generator (SplitMix64): the schedule must replay from `--seed` alone.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    KillLeader,
    KillAll,
    Pause,
    PauseLeader,
    Partition,
    PartitionLeader,
    Bridge,
    Asymmetric,
    Netem,
    Membership,
    Failpoint,
    ClockSkew,
    Bitflip,
    DiskFull,
}

/// The crash points a `failpoint` fault arms (see strata-raft's `failpoints` module), each with
/// the chance that a pass through it crashes the node.
const FAILPOINTS: [(&str, u32); 5] = [
    ("log-before-fsync", 5),
    ("log-after-fsync", 5),
    ("apply-before-commit", 5),
    ("snapshot-build", 100),
    ("snapshot-install", 100),
];

fn parse_nemesis(text: &str) -> anyhow::Result<Vec<Fault>> {
    let mut faults = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        faults.push(match name {
            "none" => continue,
            "kill" => Fault::Kill,
            "kill-leader" => Fault::KillLeader,
            "kill-all" => Fault::KillAll,
            "pause" => Fault::Pause,
            "pause-leader" => Fault::PauseLeader,
            "partition" => Fault::Partition,
            "partition-leader" => Fault::PartitionLeader,
            "bridge" => Fault::Bridge,
            "asymmetric" => Fault::Asymmetric,
            "netem" => Fault::Netem,
            "membership" => Fault::Membership,
            "failpoint" => Fault::Failpoint,
            "clock-skew" => Fault::ClockSkew,
            "bitflip" => Fault::Bitflip,
            "disk-full" => Fault::DiskFull,
            other => bail!(
                "nemesis {other:?} is not built yet; have: kill, kill-leader, kill-all, pause, \
                 pause-leader, partition, partition-leader, bridge, asymmetric, netem, membership, failpoint, \
                 clock-skew, bitflip, disk-full, none"
            ),
        });
    }
    Ok(faults)
}

/// One operation as recorded: `outcome` is `ok`, `fail` (certainly not done) or `info`
/// (indeterminate).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Record {
    pub(crate) process: usize,
    pub(crate) op: &'static str,
    pub(crate) key: u64,
    pub(crate) value: Option<u64>,
    pub(crate) from: Option<u64>,
    pub(crate) outcome: &'static str,
    /// What a read returned, or whether a CAS succeeded (1/0).
    pub(crate) result: Option<u64>,
    pub(crate) invoke_us: u64,
    pub(crate) complete_us: u64,
    pub(crate) error: Option<String>,
}

/// Errors after which the operation certainly had no effect.
pub(crate) fn definitely_failed(error: &Error) -> bool {
    match error {
        Error::InvalidArgument(_) | Error::NotFound(_) | Error::Connect { .. } => true,
        Error::AlreadyExists { .. } | Error::PreconditionFailed { .. } => true,
        Error::Unavailable { .. } => {
            let message = error.to_string();
            // not_leader / leader_unreachable are refusals; shutting_down is not.
            !message.contains("shutting down")
        }
        // The leader refuses growth onto a nearly full disk before it proposes anything.
        Error::Status(status) => {
            status.code() == tonic::Code::ResourceExhausted
                && status
                    .metadata()
                    .get("x-strata-error")
                    .is_some_and(|code| code == "disk_full")
        }
        _ => false,
    }
}

/// Exit codes: 0 valid, 1 anomalies, 2 bad arguments (clap), 3 the run could not be carried
/// out (printed), 4 the run passed its bound (`guard`), 130/143 interrupted.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let outcome = run(args).await;
    guard::settle();
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(error) => {
            println!("strata-jepsen: error: {error:#}");
            std::process::ExitCode::from(3)
        }
    }
}

/// One run; whether its history checked out.
async fn run(args: Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let faults = parse_nemesis(&args.nemesis)?;
    if !["register", "set", "stream", "registry", "micro-set"].contains(&args.workload.as_str()) {
        bail!(
            "workload {:?} is not built yet; have: register, set, stream, registry, micro-set",
            args.workload
        );
    }
    let strata = match &args.strata {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory around this binary")?
            .join("strata"),
    };
    let run_dir = args
        .out
        .join(format!("{}-{}-{seed}", args.workload, args.nemesis));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    println!(
        "strata-jepsen: seed {seed}, results in {}",
        run_dir.display()
    );

    // The legitimate worst case after the time limit: the last fault window and its heal
    // (a rejoin may take 30 s), recovery (30 s), the stream drain (60 s) or the registry's
    // convergence, and the checks; past it the run is hung.
    let bound = args
        .run_bound
        .unwrap_or(args.time_limit + Duration::from_secs(240));
    guard::install(bound);
    if let Some(mode) = &args.broken {
        if mode != "ack-before-commit" && mode != "stale-reads" {
            bail!("--broken {mode:?}: the broken modes are ack-before-commit and stale-reads");
        }
        println!("strata-jepsen: running a deliberately BROKEN server ({mode}); expect anomalies");
    }
    if args.net != "proxy" && net::available().is_ok() {
        let swept = guard::sweep_leftovers();
        if swept > 0 {
            println!("strata-jepsen: removed the namespaces and bridges of {swept} earlier run(s)");
        }
    }
    guard::phase("starting the cluster");
    let namespaces = match (args.net.as_str(), net::available()) {
        ("proxy", _) => false,
        (_, Ok(())) => true,
        ("namespaces", Err(why)) => bail!("--net namespaces: {why}"),
        (_, Err(why)) => {
            println!(
                "strata-jepsen: no network namespaces ({why}): the nodes run on 127.0.0.1 \
                 and their traffic goes through a fault-injecting UDP proxy"
            );
            false
        }
    };
    // Ports are chosen free and bound by the nodes a moment later; if another process took one
    // meanwhile, form the cluster again in a fresh directory.
    let mut attempt = 1;
    let mut cluster = loop {
        let dir = if attempt == 1 {
            run_dir.clone()
        } else {
            run_dir.join(format!("retry-{attempt}"))
        };
        std::fs::create_dir_all(&dir)?;
        let net = if namespaces {
            let net = net::Namespaces::create(args.nodes).context("creating network namespaces")?;
            if attempt == 1 {
                println!(
                    "strata-jepsen: each node in its own network namespace on a bridge{}",
                    if net.has_netem {
                        ""
                    } else {
                        " (no kernel netem: the netem fault is loss only)"
                    }
                );
            }
            net::Network::Namespaces(net)
        } else {
            if attempt == 1 && args.net == "proxy" {
                println!(
                    "strata-jepsen: the nodes' traffic goes through a fault-injecting UDP proxy"
                );
            }
            net::Network::Proxy(proxy::Proxy::start(args.nodes).await?)
        };
        let net = Some(net);
        match cluster::Cluster::start(
            &strata,
            &dir,
            args.nodes,
            args.broken.clone(),
            net,
            !args.insecure,
            faults.contains(&Fault::DiskFull),
        ) {
            Ok(cluster) => break cluster,
            Err(error) if attempt < 3 => {
                println!("strata-jepsen: the cluster did not start ({error:#}); trying again");
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    };
    let endpoints = cluster.endpoints();
    let access = cluster.access.clone();
    let started = Instant::now();
    let deadline = started + args.time_limit;
    let history: Arc<Mutex<Vec<Record>>> = Arc::default();
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = if args.workload == "stream" {
        let client = cluster::client(access.as_ref(), &endpoints)
            .request_timeout(Duration::from_secs(3))
            .connect()
            .await?;
        Some(tokio::spawn(stream::consume(client, draining.clone())))
    } else {
        None
    };
    let mut workers = Vec::new();
    let nodes: Vec<&str> = endpoints.split(',').collect();
    // Every client logs in before any starts: a broken build's unthrottled writes would
    // otherwise queue the later logins behind a flood of entries.
    let mut connected = Vec::with_capacity(args.clients);
    for process in 0..args.clients {
        // Client i starts at node i (mod n), as Jepsen binds clients to nodes; it fails over to
        // the others in order.
        let mut own = nodes.clone();
        own.rotate_left(process % nodes.len());
        let client = cluster::client(access.as_ref(), &own.join(","))
            .request_timeout(Duration::from_secs(3))
            .retry_policy(RetryPolicy::none())
            .connect()
            .await
            .with_context(|| format!("connecting client {process}"))?;
        connected.push((own, client));
    }
    for (process, (own, client)) in connected.into_iter().enumerate() {
        let history = history.clone();
        let mut rng = Rng(seed ^ (process as u64 + 1).wrapping_mul(0x9E37));
        let workload = args.workload.clone();
        let max_ops = args.max_ops;
        let mut micro_store =
            micro::MicroStore::new(own.iter().map(|s| s.to_string()).collect(), access.as_ref());
        workers.push(tokio::spawn(async move {
            let table = client.table("jepsen", &workload);
            for n in 0..max_ops {
                if Instant::now() >= deadline {
                    break;
                }
                let invoke_us = started.elapsed().as_micros() as u64;
                let mut record = Record {
                    process,
                    op: "read",
                    key: 0,
                    value: None,
                    from: None,
                    outcome: "ok",
                    result: None,
                    invoke_us,
                    complete_us: 0,
                    error: None,
                };
                let outcome: Result<Option<u64>, Error> = if workload == "registry" {
                    let value = (process as u64) << 32 | n as u64;
                    registry::operate(&client, process, value, &mut rng, &mut record).await
                } else if workload == "stream" {
                    let value = (process as u64) << 32 | n as u64;
                    record.op = "publish";
                    record.value = Some(value);
                    stream::publish(&client, value).await
                } else if workload == "micro-set" {
                    let value = (process as u64) << 32 | n as u64;
                    record.op = "add";
                    record.value = Some(value);
                    match micro_store.add(value).await {
                        micro::Outcome::Ok => Ok(None),
                        micro::Outcome::Fail(why) => Err(Error::InvalidArgument(why)),
                        micro::Outcome::Info(why) => {
                            Err(Error::Status(tonic::Status::unknown(why)))
                        }
                    }
                } else if workload == "set" {
                    let value = (process as u64) << 32 | n as u64;
                    record.op = "add";
                    record.value = Some(value);
                    let put = Put::new(format!("{value:016x}"), value.to_string()).create_only();
                    table.put_with(put).await.map(|_| None)
                } else {
                    let key = rng.below(3);
                    record.key = key;
                    let name = format!("r{key}");
                    match rng.below(3) {
                        0 => {
                            record.op = "read";
                            table.get(name).await.map(|r| {
                                r.and_then(|r| String::from_utf8(r.value).ok()?.parse().ok())
                            })
                        }
                        1 => {
                            let value = rng.below(5);
                            record.op = "write";
                            record.value = Some(value);
                            table.put(name, value.to_string()).await.map(|_| None)
                        }
                        _ => {
                            let (from, to) = (rng.below(5), rng.below(5));
                            record.op = "cas";
                            record.from = Some(from);
                            record.value = Some(to);
                            let txn = Txn::new()
                                .when(Txn::value_equals(name.clone(), from.to_string()))
                                .then(Txn::put(name, to.to_string()));
                            table.txn(txn).await.map(|r| Some(u64::from(r.succeeded)))
                        }
                    }
                };
                record.complete_us = started.elapsed().as_micros() as u64;
                match outcome {
                    Ok(result) => record.result = result,
                    Err(error) => {
                        record.outcome = if definitely_failed(&error) {
                            "fail"
                        } else {
                            "info"
                        };
                        record.error = Some(error.to_string());
                    }
                }
                let failed = record.outcome != "ok";
                history.lock().unwrap().push(record);
                if failed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    // The nemesis: alternate a fault window and a quiet window, 1-3 s each.
    guard::phase("running the workload under the nemesis");
    let mut schedule = Vec::new();
    let mut rng = Rng(seed);
    while !faults.is_empty() && Instant::now() + Duration::from_secs(2) < deadline {
        tokio::time::sleep(Duration::from_millis(1_000 + rng.below(2_000))).await;
        let fault = faults[rng.below(faults.len() as u64) as usize];
        let at_ms = started.elapsed().as_millis() as u64;
        let leader = cluster.leader(1 + rng.below(args.nodes));
        let random = 1 + rng.below(args.nodes);
        let victim = match fault {
            Fault::KillLeader | Fault::PauseLeader | Fault::PartitionLeader | Fault::Asymmetric
                if leader != 0 =>
            {
                leader
            }
            _ => random,
        };
        let mut affected = vec![victim];
        let mut detail = String::new();
        match fault {
            Fault::Kill | Fault::KillLeader => cluster.kill(victim),
            Fault::KillAll => {
                affected = (1..=args.nodes).collect();
                for id in 1..=args.nodes {
                    cluster.kill(id);
                }
            }
            Fault::Pause | Fault::PauseLeader => cluster.pause(victim),
            Fault::ClockSkew => {
                // Restart the victim with its wall clock up to 30 s off either way (within a
                // token's leeway); the heal restarts it with the right time. The leader's
                // clock, carried by the log, is the only one that may move anything.
                let skew_ms = rng.below(60_001) as i64 - 30_000;
                detail = format!("{skew_ms:+} ms");
                if let Err(error) = cluster.restart_skewed(victim, skew_ms) {
                    println!("  node {victim} did not restart with a skewed clock: {error:#}");
                }
            }
            Fault::Bitflip => match cluster.bitflip(victim, rng.next()) {
                Ok(what) => detail = what,
                Err(error) => println!("  bitflip on node {victim} not finished yet: {error:#}"),
            },
            Fault::DiskFull => match cluster.fill_disk(victim) {
                Ok(bytes) => detail = format!("{} MiB written", bytes >> 20),
                Err(error) => bail!("filling node {victim}'s disk: {error:#}"),
            },
            Fault::Failpoint => {
                let (point, percent) = FAILPOINTS[rng.below(FAILPOINTS.len() as u64) as usize];
                detail = format!("{point}={percent}%return");
                // A point that fires while the node starts (its first log write) leaves it
                // down until the heal, like any crash.
                if let Err(error) = cluster.restart_armed(victim, &detail) {
                    println!("  node {victim} crashed at {detail} while starting: {error:#}");
                }
                // Entries reach the restarted node once the leader has redialled it (the
                // node's stateless reset ends the old connection within a keep-alive) and
                // the point then fires on some later write: give it up to 8 s before the
                // window goes on.
                let armed_at = Instant::now();
                while cluster.is_up(victim) && armed_at.elapsed() < Duration::from_secs(8) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Fault::Membership => {
                // Remove, wipe, re-add, promote, with another node paused for 1.5 s as the
                // re-add begins; a failure (say, no leader to ask) is part of the run, and the
                // heal finishes the change.
                let others: Vec<u64> = (1..=args.nodes).filter(|&id| id != victim).collect();
                let other = others[rng.below(others.len() as u64) as usize];
                affected.push(other);
                detail = format!("(node {other} paused 1.5 s during the re-add)");
                let disturbed = Some((other, Duration::from_millis(1_500)));
                if let Err(error) = cluster.remove_and_wipe(victim, disturbed) {
                    println!("  membership change of node {victim} not finished yet: {error:#}");
                }
            }
            Fault::Partition
            | Fault::PartitionLeader
            | Fault::Bridge
            | Fault::Asymmetric
            | Fault::Netem => {
                let net = cluster
                    .net
                    .as_ref()
                    .context("network faults need namespaces")?;
                match fault {
                    Fault::Partition => {
                        // A random minority: 1 of 3, 1 or 2 of 5.
                        let size = 1 + rng.below((args.nodes - 1) / 2);
                        let mut side = BTreeSet::from([victim]);
                        while (side.len() as u64) < size {
                            side.insert(1 + rng.below(args.nodes));
                        }
                        affected = side.iter().copied().collect();
                        net.isolate(&side)?;
                    }
                    Fault::PartitionLeader => net.isolate(&BTreeSet::from([victim]))?,
                    Fault::Bridge => {
                        // The victim bridges: the others split into two halves around it.
                        let others: Vec<u64> =
                            (1..=args.nodes).filter(|&id| id != victim).collect();
                        let (left, right) = others.split_at(others.len() / 2);
                        for &a in left {
                            for &b in right {
                                net.cut(a, b)?;
                                net.cut(b, a)?;
                            }
                        }
                        affected = others;
                    }
                    Fault::Asymmetric => {
                        for id in (1..=args.nodes).filter(|&id| id != victim) {
                            net.cut(victim, id)?;
                        }
                    }
                    _ => net.degrade(victim, 20, 50)?,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1_000 + rng.below(2_000))).await;
        cluster.heal()?;
        let healed_ms = started.elapsed().as_millis() as u64;
        schedule.push(
            json!({"fault": format!("{fault:?}"), "node": victim, "nodes": affected,
            "detail": detail, "start_ms": at_ms, "end_ms": healed_ms}),
        );
        println!(
            "  {at_ms:>6} ms  {fault:?} node {victim} {affected:?} {detail}, healed at {healed_ms} ms"
        );
    }
    guard::phase("waiting for the clients to stop");
    for worker in workers {
        worker.await?;
    }
    guard::phase("healing");
    cluster.heal()?;
    guard::phase("waiting for the cluster to recover");

    // Recovery: how long until a write goes through again.
    let healed = Instant::now();
    let client = cluster::client(access.as_ref(), &endpoints)
        .request_timeout(Duration::from_secs(3))
        .connect()
        .await
        .context("connecting the checker's client")?;
    let table = client.table("jepsen", &args.workload);
    loop {
        if table.put("recovery-probe", "1").await.is_ok() {
            break;
        }
        if healed.elapsed() > Duration::from_secs(30) {
            bail!("the cluster did not recover within 30 s of the heal");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovery_ms = healed.elapsed().as_millis() as u64;
    guard::phase("checking the history");

    let history = Arc::try_unwrap(history)
        .map_err(|_| anyhow::anyhow!("history still shared"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("history lock poisoned"))?;
    let verdict = match args.workload.as_str() {
        "set" => check_set(&table, &history)
            .await
            .context("listing the set")?,
        "micro-set" => {
            let nodes: Vec<String> = endpoints.split(',').map(str::to_string).collect();
            let present = micro::present(&nodes, access.as_ref()).await?;
            check_set_with(present, &history)
        }
        "registry" => {
            let nodes: Vec<String> = endpoints.split(',').map(str::to_string).collect();
            registry::check(&client, &nodes, access.as_ref(), &history).await?
        }
        "stream" => {
            draining.store(true, std::sync::atomic::Ordering::SeqCst);
            guard::phase("draining the stream group");
            let consumed = consumer
                .context("the stream workload runs a consumer")?
                .await??;
            guard::phase("checking the history");
            stream::check(&client, &history, &consumed).await?
        }
        _ => check_register(&history),
    };
    let counts = history.iter().fold(BTreeMap::new(), |mut counts, r| {
        *counts.entry(r.outcome).or_insert(0u64) += 1;
        counts
    });
    let report = json!({
        "seed": seed, "workload": args.workload, "nemesis": args.nemesis, "nodes": args.nodes,
        "operations": history.len(), "outcomes": counts, "recovery_ms": recovery_ms,
        "valid": verdict.valid, "anomalies": verdict.anomalies,
    });
    guard::phase("writing the results");
    let mut lines = String::new();
    for record in &history {
        lines.push_str(&serde_json::to_string(record)?);
        lines.push('\n');
    }
    std::fs::write(run_dir.join("history.jsonl"), lines)?;
    std::fs::write(
        run_dir.join("schedule.json"),
        serde_json::to_string_pretty(&schedule)?,
    )?;
    std::fs::write(
        run_dir.join("verdict.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let title = format!(
        "{} / {} / seed {seed}: {}",
        args.workload,
        args.nemesis,
        if verdict.valid { "valid" } else { "INVALID" }
    );
    std::fs::write(
        run_dir.join("timeline.html"),
        timeline::render(&title, &history, &schedule, args.clients),
    )?;
    println!(
        "strata-jepsen: {} operations {counts:?}, recovered in {recovery_ms} ms: {}",
        history.len(),
        if verdict.valid { "VALID" } else { "INVALID" }
    );
    for anomaly in &verdict.anomalies {
        println!("  anomaly: {anomaly}");
    }
    drop(cluster);
    Ok(verdict.valid)
}

pub(crate) struct Verdict {
    pub(crate) valid: bool,
    pub(crate) anomalies: Vec<String>,
}

/// Linearizability of each register key's history.
fn check_register(history: &[Record]) -> Verdict {
    // Per key: the operations, and the history record each came from.
    let mut by_key: BTreeMap<u64, (Vec<linear::Op>, Vec<usize>)> = BTreeMap::new();
    for (index, record) in history.iter().enumerate() {
        let ret = match record.outcome {
            "ok" => Some(record.complete_us),
            "info" => None,
            _ => continue, // certainly not done
        };
        let kind = match record.op {
            "read" if ret.is_some() => linear::Kind::Read(record.result),
            "read" => continue, // a read with no answer tells nothing
            "write" => linear::Kind::Write(record.value.unwrap_or(0)),
            _ => linear::Kind::Cas {
                from: record.from.unwrap_or(0),
                to: record.value.unwrap_or(0),
                succeeded: ret.and(record.result).map(|r| r == 1),
            },
        };
        let (ops, records) = by_key.entry(record.key).or_default();
        ops.push(linear::Op {
            call: record.invoke_us,
            ret,
            kind,
        });
        records.push(index);
    }
    let mut anomalies = Vec::new();
    let mut unknown = Vec::new();
    for (key, (ops, records)) in &by_key {
        match linear::check_explained(ops, None, 20_000_000) {
            (linear::Verdict::Linearizable, _) => {}
            (linear::Verdict::NotLinearizable, stuck) => {
                anomalies.push(format!(
                    "key r{key}: {} operations admit no linearization",
                    ops.len()
                ));
                if let Some(stuck) = stuck {
                    print_counterexample(*key, history, records, &stuck);
                }
            }
            (linear::Verdict::Unknown, _) => unknown.push(*key),
        }
    }
    if !unknown.is_empty() {
        println!("  linearizability search gave up (budget) on keys {unknown:?}");
    }
    Verdict {
        valid: anomalies.is_empty(),
        anomalies,
    }
}

/// Prints where the linearizability search got stuck on `key`: the value the longest
/// explanation ends in, the operation nothing explains, and the operations overlapping it in
/// time (every one that could have been ordered around it).
fn print_counterexample(key: u64, history: &[Record], records: &[usize], stuck: &linear::Stuck) {
    let show = |record: &Record| {
        let value = match record.op {
            "read" => format!("read -> {:?}", record.result),
            "write" => format!("write {}", record.value.unwrap_or(0)),
            _ => format!(
                "cas {} -> {} ({})",
                record.from.unwrap_or(0),
                record.value.unwrap_or(0),
                match record.result {
                    Some(1) => "succeeded",
                    Some(_) => "failed",
                    None => "unknown",
                }
            ),
        };
        format!(
            "process {} {value:<28} {} invoked {:.3} s, returned {:.3} s",
            record.process,
            record.outcome,
            record.invoke_us as f64 / 1e6,
            record.complete_us as f64 / 1e6
        )
    };
    println!(
        "  counterexample on r{key}: the longest explanation orders {} operations and leaves \
         the value at {:?}; then",
        stuck.linearized, stuck.state
    );
    let Some(op) = stuck.op else {
        println!("    (the history ends with operations nothing can place)");
        return;
    };
    let culprit = &history[records[op]];
    println!("    {}   <- no order explains this", show(culprit));
    println!("  overlapping it in time (each could go before or after it):");
    let (start, end) = (culprit.invoke_us, culprit.complete_us);
    let mut shown = 0;
    for &index in records {
        let record = &history[index];
        let record_end = if record.outcome == "ok" {
            record.complete_us
        } else {
            u64::MAX
        };
        if index != records[op] && record.invoke_us <= end && record_end >= start {
            println!("    {}", show(record));
            shown += 1;
            if shown == 12 {
                println!("    ...");
                break;
            }
        }
    }
    // The last writes that completed before it began: the values it should have seen.
    let before: Vec<&Record> = records
        .iter()
        .map(|&i| &history[i])
        .filter(|r| r.outcome == "ok" && r.complete_us < start)
        .filter(|r| r.op == "write" || (r.op == "cas" && r.result == Some(1)))
        .collect();
    println!("  the last writes acknowledged before it was invoked:");
    for record in before.iter().rev().take(3).rev() {
        println!("    {}", show(record));
    }
}

async fn check_set(table: &strata_client::Table, history: &[Record]) -> anyhow::Result<Verdict> {
    let present: BTreeSet<String> = table
        .list_all(
            List::prefix("")
                .keys_only()
                .consistency(Consistency::Linearizable),
        )
        .await?
        .into_iter()
        .filter_map(|r| String::from_utf8(r.key).ok())
        .filter(|k| k != "recovery-probe")
        .collect();
    Ok(check_set_with(present, history))
}

/// The set checker over what is `present` at the end.
fn check_set_with(present: BTreeSet<String>, history: &[Record]) -> Verdict {
    let key = |r: &Record| format!("{:016x}", r.value.unwrap_or(0));
    let attempted: BTreeSet<String> = history.iter().map(key).collect();
    let acked: BTreeSet<String> = history
        .iter()
        .filter(|r| r.outcome == "ok")
        .map(key)
        .collect();
    let mut anomalies = Vec::new();
    let lost: Vec<_> = acked.difference(&present).collect();
    if !lost.is_empty() {
        anomalies.push(format!(
            "{} acknowledged adds lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    let phantom: Vec<_> = present.difference(&attempted).collect();
    if !phantom.is_empty() {
        anomalies.push(format!(
            "{} elements never attempted, e.g. {:?}",
            phantom.len(),
            &phantom[..phantom.len().min(5)]
        ));
    }
    let failed_but_present: Vec<_> = history
        .iter()
        .filter(|r| r.outcome == "fail")
        .map(key)
        .filter(|k| present.contains(k))
        .collect();
    if !failed_but_present.is_empty() {
        anomalies.push(format!(
            "{} adds reported as certainly failed are present, e.g. {:?}",
            failed_but_present.len(),
            &failed_but_present[..failed_but_present.len().min(5)]
        ));
    }
    println!(
        "  set: {} attempted, {} acknowledged, {} present",
        attempted.len(),
        acked.len(),
        present.len()
    );
    Verdict {
        valid: anomalies.is_empty(),
        anomalies,
    }
}
