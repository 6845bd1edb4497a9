# Breeze: the two commands a newcomer needs are `make demo` and `make test`.
GO        ?= go
BIN       := bin
RACE      ?= -race
export CGO_ENABLED := 1
# Envoy requires it for Go plugins; the standalone host passes Go pointers the same way.
export GODEBUG := cgocheck=0

.PHONY: all build plugin plugins demo test test-deps test-unit test-envoy-targets test-peers test-e2e check-plugin check-glibc test-deploy test-istiod fuzz vet protos clean bench

all: build plugin

# Which Envoy Go API breeze.so (and breeze, whose `validate` checks configs
# with that Envoy's and Istio's API types) is built against: one target per
# Istio release, each with its own go.mod (internal/release lists them; the
# README's version table too). ENVOY=1.36 is go.mod itself, the default;
# every other target has envoy-<ENVOY>.mod, passed as -modfile. What a
# default target builds goes to bin/, another target's to bin/envoy-<ENVOY>/.
ENVOY          ?= 1.36
ENVOY_TARGETS  := 1.36 1.39
ENVOY_DEFAULT  := 1.36
# The glibc ceiling per target: the oldest glibc of the images that load it
# (contrib Envoy images are Ubuntu 22.04, 2.35; istio/proxyv2 is Ubuntu
# 24.04, 2.39), or Envoy's dlopen fails with "GLIBC_x not found".
MAX_GLIBC_1.36 := 2.35
MAX_GLIBC_1.39 := 2.35
ifeq ($(filter $(ENVOY),$(ENVOY_TARGETS)),)
$(error ENVOY=$(ENVOY): Breeze builds for $(ENVOY_TARGETS) (see docs/adding-a-release.md))
endif
# modflag T: the go command's flag selecting target T's go.mod.
modflag = $(if $(filter $(1),$(ENVOY_DEFAULT)),,-modfile=$(CURDIR)/envoy-$(1).mod)
# outdir T: where target T's binaries go.
outdir  = $(if $(filter $(1),$(ENVOY_DEFAULT)),$(BIN),$(BIN)/envoy-$(1))

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
	$(GO) build $(call modflag,$(ENVOY)) -ldflags '$(LDFLAGS)' -o $(call outdir,$(ENVOY))/breeze ./cmd/breeze

# The Envoy plugin: a shared object Envoy's Go network filter loads.
# make plugin: bin/breeze.so for Envoy 1.36 (Istio 1.28); make plugin
# ENVOY=1.39: bin/envoy-1.39/breeze.so for Envoy 1.39 (Istio 1.31).
plugin:
	$(GO) build $(call modflag,$(ENVOY)) -ldflags '$(LDFLAGS)' -buildmode=c-shared -o $(call outdir,$(ENVOY))/breeze.so ./cmd/breeze-plugin

# breeze.so for every target.
plugins:
	@set -e; for e in $(ENVOY_TARGETS); do $(MAKE) --no-print-directory plugin ENVOY=$$e; done

# Two dubbo-go providers (v1, v2), the standalone runner on its embedded
# default config, and a consumer that prints where its requests went.
demo:
	bash scripts/demo.sh

test: test-deps vet test-unit test-envoy-targets test-peers check-plugin check-glibc test-deploy test-helm test-istiod test-e2e

# gcc, a JDK and Maven, from Debian's packages when missing: no test skips
# for a missing tool, so they must be there. Redis and Envoy's rate-limit
# service for the global rate limit's tests: the service is built once per
# machine, into a cache outside the clone (scripts/ratelimit-peer.sh); so is
# the OpenTelemetry Collector of the tracing tests (scripts/otelcol-peer.sh).
# ZooKeeper for the registry tests: Debian's zookeeperd, else Apache's
# distribution from Maven Central, cached by version (scripts/zookeeper-peer.sh).
# A real kube-apiserver (built from k8s.io/kubernetes) and etcd (Debian's
# etcd-server) for the controller's envtest, likewise once per machine
# (scripts/kube-peer.sh); the tests find them through KUBEBUILDER_ASSETS.
# rnacos (a Nacos-compatible server) for the Nacos registry tests, built with
# cargo once per machine, cached by version (scripts/nacos-peer.sh; its debug
# profile cold, about 6 minutes of CPU, unless a release build is there).
test-deps:
	bash scripts/install-test-deps.sh
	bash scripts/ratelimit-peer.sh install
	bash scripts/otelcol-peer.sh install
	bash scripts/zookeeper-peer.sh install
	bash scripts/nacos-peer.sh install
	bash scripts/kube-peer.sh install

export KUBEBUILDER_ASSETS ?= $(shell bash scripts/kube-peer.sh assets)

# Modules whose go.mod and go.sum must stay tidy: `go mod tidy -diff`
# prints what tidying would change, and fails then.
TIDY_MODULES := . e2e e2e/controller deploy/schemas deploy/helm deploy/istiod

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	@for m in $(TIDY_MODULES); do \
	  (cd $$m && $(GO) mod tidy -diff) || { echo "go.mod of $$m is not tidy: run (cd $$m && $(GO) mod tidy)"; exit 1; }; \
	done
	@# Every other target's go.mod follows go.mod (scripts/envoy-modfile.sh).
	@set -e; for e in $(filter-out $(ENVOY_DEFAULT),$(ENVOY_TARGETS)); do \
	  bash scripts/envoy-modfile.sh check $$e; \
	  $(GO) vet -modfile=envoy-$$e.mod ./...; \
	done

test-unit:
	$(GO) test $(RACE) -count=1 ./...

# Everything that links Envoy's Go shim or checks configs with Envoy's and
# Istio's API types, again against every other target's go.mod: the host
# (Envoy's real Go shim, driven from Go) and the tests that run the proxy
# through it, the plugin's Envoy glue, the deploy checks and the CLI. The
# rest of the tree does not depend on which Envoy it is built for. Only the
# host runs with -race here (it is where the shim's threads meet ours; the
# default pass runs everything with -race). GOFLAGS, so that the go builds
# these tests make (the breeze binary of cmd/breeze's) use the same go.mod.
# cmd/breeze-plugin/sotest builds and loads every target's breeze.so in the
# default pass.
ENVOY_TARGET_PKGS := ./filters/proxy/... ./filters/upstream/... ./internal/... ./cmd/breeze/... ./deploy/...
test-envoy-targets:
	@set -e; for e in $(filter-out $(ENVOY_DEFAULT),$(ENVOY_TARGETS)); do $(MAKE) --no-print-directory test-envoy-target ENVOY=$$e; done

.PHONY: test-envoy-target
test-envoy-target: export GOFLAGS += $(call modflag,$(ENVOY))
test-envoy-target:
	@echo "== Envoy $(ENVOY): $(call modflag,$(ENVOY))"
	$(GO) test $(RACE) -count=1 ./host/...
	$(GO) test -count=1 $(ENVOY_TARGET_PKGS)

# The Thrift interop tests with real Apache Thrift Go and Kitex peers: separate
# modules (codecs/thrift/testdata/peers/README.md), so that their dependencies
# stay out of the root module. peers/peer, the peers themselves, is shared with
# e2e and needs no Breeze; peers follows the root module (a replace), hence
# -mod=mod as in test-deploy.
THRIFT_PEERS := codecs/thrift/testdata/peers
test-peers:
	cd $(THRIFT_PEERS)/peer && $(GO) vet ./...
	cd $(THRIFT_PEERS) && $(GO) vet -mod=mod ./... && $(GO) test -mod=mod $(RACE) -count=1 ./...

# Every target's plugin must export Envoy's entry points...
check-plugin: plugins
	@set -e; for e in $(ENVOY_TARGETS); do $(MAKE) -s --no-print-directory check-plugin-target ENVOY=$$e; done

# ...and need no newer glibc than the images that load it: MAX_GLIBC_<target>
# above; MAX_GLIBC=x.y overrides them all.
MAX_GLIBC ?=
check-glibc: plugins
	@set -e; for e in $(ENVOY_TARGETS); do $(MAKE) -s --no-print-directory check-plugin-target ENVOY=$$e GLIBC=1; done

.PHONY: check-plugin-target
check-plugin-target:
	@echo "== Envoy $(ENVOY): $(call outdir,$(ENVOY))/breeze.so"
	@bash scripts/check-plugin.sh $(call outdir,$(ENVOY))/breeze.so $(if $(GLIBC),$(or $(MAX_GLIBC),$(MAX_GLIBC_$(ENVOY))))

# Shipped deployment files against Kubernetes', Istio's client, Compose's and
# BuildKit's own schemas: a separate module (deploy/schemas), so that their
# dependencies stay out of the root module. -mod=mod: it follows the root
# module (a replace), whose requirements move on without it.
test-deploy:
	cd deploy/schemas && $(GO) vet -mod=mod ./... && $(GO) test -mod=mod $(RACE) -count=1 ./...

# The controller's Helm chart (deploy/helm/breeze), rendered with Helm's own
# engine and installed on envtest's kube-apiserver, the controller running
# under the chart's ServiceAccount: its own module (Helm stays out of the
# root module), -mod=mod as in test-deploy.
test-helm:
	cd deploy/helm && $(GO) vet -mod=mod $(RACE) ./... && $(GO) test -mod=mod $(RACE) -count=1 ./...

# istiod's real config generation (istio.io/istio 1.28.3's pilot, in process)
# on the EnvoyFilters Breeze renders and ships: Breeze lands on exactly the
# Breeze ports' listeners of the right sidecars. Its own module, like
# deploy/schemas, and -mod=mod for the same reason. Istio is a large build
# (deploy/istiod/README.md has the cold and warm times): vet with the test's
# $(RACE), so that both use one compilation of it, not two.
test-istiod:
	cd deploy/istiod && $(GO) vet -mod=mod $(RACE) ./... && $(GO) test -mod=mod $(RACE) -count=1 ./...

# e2e/controller is a module of its own (the Kubernetes client libraries
# stay out of the e2e module and its dubbo-go peers): `breeze controller`
# against envtest's kube-apiserver, with `breeze run` and dubbo-go peers.
test-e2e:
	cd e2e && $(GO) test $(RACE) -count=1 -timeout 20m ./...
	cd e2e/controller && $(GO) test $(RACE) -count=1 -timeout 10m ./...

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
