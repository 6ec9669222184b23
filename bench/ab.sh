#!/usr/bin/env bash
# Two builds of strata side by side: one node of each on 127.0.0.1, the same workloads in
# interleaved rounds, medians and the per-round ratio (new/base). For a change's cost on the
# system, against the commit before it, in the same run (this machine is shared and noisy).
#
#   git worktree add /tmp/base <commit>
#   (cd /tmp/base && CARGO_TARGET_DIR=/path/to/this/target cargo build --profile release \
#      -p strata-node -p strata-bench) && cp target/release/strata /tmp/strata-base
#   # The shared target dir now holds the base's workspace crates, newer than this tree's
#   # sources: touch them, or cargo takes the stale ones (seen: "cannot find `quota`").
#   find */src */benches proto/proto -name '*.rs' -o -name '*.proto' | xargs touch
#   cargo build --profile release -p strata-node -p strata-bench
#   BASE=/tmp/strata-base bench/ab.sh                       # kv-put and kv-get, 64 clients
#   BASE=/tmp/strata-base CLIENTS=1 WORKLOADS="kv-put" bench/ab.sh
# Sharing the target dir reuses RocksDB's compiled C++ (25 minutes here).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${BASE:?set BASE to the baseline strata binary}
NEW=${NEW:-${CARGO_TARGET_DIR:-target}/release/strata}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-target}/release/strata-bench}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-64}
OPS=${OPS:-20000}
WORKLOADS=${WORKLOADS:-kv-put kv-get}
OUT=${OUT:-/tmp/strata-ab}
rm -rf "$OUT" && mkdir -p "$OUT"

"$BASE" serve --data-dir "$OUT/base" --client-addr 127.0.0.1:39720 --http-addr 127.0.0.1:39721 \
  > "$OUT/base.log" 2>&1 &
BASE_PID=$!
"$NEW" serve --data-dir "$OUT/new" --client-addr 127.0.0.1:39730 --http-addr 127.0.0.1:39731 \
  > "$OUT/new.log" 2>&1 &
NEW_PID=$!
trap 'kill $BASE_PID $NEW_PID 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  grep -q "strata ready" "$OUT/base.log" && grep -q "strata ready" "$OUT/new.log" && break
  sleep 0.1
done

for round in $(seq 1 "$ROUNDS"); do
  for workload in $WORKLOADS; do
    extra=(--clients "$CLIENTS" --ops "$OPS" --duration 60s)
    [ "$workload" = kv-get ] && extra+=(--keys 10000)
    "$BENCH" --endpoint 127.0.0.1:39720 --server-pid $BASE_PID --workload "$workload" \
      "${extra[@]}" --json "$OUT/r$round.base.$workload.json" > "$OUT/r$round.base.$workload.txt" 2>&1
    "$BENCH" --endpoint 127.0.0.1:39730 --server-pid $NEW_PID --workload "$workload" \
      "${extra[@]}" --json "$OUT/r$round.new.$workload.json" > "$OUT/r$round.new.$workload.txt" 2>&1
  done
done

python3 - "$OUT" "$ROUNDS" "$WORKLOADS" <<'PY'
import json, os, statistics, sys
out, rounds, workloads = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
print(f"medians of {rounds} rounds, base vs new in the same round\n")
print("| workload | base ops/s | new ops/s | new/base | base p50 ms | new p50 ms |")
print("|---|---|---|---|---|---|")
for w in workloads:
    load = lambda mode, r: json.load(open(os.path.join(out, f"r{r}.{mode}.{w}.json")))
    rows = [(load("base", r), load("new", r)) for r in range(1, rounds + 1)]
    rate = lambda rep: rep["ops_per_s"]
    p50 = lambda rep: rep["latency_ms"]["p50"]
    med = statistics.median
    print(f"| {w} | {med(rate(a) for a, _ in rows):,.0f} | {med(rate(b) for _, b in rows):,.0f} | "
          f"{med(rate(b) / rate(a) for a, b in rows):.3f} | {med(p50(a) for a, _ in rows):.3f} | "
          f"{med(p50(b) for _, b in rows):.3f} |")
PY
