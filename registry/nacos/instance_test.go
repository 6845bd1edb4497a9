package nacos

import (
	"testing"

	"github.com/nacos-group/nacos-sdk-go/v2/model"
)

func TestKindOf(t *testing.T) {
	for name, want := range map[string]serviceKind{
		"providers:org.breeze.Greeter:1.0.0:":   interfaceService,
		"providers:org.breeze.Greeter::":        interfaceService,
		"consumers:org.breeze.Greeter:1.0.0:":   otherService,
		"configurators:org.breeze.Greeter::":    otherService,
		"greeter-app":                           applicationService,
		"org.apache.dubbo.samples.GreetingsApp": applicationService,
	} {
		if got := kindOf(name); got != want {
			t.Errorf("kindOf(%q) = %d, want %d", name, got, want)
		}
	}
}

func TestInterfaceInstanceTraffic(t *testing.T) {
	base := model.Instance{Ip: "10.0.0.7", Port: 20880, Weight: 1, Healthy: true, Enable: true, Metadata: providerMetadata("1.0.0")}
	for _, c := range []struct {
		name   string
		change func(*model.Instance)
		want   bool
		weight uint32
	}{
		{"healthy, enabled, weight 1", func(*model.Instance) {}, true, 100},
		{"unhealthy", func(in *model.Instance) { in.Healthy = false }, false, 0},
		{"disabled", func(in *model.Instance) { in.Enable = false }, false, 0},
		{"weight 0", func(in *model.Instance) { in.Weight = 0 }, false, 0},
		{"weight 0.25", func(in *model.Instance) { in.Weight = 0.25 }, true, 25},
		{"weight 0.001 (rounds to 0: kept at 1)", func(in *model.Instance) { in.Weight = 0.001 }, true, 1},
		{"Dubbo weight 300 and Nacos weight 2", func(in *model.Instance) { in.Weight = 2; in.Metadata["weight"] = "300" }, true, 600},
		{"no port", func(in *model.Instance) { in.Port = 0 }, false, 0},
		{"port out of range", func(in *model.Instance) { in.Port = 70000 }, false, 0},
	} {
		in := base
		in.Metadata = providerMetadata("1.0.0")
		c.change(&in)
		got, ok := InterfaceInstance(serviceName("1.0.0"), in)
		if ok != c.want {
			t.Errorf("%s: served = %v, want %v", c.name, ok, c.want)
			continue
		}
		if ok && got.Weight() != c.weight {
			t.Errorf("%s: weight %d, want %d", c.name, got.Weight(), c.weight)
		}
	}
}

// The interface comes from the metadata's interface, else path, else the
// service name.
func TestInterfaceInstanceNames(t *testing.T) {
	in := model.Instance{Ip: "10.0.0.7", Port: 20880, Weight: 1, Healthy: true, Enable: true}
	got, ok := InterfaceInstance("providers:org.x.Svc:1.0.0:g", in)
	if !ok || got.Interface != "org.x.Svc" || got.Protocol != "dubbo" {
		t.Errorf("no metadata: got %+v %v, want interface org.x.Svc, protocol dubbo", got, ok)
	}
	in.Metadata = map[string]string{"path": "/org.y.Svc", "protocol": "tri"}
	got, ok = InterfaceInstance("providers:org.x.Svc:1.0.0:g", in)
	if !ok || got.Interface != "org.y.Svc" || got.Protocol != "tri" {
		t.Errorf("path and protocol: got %+v %v, want interface org.y.Svc, protocol tri", got, ok)
	}
}

func TestApplicationInstancesPorts(t *testing.T) {
	in := model.Instance{Ip: "10.0.0.7", Port: 8080, Weight: 1, Healthy: true, Enable: true, Metadata: map[string]string{
		"dubbo.endpoints": `[{"port":20880,"protocol":"dubbo"}]`, "dubbo.metadata.revision": "r1", "env": "prod"}}
	services := []serviceInfo{
		{Name: "org.x.A", Version: "1.0.0", Group: "g", Protocol: "dubbo", Params: map[string]string{"timeout": "3000"}},
		{Name: "org.x.B", Protocol: "dubbo", Port: 20881},
	}
	got := ApplicationInstances("app", in, services)
	if len(got) != 2 {
		t.Fatalf("got %d instances, want 2: %+v", len(got), got)
	}
	a, b := got[0], got[1]
	if a.Interface != "org.x.A" || a.Port != 20880 || a.Params["version"] != "1.0.0" || a.Params["group"] != "g" ||
		a.Params["env"] != "prod" || a.Params["timeout"] != "3000" || a.Params["application"] != "app" {
		t.Errorf("A: got %+v, want port 20880 (dubbo.endpoints), version 1.0.0, group g, env prod, timeout 3000, application app", a)
	}
	if _, ok := a.Params["dubbo.endpoints"]; ok {
		t.Errorf("A: dubbo.endpoints kept as a parameter: %v", a.Params)
	}
	if b.Interface != "org.x.B" || b.Port != 20881 {
		t.Errorf("B: got %+v, want port 20881 (the service's own)", b)
	}
	in.Healthy = false
	if got := ApplicationInstances("app", in, services); len(got) != 0 {
		t.Errorf("unhealthy instance: got %+v, want none", got)
	}
}
