package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// nacosGet reads a Nacos open API path (HTTP, v1) as JSON into v, or as
// text when v is a *string.
func nacosGet(t *testing.T, addr, path string, v any) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/nacos/v1" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v: %s", path, resp.Status, err, b)
	}
	if s, ok := v.(*string); ok {
		*s = string(b)
		return
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}

type nacosInstances struct {
	Hosts []map[string]any `json:"hosts"`
}

// nacosHosts lists a service's instances (all of them, healthy or not).
func nacosHosts(t *testing.T, addr, service string) nacosInstances {
	t.Helper()
	var l nacosInstances
	nacosGet(t, addr, "/ns/instance/list?healthyOnly=false&serviceName="+url.QueryEscape(service), &l)
	return l
}

func nacosServices(t *testing.T, addr string) []string {
	t.Helper()
	var l struct {
		Doms []string `json:"doms"`
	}
	nacosGet(t, addr, "/ns/service/list?pageNo=1&pageSize=100", &l)
	slices.Sort(l.Doms)
	return l.Doms
}

// The scenarios with dubbo-go providers registering through
// dubbo-go's own Nacos registry, interface-level and application-level;
// `breeze xds -nacos` and no static endpoint: provider add, provider kill,
// version subsets.
func TestNacosRegistry(t *testing.T) {
	harness.BreezeBin(t)
	nacos := harness.StartNacos(t)
	compat := harness.StartNacosCompat(t, nacos)
	provider := func(name, version, kind string) *harness.Provider {
		return harness.StartProvider(t, harness.ProviderSpec{Name: name, Versions: []string{version},
			Nacos: compat.Addr, RegistryType: kind, Application: "greeter-" + name})
	}
	v1a := provider("v1-a", "1.0.0", "interface")

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "greeter.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := harness.Addr(harness.FreePort(t))
	p := harness.Start(t, "breeze xds", harness.BreezeBin(t), "xds", "-dir", dir, "-nacos", nacos.Addr, "-listen", addr)
	if err := harness.WaitAccepting(addr, p, 60*time.Second); err != nil {
		t.Fatalf("breeze xds: %v\n%s", err, p.Output())
	}
	proxy := harness.StartProxyVars(t, runnerConfig, map[string]interface{}{"xds": addr}, nil)
	c1 := harness.StartClient(t, proxy.Addr, harness.ClientSpec{Version: "1.0.0"})
	c2 := harness.StartClient(t, proxy.Addr, harness.ClientSpec{Version: "2.0.0"})

	n, d := untilServedBy(t, c1, "v1-a", 30*time.Second)
	t.Logf("first call through Nacos' endpoints answered by v1-a after %d calls, %s", n, d.Round(time.Millisecond))
	servedOnlyBy(t, c1, 20, "v1-a")

	// Provider add: found by the next service-list read or pushed (the
	// service exists already).
	registered := time.Now()
	provider("v1-b", "1.0.0", "interface")
	untilServedBy(t, c1, "v1-b", 30*time.Second)
	t.Logf("provider add: v1-b answered %s after its READY (registration included)", time.Since(registered).Round(time.Millisecond))

	// Version subsets, the 2.0.0 provider application-level (a new Nacos
	// service: found by the service-list poll, every 5s).
	registered = time.Now()
	provider("v2", "2.0.0", "service")
	untilServedBy(t, c2, "v2", 30*time.Second)
	t.Logf("application-level provider v2 answered %s after its READY", time.Since(registered).Round(time.Millisecond))
	servedOnlyBy(t, c2, 20, "v2")
	servedOnlyBy(t, c1, 20, "v1-a", "v1-b")

	// Provider kill: its gRPC connection to Nacos goes, and its ephemeral
	// instance with it.
	killed := time.Now()
	v1a.Proc.KillAndWait(t)
	service := "providers:" + greeter.Interface + ":1.0.0:"
	harness.Eventually(t, "v1-a's instance gone from Nacos", 60*time.Second, func() (bool, string) {
		hosts := nacosHosts(t, nacos.Addr, service).Hosts
		return !slices.ContainsFunc(hosts, func(h map[string]any) bool { return fmt.Sprint(h["port"]) == fmt.Sprint(v1a.Port) }), fmt.Sprint(hosts)
	})
	t.Logf("provider kill: v1-a's instance gone from Nacos %s after the kill", time.Since(killed).Round(time.Millisecond))
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
			t.Fatalf("10s after v1-a's instance went, calls still fail or reach others: %v", after)
		}
	}
	t.Logf("after v1-a's instance went: %d calls before 30 in a row from v1-b (%v)", len(after), after)
	servedOnlyBy(t, c1, 50, "v1-b")
}

// What dubbo-go 3.3's Nacos registry writes, as rnacos serves it back:
// compared with (or, with BREEZE_CAPTURE=1, written to)
// registry/testdata/dubbo-go-3.3.0-nacos/, which registry/nacos' unit
// tests read.
func TestCaptureDubboGoNacosRegistrations(t *testing.T) {
	nacos := harness.StartNacos(t)
	compat := harness.StartNacosCompat(t, nacos)
	harness.StartProvider(t, harness.ProviderSpec{Name: "iface", Versions: []string{"1.0.0"}, Nacos: compat.Addr, RegistryType: "interface", Application: "greeter-iface"})
	harness.StartProvider(t, harness.ProviderSpec{Name: "app", Versions: []string{"2.0.0"}, Nacos: compat.Addr, RegistryType: "service", Application: "greeter-app"})

	services := nacosServices(t, nacos.Addr)
	ifaceService := "providers:" + greeter.Interface + ":1.0.0:"
	if !slices.Contains(services, ifaceService) || !slices.Contains(services, "greeter-app") {
		t.Fatalf("Nacos services %v: want %s and greeter-app", services, ifaceService)
	}
	iface := nacosHosts(t, nacos.Addr, ifaceService)
	app := nacosHosts(t, nacos.Addr, "greeter-app")
	if len(iface.Hosts) != 1 || len(app.Hosts) != 1 {
		t.Fatalf("instances: interface-level %v, application-level %v; want one each", iface.Hosts, app.Hosts)
	}
	md, _ := app.Hosts[0]["metadata"].(map[string]any)
	revision, _ := md["dubbo.metadata.revision"].(string)
	var metadataInfo string
	nacosGet(t, nacos.Addr, "/cs/configs?dataId=greeter-app&group="+url.QueryEscape(revision), &metadataInfo)
	indent := func(v any) string {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		return string(b) + "\n"
	}
	captured := map[string]string{
		"services.txt":            strings.Join(services, "\n") + "\n",
		"interface-instance.json": indent(iface.Hosts[0]),
		"app-instance.json":       indent(app.Hosts[0]),
		"metadata-info.json":      metadataInfo + "\n",
	}
	dir := filepath.Join(harness.RepoDir(), "registry", "testdata", "dubbo-go-3.3.0-nacos")
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
	// Ports, timestamps and revisions differ from run to run; the
	// metadata keys written do not.
	keys := func(content string) []string {
		var h struct {
			Metadata map[string]string `json:"metadata"`
		}
		if err := json.Unmarshal([]byte(content), &h); err != nil {
			t.Fatal(err)
		}
		return slices.Sorted(maps.Keys(h.Metadata))
	}
	for _, name := range []string{"interface-instance.json", "app-instance.json"} {
		stored, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			t.Fatalf("no capture in %s: run with BREEZE_CAPTURE=1", dir)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got, want := keys(captured[name]), keys(string(stored)); !slices.Equal(got, want) {
			t.Errorf("%s: dubbo-go registers the metadata keys %v; the capture has %v: capture again (BREEZE_CAPTURE=1)", name, got, want)
		}
	}
}
