package nacos

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/internal/registrytest"
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
	dir, served := registrytest.ServeWithDirectory(t, &Registry{Servers: servers, ListInterval: 100 * time.Millisecond})
	waitFor := func(want string) {
		t.Helper()
		served.WaitFor(t, routeName, cluster, want)
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
