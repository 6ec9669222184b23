#!/bin/bash
# Reproduces the streams figures in RESULTS.md: a single node and a three-node cluster on
# 127.0.0.1, kv-put as the baseline, rounds interleaved. Needs `cargo build --workspace` first.
set -e
S=${CARGO_TARGET_DIR:-target}/debug/strata
B=${CARGO_TARGET_DIR:-target}/debug/strata-bench
T=${BENCH_DIR:-/tmp/strata-streams-bench}; mkdir -p $T
rm -rf $T/single $T/n1 $T/n2 $T/n3 $T/tls
$S cert init --tls-dir $T/tls >/dev/null
for i in 1 2 3; do $S cert node --tls-dir $T/tls --node-id $i >/dev/null; done
STRATA_LOG=warn $S serve --data-dir $T/single --client-addr 127.0.0.1:38420 --http-addr 127.0.0.1:38422 > $T/single.log 2>&1 &
SP=$!
IC=1=127.0.0.1:38511,2=127.0.0.1:38512,3=127.0.0.1:38513
for i in 1 2 3; do
  STRATA_LOG=warn $S serve --data-dir $T/n$i --node-id $i --client-addr 127.0.0.1:3850$i --http-addr 127.0.0.1:3860$i \
    --peer-addr 127.0.0.1:3851$i --initial-cluster $IC --tls-dir $T/tls --auth off --client-tls off > $T/n$i.log 2>&1 &
  eval P$i=$!
done
sleep 4
LEADER=$($S cluster status --endpoint 127.0.0.1:38501 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print([m for m in d["members"] if m.get("role")=="leader"][0]["client_addr"])' 2>/dev/null || echo 127.0.0.1:38501)
echo "leader: $LEADER"
run() { # name endpoint pids... ; args
  local name=$1 ep=$2 pids=$3; shift 3
  local pidargs=""; for p in $pids; do pidargs="$pidargs --server-pid $p"; done
  echo "== $name"; $B --endpoint $ep $pidargs --duration 30s "$@" --json $T/$name.json | head -3
}
for round in 1 2; do
  run r$round-single-kvput 127.0.0.1:38420 "$SP" --workload kv-put --clients 64 --ops 10000
  run r$round-single-pub 127.0.0.1:38420 "$SP" --workload stream-pub --clients 64 --ops 10000
  run r$round-single-batch 127.0.0.1:38420 "$SP" --workload stream-pub-batch --batch 100 --clients 8 --ops 1000
  run r$round-single-e2e 127.0.0.1:38420 "$SP" --workload stream-e2e --clients 16 --ops 5000
  run r$round-three-kvput $LEADER "$P1 $P2 $P3" --workload kv-put --clients 64 --ops 10000
  run r$round-three-pub $LEADER "$P1 $P2 $P3" --workload stream-pub --clients 64 --ops 10000
  run r$round-three-batch $LEADER "$P1 $P2 $P3" --workload stream-pub-batch --batch 100 --clients 8 --ops 1000
  run r$round-three-e2e $LEADER "$P1 $P2 $P3" --workload stream-e2e --clients 16 --ops 5000
done
kill $SP $P1 $P2 $P3; wait
