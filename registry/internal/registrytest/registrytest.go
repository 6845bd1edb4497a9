// Package registrytest runs the control plane on a directory and a
// registry, as `breeze xds -dir DIR -<registry> ADDR` does, for the tests
// of each registry: they check the same served routes and endpoints.
package registrytest

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/registry"
)

// Served is what the control plane last served.
type Served struct {
	mu        sync.Mutex
	resources controlplane.Resources
}

// ServeWithDirectory runs the control plane on a directory (returned,
// empty) and reg until the test ends.
func ServeWithDirectory(t *testing.T, reg registry.Registry) (dir string, served *Served) {
	t.Helper()
	dir = t.TempDir()
	served = &Served{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	src := controlplane.Sources(
		&controlplane.DirSource{Dir: dir, Debounce: 10 * time.Millisecond},
		&registry.Source{Registry: reg},
	)
	srv := controlplane.NewServer(nil)
	go func() {
		done <- controlplane.Run(ctx, src, srv, nil, func(r controlplane.Resources, _ []controlplane.Problem) {
			served.mu.Lock()
			served.resources = r
			served.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return dir, served
}

// Describe says what is served for the interface of route configuration
// routeName and cluster: its routes (name → subset), its endpoints
// (address:port weight version/side).
func (s *Served) Describe(routeName, cluster string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var routes, eps []string
	for _, r := range s.resources.Routes[routeName].GetRoutes() {
		a := r.GetRoute()
		routes = append(routes, fmt.Sprintf("%s→%s%v", r.GetName(), a.GetCluster(), a.GetSubset()))
	}
	if _, ok := s.resources.Clusters[cluster]; !ok {
		return fmt.Sprintf("no cluster %s (clusters: %v)", cluster, slices.Sorted(maps.Keys(s.resources.Clusters)))
	}
	for _, l := range s.resources.Endpoints[cluster].GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			labels := e.GetMetadata().GetFilterMetadata()["envoy.lb"].GetFields()
			eps = append(eps, fmt.Sprintf("%s:%d w%d %s/%s", sa.GetAddress(), sa.GetPortValue(), e.GetLoadBalancingWeight().GetValue(),
				labels["version"].GetStringValue(), labels["side"].GetStringValue()))
		}
	}
	slices.Sort(eps)
	return fmt.Sprintf("routes %v endpoints %v", routes, eps)
}

// WaitFor waits until Describe(routeName, cluster) is want, failing the
// test with what is served if it is not within 30s.
func (s *Served) WaitFor(t *testing.T, routeName, cluster, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.Describe(routeName, cluster) != want {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %q, served: %q", want, s.Describe(routeName, cluster))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ServesVersionSubsets is what `breeze xds -dir DIR -<registry>` serves for
// interface iface, whose providers 10.0.0.1:20880 (version 1.0.0) and
// 10.0.0.2:20881 (version 2.0.0, weight 50) reg already holds: an EDS
// cluster with a default route; then a MetaRouter and DestinationRule
// written to the directory, routing method to the registry's version
// 2.0.0 and the rest to 1.0.0; then a provider 10.0.0.3:20880 (2.0.0) that
// addV2 registers, in the v2 subset.
func ServesVersionSubsets(t *testing.T, reg registry.Registry, iface, method string, addV2 func()) {
	t.Helper()
	host := registry.Host(iface)
	routeName, cluster := host+"_20880", "outbound|20880||"+host
	dir, served := ServeWithDirectory(t, reg)
	endpoints := "endpoints [10.0.0.1:20880 w100 1.0.0/provider 10.0.0.2:20881 w50 2.0.0/provider"
	served.WaitFor(t, routeName, cluster, "routes [default→"+cluster+"map[]] "+endpoints+"]")

	rules := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: ` + host + `
  subsets:
  - {name: v1, labels: {version: 1.0.0}}
  - {name: v2, labels: {version: 2.0.0}}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: greeter}
spec:
  hosts: [` + host + `]
  routes:
  - {name: hi-v2, match: {attributes: {method: {exact: ` + method + `}}}, route: [{destination: {host: ` + host + `, subset: v2}}]}
  - {name: rest-v1, route: [{destination: {host: ` + host + `, subset: v1}}]}
`
	if err := os.WriteFile(filepath.Join(dir, "greeter.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	routes := "routes [hi-v2→" + cluster + "map[version:2.0.0] rest-v1→" + cluster + "map[version:1.0.0]] "
	served.WaitFor(t, routeName, cluster, routes+endpoints+"]")

	addV2()
	served.WaitFor(t, routeName, cluster, routes+endpoints+" 10.0.0.3:20880 w100 2.0.0/provider]")
}
