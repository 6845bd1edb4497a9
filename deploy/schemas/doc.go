// Package schemas holds no code: its tests check the deployment files Breeze
// ships (envoy-config/, the Dockerfile) against the schemas of the tools that
// read them — Kubernetes' and Istio's client types, Docker Compose's
// specification, BuildKit's Dockerfile parser — and against each other. It is
// its own module so that those dependencies stay out of Breeze's.
package schemas
