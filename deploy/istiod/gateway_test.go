package istiod

import (
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// gatewayEnvoyFilter is the outbound EnvoyFilter deploy renders for
// greeter, moved by hand onto the ingress gateway: context GATEWAY, the
// gateway's listener by port (istiod names it 0.0.0.0_<port>), the
// gateway's pods. What deploy should render for `gateways:`; it does not
// yet.
func gatewayEnvoyFilter(t *testing.T) string {
	t.Helper()
	efs, err := deploy.Render(&deploy.Service{
		Host: "greeter.demo.svc.cluster.local", Namespace: "istio-system", VIP: "10.96.20.80", Port: 20880, Protocol: "dubbo",
		Istio: "1.28", Clients: map[string]string{"istio": "ingressgateway"},
		Outbound: &breezev1.ProxyConfig{Xds: &breezev1.XdsSource{Address: "breeze-controller.breeze-system.svc:15010", RouteConfigName: "greeter.demo.svc.cluster.local_20880"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	y, err := deploy.MarshalEnvoyFilters(efs)
	if err != nil {
		t.Fatal(err)
	}
	s := string(y)
	for _, r := range [][2]string{
		{"context: SIDECAR_OUTBOUND", "context: GATEWAY"},
		{"name: 10.96.20.80_20880", "portNumber: 20880"},
	} {
		if !strings.Contains(s, r[0]) {
			t.Fatalf("rendered EnvoyFilter has no %q:\n%s", r[0], s)
		}
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	return s
}

// TestBreezeOnIngressGateway: on a gateway proxy (router node) selected by
// a Gateway with a TCP server and a VirtualService tcp route, an
// EnvoyFilter with context GATEWAY puts Breeze in place of tcp_proxy on
// the gateway's 0.0.0.0_20880 listener and adds the plainText cluster with
// Istio's mTLS; the consumer's sidecar is unchanged.
func TestBreezeOnIngressGateway(t *testing.T) {
	gw := Workload{Name: "ingressgateway-0", Namespace: "istio-system", IP: "10.0.0.9", Labels: map[string]string{"istio": "ingressgateway"}, Router: true}
	in := Inputs{
		Kubernetes: readFile(t, "testdata/mesh.yaml") + "\n---\n" + readFile(t, "testdata/gateway-pod.yaml"),
		Istio:      readFile(t, "testdata/gateway.yaml"),
	}
	ef := gatewayEnvoyFilter(t)
	base := NewMesh(t, in)
	patched := NewMesh(t, Inputs{Kubernetes: in.Kubernetes, Istio: in.Istio + "\n---\n" + ef})
	for _, how := range []string{"push", "ads"} {
		var b, g Sidecar
		if how == "push" {
			b, g = base.Sidecar(gw), patched.Sidecar(gw)
		} else {
			b, g = base.SidecarOverADS(t, gw), patched.SidecarOverADS(t, gw)
		}
		bl := b.Listener("0.0.0.0_20880")
		if bl == nil {
			t.Fatalf("[%s] gateway without the EnvoyFilter: no listener 0.0.0.0_20880 (listeners: %s)", how, listenerNames(b.Listeners))
		}
		if len(bl.GetFilterChains()) != 1 || !slices.Contains(NetworkFilterNames(bl.GetFilterChains()[0]), deploy.TCPProxyFilterName) {
			t.Fatalf("[%s] gateway without the EnvoyFilter: 0.0.0.0_20880 chains %s, want one with tcp_proxy", how, chainsSummary(bl))
		}
		l := g.Listener("0.0.0.0_20880")
		bs, err := BreezeFilterOn(l, ChainMatch{})
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) != 1 || bs[0].Proxy.GetXds().GetRouteConfigName() != "greeter.demo.svc.cluster.local_20880" || bs[0].Proxy.GetCodec() != "dubbo" {
			t.Fatalf("[%s] gateway 0.0.0.0_20880: %d Breeze filters (chains %s), want one, codec dubbo, route table greeter.demo.svc.cluster.local_20880", how, len(bs), chainsSummary(l))
		}
		if names := NetworkFilterNames(l.GetFilterChains()[0]); slices.Contains(names, deploy.TCPProxyFilterName) {
			t.Errorf("[%s] gateway 0.0.0.0_20880: tcp_proxy left beside Breeze: %v", how, names)
		}
		pt := g.Cluster(deploy.PlainTextCluster)
		if pt == nil || pt.GetTransportSocket().GetName() != "envoy.transport_sockets.tls" {
			t.Errorf("[%s] gateway: plainText cluster %v, want one with Istio's mTLS", how, pt)
		}
		if b.Cluster(deploy.PlainTextCluster) != nil {
			t.Errorf("[%s] gateway: a plainText cluster without the EnvoyFilter", how)
		}
		// Everything else the gateway gets is what it gets without.
		otherListeners := func(s Sidecar) []*listenerv3.Listener {
			return slices.DeleteFunc(slices.Clone(s.Listeners), func(l *listenerv3.Listener) bool { return l.GetName() == "0.0.0.0_20880" })
		}
		otherClusters := func(s Sidecar) []*clusterv3.Cluster {
			return slices.DeleteFunc(slices.Clone(s.Clusters), func(c *clusterv3.Cluster) bool { return c.GetName() == deploy.PlainTextCluster })
		}
		compareByName(t, "["+how+"] gateway: listener", otherListeners(b), otherListeners(g))
		compareByName(t, "["+how+"] gateway: cluster", otherClusters(b), otherClusters(g))
		t.Logf("[%s] gateway 0.0.0.0_20880: %s; %d other listeners, %d other clusters unchanged", how, chainsSummary(l), len(otherListeners(g)), len(otherClusters(g)))
	}
	// The sidecars are not the gateway's: nothing changes for them.
	c := patched.Sidecar(consumer)
	for _, l := range c.Listeners {
		if g := GolangFiltersIn(l); len(g) > 0 {
			t.Errorf("consumer: listener %s has a Go filter from the gateway's EnvoyFilter: %v", l.GetName(), g)
		}
	}
}
