package istiod

import (
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/breeze-mesh/breeze/controller"
	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// gatewayEnvoyFilter is the EnvoyFilter deploy renders for greeter on the
// ingress gateway (direction gateway): context GATEWAY, the gateway's
// listener by port (istiod names it 0.0.0.0_<port>), the gateway's pods.
func gatewayEnvoyFilter(t *testing.T) string {
	t.Helper()
	efs, err := deploy.Render(&deploy.Service{
		Host: "greeter.demo.svc.cluster.local", Namespace: "istio-system", Port: 20880, Protocol: "dubbo", Direction: deploy.Gateway,
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
	for _, want := range []string{"context: GATEWAY", "portNumber: 20880"} {
		if !strings.Contains(s, want) {
			t.Fatalf("rendered EnvoyFilter has no %q:\n%s", want, s)
		}
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

// The EnvoyFilters `breeze controller` writes for an Istio Gateway, made
// by its own code (controller.GatewayEnvoyFilters, the reconciler's
// computation) from the Gateway of testdata/gateway.yaml (a TCP server on
// 20880, hosts "*"), the mesh's Services and a MetaRouter bound to the
// Gateway, fed to istiod 1.28.3: Breeze, with the gateway's own route
// table from the controller's xDS server, on the gateway's 0.0.0.0_20880
// only (push and ADS); every other listener and cluster of the gateway,
// and every sidecar, exactly as without the EnvoyFilters.
func TestControllerGatewayEnvoyFiltersPlaceBreeze(t *testing.T) {
	const xds = "breeze-controller.breeze-system.svc.cluster.local:15010"
	gw := Workload{Name: "ingressgateway-0", Namespace: "istio-system", IP: "10.0.0.9", Labels: map[string]string{"istio": "ingressgateway"}, Router: true}
	kube := readFile(t, "testdata/mesh.yaml") + "\n---\n" + readFile(t, "testdata/gateway-pod.yaml")
	istio := readFile(t, "testdata/gateway.yaml")
	var services []corev1.Service
	var gateways []unstructured.Unstructured
	for _, doc := range strings.Split(kube+"\n---\n"+istio, "\n---\n") {
		u := unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		switch u.GetKind() {
		case "Service":
			var s corev1.Service
			if err := yaml.Unmarshal([]byte(doc), &s); err != nil {
				t.Fatal(err)
			}
			services = append(services, s)
		case "Gateway":
			gateways = append(gateways, u)
		}
	}
	var router unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(`apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: greeter-edge, namespace: demo}
spec:
  gateways: [istio-system/ingress-gateway]
  hosts: [greeter.demo.svc.cluster.local]
  routes:
  - name: all
    route: [{destination: {host: greeter.demo.svc.cluster.local}}]
`), &router.Object); err != nil {
		t.Fatal(err)
	}
	efs, messages, err := controller.GatewayEnvoyFilters(gateways, []unstructured.Unstructured{router}, services, controller.Options{XDSAddress: xds, Istio: "1.28"})
	if err != nil || len(messages) > 0 || len(efs) != 1 {
		t.Fatalf("the controller's EnvoyFilters for Gateway istio-system/ingress-gateway: %d, %v; messages %q", len(efs), err, messages)
	}
	y, err := yaml.Marshal(efs[0].Object)
	if err != nil {
		t.Fatal(err)
	}
	// Where Breeze belongs, described independently of the controller.
	want := &deploy.Service{
		Host: "greeter.demo.svc.cluster.local", Name: "ingress-gateway-20880", Namespace: "istio-system", Istio: "1.28",
		Port: 20880, Protocol: "dubbo", Direction: deploy.Gateway, Clients: map[string]string{"istio": "ingressgateway"},
		Outbound: &breezev1.ProxyConfig{Xds: &breezev1.XdsSource{Address: xds,
			RouteConfigName: controlplane.GatewayRouteConfigName("istio-system", "ingress-gateway", "greeter.demo.svc.cluster.local", 20880)}},
	}
	workloads := []Workload{gw, consumer, greeterPod, calcPod, webPod, otherClient}
	changes := CheckPlacement(t, Inputs{Kubernetes: kube, Istio: istio}, string(y), workloads, []*deploy.Service{want})
	logChanges(t, changes)
	got := changedPlacements(changes)
	for _, w := range workloads {
		var wantPlaced []string
		if w.Name == gw.Name {
			wantPlaced = []string{"ingress-gateway-20880 gateway"}
		}
		if !slices.Equal(got[w.Name], wantPlaced) {
			t.Errorf("%s: Breeze placed for %v, want %v", w.Name, got[w.Name], wantPlaced)
		}
	}
}
