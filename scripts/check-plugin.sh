#!/usr/bin/env bash
# Checks that a built breeze.so exports every entry point Envoy's Go network
# filter calls; a missing one makes Envoy fail to load the library.
set -euo pipefail
so=${1:?usage: check-plugin.sh breeze.so}
want=(
  envoyGoFilterOnNetworkFilterConfig
  envoyGoFilterOnDownstreamConnection
  envoyGoFilterOnDownstreamData
  envoyGoFilterOnDownstreamEvent
  envoyGoFilterOnDownstreamWrite
  envoyGoFilterOnUpstreamConnectionReady
  envoyGoFilterOnUpstreamConnectionFailure
  envoyGoFilterOnUpstreamData
  envoyGoFilterOnUpstreamEvent
)
syms=$(nm -D --defined-only "$so")
missing=0
for s in "${want[@]}"; do
  if grep -qw "$s" <<<"$syms"; then echo "ok  $s"; else echo "MISSING $s"; missing=1; fi
done
glibc=$(objdump -T "$so" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1)
echo "highest GLIBC symbol version required: ${glibc:-none}"
exit $missing
