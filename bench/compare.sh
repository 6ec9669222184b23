#!/usr/bin/env bash
# Strata side by side with etcd and NATS JetStream on 127.0.0.1, single node and three nodes,
# every system fsyncing before it acknowledges, driven by one harness (strata-bench, through
# each system's own Rust client), rounds interleaved. Prints a table of medians with ratios to
# Strata in the same round and writes it to $OUT/table.md, every run's JSON beside it.
#
#   bench/compare.sh                        # release build, 64 clients, 2 rounds
#   ROUNDS=3 OPS=40000 bench/compare.sh
#   PROFILE=dev bench/compare.sh            # reuse the test build (our crates at -O1)
#   ONLY=kv bench/compare.sh                # or ONLY=stream
#
# The peers, and how every system is started: bench/lib.sh.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PROFILE=${PROFILE:-release}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-64}
OPS=${OPS:-20000}
DURATION=${DURATION:-30s}
ONLY=${ONLY:-all}
OUT=${OUT:-/tmp/strata-compare}
PEERS=${PEERS:-/var/tmp/strata-bench-peers}
SCRIPT=compare.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh

bench_build
bench_peers
rm -rf "$OUT"; mkdir -p "$OUT"
bench_fsync
bench_start "$OUT/data"
bench_wait

# --- run ------------------------------------------------------------------------------------
run() { # system topology workload args...
  bench_run "$OUT/r$round.$1.$2.$3" "$@"
}
for round in $(seq 1 "$ROUNDS"); do
  say "round $round of $ROUNDS"
  for topo in 1 3; do
    if [ "$ONLY" != stream ]; then
      for system in strata etcd; do
        run $system $topo kv-put --clients "$CLIENTS" --ops "$OPS"
        run $system $topo kv-get --clients "$CLIENTS" --ops "$OPS" --keys 10000
        run $system $topo kv-mixed --clients "$CLIENTS" --ops "$OPS" --keys 10000
        run $system $topo kv-txn --clients "$CLIENTS" --ops "$((OPS / 4))" --keys 16
      done
    fi
    if [ "$ONLY" != kv ]; then
      for system in strata nats nats-default; do
        run $system $topo stream-pub --clients "$CLIENTS" --ops "$OPS"
        run $system $topo stream-pub-batch --clients 8 --ops "$((OPS / 100))" --batch 100
        run $system $topo stream-consume --clients "$CLIENTS" --ops "$((OPS * 2))"
      done
    fi
  done
done

# --- table ----------------------------------------------------------------------------------
python3 - "$OUT" "$ROUNDS" <<'EOF' | tee "$OUT/table.md"
import glob, json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
runs = {}
for path in glob.glob(os.path.join(out, "r*.json")):
    name = os.path.basename(path)[:-5]
    round_, system, topo, workload = name.split(".", 3)
    with open(path) as f:
        report = json.load(f)
    runs.setdefault((workload, topo), {}).setdefault(system, {})[round_] = report
def rate(r):
    # Messages per second for batches; operations per second otherwise.
    return r.get("items_per_s") or r["ops_per_s"]
print(f"fsync: {open(os.path.join(out, 'fsync.txt')).read().strip()}; medians of {rounds} round(s); "
      "ratio = this system's rate / Strata's in the same round (median of rounds)\n")
print("| workload | topology | system | ops/s (msgs/s for batches) | p50 ms | p99 ms | server CPU s/1000 ops | ratio to Strata |")
print("|---|---|---|---|---|---|---|---|")
order = ["kv-put", "kv-get", "kv-mixed", "kv-txn", "stream-pub", "stream-pub-batch", "stream-consume"]
for workload in order:
    for topo in ["1", "3"]:
        systems = runs.get((workload, topo), {})
        for system in ["strata", "etcd", "nats", "nats-default"]:
            if system not in systems:
                continue
            reports = systems[system]
            med = lambda f: statistics.median(f(r) for r in reports.values())
            ratios = [rate(r) / rate(systems["strata"][k]) for k, r in reports.items()
                      if k in systems.get("strata", {})]
            cpu = [r["server_cpu_s_per_1000_ops"] for r in reports.values() if r.get("server_cpu_s_per_1000_ops") is not None]
            errors = sum(n for r in reports.values() for k, n in r["outcomes"].items() if k.startswith("error"))
            label = {"nats": "nats (sync always)", "nats-default": "nats (default sync, 2 min)"}.get(system, system)
            print(f"| {workload} | {'single' if topo == '1' else 'three'} | {label} | {med(rate):,.0f} | "
                  f"{med(lambda r: r['latency_ms']['p50']):.2f} | {med(lambda r: r['latency_ms']['p99']):.2f} | "
                  f"{statistics.median(cpu) if cpu else float('nan'):.3f} | "
                  f"{statistics.median(ratios):.2f}×{' (' + str(errors) + ' errors)' if errors else ''} |")
EOF
