package zookeeper

import (
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/registry/internal/registrytest"
	"github.com/breeze-mesh/breeze/registry/zookeeper/zktest"
)

// What `breeze xds -dir DIR -zookeeper ADDR` serves: the registry's
// interface as an EDS cluster with a default route, and a MetaRouter and
// DestinationRule from the directory routing by the registry's `version`
// label.
func TestServedWithDirectory(t *testing.T) {
	zs := zktest.Start(t)
	servers := []string{zs.Addr}
	register(t, servers, 10*time.Second, providerURL("10.0.0.1:20880", "1.0.0"))
	register(t, servers, 10*time.Second, providerURL("10.0.0.2:20881", "2.0.0")+"&weight=50")

	registrytest.ServesVersionSubsets(t, &Registry{Servers: servers}, greeter, "sayHi", func() {
		register(t, servers, 10*time.Second, providerURL("10.0.0.3:20880", "2.0.0"))
	})
}
