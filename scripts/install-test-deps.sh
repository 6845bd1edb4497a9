#!/usr/bin/env bash
# Installs, from Debian's packages, what `make test` needs beyond Go and is
# missing: gcc (cgo, the C loader of breeze.so), a JDK 17+ and Maven (the
# Apache Dubbo Java peers). Needs root (or sudo) only when something is missing.
set -euo pipefail
need=()
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v java >/dev/null || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need+=(maven)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
