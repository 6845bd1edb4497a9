# Breeze: the two commands a newcomer needs are `make demo` and `make test`.
GO        ?= go
BIN       := bin
RACE      ?= -race
export CGO_ENABLED := 1
# Envoy requires it for Go plugins; the standalone host passes Go pointers the same way.
export GODEBUG := cgocheck=0

.PHONY: all build plugin demo test test-deps test-unit test-peers test-e2e check-plugin check-glibc test-deploy fuzz vet protos clean bench

all: build plugin

# Which Breeze a binary is: `breeze version` prints it, the plugin logs it
# when Envoy loads it. Go's own VCS stamping records nothing in a git
# worktree or with -buildvcs=false, so the commit is passed here ("-dirty"
# with uncommitted changes); VERSION is the release tag on HEAD, if any
# (make build VERSION=v0.4.0 names one).
BUILDINFO := github.com/breeze-mesh/breeze/internal/buildinfo
VERSION   ?= $(shell git describe --tags --exact-match 2>/dev/null)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell test -z "$$(git status --porcelain 2>/dev/null)" || echo -dirty)
LDFLAGS   := -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT)

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/breeze ./cmd/breeze

# The Envoy plugin: a shared object Envoy's Go network filter loads.
plugin:
	$(GO) build -ldflags '$(LDFLAGS)' -buildmode=c-shared -o $(BIN)/breeze.so ./cmd/breeze-plugin

# Two dubbo-go providers (v1, v2), the standalone runner on its embedded
# default config, and a consumer that prints where its requests went.
demo:
	bash scripts/demo.sh

test: test-deps vet test-unit test-peers check-plugin check-glibc test-deploy test-e2e

# gcc, a JDK and Maven, from Debian's packages when missing: no test skips
# for a missing tool, so they must be there. Redis and Envoy's rate-limit
# service for the global rate limit's tests: the service is built once per
# machine, into a cache outside the clone (scripts/ratelimit-peer.sh).
test-deps:
	bash scripts/install-test-deps.sh
	bash scripts/ratelimit-peer.sh install

# Modules whose go.mod and go.sum must stay tidy: `go mod tidy -diff`
# prints what tidying would change, and fails then.
TIDY_MODULES := . e2e deploy/schemas

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	@for m in $(TIDY_MODULES); do \
	  (cd $$m && $(GO) mod tidy -diff) || { echo "go.mod of $$m is not tidy: run (cd $$m && $(GO) mod tidy)"; exit 1; }; \
	done

test-unit:
	$(GO) test $(RACE) -count=1 ./...

# The Thrift interop tests with real Apache Thrift Go and Kitex peers: separate
# modules (codecs/thrift/testdata/peers/README.md), so that their dependencies
# stay out of the root module. peers/peer, the peers themselves, is shared with
# e2e and needs no Breeze; peers follows the root module (a replace), hence
# -mod=mod as in test-deploy.
THRIFT_PEERS := codecs/thrift/testdata/peers
test-peers:
	cd $(THRIFT_PEERS)/peer && $(GO) vet ./...
	cd $(THRIFT_PEERS) && $(GO) vet -mod=mod ./... && $(GO) test -mod=mod $(RACE) -count=1 ./...

# The plugin must export Envoy's entry points.
check-plugin: plugin
	bash scripts/check-plugin.sh $(BIN)/breeze.so

# ...and need no newer glibc than the images that load it: 2.35 is
# envoyproxy/envoy:contrib-v1.36.2's (Ubuntu 22.04); istio/proxyv2:1.28 has 2.39.
MAX_GLIBC ?= 2.35
check-glibc: plugin
	bash scripts/check-plugin.sh $(BIN)/breeze.so $(MAX_GLIBC)

# Shipped deployment files against Kubernetes', Istio's client, Compose's and
# BuildKit's own schemas: a separate module (deploy/schemas), so that their
# dependencies stay out of the root module. -mod=mod: it follows the root
# module (a replace), whose requirements move on without it.
test-deploy:
	cd deploy/schemas && $(GO) vet -mod=mod ./... && $(GO) test -mod=mod $(RACE) -count=1 ./...

test-e2e:
	cd e2e && $(GO) test $(RACE) -count=1 -timeout 20m ./...

# Longer fuzzing than the seed-corpus run in `make test`: FUZZTIME per target.
FUZZTIME ?= 2m
# Every fuzz target of every decoder, one after another.
fuzz:
	@set -e; for pkg in ./codecs/dubbo ./codecs/thrift ./config; do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

protos:
	bash scripts/gen-protos.sh

# Echo direct, a plain TCP relay, Breeze and stock Envoy's dubbo_proxy and
# thrift_proxy (PROTOS="dubbo thrift") under
# the same load; table in bench/results/latest.md (see bench/README.md).
# QUICK=1: main table only. PROFILE=1: CPU and allocation profiles of Breeze.
# COMPARE=<git ref>: Breeze at that ref against the working tree, same load,
# interleaved, plus allocations per request (Go benchmarks) of both.
bench:
	PROFILE=$(PROFILE) QUICK=$(QUICK) bash scripts/bench.sh

clean:
	rm -rf $(BIN)
