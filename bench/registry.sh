#!/bin/bash
# Reproduces the registry figures in RESULTS.md on a three-node cluster on 127.0.0.1, rounds
# interleaved: the heartbeat storm (10,000 nodes, 30 s TTL, a refresh every 10 s) next to the
# same refreshes written through the log (--changing), the most keepalives/s the clients reach,
# and one change fanned out to 1,000 watchers. Needs `cargo build --workspace --all-targets`.
set -e
S=${CARGO_TARGET_DIR:-target}/debug/strata
B=${CARGO_TARGET_DIR:-target}/debug/strata-bench
T=${BENCH_DIR:-/tmp/strata-registry-bench}; mkdir -p $T
DURATION=${DURATION:-40s}
rm -rf $T/n1 $T/n2 $T/n3 $T/tls
$S cert init --tls-dir $T/tls >/dev/null
for i in 1 2 3; do $S cert node --tls-dir $T/tls --node-id $i >/dev/null; done
IC=1=127.0.0.1:38711,2=127.0.0.1:38712,3=127.0.0.1:38713
for i in 1 2 3; do
  STRATA_LOG=warn $S serve --data-dir $T/n$i --node-id $i --client-addr 127.0.0.1:3870$i --http-addr 127.0.0.1:3880$i \
    --peer-addr 127.0.0.1:3871$i --initial-cluster $IC --tls-dir $T/tls --auth off --client-tls off > $T/n$i.log 2>&1 &
  eval P$i=$!
done
trap 'kill $P1 $P2 $P3 2>/dev/null; wait' EXIT
sleep 4
ALL=127.0.0.1:38701,127.0.0.1:38702,127.0.0.1:38703
PIDS="--server-pid $P1 --server-pid $P2 --server-pid $P3"
run() { # name; args
  local name=$1; shift
  echo "== $name"; $B --endpoint $ALL --spread $PIDS --namespace "$name" --json $T/$name.json "$@" | tail -3
}
for round in 1 2; do
  run r$round-storm --workload registry-heartbeat --nodes 10000 --services 100 --interval 10s --ttl 30s \
    --clients 64 --ops 10000000 --duration $DURATION
  run r$round-storm-written --workload registry-heartbeat --nodes 10000 --services 100 --interval 10s --ttl 30s \
    --clients 64 --ops 10000000 --duration $DURATION --changing
  run r$round-keepalive-max --workload registry-heartbeat --nodes 10000 --services 100 --interval 0s --ttl 60s \
    --clients 64 --ops 10000000 --duration 20s
  run r$round-written-max --workload registry-heartbeat --nodes 10000 --services 100 --interval 0s --ttl 60s \
    --clients 64 --ops 10000000 --duration 20s --changing
  run r$round-fanout --workload watch-fanout --watchers 1000 --clients 64 --ops 100 --duration 60s
done
