#!/usr/bin/env bash
# Installs, from Debian's packages, what `make test` needs beyond Go and is
# missing: gcc (cgo, the C loader of breeze.so), a JDK 17+ and Maven (the
# Apache Dubbo Java peers), and a Prometheus server (the e2e tests scrape
# Breeze with it and query it with PromQL). Needs root (or sudo) only when
# something is missing; quick when nothing is.
set -euo pipefail
need=()
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v java >/dev/null || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need+=(maven)
# Apart: installed without its recommends (node exporter), see below.
server=()
command -v prometheus >/dev/null || server+=(prometheus)
((${#need[@]} + ${#server[@]})) || exit 0

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
echo "installing: ${need[*]} ${server[*]}"
$sudo apt-get update -qq
if ((${#need[@]})); then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
if ((${#server[@]})); then
  # The tests start their own Prometheus on a free port with a generated
  # config: they need the binary only. Where an init system runs, Debian's
  # package would start its service on :9090; a policy-rc.d that answers 101
  # ("action not allowed") forbids that, for this install only.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${server[@]}"
fi
