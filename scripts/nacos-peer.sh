#!/usr/bin/env bash
# A real Nacos-compatible server for the registry tests (registry/nacos,
# e2e): rnacos, Nacos re-implemented in Rust, which serves Nacos' 1.x HTTP
# and 2.x gRPC APIs (the official Nacos server is not in any registry
# reachable here). Tests call this script; nobody needs to by hand.
#
#   scripts/nacos-peer.sh install
#       Builds rnacos from its crate with cargo, once per version, into
#       ${XDG_CACHE_HOME:-~/.cache}/breeze-peers/rnacos-<version>[-debug]/,
#       outside the clone, and prints RNACOS=<path of the binary>. A
#       machine that already has the release build uses it; otherwise the
#       debug profile is built (cold: about 7 minutes of wall time and 6 of
#       CPU on 2 busy cores, against about 15 minutes of CPU for the
#       release profile): the tests register a few providers, which a
#       debug build serves as well. RNACOS_PROFILE=release builds (or
#       insists on) the release profile: the scale benchmarks
#       (registry/nacos BenchmarkScale, bench/results) were measured with it.
#   scripts/nacos-peer.sh server DIR HTTP_PORT
#       Runs rnacos in the foreground with its data in DIR, its HTTP API on
#       127.0.0.1:HTTP_PORT and its gRPC API on HTTP_PORT+1000 (the port
#       Nacos' clients derive from the HTTP one), its console on
#       HTTP_PORT+2000. exec: killing the caller's process stops the server.
set -euo pipefail

RNACOS_VERSION=0.8.8
peers="${XDG_CACHE_HOME:-$HOME/.cache}/breeze-peers"
release="$peers/rnacos-$RNACOS_VERSION"
debug="$peers/rnacos-$RNACOS_VERSION-debug"
cargo="$(command -v cargo || echo "$HOME/.cargo/bin/cargo")"

# binary: the build to use, release first; empty when there is none.
binary() {
	if [ -x "$release/bin/rnacos" ]; then
		echo "$release/bin/rnacos"
	elif [ "${RNACOS_PROFILE:-}" != release ] && [ -x "$debug/bin/rnacos" ]; then
		echo "$debug/bin/rnacos"
	fi
}

install() {
	if [ -z "$(binary)" ]; then
		[ -x "$cargo" ] || { echo "cargo is needed to build rnacos (rustup's, or Debian's cargo package)" >&2; exit 1; }
		local cache="$debug" flags=(--debug)
		if [ "${RNACOS_PROFILE:-}" = release ]; then
			cache="$release" flags=()
		fi
		echo "building: rnacos $RNACOS_VERSION into $cache (once; slow cold)" >&2
		mkdir -p "$peers"
		# A temporary root, then a rename: an interrupted build never leaves
		# half an install where the next run would take it for a whole one.
		local tmp
		tmp="$(mktemp -d "$peers/.rnacos.XXXXXX")"
		trap 'rm -rf "$tmp"' RETURN
		# --locked: the crate's own Cargo.lock, the dependency versions its
		# release was built and tested with.
		"$cargo" install --quiet --locked "${flags[@]}" --root "$tmp" "rnacos@$RNACOS_VERSION" >&2
		mv "$tmp" "$cache"
	fi
	echo "RNACOS=$(binary)"
}

server() {
	local dir="$1" port="$2"
	local bin
	bin="$(binary)"
	[ -n "$bin" ] || { echo "rnacos is not installed: run $0 install" >&2; exit 1; }
	cd "$dir" # rnacos reads a .env in its working directory: the test's own
	export RNACOS_SDK_HOST=127.0.0.1 RNACOS_CONSOLE_HOST=127.0.0.1
	export RNACOS_HTTP_PORT="$port" RNACOS_GRPC_PORT=$((port + 1000)) RNACOS_HTTP_CONSOLE_PORT=$((port + 2000))
	export RNACOS_RAFT_NODE_ADDR="127.0.0.1:$((port + 1000))"
	export RNACOS_DATA_DIR="$dir/data" RUST_LOG="${RUST_LOG:-warn}"
	exec "$bin"
}

case "${1:-}" in
install) install ;;
server) server "$2" "$3" ;;
*)
	echo "usage: $0 install | server DIR HTTP_PORT" >&2
	exit 2
	;;
esac
