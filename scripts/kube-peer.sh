#!/usr/bin/env bash
# A real Kubernetes API server and etcd for controller-runtime's envtest
# (the controller package's tests). Tests find them through
# KUBEBUILDER_ASSETS, which the Makefile sets to this script's cache folder.
#
#   scripts/kube-peer.sh install
#       Builds kube-apiserver (k8s.io/kubernetes at $KUBE_VERSION, from a
#       scratch module in the cache folder) and installs etcd (Debian's
#       etcd-server when apt has it, else go.etcd.io/etcd/server/v3 built
#       from a scratch module) once per machine into
#       ${XDG_CACHE_HOME:-~/.cache}/breeze-peers/kube-$KUBE_VERSION/.
#       Prints KUBEBUILDER_ASSETS=<that folder>.
#   scripts/kube-peer.sh assets
#       Prints the folder, built or not.
set -euo pipefail

KUBE_VERSION=v1.34.4
# The staging modules (k8s.io/api, client-go, ...) are published as v0.x
# with the same minor and patch.
STAGING_VERSION=v0.34.4
ETCD_VERSION=v3.6.16
cache="${XDG_CACHE_HOME:-$HOME/.cache}/breeze-peers/kube-$KUBE_VERSION"

build_apiserver() {
	local tmp
	tmp="$(mktemp -d "$cache/.build-apiserver.XXXXXX")"
	trap 'rm -rf "${tmp:-}"; trap - RETURN' RETURN
	echo "building: k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION into $cache" >&2
	(
		cd "$tmp"
		export GOFLAGS= GOWORK=off
		go mod init kube-peer >&2
		cat >tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
		go mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
		# k8s.io/kubernetes's go.mod points every staging module at
		# ./staging/...; outside its repository they resolve only when
		# replaced by their published versions, the same list.
		go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >download.json
		local gomod
		gomod="$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' download.json)"
		sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod" | while read -r m; do
			go mod edit -replace "$m=$m@$STAGING_VERSION"
		done
		go mod tidy >&2
		CGO_ENABLED=0 go build -o kube-apiserver -ldflags "-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34" k8s.io/kubernetes/cmd/kube-apiserver >&2
	)
	mv "$tmp/kube-apiserver" "$cache/kube-apiserver"
}

install_etcd() {
	if [ ! -x /usr/bin/etcd ] && apt-cache show etcd-server >/dev/null 2>&1; then
		local sudo=""
		[ "$(id -u)" = 0 ] || sudo=sudo
		echo "installing: etcd-server" >&2
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >&2 || true
	fi
	if [ -x /usr/bin/etcd ]; then
		ln -sf /usr/bin/etcd "$cache/etcd"
		return
	fi
	local tmp
	tmp="$(mktemp -d "$cache/.build-etcd.XXXXXX")"
	trap 'rm -rf "${tmp:-}"; trap - RETURN' RETURN
	echo "building: go.etcd.io/etcd/server/v3@$ETCD_VERSION into $cache" >&2
	(
		cd "$tmp"
		export GOFLAGS= GOWORK=off
		go mod init etcd-peer >&2
		cat >tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
		go mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
		go mod tidy >&2
		CGO_ENABLED=0 go build -o etcd go.etcd.io/etcd/server/v3 >&2
	)
	mv "$tmp/etcd" "$cache/etcd"
}

install() {
	mkdir -p "$cache"
	[ -x "$cache/kube-apiserver" ] || build_apiserver
	[ -x "$cache/etcd" ] || install_etcd
	echo "KUBEBUILDER_ASSETS=$cache"
}

case "${1:-}" in
install) install ;;
assets) echo "$cache" ;;
*)
	echo "usage: $0 install | assets" >&2
	exit 2
	;;
esac
