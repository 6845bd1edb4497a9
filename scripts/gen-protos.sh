#!/usr/bin/env bash
# Regenerates the Go code of Breeze's protos. The generated files are
# committed, so building Breeze never needs protoc; run this after editing a
# .proto and commit the result.
#
#   scripts/gen-protos.sh [protos]
#
# Targets:
#   protos  (default) install protoc if missing, build protoc-gen-go at the
#           google.golang.org/protobuf version go.mod requires, regenerate
#           protos/**/*.pb.go.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ensure_protoc makes sure protoc and the well-known types
# (google/protobuf/*.proto) are installed: Debian's protobuf-compiler, or
# PyPI's grpcio-tools, which ships both.
ensure_protoc() {
	if command -v protoc >/dev/null && [ -f /usr/include/google/protobuf/duration.proto ]; then
		PROTOC=(protoc)
		WKT_INCLUDE=/usr/include
		return
	fi
	if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler libprotobuf-dev >/dev/null
		PROTOC=(protoc)
		WKT_INCLUDE=/usr/include
		return
	fi
	local venv="${XDG_CACHE_HOME:-$HOME/.cache}/breeze/grpcio-tools"
	if [ ! -x "$venv/bin/python" ]; then
		python3 -m venv "$venv"
		"$venv/bin/pip" install -q grpcio-tools
	fi
	PROTOC=("$venv/bin/python" -m grpc_tools.protoc)
	WKT_INCLUDE="$("$venv/bin/python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
}

protos() {
	ensure_protoc
	local bin
	bin="$(mktemp -d)"
	trap 'rm -rf "$bin"' RETURN
	# Built from within the module, so protoc-gen-go is exactly the
	# google.golang.org/protobuf version go.mod requires (the generated code
	# and the runtime must agree).
	(cd "$root" && go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go)

	cd "$root/protos"
	local files
	mapfile -t files < <(find . -name '*.proto' -printf '%P\n' | sort)
	PATH="$bin:$PATH" "${PROTOC[@]}" \
		-I . -I "$WKT_INCLUDE" \
		--go_out=. --go_opt=paths=source_relative \
		"${files[@]}"
	echo "generated: $(printf '%s ' "${files[@]/%.proto/.pb.go}")"
}

target="${1:-protos}"
case "$target" in
protos) protos ;;
*)
	echo "usage: $0 [protos]" >&2
	exit 2
	;;
esac
