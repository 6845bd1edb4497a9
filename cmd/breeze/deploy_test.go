package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/deploy"
)

func TestRenderThenValidate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "efs.yaml")
	if err := render([]string{"envoyfilter", "-o", out, "../../envoy-config/istio/greeter.yaml"}); err != nil {
		t.Fatal(err)
	}
	if err := validate([]string{out, "../../envoy-config/envoy.yaml", "../../envoy-config/istio/demo.yaml", "demo.yaml"}); err != nil {
		t.Fatal(err)
	}
}

func TestValidateFails(t *testing.T) {
	data, err := os.ReadFile("../../envoy-config/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(data), "name: plainText", "name: plaintext", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := validate([]string{bad}); err == nil || !strings.Contains(err.Error(), "1 error") {
		t.Fatalf("got %v", err)
	}
	if err := render([]string{"envoyfilter", bad}); err == nil {
		t.Fatal("rendering a bootstrap: want an error")
	}
}

// A rendered proxy with xds and no route_config_name fetches the route
// table breeze xds serves for the service's host and port. (Here, not in
// deploy: deploy/schemas, which imports deploy, stays free of the control
// plane's modules.)
func TestRouteConfigNameIsTheControlPlanes(t *testing.T) {
	if got, want := deploy.RouteConfigName("greeter.demo.svc.cluster.local", 20880), controlplane.RouteConfigName("greeter.demo.svc.cluster.local", 20880); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// With xds, render writes no routing into the EnvoyFilters, says where it
// comes from, and refuses routing in the description, naming the file and
// the field.
func TestRenderXDS(t *testing.T) {
	dir := t.TempDir()
	desc := "host: greeter.breeze-demo.svc.cluster.local\nvip: 10.96.20.80\nport: 20880\nprotocol: dubbo\nclients: {app: consumer}\n" +
		"xds: {address: 'breeze-xds.breeze-demo:15010'}\n"
	in, out := filepath.Join(dir, "greeter.yaml"), filepath.Join(dir, "efs.yaml")
	if err := os.WriteFile(in, []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := render([]string{"envoyfilter", "-o", out, in}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "# Outbound routes and clusters come from the xDS server at breeze-xds.breeze-demo:15010,\n"+
		`# route table "greeter.breeze-demo.svc.cluster.local_20880": these EnvoyFilters stay the same when they change.`) ||
		!strings.Contains(string(got), "route_config_name: greeter.breeze-demo.svc.cluster.local_20880") {
		t.Errorf("rendered:\n%s", got)
	}
	if err := validate([]string{out}); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(in, []byte(desc+"clusters: [{name: greeter, type: EDS}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = render([]string{"envoyfilter", "-o", out, in})
	if err == nil || !strings.HasPrefix(err.Error(), in+`: clusters: "greeter": with xds`) {
		t.Fatalf("got %v", err)
	}
}
