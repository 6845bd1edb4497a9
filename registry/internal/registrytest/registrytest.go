// Package registrytest runs the control plane on a directory and a
// registry, as `breeze xds -dir DIR -<registry> ADDR` does, for the tests
// of each registry: they check the same served routes and endpoints.
package registrytest

import (
	"context"
	"fmt"
	"maps"
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
