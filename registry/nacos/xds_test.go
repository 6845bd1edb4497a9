package nacos

import (
	"testing"
	"time"

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

	registrytest.ServesVersionSubsets(t, &Registry{Servers: servers, ListInterval: 100 * time.Millisecond}, greeter, "Greet", func() {
		newClient(t, ns.Addr).registerAt(t, "10.0.0.3", serviceName("2.0.0"), 20880, 1, providerMetadata("2.0.0"))
	})
}
