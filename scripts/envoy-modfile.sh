#!/usr/bin/env bash
# Keeps a build target's go.mod (envoy-<ENVOY>.mod, see the Makefile and
# internal/release) in step with go.mod: the same requirements, none older,
# except the modules that make the target what it is (Envoy's Go API and the
# API types its configs are checked with), which it pins itself.
#
#   scripts/envoy-modfile.sh check 1.39   fails, saying what to do, when it is not
#   scripts/envoy-modfile.sh sync 1.39    raises its requirements to go.mod's, then tidies
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: envoy-modfile.sh check|sync ENVOY}
target=${2:?usage: envoy-modfile.sh check|sync ENVOY}
modfile=envoy-$target.mod
[[ -f $modfile ]] || { echo "$modfile: no such build target (internal/release lists them)"; exit 1; }
# Pinned per target: never copied from go.mod.
pinned='^(github\.com/envoyproxy/envoy|github\.com/envoyproxy/go-control-plane/envoy|github\.com/envoyproxy/go-control-plane/contrib|istio\.io/api)$'

# "path version" per requirement of a go.mod file.
requires() { go mod edit -modfile="$1" -json | sed -n 's/^\t\t\t"Path": "\(.*\)",$/\1/p; s/^\t\t\t"Version": "\([^"]*\)",\{0,1\}$/\1/p' | paste -d' ' - -; }

declare -A have
while read -r p v; do have[$p]=$v; done < <(requires "$modfile")
behind=()
while read -r p v; do
  [[ $p =~ $pinned ]] && continue
  h=${have[$p]:-}
  # sort -V orders release and pseudo-versions (v0.0.0-<date>-<hash>) as Go does.
  if [[ -z $h || ( $h != "$v" && $(printf '%s\n%s\n' "$h" "$v" | sort -V | tail -1) == "$v" ) ]]; then
    behind+=("$p@$v")
  fi
done < <(requires go.mod)

case $mode in
check)
  if ((${#behind[@]})); then
    echo "$modfile lags go.mod: ${behind[*]}"
    echo "run: bash scripts/envoy-modfile.sh sync $target"
    exit 1
  fi
  go mod tidy -modfile="$modfile" -diff || { echo "$modfile is not tidy: run bash scripts/envoy-modfile.sh sync $target"; exit 1; }
  ;;
sync)
  for r in "${behind[@]}"; do go mod edit -modfile="$modfile" -require="$r"; done
  go mod tidy -modfile="$modfile"
  ;;
*)
  echo "usage: envoy-modfile.sh check|sync ENVOY"; exit 2
  ;;
esac
