// Package registry holds the end-to-end tests of Dubbo service registries:
// real dubbo-go providers registering in a real ZooKeeper or a real Nacos
// (rnacos) through dubbo-go's own registries, `breeze xds -zookeeper` or
// `-nacos` following them, `breeze run` taking routes and endpoints from
// it, with no static endpoint at all.
//
// Run from e2e/: go test -race ./registry/
package registry

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const (
	host      = greeter.Interface // the registry's host rule: the interface name
	routeName = host + "_20880"
)

// runnerConfig names only the xDS server and the route table.
const runnerConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: registry
    codec: dubbo
    xds:
      address: "{{index .Extra "xds"}}"
      node_id: e2e
      route_config_name: ` + routeName + `
      initial_fetch_timeout: 20s
`

// Version-subset routing on the registry's version label: calls for
// service version 2.0.0 to the DestinationRule subset v2, the rest to v1.
const rules = `apiVersion: networking.istio.io/v1
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
  - {name: v2, match: {attributes: {version: {exact: 2.0.0}}}, route: [{destination: {host: ` + host + `, subset: v2}}]}
  - {name: v1, route: [{destination: {host: ` + host + `, subset: v1}}]}
`

// startControlPlane runs `breeze xds -dir DIR -zookeeper ADDR`.
func startControlPlane(t *testing.T, dir, zkAddr string) string {
	t.Helper()
	addr := harness.Addr(harness.FreePort(t))
	p := harness.Start(t, "breeze xds", harness.BreezeBin(t), "xds", "-dir", dir, "-zookeeper", zkAddr, "-listen", addr)
	if err := harness.WaitAccepting(addr, p, 60*time.Second); err != nil {
		t.Fatalf("breeze xds: %v\n%s", err, p.Output())
	}
	return addr
}

// untilServedBy calls until a reply comes from provider want, and returns
// how many calls that took and how long. Calls may fail meanwhile (a
// subset without endpoints yet): the last error is reported on timeout.
func untilServedBy(t *testing.T, c *harness.Client, want string, within time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	var seen []string
	var lastErr error
	for n := 1; ; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := c.Whoami(ctx, nil)
		cancel()
		if err == nil && r.Provider == want {
			return n, time.Since(start)
		}
		if err != nil {
			lastErr = err
		} else if !slices.Contains(seen, r.Provider) {
			seen = append(seen, r.Provider)
		}
		if time.Since(start) > within {
			t.Fatalf("no reply from %s within %s (%d calls, replies from %v, last error: %v)", want, within, n, seen, lastErr)
		}
	}
}

// servedOnlyBy makes n calls and fails unless every one succeeds and comes
// from one of want.
func servedOnlyBy(t *testing.T, c *harness.Client, n int, want ...string) {
	t.Helper()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := c.Whoami(ctx, nil)
		cancel()
		if err != nil {
			t.Fatalf("call %d of %d: %v", i+1, n, err)
		}
		if !slices.Contains(want, r.Provider) {
			t.Fatalf("call %d of %d answered by %s (version %q), want one of %v", i+1, n, r.Provider, r.Version, want)
		}
	}
}

// The scenarios with dubbo-go providers registering through
// dubbo-go's own ZooKeeper registry, interface-level and
// application-level: provider add, provider kill, version subsets.
func TestZooKeeperRegistry(t *testing.T) {
	harness.BreezeBin(t)
	zkServer := harness.StartZooKeeper(t)
	// A short session: a killed provider's node goes within ~1s.
	provider := func(name, version, kind string) *harness.Provider {
		return harness.StartProvider(t, harness.ProviderSpec{Name: name, Versions: []string{version},
			ZooKeeper: zkServer.Addr, RegistryType: kind, Application: "greeter-" + name, RegistryTimeout: time.Second})
	}
	v1a := provider("v1-a", "1.0.0", "interface")

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "greeter.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	xds := startControlPlane(t, dir, zkServer.Addr)
	proxy := harness.StartProxyVars(t, runnerConfig, map[string]interface{}{"xds": xds}, nil)
	c1 := harness.StartClient(t, proxy.Addr, harness.ClientSpec{Version: "1.0.0"})
	c2 := harness.StartClient(t, proxy.Addr, harness.ClientSpec{Version: "2.0.0"})

	n, d := untilServedBy(t, c1, "v1-a", 30*time.Second)
	t.Logf("first call through the registry's endpoints answered by v1-a after %d calls, %s", n, d.Round(time.Millisecond))
	servedOnlyBy(t, c1, 20, "v1-a")

	// Provider add: a second 1.0.0 provider gets traffic.
	registered := time.Now()
	provider("v1-b", "1.0.0", "interface")
	untilServedBy(t, c1, "v1-b", 30*time.Second)
	t.Logf("provider add: v1-b answered %s after its READY (registration included)", time.Since(registered).Round(time.Millisecond))

	// Version subsets: 2.0.0 calls go to the 2.0.0 provider only (an
	// application-level one), 1.0.0 calls never do (dubbo-go would answer
	// a call for a version it does not export with an error).
	registered = time.Now()
	provider("v2", "2.0.0", "service")
	untilServedBy(t, c2, "v2", 30*time.Second)
	t.Logf("application-level provider v2 answered %s after its READY", time.Since(registered).Round(time.Millisecond))
	servedOnlyBy(t, c2, 20, "v2")
	servedOnlyBy(t, c1, 20, "v1-a", "v1-b")

	// Provider kill: its session expires, its node goes, and no call
	// goes there any more.
	killed := time.Now()
	v1a.Proc.KillAndWait(t)
	conn, _, err := zk.Connect([]string{zkServer.Addr}, 10*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for {
		names, _, err := conn.Children("/dubbo/" + greeter.Interface + "/providers")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(names, func(n string) bool { return strings.Contains(n, fmt.Sprintf("%%3A%d%%2F", v1a.Port)) }) {
			break
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("v1-a's node still registered 30s after the kill: %v", names)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("provider kill: v1-a's node gone %s after the kill", time.Since(killed).Round(time.Millisecond))
	// What Breeze serves follows within the push; calls that met the dead
	// provider before are over by then. From then on, v1-b answers alone.
	var after []string
	deadline := time.Now().Add(10 * time.Second)
	for consecutive := 0; consecutive < 30; {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := c1.Whoami(ctx, nil)
		cancel()
		if err == nil && r.Provider == "v1-b" {
			consecutive++
		} else {
			consecutive = 0
			after = append(after, fmt.Sprintf("%s %v", r.Provider, err))
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after v1-a's node went, calls still fail or reach others: %v", after)
		}
	}
	t.Logf("after v1-a's node went: %d calls before 30 in a row from v1-b (%v)", len(after), after)
	servedOnlyBy(t, c1, 50, "v1-b")
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// The provider registrations of dubbo-go 3.3 as they are in ZooKeeper:
// compared with (or, with BREEZE_CAPTURE=1, written to)
// registry/testdata/dubbo-go-3.3.0/, which the registry's unit tests read.
func TestCaptureDubboGoRegistrations(t *testing.T) {
	zkServer := harness.StartZooKeeper(t)
	harness.StartProvider(t, harness.ProviderSpec{Name: "iface", Versions: []string{"1.0.0"}, ZooKeeper: zkServer.Addr, RegistryType: "interface", Application: "greeter-iface"})
	harness.StartProvider(t, harness.ProviderSpec{Name: "app", Versions: []string{"2.0.0"}, ZooKeeper: zkServer.Addr, RegistryType: "service", Application: "greeter-app"})
	conn, _, err := zk.Connect([]string{zkServer.Addr}, 10*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	providers, _, err := conn.Children("/dubbo/" + greeter.Interface + "/providers")
	if err != nil || len(providers) != 1 {
		t.Fatalf("interface-level providers: %v %v, want one", providers, err)
	}
	instances, _, err := conn.Children("/services/greeter-app")
	if err != nil || len(instances) != 1 {
		t.Fatalf("application-level instances: %v %v, want one", instances, err)
	}
	instance, _, err := conn.Get("/services/greeter-app/" + instances[0])
	if err != nil {
		t.Fatal(err)
	}
	revisions, _, err := conn.Children("/dubbo/greeter-app")
	if err != nil || len(revisions) != 1 {
		t.Fatalf("MetadataInfo under /dubbo/greeter-app: %v %v, want one revision", revisions, err)
	}
	metadata, _, err := conn.Get("/dubbo/greeter-app/" + revisions[0])
	if err != nil {
		t.Fatal(err)
	}
	mapping, _, err := conn.Get("/dubbo/mapping/" + greeter.Interface)
	if err != nil {
		t.Fatal(err)
	}
	captured := map[string]string{
		"interface-provider.txt": providers[0] + "\n",
		"instance.json":          string(instance) + "\n",
		"metadata-info.json":     string(metadata) + "\n",
		"mapping.txt":            string(mapping) + "\n",
		"paths.txt": "/dubbo/" + greeter.Interface + "/providers/<interface-provider.txt>\n" +
			"/services/greeter-app/" + instances[0] + " = <instance.json>\n" +
			"/dubbo/greeter-app/" + revisions[0] + " = <metadata-info.json>\n" +
			"/dubbo/mapping/" + greeter.Interface + " = <mapping.txt>\n",
	}
	dir := filepath.Join(harness.RepoDir(), "registry", "testdata", "dubbo-go-3.3.0")
	if os.Getenv("BREEZE_CAPTURE") == "1" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range captured {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("captured into %s", dir)
		return
	}
	// Timestamps, pids, ports and revisions differ from run to run; the
	// parameters written do not.
	keys := func(nodeName string) []string {
		u, err := url.QueryUnescape(strings.TrimSpace(nodeName))
		if err != nil {
			t.Fatal(err)
		}
		_, q, _ := strings.Cut(u, "?")
		v, err := url.ParseQuery(q)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for k := range v {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	stored, err := os.ReadFile(filepath.Join(dir, "interface-provider.txt"))
	if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no capture in %s: run with BREEZE_CAPTURE=1", dir)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(providers[0]), keys(string(stored)); !slices.Equal(got, want) {
		t.Errorf("dubbo-go registers a provider with the parameters %v; the capture the unit tests read has %v: capture again (BREEZE_CAPTURE=1)", got, want)
	}
}

// A dubbo-go 3.3 provider registered application-level with its metadata
// kept local (metadata-type local, its MetadataService over dubbo on a
// port of its own, which its instance node names in
// dubbo.metadata-service.url-params): `breeze registry export` finds its
// interface by calling that MetadataService.
func TestZooKeeperLocalMetadataDubboGo(t *testing.T) {
	zkServer := harness.StartZooKeeper(t)
	metadataPort := harness.FreePort(t)
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "v3", Versions: []string{"3.0.0"},
		ZooKeeper: zkServer.Addr, RegistryType: "service", Application: "greeter-local", MetadataServicePort: metadataPort})
	conn, _, err := zk.Connect([]string{zkServer.Addr}, 10*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var instance []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		if names, _, err := conn.Children("/services/greeter-local"); err == nil && len(names) == 1 {
			if instance, _, err = conn.Get("/services/greeter-local/" + names[0]); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dubbo-go registered no greeter-local instance in 30s:\n%s", p.Proc.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("instance node: %s", instance)
	out, err := exec.Command(harness.BreezeBin(t), "registry", "export", "-zookeeper", zkServer.Addr).CombinedOutput()
	if err != nil {
		t.Fatalf("breeze registry export: %v\n%s", err, out)
	}
	for _, want := range []string{"hosts:\n  - " + greeter.Interface, "version: 3.0.0", fmt.Sprintf("tcp-dubbo: %d", p.Port), "dubbo.metadata.storage-type: local"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("breeze registry export wrote no %q:\n%s\n(the instance node: %s)", want, out, instance)
		}
	}
}
