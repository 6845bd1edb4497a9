#!/usr/bin/env bash
# `make demo`: two real dubbo-go providers (v1 on :20001, v2 on :20002), the
# standalone runner on its embedded default config (:20880, routes in
# cmd/breeze/demo.yaml), and a dubbo-go consumer that prints where its
# requests went.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin
mkdir -p "$bin"
export CGO_ENABLED=1 GODEBUG=cgocheck=0

echo "== building breeze and the demo peers"
go build -o "$bin/breeze" ./cmd/breeze
(cd e2e && go build -o "$bin/provider" ./cmd/provider && go build -o "$bin/consumer" ./cmd/consumer)

logs=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# start NAME READY-PATTERN CMD...: run CMD in the background and wait for
# READY-PATTERN in its output.
start() {
  local name=$1 pattern=$2; shift 2
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    grep -q "$pattern" "$logs/$name.log" && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "$name exited:"; cat "$logs/$name.log"; exit 1; }
    sleep 0.1
  done
  echo "$name not ready after 30s:"; cat "$logs/$name.log"; exit 1
}

start provider-v1 READY "$bin/provider" -port 20001 -name v1
start provider-v2 READY "$bin/provider" -port 20002 -name v2
start breeze LISTENING "$bin/breeze" run
echo "== breeze is serving (routes: cmd/breeze/demo.yaml; metrics: http://127.0.0.1:15000/metrics)"

echo
echo "== 100 x Greet (canary route: 80% v1 / 20% v2)"
"$bin/consumer" -addr 127.0.0.1:20880 -method Greet -n 100
echo
echo "== 20 x Whoami (pinned to v1)"
"$bin/consumer" -addr 127.0.0.1:20880 -method Whoami -n 20
echo
echo "== 20 x Greet with attachment tenant=gold (to v2)"
"$bin/consumer" -addr 127.0.0.1:20880 -method Greet -n 20 -attach tenant=gold
echo
echo "== proxy metrics"
curl -s http://127.0.0.1:15000/metrics | grep -E '^breeze_(requests|responses)_total' || true
