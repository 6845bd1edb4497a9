#!/usr/bin/env bash
# Envoy's rate-limit service (github.com/envoyproxy/ratelimit) on a real
# Redis, for the global rate limit's tests (filters/globalratelimit,
# e2e/ratelimit_test.go). Tests call this script; nobody needs to by hand.
#
#   scripts/ratelimit-peer.sh install
#       Redis from Debian's packages when missing (apt-get, as root or with
#       sudo), and the rate-limit service built once per version into
#       ${XDG_CACHE_HOME:-~/.cache}/breeze-peers/ratelimit-<version>/, outside
#       the clone, so that every clone and CI run on the machine shares it.
#       Prints the two binaries as REDIS_BIN=... and RATELIMIT_BIN=... lines.
#   scripts/ratelimit-peer.sh redis PORT
#       Runs Redis in the foreground on 127.0.0.1:PORT, in memory only.
#   scripts/ratelimit-peer.sh ratelimit REDIS_PORT GRPC_PORT HTTP_PORT DEBUG_PORT RUNTIME_ROOT
#       Runs the rate-limit service in the foreground on 127.0.0.1, with
#       the rules of RUNTIME_ROOT/ratelimit/config/*.yaml.
#
# redis and ratelimit exec the server, so that the caller's process is the
# server's: killing it stops the server.
set -euo pipefail

# A pseudo-version of the service's main branch: its last tag is years
# older than the gRPC and Redis clients it builds with today.
RATELIMIT_VERSION=v1.4.1-0.20260122083618-3fb702589d36
RATELIMIT_PKG=github.com/envoyproxy/ratelimit/src/service_cmd
cache="${XDG_CACHE_HOME:-$HOME/.cache}/breeze-peers/ratelimit-$RATELIMIT_VERSION"
ratelimit_bin="$cache/service_cmd"

redis_bin() { command -v redis-server || echo /usr/bin/redis-server; }

install() {
	if [ ! -x "$(redis_bin)" ]; then
		local sudo=""
		[ "$(id -u)" = 0 ] || sudo=sudo
		echo "installing: redis-server" >&2
		$sudo apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >&2
	fi
	if [ ! -x "$ratelimit_bin" ]; then
		echo "building: $RATELIMIT_PKG@$RATELIMIT_VERSION into $cache" >&2
		mkdir -p "$cache"
		# A temporary GOBIN, then a rename: a build that fails or is
		# interrupted never leaves a half-written binary in the cache.
		local tmp
		tmp="$(mktemp -d "$cache/.build.XXXXXX")"
		trap 'rm -rf "$tmp"' RETURN
		# Outside any module (GOFLAGS cleared), so the service builds
		# with its own go.mod, not Breeze's.
		(cd "$tmp" && GOFLAGS= GOBIN="$tmp" CGO_ENABLED=0 go install "$RATELIMIT_PKG@$RATELIMIT_VERSION" >&2)
		mv "$tmp/service_cmd" "$ratelimit_bin"
	fi
	echo "REDIS_BIN=$(redis_bin)"
	echo "RATELIMIT_BIN=$ratelimit_bin"
}

redis() {
	local port="$1"
	# No persistence, no protected mode games: a throwaway instance on
	# loopback that starts empty every time.
	exec "$(redis_bin)" --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
		--daemonize no --logfile '' --dir "${TMPDIR:-/tmp}"
}

ratelimit() {
	local redis_port="$1" grpc_port="$2" http_port="$3" debug_port="$4" root="$5"
	[ -x "$ratelimit_bin" ] || install >/dev/null
	# The rules are read once at start (RUNTIME_WATCH_ROOT=false: no file
	# watching), from $root/ratelimit/config/*.yaml.
	exec env \
		REDIS_SOCKET_TYPE=tcp REDIS_URL="127.0.0.1:$redis_port" \
		USE_STATSD=false LOG_LEVEL="${RATELIMIT_LOG_LEVEL:-warn}" \
		RUNTIME_ROOT="$root" RUNTIME_SUBDIRECTORY=ratelimit RUNTIME_WATCH_ROOT=false \
		HOST=127.0.0.1 PORT="$http_port" \
		GRPC_HOST=127.0.0.1 GRPC_PORT="$grpc_port" \
		DEBUG_HOST=127.0.0.1 DEBUG_PORT="$debug_port" \
		"$ratelimit_bin"
}

cmd="${1:-}"
shift || true
case "$cmd" in
install) install ;;
redis) redis "$@" ;;
ratelimit) ratelimit "$@" ;;
*)
	echo "usage: $0 install | redis PORT | ratelimit REDIS_PORT GRPC_PORT HTTP_PORT DEBUG_PORT RUNTIME_ROOT" >&2
	exit 2
	;;
esac
