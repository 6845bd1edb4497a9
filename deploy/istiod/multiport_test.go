package istiod

import (
	"slices"
	"strconv"
	"testing"

	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// multiPorts are the Breeze ports of testdata/multiport.yaml's Service:
// port, target port, codec.
var multiPorts = []struct {
	port, target uint32
	codec        string
}{{20880, 20880, "dubbo"}, {20990, 20991, "dubbo"}, {9090, 9091, "thrift"}, {20770, 20770, "dubbo"}}

// multiPortServices are the descriptions the controller renders for that
// Service (one per Breeze port, named <service>-<port>, route table
// <host>_<port> from its xDS server), with the consumer as clients.
func multiPortServices() []*deploy.Service {
	const host = "multi.demo.svc.cluster.local"
	var out []*deploy.Service
	for _, p := range multiPorts {
		out = append(out, &deploy.Service{
			Host: host, Name: "multi-" + strconv.Itoa(int(p.port)), Namespace: "demo", VIP: "10.96.50.10",
			Port: p.port, TargetPort: p.target, Protocol: p.codec, Istio: "1.28", Direction: deploy.Both,
			Clients: map[string]string{"app": "consumer"}, Selector: map[string]string{"app": "multi"},
			Outbound: &breezev1.ProxyConfig{Xds: &breezev1.XdsSource{Address: "breeze-controller.breeze-system.svc:15010", RouteConfigName: deploy.RouteConfigName(host, p.port)}},
		})
	}
	return out
}

// One Service with four Breeze ports (two Dubbo ports, Thrift, Dubbo by
// appProtocol), an HTTP port and a port named for Dubbo whose appProtocol
// is http: Breeze is on the consumer's listener of each Breeze port with
// that port's route table, and on the provider's inbound chains of each
// target port; the HTTP ports' listeners and everything else are what
// istiod generates without the EnvoyFilters.
func TestMultiPortService(t *testing.T) {
	ss := multiPortServices()
	in := Inputs{Kubernetes: readFile(t, "testdata/mesh.yaml") + "\n---\n" + readFile(t, "testdata/multiport.yaml")}
	multiPod := Workload{Name: "multi-0", Namespace: "demo", IP: "10.0.0.8", Labels: map[string]string{"app": "multi"}}
	workloads := []Workload{consumer, multiPod, webPod, otherClient}
	efs := render(t, ss...)

	changes := CheckPlacement(t, in, efs, workloads, ss)
	logChanges(t, changes)
	got := changedPlacements(changes)
	var wantOut, wantIn []string
	for _, p := range multiPorts {
		wantOut = append(wantOut, "multi-"+strconv.Itoa(int(p.port))+" outbound")
		wantIn = append(wantIn, "multi-"+strconv.Itoa(int(p.port))+" inbound")
	}
	slices.Sort(wantOut)
	slices.Sort(wantIn)
	want := map[string][]string{consumer.Name: wantOut, multiPod.Name: wantIn}
	for _, w := range workloads {
		if !slices.Equal(got[w.Name], want[w.Name]) {
			t.Errorf("%s: Breeze placed for %v, want %v", w, got[w.Name], want[w.Name])
		}
	}

	// Read on istiod's own terms: each port's listener names its own
	// route table; the HTTP ports carry no Go filter and keep Istio's
	// HTTP connection manager.
	m := NewMesh(t, Inputs{Kubernetes: in.Kubernetes, Istio: efs})
	c := m.Sidecar(consumer)
	for _, p := range multiPorts {
		name := "10.96.50.10_" + strconv.Itoa(int(p.port))
		l := c.Listener(name)
		if l == nil {
			t.Fatalf("consumer: no listener %s", name)
		}
		bs, err := BreezeFilterOn(l, ChainMatch{})
		if err != nil {
			t.Fatalf("consumer %s: %v", name, err)
		}
		wantRoute := "multi.demo.svc.cluster.local_" + strconv.Itoa(int(p.port))
		if len(bs) != 1 || bs[0].Proxy.GetXds().GetRouteConfigName() != wantRoute || bs[0].Proxy.GetCodec() != p.codec {
			var seen []string
			for _, b := range bs {
				seen = append(seen, b.Proxy.GetCodec()+" "+b.Proxy.GetXds().GetRouteConfigName())
			}
			t.Errorf("consumer %s: Breeze filters %v, want one with codec %s and route_config_name %s", name, seen, p.codec, wantRoute)
			continue
		}
		t.Logf("consumer %s: codec %s, route_config_name %s", name, bs[0].Proxy.GetCodec(), bs[0].Proxy.GetXds().GetRouteConfigName())
	}
	for _, port := range []string{"8080", "8081"} {
		// Istio folds outbound HTTP ports into the 0.0.0.0_<port>
		// listener (routes by Host): for 8081 too, whose name says Dubbo
		// but whose appProtocol says http. That listener carries Istio's
		// HTTP connection manager and no Go filter, and there is no
		// <vip>_<port> TCP listener for Breeze to take.
		name := "0.0.0.0_" + port
		l := c.Listener(name)
		if l == nil {
			t.Errorf("consumer: no listener %s, want Istio's HTTP listener for port %s", name, port)
			continue
		}
		if g := GolangFiltersIn(l); len(g) > 0 {
			t.Errorf("consumer: HTTP listener %s has a Go filter: %v", name, g)
		}
		for i, fc := range l.GetFilterChains() {
			if names := NetworkFilterNames(fc); !slices.Equal(names, []string{"envoy.filters.network.http_connection_manager"}) {
				t.Errorf("consumer %s chain %d: network filters %v, want Istio's HTTP connection manager alone", name, i, names)
			}
		}
		if vl := c.Listener("10.96.50.10_" + port); vl != nil {
			t.Errorf("consumer: a TCP listener %s (%s) for HTTP port %s", vl.GetName(), chainsSummary(vl), port)
		}
		t.Logf("consumer %s (HTTP): %s", name, chainsSummary(l))
	}
	s := m.Sidecar(multiPod)
	vi := s.Listener(virtualInbound)
	for _, p := range multiPorts {
		bs, err := BreezeFilterOn(vi, ChainMatch{DestinationPort: p.target})
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) == 0 {
			t.Errorf("multi-0: no Breeze on the virtualInbound chains of target port %d: %s", p.target, chainsSummary(vi))
		}
		for _, b := range bs {
			eps := b.Proxy.GetClusters()
			if len(eps) != 1 || len(eps[0].GetEndpoints()) != 1 || eps[0].GetEndpoints()[0].GetPort() != p.target || b.Proxy.GetCodec() != p.codec {
				t.Errorf("multi-0 %s: inbound Breeze codec %s clusters %v, want codec %s to the app at 127.0.0.1:%d", b.ChainName, b.Proxy.GetCodec(), eps, p.codec, p.target)
			}
		}
	}
	for _, port := range []uint32{8080, 8081} {
		if bs, _ := BreezeFilterOn(vi, ChainMatch{DestinationPort: port}); len(bs) > 0 {
			t.Errorf("multi-0: Breeze on the inbound chains of HTTP port %d", port)
		}
	}
}
