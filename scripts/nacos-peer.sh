#!/usr/bin/env bash
# A real Nacos-compatible server for the registry tests (registry/nacos,
# e2e): rnacos, Nacos re-implemented in Rust, which serves Nacos' 1.x HTTP
# and 2.x gRPC APIs (the official Nacos server is not in any registry
# reachable here). Tests call this script; nobody needs to by hand.
#
#   scripts/nacos-peer.sh install
#       Builds rnacos from its crate with cargo, once per version, into
#       ${XDG_CACHE_HOME:-~/.cache}/breeze-peers/rnacos-<version>/, outside
#       the clone (cold: about 20 minutes on 2 busy cores; then nothing).
#       Prints RNACOS=<path of the binary>.
#   scripts/nacos-peer.sh server DIR HTTP_PORT
#       Runs rnacos in the foreground with its data in DIR, its HTTP API on
#       127.0.0.1:HTTP_PORT and its gRPC API on HTTP_PORT+1000 (the port
#       Nacos' clients derive from the HTTP one), its console on
#       HTTP_PORT+2000. exec: killing the caller's process stops the server.
set -euo pipefail

RNACOS_VERSION=0.8.8
cache="${XDG_CACHE_HOME:-$HOME/.cache}/breeze-peers/rnacos-$RNACOS_VERSION"
cargo="$(command -v cargo || echo "$HOME/.cargo/bin/cargo")"

install() {
	if [ ! -x "$cache/bin/rnacos" ]; then
		[ -x "$cargo" ] || { echo "cargo is needed to build rnacos (rustup's, or Debian's cargo package)" >&2; exit 1; }
		echo "building: rnacos $RNACOS_VERSION into $cache (once; slow cold)" >&2
		mkdir -p "$(dirname "$cache")"
		# A temporary root, then a rename: an interrupted build never leaves
		# half an install where the next run would take it for a whole one.
		local tmp
		tmp="$(mktemp -d "$(dirname "$cache")/.rnacos.XXXXXX")"
		trap 'rm -rf "$tmp"' RETURN
		# --locked: the crate's own Cargo.lock, the dependency versions its
		# release was built and tested with.
		"$cargo" install --quiet --locked --root "$tmp" "rnacos@$RNACOS_VERSION" >&2
		mv "$tmp" "$cache"
	fi
	echo "RNACOS=$cache/bin/rnacos"
}

server() {
	local dir="$1" port="$2"
	[ -x "$cache/bin/rnacos" ] || { echo "rnacos is not installed: run $0 install" >&2; exit 1; }
	cd "$dir" # rnacos reads a .env in its working directory: the test's own
	export RNACOS_SDK_HOST=127.0.0.1 RNACOS_CONSOLE_HOST=127.0.0.1
	export RNACOS_HTTP_PORT="$port" RNACOS_GRPC_PORT=$((port + 1000)) RNACOS_HTTP_CONSOLE_PORT=$((port + 2000))
	export RNACOS_RAFT_NODE_ADDR="127.0.0.1:$((port + 1000))"
	export RNACOS_DATA_DIR="$dir/data" RUST_LOG="${RUST_LOG:-warn}"
	exec "$cache/bin/rnacos"
}

case "${1:-}" in
install) install ;;
server) server "$2" "$3" ;;
*)
	echo "usage: $0 install | server DIR HTTP_PORT" >&2
	exit 2
	;;
esac
