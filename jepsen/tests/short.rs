//! The short chaos suite CI runs: each workload against a real three-node cluster under a
//! couple of nemeses, a few seconds each. The long runs are in jepsen/README.md.

use std::path::Path;
use std::process::Command;

fn strata_jepsen(args: &[&str], out: &Path) -> std::process::Output {
    let jepsen = env!("CARGO_BIN_EXE_strata-jepsen");
    let strata = Path::new(jepsen).with_file_name("strata");
    assert!(
        strata.exists(),
        "{} is missing: build the workspace (cargo nextest run --workspace builds it)",
        strata.display()
    );
    Command::new(jepsen)
        .args(args)
        .args(["--time-limit", "10s", "--clients", "4"])
        .arg("--strata")
        .arg(&strata)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn run(workload: &str, nemesis: &str, seed: &str) {
    run_with(workload, nemesis, seed, &[]);
}

fn run_with(workload: &str, nemesis: &str, seed: &str, extra: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["--workload", workload, "--nemesis", nemesis, "--seed", seed];
    args.extend_from_slice(extra);
    let output = strata_jepsen(&args, out.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{workload} under {nemesis} (seed {seed}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(": VALID"), "{stdout}");
    // The run directory holds what a person needs to look into a failure.
    let run_dir = std::fs::read_dir(out.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for file in [
        "history.jsonl",
        "schedule.json",
        "verdict.json",
        "timeline.html",
        "node-1.log",
    ] {
        assert!(
            run_dir.join(file).exists(),
            "{file} missing in {}",
            run_dir.display()
        );
    }
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("verdict.json")).unwrap()).unwrap();
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert!(verdict["operations"].as_u64().unwrap() > 100, "{verdict}");
}

/// Runs a deliberately broken server and returns what strata-jepsen printed, which must be a
/// failed verdict (exit 1, INVALID).
fn run_broken(workload: &str, nemesis: &str, seed: &str, mode: &str) -> String {
    let out = tempfile::tempdir().unwrap();
    let output = strata_jepsen(
        &[
            "--workload",
            workload,
            "--nemesis",
            nemesis,
            "--seed",
            seed,
            "--broken",
            mode,
        ],
        out.path(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "the broken build ({mode}) passed:\n{stdout}"
    );
    assert!(stdout.contains("INVALID"), "{stdout}");
    stdout
}

#[test]
fn register_stays_linearizable_under_kills_and_pauses() {
    run("register", "kill-leader,pause", "1");
}

/// Nodes restarted with their wall clocks up to 30 s off, and kills: registrations with TTLs
/// and config still converge and lose nothing, as the log carries the leader's time.
#[test]
fn registry_converges_under_clock_skew_and_kills() {
    run("registry", "clock-skew,kill", "5");
}

/// Bits flipped in a stopped node's tables, log or snapshot (it refuses to start and is rebuilt
/// from its peers, or sets a damaged snapshot aside), and a node's disk filled to under its
/// reserve (growth stops cluster-wide, refusals are certain failures): the set loses nothing
/// acknowledged. Needs root for the per-node tmpfs (CI runs as root).
#[test]
fn set_loses_nothing_when_bits_flip_and_disks_fill() {
    run("set", "bitflip,disk-full,kill", "11");
}

#[test]
fn set_loses_nothing_when_every_node_is_killed() {
    run("set", "kill-all,kill", "2");
}

/// Publishes and a durable group under leader kills and pauses: nothing acknowledged lost or
/// stored twice, every stored message delivered, the group drains after the heal.
#[test]
fn stream_loses_and_duplicates_nothing_under_kills_and_pauses() {
    run("stream", "kill-leader,pause,kill", "3");
}

/// Crashes at the dangerous code points (around the log fsync, between commit and apply,
/// while building or installing a snapshot) with kills besides. This run once found a leader
/// stopped by a snapshot file removed under its replication stream, and a consumer's ack
/// waiting for ever on that leader.
#[test]
fn stream_loses_nothing_when_nodes_crash_at_failpoints() {
    run("stream", "failpoint,kill", "7");
}

/// A durable group through membership changes, leader pauses and kills: issue 21's schedule,
/// under which the group once stopped delivering for good (its consumer was left on a node
/// removed from the cluster, which never heard of it, and nothing ended the stream).
#[test]
fn stream_group_keeps_delivering_through_membership_changes() {
    run("stream", "membership,pause-leader,kill", "902");
}

/// Micro's store API (store.Write through a client generated from the Micro-package protos,
/// checked with store.List) under leader kills, partitions and pauses: nothing acknowledged
/// lost, nothing certainly failed present.
#[test]
fn micro_store_loses_nothing_under_kills_and_partitions() {
    run("micro-set", "kill-leader,partition,pause", "16");
}

/// A run that passes its bound (`--run-bound`) is ended with exit code 4, naming what it was
/// doing, and leaves no node, namespace, veth or bridge behind.
#[test]
fn a_run_past_its_bound_ends_and_leaves_nothing_behind() {
    let out = tempfile::tempdir().unwrap();
    let jepsen = env!("CARGO_BIN_EXE_strata-jepsen");
    let child = Command::new(jepsen)
        .args([
            "--workload",
            "register",
            "--nemesis",
            "kill",
            "--seed",
            "10",
        ])
        .args(["--time-limit", "60s", "--run-bound", "6s", "--clients", "2"])
        .arg("--strata")
        .arg(Path::new(jepsen).with_file_name("strata"))
        .arg("--out")
        .arg(out.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tag = format!("sj{}", child.id());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("passed its bound of 6 s while running the workload"),
        "{stdout}"
    );
    // The nodes die with the process (their parent-death signal); give the kernel a moment.
    let run_dir = out.path().to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let left = loop {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
            .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
            .filter(|cmdline| cmdline.contains(&run_dir) && cmdline.contains("serve"))
            .collect();
        if left.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(left.is_empty(), "nodes outlived the run: {left:?}");
    let listed = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let leftovers = listed(&["-o", "link", "show"]) + &listed(&["netns", "list"]);
    assert!(
        ["b", "n", "v"]
            .iter()
            .all(|kind| !leftovers.contains(&format!("{tag}{kind}"))),
        "{leftovers}"
    );
}

/// The suite earns its keep only if it fails a broken build: a leader that acknowledges writes
/// before they commit loses acknowledged writes when nodes are killed, and the set checker says
/// so. (The switch exists only in debug builds; in a release test build there is nothing to run.)
#[test]
fn a_build_that_acknowledges_before_commit_is_caught() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the broken mode exists only in debug builds");
        return;
    }
    let stdout = run_broken("set", "kill-all,kill-leader", "3", "ack-before-commit");
    assert!(stdout.contains("acknowledged adds lost"), "{stdout}");
}

/// The same broken build, driven through Micro's store API: the micro-set checker (Micro's
/// List against the history) catches it too.
#[test]
fn a_build_that_acknowledges_before_commit_is_caught_through_micro() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the broken mode exists only in debug builds");
        return;
    }
    let stdout = run_broken(
        "micro-set",
        "kill-all,kill-leader",
        "3",
        "ack-before-commit",
    );
    assert!(stdout.contains("acknowledged adds lost"), "{stdout}");
}

/// Registrations, deregistrations and config writes under kills and pauses: every key ends as
/// its operations explain, every node converges, and every node's watch history rebuilds it.
#[test]
fn registry_converges_and_loses_nothing_under_kills_and_pauses() {
    run("registry", "kill-leader,pause,kill", "4");
}

/// Whether this machine can run the network nemeses (root, `ip` and `nft`); CI runs as root.
/// Without them the runs below cannot happen here, and the test says so.
fn network_faults_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tool = |name: &str| Command::new(name).arg("-V").output().is_ok();
    if !(root && tool("ip") && tool("nft")) {
        eprintln!("skipped: network faults need root, iproute2 and nftables");
        return false;
    }
    true
}

/// Real partitions (nftables drops between network namespaces): a cut-off minority, a cut-off
/// leader, and two halves bridged by one node.
#[test]
fn register_stays_linearizable_under_partitions() {
    if network_faults_available() {
        run("register", "partition,partition-leader,bridge", "5");
    }
}

/// One-way loss from the leader, a lossy node, and a node removed, wiped and added back.
#[test]
fn set_loses_nothing_under_asymmetric_loss_and_membership_changes() {
    if network_faults_available() {
        run("set", "asymmetric,netem,membership", "6");
    }
}

/// The register checker must catch a build that serves linearizable reads from a node's own
/// state: the clients of a cut-off node read what the majority has overwritten.
#[test]
fn a_build_that_serves_stale_reads_is_caught() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the broken mode exists only in debug builds");
        return;
    }
    if !network_faults_available() {
        return;
    }
    let stdout = run_broken("register", "partition,partition-leader", "8", "stale-reads");
    assert!(stdout.contains("admit no linearization"), "{stdout}");
    assert!(stdout.contains("no order explains this"), "{stdout}");
}

/// The unprivileged way to make network faults: the nodes' QUIC traffic through the suite's
/// UDP proxy (cuts, and a lossy, slow node). Runs as any user.
#[test]
fn register_stays_linearizable_under_proxy_partitions_and_lossy_links() {
    run_with(
        "register",
        "partition,netem,partition-leader",
        "9",
        &["--net", "proxy"],
    );
}
