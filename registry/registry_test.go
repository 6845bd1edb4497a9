package registry

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
)

// capture reads a file captured from a real provider (see
// e2e/registry.TestCaptureDubboGoRegistrations).
func capture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A provider node as dubbo-go 3.3's ZooKeeper registry names it.
func TestParseDubboGoProvider(t *testing.T) {
	node := capture(t, "dubbo-go-3.3.0/interface-provider.txt")
	in, err := ParseURL(node)
	if err != nil {
		t.Fatal(err)
	}
	// The captured provider listened on 127.0.0.1:33689; dubbo-go writes
	// no weight.
	got := fmt.Sprintf("%s %s %s:%d enabled=%v weight=%d", in.Protocol, in.Interface, in.Address, in.Port, in.Enabled(), in.Weight())
	if want := "dubbo org.breeze.Greeter 127.0.0.1:33689 enabled=true weight=100"; got != want {
		t.Errorf("parsed %s, want %s", got, want)
	}
	for k, want := range map[string]string{
		"version": "1.0.0", "application": "greeter-iface", "side": "provider", "interface": "org.breeze.Greeter",
		"methods": "Greet,greet,Slow,slow,Whoami,whoami", "release": "dubbo-golang-3.2.0", "serialization": "hessian2",
	} {
		if in.Params[k] != want {
			t.Errorf("parameter %s = %q, want %q (all: %v)", k, in.Params[k], want, in.Params)
		}
	}
	labels := Labels(in.Params)
	for k, want := range map[string]string{
		"version": "1.0.0", "side": "provider", "application": "greeter-iface",
		// Not valid label values as written: commas become '_'.
		"methods":        "Greet_greet_Slow_slow_Whoami_whoami",
		"service.filter": "echo_token_accesslog_tps_generic_service_execute_pshutdown",
	} {
		if got := labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	if missing := slices.DeleteFunc(slices.Collect(maps.Keys(in.Params)), func(k string) bool { _, ok := labels[k]; return ok }); len(missing) > 0 {
		t.Errorf("parameters without a label: %v (labels: %v)", missing, labels)
	}
}

// The translation of providers to ServiceEntries: one per interface, the
// registry's port names, labels, weight; disabled and non-Dubbo providers
// left out.
func TestServiceEntries(t *testing.T) {
	base := capture(t, "dubbo-go-3.3.0/interface-provider.txt")
	parse := func(edit func(string) string) Instance {
		t.Helper()
		in, err := ParseURL(edit(base))
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	// Rewrite the captured node: another address, another version, a
	// weight, a disabled flag, another protocol.
	replace := func(pairs ...string) func(string) string {
		return func(s string) string { return strings.NewReplacer(pairs...).Replace(s) }
	}
	a := parse(replace("127.0.0.1", "10.0.0.1"))
	b := parse(replace("127.0.0.1", "10.0.0.2", "version%3D1.0.0", "version%3D2.0.0%26weight%3D200"))
	off := parse(replace("127.0.0.1", "10.0.0.3", "anyhost%3Dtrue", "anyhost%3Dtrue%26enabled%3Dfalse"))
	off2 := parse(replace("127.0.0.1", "10.0.0.4", "anyhost%3Dtrue", "anyhost%3Dtrue%26disabled%3Dtrue"))
	tri := parse(replace("127.0.0.1", "10.0.0.5", "dubbo%3A%2F%2F", "tri%3A%2F%2F"))
	other := a
	other.Interface = "org.breeze.Other$Inner_Service"

	entries := ServiceEntries([]Instance{b, off, a, tri, off2, other}, "dubbo")
	var got []string
	for _, e := range entries {
		se := e.Spec
		line := fmt.Sprintf("%s/%s hosts=%v ports=%v %v %v", e.Namespace, e.Name, se.Hosts, portsOf(se), se.Resolution, se.Location)
		for _, ep := range se.Endpoints {
			line += fmt.Sprintf(" [%s %v w%d v=%s]", ep.Address, ep.Ports, ep.Weight, ep.Labels["version"])
		}
		got = append(got, line)
	}
	want := []string{
		"dubbo/dubbo-org.breeze.greeter hosts=[org.breeze.Greeter] ports=[tcp-dubbo:20880/TCP] STATIC MESH_INTERNAL" +
			fmt.Sprintf(" [10.0.0.1 map[tcp-dubbo:%d] w100 v=1.0.0] [10.0.0.2 map[tcp-dubbo:%d] w200 v=2.0.0]", a.Port, a.Port),
		"dubbo/dubbo-org.breeze.other-inner-service hosts=[org.breeze.Other-Inner-Service] ports=[tcp-dubbo:20880/TCP] STATIC MESH_INTERNAL" +
			fmt.Sprintf(" [10.0.0.1 map[tcp-dubbo:%d] w100 v=1.0.0]", a.Port),
	}
	if !slices.Equal(got, want) {
		t.Errorf("ServiceEntries:\n got %q\nwant %q", got, want)
	}
}

func portsOf(se *networkingv1alpha3.ServiceEntry) []string {
	var out []string
	for _, p := range se.Ports {
		out = append(out, fmt.Sprintf("%s:%d/%s", p.Name, p.Number, p.Protocol))
	}
	return out
}

// Label values as Istio validates them (Kubernetes label syntax).
func TestLabels(t *testing.T) {
	long := strings.Repeat("x", 64)
	got := Labels(map[string]string{
		"version": "1.0.0", "group": "", "methods": "a,b", "tag": "gray", "bad key!": "x", "long": long,
		"-edges-": "-v-", "default.timeout": "3000", "url": "http://x/y?z",
	})
	want := map[string]string{"version": "1.0.0", "group": "", "methods": "a_b", "tag": "gray", "default.timeout": "3000", "url": "http___x_y_z"}
	if !maps.Equal(got, want) {
		t.Errorf("Labels:\n got %v\nwant %v", got, want)
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, raw := range []string{
		"dubbo://host.example:20880/org.breeze.Greeter", // not an IP
		"dubbo://10.0.0.1/org.breeze.Greeter",           // no port
		"dubbo://10.0.0.1:0/org.breeze.Greeter",
		"dubbo://10.0.0.1:20880/",   // no interface
		"%ZZ",                       // not URL-encoded
		"10.0.0.1:20880/org.breeze", // no scheme
	} {
		if in, err := ParseURL(raw); err == nil {
			t.Errorf("ParseURL(%q) = %+v, want an error", raw, in)
		}
	}
}

// Source translates again only the interfaces whose instances changed;
// the others keep their objects (and versions), and the result equals a
// whole translation.
func TestSourceSnapshotReuse(t *testing.T) {
	node := capture(t, "dubbo-go-3.3.0/interface-provider.txt")
	parse := func(s string) Instance {
		t.Helper()
		in, err := ParseURL(s)
		if err != nil {
			t.Fatal(err)
		}
		in.ID = s
		return in
	}
	a := parse(node)
	b := parse(strings.Replace(node, "org.breeze.Greeter", "org.breeze.Other", -1))
	b2 := parse(strings.Replace(strings.Replace(node, "org.breeze.Greeter", "org.breeze.Other", -1), "127.0.0.1", "10.0.0.2", 1))
	s := &Source{}
	first := s.snapshot("zk", "default", []Instance{a, b})
	second := s.snapshot("zk", "default", []Instance{a, b, b2})
	if len(first.Objects) != 2 || len(second.Objects) != 2 {
		t.Fatalf("%d and %d objects, want 2 and 2", len(first.Objects), len(second.Objects))
	}
	if first.Objects[0].Spec != second.Objects[0].Spec {
		t.Errorf("%s: translated again though its instances did not change", first.Objects[0].Name)
	}
	if first.Objects[1].Version == second.Objects[1].Version {
		t.Errorf("%s: same version %s after a provider was added", first.Objects[1].Name, first.Objects[1].Version)
	}
	whole := Snapshot("zk", ServiceEntries([]Instance{a, b, b2}, "default"))
	for i := range whole.Objects {
		if whole.Objects[i].Name != second.Objects[i].Name || whole.Objects[i].Version != second.Objects[i].Version {
			t.Errorf("object %d: %s@%s, a whole translation gives %s@%s", i, second.Objects[i].Name, second.Objects[i].Version, whole.Objects[i].Name, whole.Objects[i].Version)
		}
	}
}

// A provider node as Dubbo Java 3.3.6's ZooKeeper registry names it.
func TestParseDubboJavaProvider(t *testing.T) {
	in, err := ParseURL(capture(t, "dubbo-java-3.3.6/interface-provider.txt"))
	if err != nil {
		t.Fatal(err)
	}
	// The captured provider listened on 127.0.0.1:38367.
	got := fmt.Sprintf("%s %s %s:%d enabled=%v weight=%d", in.Protocol, in.Interface, in.Address, in.Port, in.Enabled(), in.Weight())
	if want := "dubbo org.breeze.Greeter 127.0.0.1:38367 enabled=true weight=100"; got != want {
		t.Errorf("parsed %s, want %s", got, want)
	}
	labels := Labels(in.Params)
	for k, want := range map[string]string{
		"version": "1.0.0", "application": "java-iface", "side": "provider", "release": "3.3.6", "dubbo": "2.0.2",
		"revision": "1.0.0", "prefer.serialization": "hessian2", "methods": "Greet_Mirror_Slow_Whoami", "timestamp": "1796041186928",
	} {
		if labels[k] != want {
			t.Errorf("label %s = %q, want %q (labels %v)", k, labels[k], want, labels)
		}
	}
	if len(labels) != len(in.Params) {
		t.Errorf("%d parameters, %d labels: %v", len(in.Params), len(labels), labels)
	}
}
