#!/usr/bin/env bash
# Generates the Go code of Strata's native protos (proto/proto/strata) into sdk/go/gen, with the
# protoc that the Rust build pins (the protoc-bin-vendored crate in Cargo.lock) and the plugin
# versions pinned below. `gen.sh --check` regenerates into a scratch directory and fails if the
# committed code differs (CI runs it).
set -euo pipefail
cd "$(dirname "$0")"
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.2
MODULE=github.com/strata-db/strata/sdk/go

protoc="${PROTOC:-}"
if [ -z "$protoc" ]; then
  registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
  protoc="$(find "$registry" -path '*/protoc-bin-vendored-linux-x86_64-*/bin/protoc' 2>/dev/null | sort | tail -1)"
fi
if [ -z "$protoc" ] || [ ! -x "$protoc" ]; then
  echo "gen.sh: no protoc: set PROTOC, or run 'cargo fetch' so the vendored one is there" >&2
  exit 1
fi

tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
GOBIN="$tools" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
GOBIN="$tools" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"

out=gen
if [ "${1:-}" = "--check" ]; then
  out="$tools/out"
fi
rm -rf "$out" && mkdir -p "$out"

root=../../proto/proto
mapfile -t protos < <(cd "$root" && find strata -name '*.proto' | sort)
maps=()
for p in "${protos[@]}"; do
  maps+=("M$p=$MODULE/gen/$(dirname "$p")")
done
go_opts=$(IFS=,; echo "${maps[*]}")
PATH="$tools:$PATH" "$protoc" -I "$root" \
  --go_out="$out" --go_opt=paths=source_relative --go_opt="$go_opts" \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative --go-grpc_opt="$go_opts" \
  "${protos[@]}"

if [ "${1:-}" = "--check" ]; then
  if ! diff -r gen "$out" >/dev/null; then
    diff -r gen "$out" | head -20 >&2
    echo "gen.sh --check: sdk/go/gen is stale: run sdk/go/gen.sh and commit the result" >&2
    exit 1
  fi
  echo "gen.sh --check: sdk/go/gen matches proto/"
fi
