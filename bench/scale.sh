#!/usr/bin/env bash
# Curves, not points: Strata beside etcd (kv-put, kv-get) and NATS JetStream with
# `sync_interval: always` (stream-pub), swept over
#   - clients:  1, 4, 16, 64, 256, 1024 (256-byte values; three nodes each),
#   - values:   64 B, 1 KiB, 16 KiB, 256 KiB (64 clients; three nodes each),
#   - keyspace: 10 k, 100 k, 1 M, 10 M keys (64 clients; one node each, see below),
# every point run for both systems back to back on the same machine. Writes
#   - bench/scale-clients.png: throughput and p99 against clients, Strata and its peer side by
#     side, one panel per workload;
#   - bench/scale-size.png: throughput against value size and against keyspace;
#   - the tables, between the scale.sh markers in bench/RESULTS.md (replaced each run), and in
#     $OUT/scale.md; every run's JSON under $OUT.
# Next to the keyspace table: each server's RSS and data directory at every step, and their
# growth per million keys (the slope from the first step to the last).
#
#   bench/scale.sh                                  # release build, the whole sweep (~30 min)
#   CLIENT_STEPS="1 64" VALUE_STEPS= KEY_STEPS= bench/scale.sh   # a part of it (the other
#                                                  # sweeps' last results in $OUT stay)
#   PROFILE=dev DURATION=5s bench/scale.sh          # the test build, shorter points
#
# The keyspace sweep runs on one node of each system: 10 M keys of 256 random bytes are about
# 3 GB per copy, and three copies of two systems would not fit this machine's disk. Keys are
# loaded incrementally (each step adds the keys the last one lacked) in transactions of up to
# 100 keys, for both systems. Values are random bytes, so RocksDB's LZ4 cannot shrink them.
# etcd runs with an 8 GiB backend quota (its default of 2 GiB would refuse the 10 M keys).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PROFILE=${PROFILE:-release}
CLIENT_STEPS=${CLIENT_STEPS-1 4 16 64 256 1024}
VALUE_STEPS=${VALUE_STEPS-64 1024 16384 262144}
KEY_STEPS=${KEY_STEPS-10000 100000 1000000 10000000}
OPS=${OPS:-20000}
DURATION=${DURATION:-10s}
OUT=${OUT:-/tmp/strata-scale}
PEERS=${PEERS:-/var/tmp/strata-bench-peers}
RESULTS=${RESULTS:-bench/RESULTS.md}
# A run writes at most this many bytes of values (large values get fewer operations).
RUN_BYTES=${RUN_BYTES:-268435456}
export ETCD_FLAGS="--quota-backend-bytes 8589934592"
# Loading 10 M keys takes minutes: a run may take this long in all (its measured phase stays
# within DURATION).
RUN_TIMEOUT=${RUN_TIMEOUT:-1800}
SCRIPT=scale.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh

bench_build
bench_peers
# Results of the sweeps this run makes are replaced; those of sweeps it skips (an empty
# *_STEPS) stay in $OUT and in the report.
rm -rf "$OUT/data"; mkdir -p "$OUT"
[ -n "$CLIENT_STEPS" ] && rm -f "$OUT"/clients-*
[ -n "$VALUE_STEPS" ] && rm -f "$OUT"/value-*
[ -n "$KEY_STEPS" ] && rm -f "$OUT"/keys-*
bench_fsync
bench_start "$OUT/data" strata etcd nats
bench_wait

# The plotting library, from PyPI, in a venv of its own.
PLOT=$PEERS/plot-venv
if ! "$PLOT/bin/python" -c 'import matplotlib' 2>/dev/null; then
  mkdir -p "$PEERS"
  if ! { python3 -m venv "$PLOT" && "$PLOT/bin/pip" install -q 'matplotlib>=3.8,<4'; }; then
    say "installing matplotlib from PyPI failed"; exit 1
  fi
fi

ops_for() { # value-size
  local most=$((RUN_BYTES / $1))
  if [ "$most" -lt "$OPS" ]; then echo "$most"; else echo "$OPS"; fi
}
peer_of() { case $1 in stream-*) echo nats ;; *) echo etcd ;; esac; }

# sweep file-prefix topology workload args... : Strata, then its peer.
point() {
  local prefix=$1 topo=$2 workload=$3 system; shift 3
  for system in strata "$(peer_of "$workload")"; do
    bench_run "$OUT/$prefix.$system.$topo.$workload" "$system" "$topo" "$workload" "$@"
  done
}

for clients in $CLIENT_STEPS; do
  say "clients: $clients"
  point "clients-$clients" 3 kv-put --clients "$clients" --ops "$OPS"
  point "clients-$clients" 3 kv-get --clients "$clients" --ops "$OPS" --keys 10000
  point "clients-$clients" 3 stream-pub --clients "$clients" --ops "$OPS"
done

for size in $VALUE_STEPS; do
  say "values: $size bytes"
  ops=$(ops_for "$size")
  # Reads over at most RUN_BYTES of preloaded values.
  keys=$((RUN_BYTES / size)); [ "$keys" -gt 10000 ] && keys=10000
  point "value-$size" 3 kv-put --value-size "$size" --ops "$ops"
  point "value-$size" 3 kv-get --value-size "$size" --ops "$OPS" --keys "$keys" --table "kv-get-$size"
  point "value-$size" 3 stream-pub --value-size "$size" --ops "$ops"
done

# RSS (KiB) of a system's processes, and the bytes under its data directories.
rss_kib() { local p sum=0; for p in ${SERVER_PIDS[$1]}; do sum=$((sum + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $sum; }
disk_bytes() { # shellcheck disable=SC2086
  du -sb ${DATA_DIRS[$1]} | awk '{s += $1} END {printf "%.0f\n", s}'; }

loaded=0
for keys in $KEY_STEPS; do
  say "keyspace: $keys keys"
  for system in strata etcd; do
    # kv-get loads the keys this step adds (from $loaded on) into the shared table, then reads.
    bench_run "$OUT/keys-$keys.$system.1.kv-get" $system 1 kv-get --ops "$OPS" --keys "$keys" \
      --table keyspace --preload-from "$loaded"
    sleep 2 # let the servers settle before their memory and disk are read
    echo "$(rss_kib $system/1) $(disk_bytes $system/1)" > "$OUT/keys-$keys.$system.1.size"
    bench_run "$OUT/keys-$keys.$system.1.kv-put" $system 1 kv-put --ops "$OPS" --keys "$keys" \
      --table keyspace
  done
  loaded=$keys
done

# --- tables and plots -----------------------------------------------------------------------
"$PLOT/bin/python" - "$OUT" "$RESULTS" "$(cat "$OUT/fsync.txt")" <<'EOF'
import glob, json, os, re, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

out, results, fsync = sys.argv[1], sys.argv[2], sys.argv[3]
runs = {}
for path in glob.glob(os.path.join(out, "*.json")):
    sweep, system, topo, workload = os.path.basename(path)[:-5].split(".", 3)
    kind, step = sweep.split("-", 1)
    with open(path) as f:
        runs[(kind, int(step), system, workload)] = json.load(f)

def rate(r):
    return r.get("items_per_s") or r["ops_per_s"]

def errors(r):
    return sum(n for k, n in r["outcomes"].items() if k.startswith("error"))

WORKLOADS = ["kv-put", "kv-get", "stream-pub"]
PEER = {"kv-put": "etcd", "kv-get": "etcd", "stream-pub": "nats"}
LABEL = {"strata": "Strata", "etcd": "etcd", "nats": "NATS JetStream (sync always)"}
lines = []

def table(kind, title, unit):
    steps = sorted({s for (k, s, _, _) in runs if k == kind})
    if not steps:
        return
    lines.append(f"\n{title}\n")
    lines.append(f"| workload | {unit} | Strata ops/s | peer | peer ops/s | Strata/peer | "
                 "Strata p50 / p99 ms | peer p50 / p99 ms |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for workload in WORKLOADS:
        peer = PEER[workload]
        for step in steps:
            s, p = runs.get((kind, step, "strata", workload)), runs.get((kind, step, peer, workload))
            if not s and not p:
                continue
            cell = lambda r: f"{rate(r):,.0f}" + (f" ({errors(r)} errors)" if errors(r) else "") if r else "–"
            lat = lambda r: f"{r['latency_ms']['p50']:.2f} / {r['latency_ms']['p99']:.2f}" if r else "–"
            ratio = f"{rate(s) / rate(p):.2f}×" if s and p and rate(p) else "–"
            lines.append(f"| {workload} | {step:,} | {cell(s)} | {peer} | {cell(p)} | {ratio} | {lat(s)} | {lat(p)} |")

table("clients", "Clients (three nodes each, 256-byte values):", "clients")
table("value", "Value size (three nodes each, 64 clients):", "value bytes")
table("keys", "Keyspace (one node each, 64 clients, 256-byte values):", "keys")

# Memory and disk against the keyspace.
sizes = {}
for path in glob.glob(os.path.join(out, "keys-*.size")):
    sweep, system = os.path.basename(path).split(".")[:2]
    rss, disk = open(path).read().split()
    sizes[(int(sweep.split("-")[1]), system)] = (int(rss) * 1024, int(disk))
if sizes:
    steps = sorted({k for k, _ in sizes})
    lines.append("\nMemory and disk after each keyspace step (one node; RSS of the server, bytes under its data directory):\n")
    lines.append("| keys | Strata RSS MiB | etcd RSS MiB | Strata data MiB | etcd data MiB |")
    lines.append("|---|---|---|---|---|")
    mib = lambda b: f"{b / 2**20:,.0f}"
    for step in steps:
        s, e = sizes.get((step, "strata")), sizes.get((step, "etcd"))
        lines.append(f"| {step:,} | {mib(s[0]) if s else '–'} | {mib(e[0]) if e else '–'} | "
                     f"{mib(s[1]) if s else '–'} | {mib(e[1]) if e else '–'} |")
    if len(steps) > 1:
        first, last = steps[0], steps[-1]
        per = lambda sys_, i: (sizes[(last, sys_)][i] - sizes[(first, sys_)][i]) / ((last - first) / 1e6) / 2**20
        have = [s for s in ("strata", "etcd") if (first, s) in sizes and (last, s) in sizes]
        lines.append("\nGrowth per million keys, from the first step to the last: " + "; ".join(
            f"{LABEL[s]} RSS {per(s, 0):,.0f} MiB, data {per(s, 1):,.0f} MiB" for s in have) + ".")

body = "\n".join(lines).strip() + "\n"
text = (f"fsync: {fsync}; one run per point (DURATION-capped), Strata then its peer; "
        f"ratio = Strata / peer.\n\n" + body)
with open(os.path.join(out, "scale.md"), "w") as f:
    f.write(text)
print(text)

begin, end = "<!-- scale.sh begin -->", "<!-- scale.sh end -->"
with open(results) as f:
    doc = f.read()
if begin in doc and end in doc:
    doc = re.sub(re.escape(begin) + ".*?" + re.escape(end),
                 lambda _: f"{begin}\n{text}{end}", doc, flags=re.S)
    with open(results, "w") as f:
        f.write(doc)
else:
    print(f"scale.sh: {results} has no scale.sh markers: the table is only in {out}/scale.md", file=sys.stderr)

def curve(ax, kind, workload, field):
    for system in ("strata", PEER[workload]):
        points = sorted((s, r) for (k, s, sys_, w), r in runs.items()
                        if k == kind and sys_ == system and w == workload)
        if points:
            ys = [rate(r) if field == "rate" else r["latency_ms"]["p99"] for _, r in points]
            ax.plot([s for s, _ in points], ys, marker="o", label=LABEL[system])
    ax.set_xscale("log", base=2 if kind == "clients" else 10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)

results_dir = os.path.dirname(results) or "."
if any(k == "clients" for (k, _, _, _) in runs):
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for col, workload in enumerate(WORKLOADS):
        curve(axes[0][col], "clients", workload, "rate")
        axes[0][col].set_title(f"{workload}: throughput (ops/s)")
        curve(axes[1][col], "clients", workload, "p99")
        axes[1][col].set_title(f"{workload}: p99 latency (ms)")
        axes[1][col].set_yscale("log")
        axes[1][col].set_xlabel("clients (three nodes, 256-byte values)")
    fig.tight_layout()
    fig.savefig(os.path.join(results_dir, "scale-clients.png"), dpi=80)
if any(k in ("value", "keys") for (k, _, _, _) in runs):
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for col, workload in enumerate(WORKLOADS):
        curve(axes[0][col], "value", workload, "rate")
        axes[0][col].set_title(f"{workload}: ops/s against value bytes (three nodes, 64 clients)")
        axes[0][col].set_yscale("log")
        if workload != "stream-pub":
            curve(axes[1][col], "keys", workload, "rate")
            axes[1][col].set_title(f"{workload}: ops/s against keys (one node, 64 clients)")
        else:
            axes[1][col].axis("off")
    for ax in axes.flat:
        ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(os.path.join(results_dir, "scale-size.png"), dpi=80)
EOF
