#!/usr/bin/env bash
# Where a put's CPU goes: three Strata nodes on 127.0.0.1 under `kv-put` (64 clients by
# default), `perf record` with DWARF call stacks (release binaries keep .eh_frame and their
# symbols) on the leader and on one follower while the load runs. Writes, under $OUT:
#   - leader.svg, follower.svg: flame graphs (inferno, from crates.io when missing);
#   - profile.md: for each node, each sample counted once by the work it served (the Tokio task
#     or the thread), once by what the CPU was doing (its innermost frame), and the top
#     functions by self time.
#
#   bench/profile.sh
#   CLIENTS=1 WORKLOAD=kv-put bench/profile.sh
#   WORKLOAD=kv-get bench/profile.sh
# Needs perf (Debian's linux-perf, installed when missing) and a kernel that lets it sample
# (perf_event_paranoid ≤ 2 for a process of one's own, as root here).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PROFILE=${PROFILE:-release}
CLIENTS=${CLIENTS:-64}
WORKLOAD=${WORKLOAD:-kv-put}
SECONDS_SAMPLED=${SECONDS_SAMPLED:-15}
FREQ=${FREQ:-499}
OUT=${OUT:-/tmp/strata-profile}
PEERS=${PEERS:-/var/tmp/strata-bench-peers}
DURATION=$((SECONDS_SAMPLED + 10))s
SCRIPT=profile.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh

bench_build
command -v perf >/dev/null 2>&1 || apt_install linux-perf
command -v perf >/dev/null 2>&1 || { say "perf is not available"; exit 1; }
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
  cargo install --locked --root "$PEERS/cargo" inferno >/dev/null 2>&1 || say "installing inferno failed: no flame graphs"
  export PATH=$PEERS/cargo/bin:$PATH
fi
rm -rf "$OUT"; mkdir -p "$OUT"
bench_start "$OUT/data" strata
bench_wait

leader=${ENDPOINT[strata/3]}
declare -A NODE_PID
i=0
for p in ${SERVER_PIDS[strata/3]}; do i=$((i + 1)); NODE_PID[127.0.0.1:3950$i]=$p; done
leader_pid=${NODE_PID[$leader]}
follower_pid=""
for addr in "${!NODE_PID[@]}"; do [ "$addr" != "$leader" ] && follower_pid=${NODE_PID[$addr]} && break; done
say "leader $leader (pid $leader_pid), a follower pid $follower_pid"

# The load, and after a few seconds of warm-up both recordings at once.
bench_run "$OUT/load" strata 3 "$WORKLOAD" --clients "$CLIENTS" --ops 100000000 --keys 10000 &
load=$!
sleep 5
perf record -F "$FREQ" --call-graph dwarf,16384 -o "$OUT/leader.data" -p "$leader_pid" -- sleep "$SECONDS_SAMPLED" 2> "$OUT/leader.perf.log" &
rec1=$!
perf record -F "$FREQ" --call-graph dwarf,16384 -o "$OUT/follower.data" -p "$follower_pid" -- sleep "$SECONDS_SAMPLED" 2> "$OUT/follower.perf.log" &
rec2=$!
wait $rec1 $rec2
wait $load

for node in leader follower; do
  perf script -i "$OUT/$node.data" 2>/dev/null > "$OUT/$node.stacks"
  if command -v inferno-collapse-perf >/dev/null 2>&1; then
    inferno-collapse-perf < "$OUT/$node.stacks" > "$OUT/$node.folded"
    inferno-flamegraph --title "strata $node, $WORKLOAD, $CLIENTS clients" < "$OUT/$node.folded" > "$OUT/$node.svg"
  fi
done

python3 - "$OUT" "$WORKLOAD" "$CLIENTS" <<'EOF' | tee "$OUT/profile.md"
import collections, os, re, sys
out, workload, clients = sys.argv[1], sys.argv[2], sys.argv[3]
# Which piece of work a sample served: the task (the future a Tokio worker polled) or the
# thread (flusher, blocking pool, RocksDB's own) it ran in; the first pattern that matches.
TASKS = [
    ("state-machine apply (blocking pool)", r"state_machine|apply_entries"),
    ("log flusher thread (fsync)", r"run_flusher"),
    ("RocksDB background (memtable flush, compaction)", r"rocksdb::(ThreadPoolImpl|DBImpl::Background)"),
    ("gRPC connections (HTTP/2, decode, handlers, encode)", r"serve_connection|hyper|h2::"),
    ("openraft core (log append, commit)", r"RaftCore"),
    ("openraft replication (entries to followers)", r"ReplicationCore"),
    ("QUIC endpoint and connections", r"quinn"),
    ("peer RPC handling", r"strata_raft::network"),
    ("write batcher", r"strata_raft::batcher"),
    ("write and read routing (RaftNode)", r"strata_raft::node"),
]

def resource(frames):
    """What the sample was doing, from its innermost frame."""
    leaf = frames[0]
    if "[kernel.kallsyms]" in leaf:
        for f in frames:
            m = re.search(r"__x64_sys_(\w+)", f)
            if m:
                name = m.group(1)
                group = ("fsync" if "sync" in name else
                         "network" if re.search(r"send|recv|write|read|poll", name) else
                         "futex" if "futex" in name else name)
                return f"kernel: {group} syscalls"
        return "kernel: scheduling, interrupts, page faults"
    if re.search(r"mem(cpy|move|set|cmp)", leaf):
        return "libc: memcpy, memcmp, memset"
    if re.search(r"malloc|free|realloc|calloc|tcache|unlink_chunk|_int_", leaf):
        return "libc: allocation"
    if "rocksdb" in leaf:
        return "RocksDB"
    m = re.match(r"<?([A-Za-z_][A-Za-z0-9_]*)::", leaf)
    return f"crate {m.group(1)}" if m else leaf.split(" (")[0][:60]

def samples(path):
    stacks, stack = [], []
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                stacks.append(stack)
            stack = []
        elif line.startswith((" ", "\t")):
            parts = line.strip().split(" ", 1)
            stack.append(re.sub(r"\+0x[0-9a-f]+ ", " ", parts[1] if len(parts) > 1 else parts[0]))
    if stack:
        stacks.append(stack)
    return stacks

def task(frames):
    """The future a worker polled sits just inside tokio's innermost Core::poll (a worker
    thread is itself a blocking task, so there is an outer one); otherwise the thread's own
    code."""
    for i, frame in enumerate(frames):
        if "tokio::runtime::task::core::Core<T,S>::poll" in frame:
            inner = " ".join(frames[max(0, i - 12):i])
            break
    else:
        inner = " ".join(frames)
    for name, pattern in TASKS:
        if re.search(pattern, inner):
            return name
    if "multi_thread::worker" in inner:
        # A worker thread between tasks: parking, waking, the IO and timer drivers.
        return "Tokio workers between tasks (park, wake, IO and timer drivers)"
    return "other"

def table(title, counter, total, limit=None):
    print(f"| {title} | share of samples |\n|---|---|")
    for name, n in counter.most_common(limit):
        print(f"| {name} | {100 * n / total:.1f}% |")
    print()

print(f"# Profile: {workload}, {clients} clients, three nodes (perf, DWARF stacks)\n")
for node in ["leader", "follower"]:
    path = os.path.join(out, f"{node}.stacks")
    stacks = samples(path) if os.path.exists(path) else []
    if not stacks:
        print(f"{node}: no samples\n")
        continue
    total = len(stacks)
    tasks, resources, functions = collections.Counter(), collections.Counter(), collections.Counter()
    for frames in stacks:
        tasks[task(frames)] += 1
        resources[resource(frames)] += 1
        functions[re.sub(r"::h[0-9a-f]{16}", "", frames[0].split(" (")[0])[:100]] += 1
    print(f"## {node}: {total} samples\n")
    table("work (task or thread)", tasks, total)
    table("doing (innermost frame)", resources, total, 15)
    table("function (self time)", functions, total, 12)
EOF
