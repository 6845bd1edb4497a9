package nacos

import (
	"flag"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/internal/scaletest"
	"github.com/breeze-mesh/breeze/registry/nacos/nacostest"
)

// BenchmarkScale measures `breeze xds -nacos` with -scale-interfaces
// interfaces (100 unless set) × 10 providers in a real rnacos, end to end
// (registry/internal/scaletest), as registry/zookeeper's BenchmarkScale.
// The registry lists services every ListInterval (DefaultListInterval, 1 s): a new
// interface waits for that list. 100 interfaces by default; 1,000 × 10
// took 107 s on the shared machine once rnacos' health-check answers were
// read as healthy (healthcheck.go; before, the idle registering clients
// reconnected and registered everything again every 5 to 15 s, and the
// set never settled). A benchmark so that `make test` does not run it;
// run it alone, once, on rnacos' release build as the recorded figures
// were (`RNACOS_PROFILE=release bash scripts/nacos-peer.sh install` on a
// machine that has only the tests' debug build):
//
//	go test -run '^$' -bench BenchmarkScale -benchtime 1x -v ./registry/nacos/ [-args -scale-interfaces 1000]
func BenchmarkScale(b *testing.B) {
	ns := nacostest.Start(b)
	scaletest.Measure(b, &nacosRegistrar{addr: ns.Addr},
		scaletest.Options{Interfaces: *scaleInterfaces, PerInterface: 10, Additions: 20, NewInterfaces: 5})
}

var scaleInterfaces = flag.Int("scale-interfaces", 100, "BenchmarkScale: interfaces registered (10 providers each)")

// nacosRegistrar registers instances as dubbo-go 3.3 does
// (providers:<interface>:<version>: services, the URL's parameters as
// metadata), with one client per provider index k: Nacos 2 keeps one
// instance per service and client, tied to its connection.
type nacosRegistrar struct {
	addr  string
	adder naming_client.INamingClient
}

func (n *nacosRegistrar) Registry() registry.Registry {
	return &Registry{Servers: []string{n.addr}}
}

func scaleService(iface string) string { return "providers:" + iface + ":1.0.0:" }

func scaleMetadata(iface string) map[string]string {
	return map[string]string{"application": "scale", "category": "providers", "dubbo": "2.0.2", "interface": iface,
		"methods": "a,b", "path": iface, "protocol": "dubbo", "release": "3.3.0", "side": "provider", "version": "1.0.0"}
}

func namingClient(tb testing.TB, addr string) naming_client.INamingClient {
	tb.Helper()
	host, portText, _ := net.SplitHostPort(addr)
	port, _ := strconv.ParseUint(portText, 10, 16)
	dir := tb.TempDir()
	c, err := clients.NewNamingClient(vo.NacosClientParam{
		ClientConfig: constant.NewClientConfig(constant.WithTimeoutMs(10000), constant.WithLogDir(dir), constant.WithCacheDir(dir),
			constant.WithNotLoadCacheAtStart(true), constant.WithLogLevel("error")),
		ServerConfigs: []constant.ServerConfig{*constant.NewServerConfig(host, port)},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.CloseClient)
	return c
}

// registerScale ignores the SDK's bool: rnacos 0.8.8 does not send the
// "success" field it reads (see the README); errors are errors.
func registerScale(c naming_client.INamingClient, iface, ip string, port int) error {
	_, err := c.RegisterInstance(vo.RegisterInstanceParam{Ip: ip, Port: uint64(port), ServiceName: scaleService(iface),
		Weight: 1, Enable: true, Healthy: true, Ephemeral: true, Metadata: scaleMetadata(iface)})
	return err
}

// Populate registers with perInterface clients at once, each one instance
// of every interface.
func (n *nacosRegistrar) Populate(tb testing.TB, interfaces, perInterface int, addr func(i, k int) (string, int)) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make([]error, perInterface)
	for k := range perInterface {
		c := namingClient(tb, n.addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range interfaces {
				ip, port := addr(i, k)
				if err := registerScale(c, scaletest.Interface(i), ip, port); err != nil {
					errs[k] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// Add registers through one client of its own, kept for every addition
// (each is removed before the next of the same service).
func (n *nacosRegistrar) Add(tb testing.TB, iface, ip string, port int) (time.Time, func() time.Time) {
	tb.Helper()
	if n.adder == nil {
		n.adder = namingClient(tb, n.addr)
	}
	at := time.Now()
	if err := registerScale(n.adder, iface, ip, port); err != nil {
		tb.Fatal(err)
	}
	return at, func() time.Time {
		gone := time.Now()
		if _, err := n.adder.DeregisterInstance(vo.DeregisterInstanceParam{Ip: ip, Port: uint64(port), ServiceName: scaleService(iface), Ephemeral: true}); err != nil {
			tb.Fatal(err)
		}
		return gone
	}
}
