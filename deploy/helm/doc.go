// Package helm holds no code: its tests render the Helm chart in breeze/
// (Breeze's controller, its CRDs and RBAC) with Helm's own engine, apply
// what it renders to a real kube-apiserver (envtest) with strict field
// validation, and run the controller under the chart's ServiceAccount to
// prove its RBAC is enough, and no more. Its own module, so that Helm stays
// out of Breeze's dependencies.
package helm
