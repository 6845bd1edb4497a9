package istiod

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// The workloads of testdata/mesh.yaml.
var (
	consumer     = Workload{Name: "consumer-0", Namespace: "demo", IP: "10.0.0.1", Labels: map[string]string{"app": "consumer"}}
	greeterPod   = Workload{Name: "greeter-0", Namespace: "demo", IP: "10.0.0.2", Labels: map[string]string{"app": "greeter"}}
	calcPod      = Workload{Name: "calc-0", Namespace: "demo", IP: "10.0.0.3", Labels: map[string]string{"app": "calc"}}
	webPod       = Workload{Name: "web-0", Namespace: "demo", IP: "10.0.0.4", Labels: map[string]string{"app": "web"}}
	otherClient  = Workload{Name: "other-0", Namespace: "demo", IP: "10.0.0.5", Labels: map[string]string{"app": "other"}}
	nextConsumer = Workload{Name: "consumer-next", Namespace: "demo", IP: "10.0.0.6", Labels: map[string]string{"app": "consumer"}, IstioVersion: "1.31.4"}
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// services parses service descriptions (breeze render's input).
func services(t *testing.T, paths ...string) []*deploy.Service {
	t.Helper()
	var out []*deploy.Service
	for _, p := range paths {
		s, err := deploy.ParseService([]byte(readFile(t, p)))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out = append(out, s)
	}
	return out
}

// render is what `breeze render envoyfilter` makes of each service, as one
// YAML stream.
func render(t *testing.T, ss ...*deploy.Service) string {
	t.Helper()
	var docs []string
	for _, s := range ss {
		efs, err := deploy.Render(s)
		if err != nil {
			t.Fatalf("render %s: %v", s.Host, err)
		}
		y, err := deploy.MarshalEnvoyFilters(efs)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(y))
	}
	return strings.Join(docs, "---\n")
}

// changedPlacements is, per workload name, the placements CheckPlacement
// found applied, each once.
func changedPlacements(changes []Change) map[string][]string {
	out := map[string][]string{}
	for _, c := range changes {
		if !slices.Contains(out[c.Workload.Name], c.Placement) {
			out[c.Workload.Name] = append(out[c.Workload.Name], c.Placement)
		}
	}
	for _, ps := range out {
		slices.Sort(ps)
	}
	return out
}

func logChanges(t *testing.T, changes []Change) {
	t.Helper()
	for _, c := range changes {
		t.Log(c)
	}
}

// Dubbo and Thrift services rendered by deploy.Render, fed to istiod 1.28.3
// with the Services and Pods: Breeze replaces tcp_proxy on the consumer's
// outbound listeners of both services and on the providers' inbound chains
// of their target ports, and nowhere else; everything else istiod
// generates is what it generates without the EnvoyFilters.
func TestRenderedEnvoyFiltersPlaceBreezeOnlyOnBreezePorts(t *testing.T) {
	ss := services(t, "testdata/greeter.yaml", "testdata/calc.yaml")
	in := Inputs{Kubernetes: readFile(t, "testdata/mesh.yaml")}
	efs := render(t, ss...)
	workloads := []Workload{consumer, greeterPod, calcPod, webPod, otherClient, nextConsumer}

	changes := CheckPlacement(t, in, efs, workloads, ss)
	logChanges(t, changes)
	got := changedPlacements(changes)
	want := map[string][]string{
		consumer.Name:   {"calc outbound", "greeter outbound"},
		greeterPod.Name: {"greeter inbound"},
		calcPod.Name:    {"calc inbound"},
	}
	for _, w := range workloads {
		if !slices.Equal(got[w.Name], want[w.Name]) {
			t.Errorf("%s: Breeze placed for %v, want %v", w, got[w.Name], want[w.Name])
		}
	}

	// What istiod generated, read on its own terms (not against deploy's
	// rendering): the values a sidecar would load.
	m := NewMesh(t, Inputs{Kubernetes: in.Kubernetes, Istio: efs})
	c := m.Sidecar(consumer)
	for _, tc := range []struct {
		listener, statPrefix, codec string
	}{
		{"10.96.20.80_20880", "outbound_greeter", "dubbo"},
		{"10.96.30.90_9090", "outbound_calc", "thrift"},
	} {
		l := c.Listener(tc.listener)
		bs, err := BreezeFilterOn(l, ChainMatch{})
		if err != nil {
			t.Fatalf("consumer %s: %v", tc.listener, err)
		}
		if len(bs) != 1 || len(l.GetFilterChains()) != 1 {
			t.Fatalf("consumer %s: Breeze on %d of %d chains (%s), want its one chain", tc.listener, len(bs), len(l.GetFilterChains()), chainsSummary(l))
		}
		b := bs[0]
		if b.Proxy.GetStatPrefix() != tc.statPrefix || b.Proxy.GetCodec() != tc.codec || !b.Golang.GetIsTerminalFilter() ||
			b.Golang.GetPluginName() != deploy.PluginName || b.Golang.GetLibraryPath() != deploy.DefaultLibraryPath {
			t.Errorf("consumer %s: Breeze stat prefix %q codec %q terminal %v plugin %q library %q, want %q %q true %q %q",
				tc.listener, b.Proxy.GetStatPrefix(), b.Proxy.GetCodec(), b.Golang.GetIsTerminalFilter(), b.Golang.GetPluginName(), b.Golang.GetLibraryPath(),
				tc.statPrefix, tc.codec, deploy.PluginName, deploy.DefaultLibraryPath)
		}
		if names := NetworkFilterNames(l.GetFilterChains()[0]); slices.Contains(names, deploy.TCPProxyFilterName) {
			t.Errorf("consumer %s: tcp_proxy left beside Breeze: %v", tc.listener, names)
		}
	}
	if p := c.Listener("10.96.30.90_9090"); p != nil {
		bs, _ := BreezeFilterOn(p, ChainMatch{})
		if len(bs) == 1 && bs[0].Proxy.GetCodecParams()["transport"] != "framed" {
			t.Errorf("consumer calc: codec_params %v, want transport framed", bs[0].Proxy.GetCodecParams())
		}
	}
	pt := c.Cluster(deploy.PlainTextCluster)
	if pt.GetType() != clusterv3.Cluster_ORIGINAL_DST || pt.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED || pt.GetTransportSocket().GetName() != "envoy.transport_sockets.tls" {
		t.Errorf("consumer: plainText cluster type %v lb %v transport socket %q, want ORIGINAL_DST, CLUSTER_PROVIDED, Istio's mTLS",
			pt.GetType(), pt.GetLbPolicy(), pt.GetTransportSocket().GetName())
	}
	for _, l := range c.Listeners {
		if strings.HasSuffix(l.GetName(), "_8080") {
			if g := GolangFiltersIn(l); len(g) > 0 {
				t.Errorf("consumer: HTTP listener %s has a Go filter: %v", l.GetName(), g)
			}
		}
	}

	for _, tc := range []struct {
		w    Workload
		port uint32
	}{{greeterPod, 20880}, {calcPod, 9091}} {
		s := m.Sidecar(tc.w)
		vi := s.Listener(virtualInbound)
		bs, err := BreezeFilterOn(vi, ChainMatch{DestinationPort: tc.port})
		if err != nil {
			t.Fatalf("%s: %v", tc.w, err)
		}
		if len(bs) == 0 {
			t.Fatalf("%s: no Breeze on virtualInbound chains of port %d: %s", tc.w, tc.port, chainsSummary(vi))
		}
		for _, b := range bs {
			eps := b.Proxy.GetClusters()
			if len(eps) != 1 || len(eps[0].GetEndpoints()) != 1 || eps[0].GetEndpoints()[0].GetAddress() != "127.0.0.1" || eps[0].GetEndpoints()[0].GetPort() != tc.port {
				t.Errorf("%s %s: inbound Breeze clusters %v, want the app at 127.0.0.1:%d", tc.w, b.ChainName, eps, tc.port)
			}
		}
		if all := GolangFiltersIn(vi); len(all) != len(bs) {
			t.Errorf("%s: Go filters on virtualInbound at %v, want only the %d chains of port %d", tc.w, all, len(bs), tc.port)
		}
		for _, b := range bs {
			if b.Proxy.GetUpstreamConnect() != breezev1.UpstreamConnect_GO_LOOPBACK {
				t.Errorf("%s %s: inbound Breeze upstream_connect %s, want GO_LOOPBACK (the Go socket to the app)", tc.w, b.ChainName, b.Proxy.GetUpstreamConnect())
			}
		}
		if pt := s.Cluster(deploy.PlainTextCluster); pt != nil {
			t.Errorf("%s: plainText cluster %v, want none (its inbound Breeze dials the app with the Go socket)", tc.w, pt)
		}
	}
	for _, w := range []Workload{webPod, otherClient, nextConsumer} {
		s := m.Sidecar(w)
		for _, l := range s.Listeners {
			if g := GolangFiltersIn(l); len(g) > 0 {
				t.Errorf("%s: listener %s has a Go filter, on a pod no EnvoyFilter selects: %v", w, l.GetName(), g)
			}
		}
		if s.Cluster(deploy.PlainTextCluster) != nil {
			t.Errorf("%s: has a plainText cluster, on a pod no EnvoyFilter selects", w)
		}
	}
}

// The files Breeze ships for Istio: envoy-config/istio/demo.yaml's
// Services and greeter-envoyfilters.yaml (what `breeze render envoyfilter
// greeter.yaml` made), with Pods as demo.yaml's Deployments would make
// them. The expectations are rendered from greeter.yaml now, so a shipped
// file that has fallen behind its description fails here too.
func TestShippedIstioDemoFiles(t *testing.T) {
	dir := filepath.Join("..", "..", "envoy-config", "istio")
	ss := services(t, filepath.Join(dir, "greeter.yaml"))
	in := Inputs{Kubernetes: readFile(t, filepath.Join(dir, "demo.yaml")) + "\n---\n" + readFile(t, "testdata/demo-pods.yaml")}
	shipped := readFile(t, filepath.Join(dir, "greeter-envoyfilters.yaml"))
	consumer := Workload{Name: "consumer-0", Namespace: "breeze-demo", IP: "10.1.0.1", Labels: map[string]string{"app": "consumer"}}
	v1 := Workload{Name: "greeter-v1-0", Namespace: "breeze-demo", IP: "10.1.0.2", Labels: map[string]string{"app": "greeter", "version": "v1"}}
	v2 := Workload{Name: "greeter-v2-0", Namespace: "breeze-demo", IP: "10.1.0.3", Labels: map[string]string{"app": "greeter", "version": "v2"}}

	// Every Pod of the inputs: the three above.
	if ws, err := WorkloadsOf(in.Kubernetes); err != nil || len(ws) != 3 {
		t.Fatalf("WorkloadsOf the demo: %v, %v; want its 3 Pods", ws, err)
	}
	changes := CheckPlacement(t, in, shipped, nil, ss)
	logChanges(t, changes)
	got := changedPlacements(changes)
	want := map[string][]string{consumer.Name: {"greeter outbound"}, v1.Name: {"greeter inbound"}, v2.Name: {"greeter inbound"}}
	for name, ps := range want {
		if !slices.Equal(got[name], ps) {
			t.Errorf("%s: Breeze placed for %v, want %v", name, got[name], ps)
		}
	}

}

// A Breeze service declared by a ServiceEntry (address, port, target port,
// workloadSelector) rather than a Kubernetes Service: the same placement,
// on the ServiceEntry's address and on the pods it selects.
func TestServiceEntryHost(t *testing.T) {
	ss := services(t, "testdata/catalog.yaml")
	in := Inputs{
		Kubernetes: readFile(t, "testdata/mesh.yaml") + "\n---\n" + readFile(t, "testdata/catalog-pod.yaml"),
		Istio:      readFile(t, "testdata/catalog-serviceentry.yaml"),
	}
	catalogPod := Workload{Name: "catalog-0", Namespace: "demo", IP: "10.0.0.7", Labels: map[string]string{"app": "catalog"}}
	changes := CheckPlacement(t, in, render(t, ss...), []Workload{consumer, catalogPod, otherClient, greeterPod}, ss)
	logChanges(t, changes)
	got := changedPlacements(changes)
	want := map[string][]string{consumer.Name: {"catalog outbound"}, catalogPod.Name: {"catalog inbound"}}
	for _, name := range []string{consumer.Name, catalogPod.Name, otherClient.Name, greeterPod.Name} {
		if !slices.Equal(got[name], want[name]) {
			t.Errorf("%s: Breeze placed for %v, want %v", name, got[name], want[name])
		}
	}
}
