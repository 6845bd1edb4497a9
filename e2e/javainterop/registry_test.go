package javainterop

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// Apache Dubbo Java 3.3 providers registering through Dubbo's own
// ZooKeeper registry, interface-level, application-level with ZooKeeper as
// the metadata report, and application-level with local metadata (Dubbo
// Java's default: Breeze calls the provider's MetadataService for its
// interfaces): what they write is compared with (or,
// with BREEZE_CAPTURE=1, written to) registry/testdata/dubbo-java-3.3.6/,
// `breeze registry export` finds both providers in it, and dubbo-go
// consumers reach each through `breeze run` fed by `breeze xds
// -zookeeper` (version subsets on the registry's labels, no static
// endpoint).
func TestJavaZooKeeperRegistrations(t *testing.T) {
	zkServer := harness.StartZooKeeper(t)
	ps := launchJavaProviders(t,
		javaProviderSpec{Name: "java-iface", Version: "1.0.0", ZooKeeper: zkServer.Addr, RegisterMode: "interface", Application: "java-iface", MetadataType: "local"},
		javaProviderSpec{Name: "java-app", Version: "2.0.0", ZooKeeper: zkServer.Addr, RegisterMode: "instance", Application: "java-app", MetadataType: "remote"},
		javaProviderSpec{Name: "java-local", Version: "3.0.0", ZooKeeper: zkServer.Addr, RegisterMode: "instance", Application: "java-local", MetadataType: "local"})
	waitJavaProviders(t, ps...)
	conn, _, err := zk.Connect([]string{zkServer.Addr}, 10*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Every node with its data, for the capture and the failure messages.
	var tree strings.Builder
	var walk func(p string)
	walk = func(p string) {
		data, _, err := conn.Get(p)
		if err != nil {
			return
		}
		tree.WriteString(p + " = " + string(data) + "\n")
		children, _, _ := conn.Children(p)
		slices.Sort(children)
		for _, c := range children {
			walk(strings.TrimSuffix(p, "/") + "/" + c)
		}
	}
	// Registration follows READY closely, not before it: wait for both.
	deadline := time.Now().Add(60 * time.Second)
	for {
		tree.Reset()
		walk("/")
		if strings.Contains(tree.String(), "/services/java-app/") && strings.Contains(tree.String(), "/services/java-local/") &&
			strings.Contains(tree.String(), "/providers/dubbo%3A%2F%2F") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Dubbo Java registered no interface-level provider or no java-app or java-local instance in 60s; ZooKeeper holds:\n%s", tree.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	providers, _, err := conn.Children("/dubbo/" + greeter.Interface + "/providers")
	if err != nil || len(providers) != 1 {
		t.Fatalf("interface-level providers: %v %v, want one", providers, err)
	}
	dir := filepath.Join(harness.RepoDir(), "registry", "testdata", "dubbo-java-3.3.6")
	if os.Getenv("BREEZE_CAPTURE") == "1" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range map[string]string{"interface-provider.txt": providers[0] + "\n", "tree.txt": tree.String()} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("captured into %s", dir)
	} else {
		stored, err := os.ReadFile(filepath.Join(dir, "interface-provider.txt"))
		if err != nil {
			t.Fatalf("%v: run with BREEZE_CAPTURE=1", err)
		}
		if got, want := paramKeys(t, providers[0]), paramKeys(t, string(stored)); !slices.Equal(got, want) {
			t.Errorf("Dubbo Java registers a provider with the parameters %v; the capture the unit tests read has %v: capture again (BREEZE_CAPTURE=1)", got, want)
		}
	}

	// What Breeze makes of it: the three providers, one interface-level,
	// one application-level with its MetadataInfo from Dubbo's metadata
	// report, one with its MetadataInfo from its MetadataService.
	out, err := exec.Command(harness.BreezeBin(t), "registry", "export", "-zookeeper", zkServer.Addr).CombinedOutput()
	if err != nil {
		t.Fatalf("breeze registry export: %v\n%s", err, out)
	}
	for _, want := range []string{
		"hosts:\n  - " + greeter.Interface,
		"tcp-dubbo: " + itoa(ps[0].Port),
		"tcp-dubbo: " + itoa(ps[1].Port),
		"tcp-dubbo: " + itoa(ps[2].Port),
		"version: 1.0.0",
		"version: 2.0.0",
		"version: 3.0.0",
		"dubbo.metadata.storage-type: local",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("breeze registry export wrote no %q:\n%s\nZooKeeper holds:\n%s", want, out, tree.String())
		}
	}

	rulesDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(rulesDir, "greeter.yaml"), []byte(versionRules), 0o644); err != nil {
		t.Fatal(err)
	}
	xdsAddr := harness.Addr(harness.FreePort(t))
	xds := harness.Start(t, "breeze xds", harness.BreezeBin(t), "xds", "-dir", rulesDir, "-zookeeper", zkServer.Addr, "-listen", xdsAddr)
	if err := harness.WaitAccepting(xdsAddr, xds, 60*time.Second); err != nil {
		t.Fatalf("breeze xds: %v\n%s", err, xds.Output())
	}
	proxy := harness.StartProxyVars(t, registryRunnerConfig, map[string]interface{}{"xds": xdsAddr}, nil)
	for _, c := range []struct{ version, provider string }{{"1.0.0", "java-iface"}, {"2.0.0", "java-app"}, {"3.0.0", "java-local"}} {
		client := harness.StartClient(t, proxy.Addr, harness.ClientSpec{Version: c.version})
		for i := range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, err := client.Whoami(ctx, nil)
			cancel()
			if err != nil || r.Provider != c.provider {
				t.Fatalf("version %s, call %d: answered by %q (%v), want %s", c.version, i+1, r.Provider, err, c.provider)
			}
		}
	}
}

// registryRunnerConfig names only the xDS server and the route table.
const registryRunnerConfig = `
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
      route_config_name: ` + greeter.Interface + `_20880
      initial_fetch_timeout: 20s
`

// versionRules: calls for version 2.0.0 (3.0.0) to the registry's
// version=2.0.0 (3.0.0) providers, the rest to version=1.0.0.
const versionRules = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: ` + greeter.Interface + `
  subsets:
  - {name: v1, labels: {version: 1.0.0}}
  - {name: v2, labels: {version: 2.0.0}}
  - {name: v3, labels: {version: 3.0.0}}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: greeter}
spec:
  hosts: [` + greeter.Interface + `]
  routes:
  - {name: v2, match: {attributes: {version: {exact: 2.0.0}}}, route: [{destination: {host: ` + greeter.Interface + `, subset: v2}}]}
  - {name: v3, match: {attributes: {version: {exact: 3.0.0}}}, route: [{destination: {host: ` + greeter.Interface + `, subset: v3}}]}
  - {name: v1, route: [{destination: {host: ` + greeter.Interface + `, subset: v1}}]}
`

func itoa(n int) string { return strconv.Itoa(n) }

// paramKeys lists the parameter names of a URL-encoded provider URL.
func paramKeys(t *testing.T, node string) []string {
	t.Helper()
	u, err := url.QueryUnescape(strings.TrimSpace(node))
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
