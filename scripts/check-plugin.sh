#!/usr/bin/env bash
# Checks that a built breeze.so exports every entry point Envoy's Go network
# filter calls; a missing one makes Envoy fail to load the library. Prints the
# highest GLIBC symbol version the library requires; with MAX_GLIBC (e.g. 2.35,
# the contrib Envoy image's glibc) also fails if that is newer: Envoy's dlopen
# would fail with "GLIBC_x not found".
set -euo pipefail
so=${1:?usage: check-plugin.sh breeze.so [MAX_GLIBC]}
max=${2:-}
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
if [[ -n $max && -n $glibc ]]; then
  have=${glibc#GLIBC_}
  if [[ $(printf '%s\n%s\n' "$have" "$max" | sort -V | tail -1) != "$max" ]]; then
    echo "TOO NEW: $so needs GLIBC_$have, newer than $max: build it on an older base (the Dockerfile builds on Ubuntu 22.04)"
    exit 1
  fi
  echo "ok  GLIBC_$have <= $max"
fi
exit $missing
