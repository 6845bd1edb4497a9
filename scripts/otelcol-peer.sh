#!/usr/bin/env bash
# A small OpenTelemetry Collector (OTLP receiver, file exporter) for the
# tracing tests (e2e/tracing_test.go). Tests call this script; nobody needs
# to by hand.
#
#   scripts/otelcol-peer.sh install
#       Builds the collector of e2e/otelcol (its own module: every
#       collector module at one release, pinned by its go.mod and go.sum)
#       once per version into
#       ${XDG_CACHE_HOME:-~/.cache}/breeze-peers/otelcol-<version>/, outside
#       the clone, so that every clone and CI run on the machine shares it.
#       Prints OTELCOL_BIN=.... A cold build (empty Go build cache, modules
#       already downloaded) took 5 min 29 s on a shared 2-core machine
#       (2 min 13 s of CPU); downloading its modules takes seconds more.
#   scripts/otelcol-peer.sh run CONFIG
#       Runs the collector in the foreground with the config file CONFIG.
#
# run execs the collector, so that the caller's process is the
# collector's: killing it stops the collector.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The collector's release (otelcol v0.165.0, core modules v1.71.0,
# contrib's file exporter v0.165.1): e2e/otelcol/go.mod pins them; change
# both together.
OTELCOL_VERSION=v0.165.0
cache="${XDG_CACHE_HOME:-$HOME/.cache}/breeze-peers/otelcol-$OTELCOL_VERSION"
otelcol_bin="$cache/otelcol"

install() {
	if [ ! -x "$otelcol_bin" ]; then
		echo "building: the collector of e2e/otelcol ($OTELCOL_VERSION) into $cache" >&2
		mkdir -p "$cache"
		# A temporary file, then a rename: a build that fails or is
		# interrupted never leaves a half-written binary in the cache.
		local tmp
		tmp="$(mktemp -d "$cache/.build.XXXXXX")"
		trap 'rm -rf "$tmp"' RETURN
		(cd "$root/e2e/otelcol" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -o "$tmp/otelcol" . >&2)
		mv "$tmp/otelcol" "$otelcol_bin"
	fi
	echo "OTELCOL_BIN=$otelcol_bin"
}

run() {
	local config="$1"
	[ -x "$otelcol_bin" ] || install >/dev/null
	exec "$otelcol_bin" --config "file:$config"
}

cmd="${1:-}"
shift || true
case "$cmd" in
install) install ;;
run) run "$@" ;;
*)
	echo "usage: $0 install | run CONFIG" >&2
	exit 2
	;;
esac
