package nacos

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/metadataservice"
)

const captured = "../testdata/dubbo-go-3.3.0-nacos/"

func readInstance(t *testing.T, name string) model.Instance {
	t.Helper()
	b, err := os.ReadFile(captured + name)
	if err != nil {
		t.Fatal(err)
	}
	var in model.Instance
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatal(err)
	}
	return in
}

// An interface-level instance as dubbo-go 3.3's Nacos registry writes it
// (captured from rnacos): the interface from its metadata (its path has a
// leading slash), every parameter a label.
func TestCapturedInterfaceInstance(t *testing.T) {
	in := readInstance(t, "interface-instance.json")
	got, ok := InterfaceInstance("providers:org.breeze.Greeter:1.0.0:", in)
	if !ok {
		t.Fatalf("captured instance %+v not served", in)
	}
	if got.Interface != "org.breeze.Greeter" || got.Protocol != "dubbo" || got.Port != uint32(in.Port) || got.Weight() != 100 {
		t.Errorf("got interface %q protocol %q port %d weight %d; want org.breeze.Greeter, dubbo, %d, 100", got.Interface, got.Protocol, got.Port, got.Weight(), in.Port)
	}
	labels := registry.Labels(got.Params)
	for k, v := range map[string]string{"version": "1.0.0", "application": "greeter-iface", "side": "provider", "nacos.category": "providers", "methods": "Greet_greet_Slow_slow_Whoami_whoami"} {
		if labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels %v)", k, labels[k], v, labels)
		}
	}
}

// An application-level instance with its revision's MetadataInfo, as
// dubbo-go 3.3's Nacos metadata report publishes it (a configuration,
// dataId application, group revision).
func TestCapturedApplicationInstance(t *testing.T) {
	in := readInstance(t, "app-instance.json")
	b, err := os.ReadFile(captured + "metadata-info.json")
	if err != nil {
		t.Fatal(err)
	}
	services, err := metadataservice.ParseReport(b)
	if err != nil {
		t.Fatal(err)
	}
	got := ApplicationInstances("greeter-app", in, services)
	if len(got) != 1 {
		t.Fatalf("got %d instances, want 1: %+v", len(got), got)
	}
	g := got[0]
	labels := registry.Labels(g.Params)
	if g.Interface != "org.breeze.Greeter" || g.Port != uint32(in.Port) || labels["version"] != "2.0.0" || labels["application"] != "greeter-app" ||
		labels["dubbo.metadata.revision"] != in.Metadata["dubbo.metadata.revision"] || labels["meta-v"] != "2.0.0" {
		t.Errorf("got %+v (labels %v); want org.breeze.Greeter on port %d, version 2.0.0, application greeter-app, the revision and meta-v labels", g, labels, in.Port)
	}
}
