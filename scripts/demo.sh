#!/usr/bin/env bash
# `make demo`: two real dubbo-go providers (v1 on :20001, v2 on :20002), the
# standalone runner on its embedded default config (:20880, routes in
# cmd/breeze/demo.yaml), and a dubbo-go consumer that prints where its
# requests went. DEMO_BIN=DIR builds into DIR instead of bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${DEMO_BIN:-$PWD/bin}
mkdir -p "$bin"
export CGO_ENABLED=1 GODEBUG=cgocheck=0

# The ports are fixed (demo.yaml): one demo at a time on a machine. A second
# one waits instead of failing on a port in use.
lock=/tmp/breeze-demo.lock
{ : >>"$lock"; } 2>/dev/null || true
if command -v flock >/dev/null && exec 9<"$lock" && ! flock -n 9; then
  echo "== waiting for the other demo on this machine to end (ports 20001, 20002, 20880, 15000)"
  flock 9
fi

# Without a word, the first build looks hung: it downloads the Go modules
# and compiles dubbo-go, minutes on a fresh machine.
SECONDS=0
echo "== building breeze and the demo's dubbo-go peers into $bin: minutes the first time (Go modules to download, dubbo-go to compile)"
echo "   go build ./cmd/breeze"
go build -o "$bin/breeze" ./cmd/breeze
echo "   go build ./e2e/cmd/provider ./e2e/cmd/consumer"
(cd e2e && go build -o "$bin/provider" ./cmd/provider && go build -o "$bin/consumer" ./cmd/consumer)
echo "   built in ${SECONDS}s"

logs=$(mktemp -d)
pids=()

# stop_all stops what start started, last started first: Breeze before the
# providers, which would otherwise close their connections under a running
# Breeze and leave that in its log.
stop_all() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  local status=$?
  # With the output's reader gone (`make demo | head`), a write here would
  # end the cleanup before the rm: SIGPIPE would kill the script, or, that
  # ignored, the failed write would stop it under set -e.
  trap '' PIPE
  stop_all
  if [ "$status" -ne 0 ] && [ -s "$logs/breeze.log" ]; then
    { echo "== breeze's log:"; cat "$logs/breeze.log"; } || true
  fi
  rm -rf "$logs"
  exit "$status"
}
trap cleanup EXIT

# start NAME READY-PATTERN CMD...: run CMD in the background and wait for
# READY-PATTERN in its output. A log shown here is removed, so that cleanup
# does not show it again.
start() {
  local name=$1 pattern=$2; shift 2
  "$@" >"$logs/$name.log" 2>&1 9<&- & # 9: the lock stays with this script
  pids+=($!)
  for _ in $(seq 1 300); do
    grep -q "$pattern" "$logs/$name.log" && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "$name exited:"; cat "$logs/$name.log"; rm "$logs/$name.log"; exit 1; }
    sleep 0.1
  done
  echo "$name not ready after 30s:"; cat "$logs/$name.log"; rm "$logs/$name.log"; exit 1
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
# bash's /dev/tcp where curl is missing (a fresh machine may lack it).
if command -v curl >/dev/null; then
  metrics=$(curl -sS http://127.0.0.1:15000/metrics)
else
  exec 3<>/dev/tcp/127.0.0.1/15000
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  metrics=$(cat <&3)
  exec 3<&-
fi
grep -E '^breeze_(requests|responses)_total' <<<"$metrics"

echo
echo "== stopping breeze, then the providers; breeze's log:"
stop_all
cat "$logs/breeze.log"
