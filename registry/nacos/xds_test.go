package nacos

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
	"github.com/breeze-mesh/breeze/registry/nacos/nacostest"
)

// What `breeze xds -dir DIR -nacos ADDR` serves: the registry's
// interface as an EDS cluster with a default route, and a MetaRouter and
// DestinationRule from the directory routing by the registry's `version`
// label.
func TestServedWithDirectory(t *testing.T) {
	ns := nacostest.Start(t)
	servers := []string{ns.Addr}
	newClient(t, ns.Addr).registerAt(t, "10.0.0.1", serviceName("1.0.0"), 20880, 1, providerMetadata("1.0.0"))
	weighted := providerMetadata("2.0.0")
	weighted["weight"] = "50"
	newClient(t, ns.Addr).registerAt(t, "10.0.0.2", serviceName("2.0.0"), 20881, 1, weighted)

	host := registry.Host(greeter)
	routeName, cluster := host+"_20880", "outbound|20880||"+host
	dir := t.TempDir()

	var (
		mu     sync.Mutex
		served controlplane.Resources
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	src := controlplane.Sources(
		&controlplane.DirSource{Dir: dir, Debounce: 10 * time.Millisecond},
		&registry.Source{Registry: &Registry{Servers: servers, ListInterval: 100 * time.Millisecond}},
	)
	srv := controlplane.NewServer(nil)
	go func() {
		done <- controlplane.Run(ctx, src, srv, nil, func(r controlplane.Resources, _ []controlplane.Problem) {
			mu.Lock()
			served = r
			mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// describe says what is served for the interface: its routes (name →
	// subset), its endpoints (address:port weight version).
	describe := func() string {
		mu.Lock()
		defer mu.Unlock()
		var routes, eps []string
		for _, r := range served.Routes[routeName].GetRoutes() {
			a := r.GetRoute()
			routes = append(routes, fmt.Sprintf("%s→%s%v", r.GetName(), a.GetCluster(), a.GetSubset()))
		}
		if _, ok := served.Clusters[cluster]; !ok {
			return fmt.Sprintf("no cluster %s (clusters: %v)", cluster, slices.Sorted(maps.Keys(served.Clusters)))
		}
		for _, l := range served.Endpoints[cluster].GetEndpoints() {
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
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for describe() != want {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %q, served: %q", want, describe())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("routes [default→" + cluster + "map[]] endpoints [10.0.0.1:20880 w100 1.0.0/provider 10.0.0.2:20881 w50 2.0.0/provider]")

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
  - {name: hi-v2, match: {attributes: {method: {exact: Greet}}}, route: [{destination: {host: ` + host + `, subset: v2}}]}
  - {name: rest-v1, route: [{destination: {host: ` + host + `, subset: v1}}]}
`
	if err := os.WriteFile(filepath.Join(dir, "greeter.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("routes [hi-v2→" + cluster + "map[version:2.0.0] rest-v1→" + cluster + "map[version:1.0.0]] endpoints [10.0.0.1:20880 w100 1.0.0/provider 10.0.0.2:20881 w50 2.0.0/provider]")

	newClient(t, ns.Addr).registerAt(t, "10.0.0.3", serviceName("2.0.0"), 20880, 1, providerMetadata("2.0.0"))
	waitFor("routes [hi-v2→" + cluster + "map[version:2.0.0] rest-v1→" + cluster + "map[version:1.0.0]] endpoints [10.0.0.1:20880 w100 1.0.0/provider 10.0.0.2:20881 w50 2.0.0/provider 10.0.0.3:20880 w100 2.0.0/provider]")
}
