#!/usr/bin/env bash
# The identity layer's cost: one node with auth off and one with auth on (a tenant's token,
# rules evaluated), side by side on 127.0.0.1, rounds interleaved, kv-get and kv-put. Prints
# medians and the added time per call.
#
#   bench/auth.sh                      # release build, 64 clients, 3 rounds
#   ROUNDS=5 CLIENTS=1 bench/auth.sh   # one client: per-call latency
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-64}
OPS=${OPS:-20000}
OUT=${OUT:-/tmp/strata-auth-bench}
TARGET=${CARGO_TARGET_DIR:-target}
case $PROFILE in dev | debug) BIN=$TARGET/debug ;; *) BIN=$TARGET/$PROFILE ;; esac
cargo build --profile "$PROFILE" -p strata-node -p strata-bench
S=$BIN/strata B=$BIN/strata-bench
rm -rf "$OUT" && mkdir -p "$OUT"
export STRATA_TOKEN_FILE=$OUT/token.json

"$S" serve --data-dir "$OUT/off" --client-addr 127.0.0.1:39700 --http-addr 127.0.0.1:39701 \
  --auth off > "$OUT/off.log" 2>&1 &
OFF=$!
"$S" serve --data-dir "$OUT/on" --client-addr 127.0.0.1:39710 --http-addr 127.0.0.1:39711 \
  --auth on > "$OUT/on.log" 2>&1 &
ON=$!
trap 'kill $OFF $ON 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 1 300); do [ -s "$OUT/on/root.credentials" ] && break; sleep 0.1; done
secret=$(sed -n 's/^secret = "\(.*\)"/\1/p' "$OUT/on/root.credentials")
E=127.0.0.1:39710
STRATA_SECRET=$secret "$S" login --endpoint $E --namespace micro --id root > /dev/null
bench_secret=$("$S" account create bench --endpoint $E --namespace bench --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
STRATA_SECRET=$bench_secret "$S" login --endpoint $E --namespace bench --id bench --expiry 86400 > /dev/null
TOKEN=$("$S" token issue --endpoint $E)

for round in $(seq 1 "$ROUNDS"); do
  for workload in kv-put kv-get; do
    extra=(--clients "$CLIENTS" --ops "$OPS" --duration 60s)
    [ $workload = kv-get ] && extra+=(--keys 10000)
    "$B" --endpoint 127.0.0.1:39700 --server-pid $OFF --workload $workload "${extra[@]}" \
      --json "$OUT/r$round.off.$workload.json" > "$OUT/r$round.off.$workload.txt" 2>&1
    "$B" --endpoint $E --server-pid $ON --token "$TOKEN" --workload $workload "${extra[@]}" \
      --json "$OUT/r$round.on.$workload.json" > "$OUT/r$round.on.$workload.txt" 2>&1
  done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
print(f"medians of {rounds} rounds, auth off vs on in the same round\n")
print("| workload | off ops/s | on ops/s | on/off | off p50 ms | on p50 ms | added p50 µs |")
print("|---|---|---|---|---|---|---|")
for w in ["kv-put", "kv-get"]:
    load = lambda mode, r: json.load(open(os.path.join(out, f"r{r}.{mode}.{w}.json")))
    rows = [(load("off", r), load("on", r)) for r in range(1, rounds + 1)]
    rate = lambda rep: rep["ops_per_s"]
    p50 = lambda rep: rep["latency_ms"]["p50"]
    med = statistics.median
    print(f"| {w} | {med(rate(a) for a, _ in rows):,.0f} | {med(rate(b) for _, b in rows):,.0f} | "
          f"{med(rate(b) / rate(a) for a, b in rows):.3f} | {med(p50(a) for a, _ in rows):.3f} | "
          f"{med(p50(b) for _, b in rows):.3f} | {med((p50(b) - p50(a)) * 1000 for a, b in rows):.0f} |")
PY
