# syntax=docker/dockerfile:1
#
# Breeze images. Targets:
#   envoy        envoyproxy/envoy:contrib-v1.36.2 + breeze.so (docker compose, plain Envoy)
#   istio-proxy  istio/proxyv2:1.28.x + breeze.so (the sidecar image of sidecar.istio.io/proxyImage)
#   plugin       breeze.so alone, at /breeze.so (an image volume for the stock istio/proxyv2)
#   demo-peers   the dubbo-go provider and consumer of e2e/ (the compose and Istio demos)
#   controller   the breeze binary at /breeze, ENTRYPOINT breeze controller (the Helm chart's image)
#
#   docker build --target envoy       -t breeze-envoy:dev .
#   docker build --target istio-proxy -t REGISTRY/breeze/proxyv2:1.28.3-breeze .
#   docker build --target controller  -t REGISTRY/breeze/breeze:dev .
#
# A Go plugin is built against one Envoy Go API, and works only in that
# Envoy. ENVOY picks the build target (the README's version table,
# internal/release): 1.36 (go.mod: github.com/envoyproxy/envoy v1.36.2) for
# the contrib image v1.36.x and Istio 1.28.x, the default; 1.39
# (envoy-1.39.mod: v1.39.0) for contrib v1.39.x and Istio 1.31.x:
#
#   docker build --target istio-proxy --build-arg ENVOY=1.39 \
#     --build-arg ISTIO_PROXY_IMAGE=istio/proxyv2:1.31.4 -t REGISTRY/breeze/proxyv2:1.31.4-breeze .
#   docker build --target envoy --build-arg ENVOY=1.39 \
#     --build-arg ENVOY_IMAGE=envoyproxy/envoy:contrib-v1.39.0 -t breeze-envoy:1.39 .
#
# The envoy and istio-proxy stages refuse a base image whose Envoy is not
# ENVOY's. breeze.so must not need a newer glibc than the images it is
# loaded into: the contrib images (1.36 and 1.39) are Ubuntu 22.04 (glibc
# 2.35), proxyv2 1.28 and 1.31 Ubuntu 24.04 (2.39). So it is built on
# Ubuntu 22.04, with the Go toolchain copied from the official image
# (golang:*-bookworm itself is glibc 2.36).

ARG GO_VERSION=1.26
ARG ENVOY=1.36
ARG ENVOY_IMAGE=envoyproxy/envoy:contrib-v1.36.2
ARG ISTIO_PROXY_IMAGE=istio/proxyv2:1.28.3

FROM golang:${GO_VERSION}-bookworm AS go

# breeze.so, with cgo, against glibc 2.35.
FROM ubuntu:22.04 AS build-plugin
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev binutils ca-certificates git \
 && rm -rf /var/lib/apt/lists/*
COPY --from=go /usr/local/go /usr/local/go
ENV PATH=/usr/local/go/bin:$PATH CGO_ENABLED=1 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
WORKDIR /src
COPY . .
# Which Breeze this is, for the line the plugin logs when Envoy loads it
# (the context has no .git): --build-arg BREEZE_COMMIT=$(git rev-parse HEAD),
# and BREEZE_VERSION=v0.4.0 for a release.
ARG BREEZE_VERSION=
ARG BREEZE_COMMIT=
# The build target's go.mod: go.mod for 1.36, envoy-<ENVOY>.mod otherwise.
ARG ENVOY
RUN --mount=type=cache,target=/root/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    modfile=go.mod; if [ "${ENVOY}" != 1.36 ]; then modfile="envoy-${ENVOY}.mod"; fi \
 && test -f "$modfile" || { echo "ENVOY=${ENVOY}: no $modfile; Breeze builds for the targets of the README's version table"; exit 1; } \
 && go build -modfile="$modfile" -trimpath -buildmode=c-shared \
      -ldflags "-X github.com/breeze-mesh/breeze/internal/buildinfo.version=${BREEZE_VERSION} -X github.com/breeze-mesh/breeze/internal/buildinfo.commit=${BREEZE_COMMIT}" \
      -o /out/breeze.so ./cmd/breeze-plugin \
 && bash scripts/check-plugin.sh /out/breeze.so 2.35

# The demo's dubbo-go peers: pure Go, no cgo.
FROM golang:${GO_VERSION}-bookworm AS build-peers
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    cd e2e && go build -trimpath -o /out/provider ./cmd/provider && go build -trimpath -o /out/consumer ./cmd/consumer

# The breeze command, for `breeze controller`. Not CGO_ENABLED=0: it links
# the standalone host (`breeze run`), which drives Envoy's Go shim through
# cgo. So it is built with cgo on the plugin's Ubuntu 22.04 (glibc 2.35;
# the same layers as build-plugin up to COPY) and runs on a base with a
# glibc at least as new.
FROM ubuntu:22.04 AS build-controller
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev binutils ca-certificates git \
 && rm -rf /var/lib/apt/lists/*
COPY --from=go /usr/local/go /usr/local/go
ENV PATH=/usr/local/go/bin:$PATH CGO_ENABLED=1 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
WORKDIR /src
COPY . .
ARG BREEZE_VERSION=
ARG BREEZE_COMMIT=
RUN --mount=type=cache,target=/root/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-X github.com/breeze-mesh/breeze/internal/buildinfo.version=${BREEZE_VERSION} -X github.com/breeze-mesh/breeze/internal/buildinfo.commit=${BREEZE_COMMIT}" -o /out/breeze ./cmd/breeze

# distroless base: glibc 2.36 (Debian 12) and CA certificates, no shell.
# A numeric user, so that the chart's runAsNonRoot can be checked by the
# kubelet (65532, distroless' nonroot, the chart's runAsUser).
FROM gcr.io/distroless/base-debian12:nonroot AS controller
COPY --from=build-controller /out/breeze /breeze
USER 65532:65532
ENTRYPOINT ["/breeze", "controller"]

FROM ubuntu:22.04 AS demo-peers
COPY --from=build-peers /out/provider /out/consumer /usr/local/bin/

FROM scratch AS plugin
COPY --from=build-plugin /out/breeze.so /breeze.so

# Not under /etc/istio/proxy: the sidecar mounts an emptyDir there.
FROM ${ISTIO_PROXY_IMAGE} AS istio-proxy
ARG ENVOY
# "envoy  version: <sha>/1.39.1-dev/Clean/RELEASE/BoringSSL": a plugin built
# for another Envoy would be loaded and misbehave, so the image is refused.
RUN envoy --version | grep -q "/${ENVOY}\." \
 || { echo "$(envoy --version): not Envoy ${ENVOY}, which breeze.so is built for (--build-arg ENVOY, ISTIO_PROXY_IMAGE)"; exit 1; }
COPY --from=build-plugin /out/breeze.so /usr/local/lib/breeze/breeze.so
# Envoy must run Go plugins with it; pilot-agent passes its environment on.
ENV GODEBUG=cgocheck=0

FROM ${ENVOY_IMAGE} AS envoy
ARG ENVOY
RUN envoy --version | grep -q "/${ENVOY}\." \
 || { echo "$(envoy --version): not Envoy ${ENVOY}, which breeze.so is built for (--build-arg ENVOY, ENVOY_IMAGE)"; exit 1; }
COPY --from=build-plugin /out/breeze.so /usr/local/lib/breeze/breeze.so
COPY envoy-config/envoy.yaml /etc/envoy/envoy.yaml
ENV GODEBUG=cgocheck=0
