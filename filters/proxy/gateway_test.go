package proxy

import (
	"context"
	"log/slog"
	"testing"

	golangv3alpha "github.com/envoyproxy/go-control-plane/contrib/envoy/extensions/filters/network/golang/v3alpha"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// gatewayPluginConfig is the plugin_config of the Breeze filter that the
// gateway EnvoyFilter deploy renders for host:20880 carries (what istiod
// hands the gateway's Envoy, which hands it to the plugin).
func gatewayPluginConfig(t *testing.T, host, xdsAddr, table string) *anypb.Any {
	t.Helper()
	efs, err := deploy.Render(&deploy.Service{
		Host: host, Name: "ingress-20880", Namespace: "istio-system", Port: 20880, Protocol: "tframe", Direction: deploy.Gateway,
		Clients:  map[string]string{"istio": "ingressgateway"},
		Outbound: &breezev1.ProxyConfig{Xds: &breezev1.XdsSource{Address: xdsAddr, RouteConfigName: table}},
	})
	if err != nil {
		t.Fatalf("rendering the gateway EnvoyFilter: %v", err)
	}
	for _, cp := range efs[0].Spec.GetConfigPatches() {
		if cp.GetApplyTo() != networkingv1alpha3.EnvoyFilter_NETWORK_FILTER || cp.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_GATEWAY {
			continue
		}
		js, err := protojson.Marshal(cp.GetPatch().GetValue())
		if err != nil {
			t.Fatal(err)
		}
		f := &listenerv3.Filter{}
		if err := protojson.Unmarshal(js, f); err != nil {
			t.Fatal(err)
		}
		gc := &golangv3alpha.Config{}
		if err := f.GetTypedConfig().UnmarshalTo(gc); err != nil {
			t.Fatal(err)
		}
		return gc.GetPluginConfig()
	}
	t.Fatalf("the gateway EnvoyFilter has no GATEWAY NETWORK_FILTER patch: %v", efs[0].Spec)
	return nil
}

// A client outside the mesh calls through an ingress gateway's Breeze,
// configured as the gateway EnvoyFilter says (routes from the control
// plane under the gateway's table), while a sidecar's Breeze uses the
// mesh's table: the control plane, reading a Gateway and two MetaRouters
// (one for the mesh, one bound to the Gateway), routes Whoami to v2 at the
// gateway and to v1 in the mesh.
func TestGatewayRoutesDifferFromTheMesh(t *testing.T) {
	v1, v2 := newBackend(t, "v1"), newBackend(t, "v2")
	drainServed(t, v1, v2)
	dir := t.TempDir()
	writeTwoVersions(t, dir, v1, v2)
	writeFile(t, dir, "gateway.yaml", `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 20880, name: tcp-metaprotocol-tframe, protocol: TCP}
    hosts: ["*"]
`)
	writeFile(t, dir, "routers.yaml", `apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: svc-mesh}
spec:
  hosts: [svc]
  routes:
  - {name: all-v1, route: [{destination: {host: svc, subset: v1}}]}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: svc-edge}
spec:
  gateways: [istio-system/ingress]
  hosts: [svc]
  routes:
  - {name: whoami-v2, match: {attributes: {method: {exact: Whoami}}}, route: [{destination: {host: svc, subset: v2}}]}
  - {name: rest-v1, route: [{destination: {host: svc, subset: v1}}]}
`)
	s := startXDSServer(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	served := make(chan []controlplane.Problem, 1)
	go func() {
		done <- controlplane.Run(ctx, &controlplane.DirSource{Dir: dir, Log: slog.New(slog.DiscardHandler)}, s.srv, slog.New(slog.DiscardHandler),
			func(_ controlplane.Resources, ps []controlplane.Problem) {
				select {
				case served <- ps:
				default:
				}
			})
	}()
	t.Cleanup(func() { cancel(); <-done })
	if problems := <-served; len(problems) > 0 {
		t.Fatalf("the control plane's problems with the files: %v", problems)
	}

	table := controlplane.GatewayRouteConfigName("istio-system", "ingress", "svc", 20880)
	gateway := startProxyAny(t, gatewayPluginConfig(t, "svc", s.addr, table))
	sidecar := startProxy(t, "stat_prefix: sidecar\ncodec: tframe\nxds: {initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: svc_20880}\n")
	outside, inMesh := dial(t, gateway), dial(t, sidecar)
	servedBy := func(c *client, method string) string {
		t.Helper()
		m, err := c.call(0, "x", "method", method)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if m.status != codecs.StatusOK {
			t.Fatalf("%s: error reply %q: %s", method, md(m, "error"), m.body)
		}
		return md(m, "server")
	}
	// The gateway's Breeze may serve before its first table arrives
	// (initial_fetch_timeout 1s by default, then no route): wait for it.
	eventually(t, "the gateway's route table", func() bool {
		m, err := outside.call(0, "x", "method", "Whoami")
		return err == nil && m.status == codecs.StatusOK
	})
	for range 10 {
		for _, tc := range []struct {
			c             *client
			where, method string
			want          string
		}{
			{outside, "gateway", "Whoami", "v2"},
			{outside, "gateway", "Greet", "v1"},
			{inMesh, "sidecar", "Whoami", "v1"},
			{inMesh, "sidecar", "Greet", "v1"},
		} {
			if got := servedBy(tc.c, tc.method); got != tc.want {
				t.Fatalf("%s %s: served by %s, want %s", tc.where, tc.method, got, tc.want)
			}
		}
	}
	t.Logf("gateway (route table %s): Whoami → v2, Greet → v1; sidecar (svc_20880): Whoami → v1, Greet → v1; 40 calls", table)
}
