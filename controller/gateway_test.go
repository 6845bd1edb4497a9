package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

// ingressGateway is a Gateway of namespace ns with a TCP server on 20880
// that exposes the hosts of its own namespace ("./*": the other tests'
// greeters, on 20880 too, stay out of it).
func ingressGateway(ns string) string {
	return `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: ` + ns + `}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 20880, name: tcp-dubbo, protocol: TCP}
    hosts: ["./*"]
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
`
}

// edgeRouter is a MetaRouter bound to the gateways given (YAML list
// items) that sends method to subset.
func edgeRouter(ns, host, gateways, method, subset string) string {
	return strings.Replace(metaRouter(ns, host, method, subset), "spec:\n", "spec:\n  gateways: ["+gateways+"]\n", 1)
}

// TestGatewayEnvoyFilters: a Gateway with a TCP server on the port of a
// Breeze Service gets an EnvoyFilter in its namespace, field by field what
// deploy renders for direction gateway (context GATEWAY, the Gateway's
// selector, the listener of the port, routes from the controller's xDS
// server under the gateway's own table), owned by the Gateway; over xDS,
// a MetaRouter bound to the Gateway routes there and leaves the sidecars'
// table alone, a reference to a Gateway that is not there is a warning in
// the MetaRouter's status; deleting the Gateway deletes its EnvoyFilter.
func TestGatewayEnvoyFilters(t *testing.T) {
	ns := namespace(t)
	host := "greeter." + ns + ".svc.cluster.local"
	apply(t, greeterService(ns))
	apply(t, destinationRule(ns, host))
	gw := apply(t, ingressGateway(ns))
	gw = get(t, "Gateway", "networking.istio.io/v1", ns, "ingress")
	efs := waitFilters(t, ns, "greeter-20880-breeze-inbound", "greeter-20880-breeze-outbound", "ingress-20880-breeze-gateway")

	gwTable := controlplane.GatewayRouteConfigName(ns, "ingress", host, 20880)
	ef := efs["ingress-20880-breeze-gateway"]
	want := expected(t, deploy.Service{Host: host, Name: "ingress-20880", Namespace: ns, Port: 20880, Protocol: "dubbo", Direction: deploy.Gateway,
		Clients:  map[string]string{"istio": "ingressgateway"},
		Outbound: &breezev1.ProxyConfig{Xds: &breezev1.XdsSource{Address: env.xds, RouteConfigName: gwTable}}})
	if got, want := specJSON(ef), specJSON(want); got != want {
		t.Errorf("gateway EnvoyFilter spec:\n got %s\nwant %s", got, want)
	}
	// The fields that put it where it belongs, one by one.
	for i := range 2 {
		if got := fmt.Sprint(patch(t, ef, i)["match"].(map[string]any)["context"]); got != "GATEWAY" {
			t.Errorf("patch %d context %s, want GATEWAY", i, got)
		}
	}
	p := patch(t, ef, 0)
	if got, _ := find(p["match"], "portNumber"); fmt.Sprint(got) != "20880" {
		t.Errorf("listener portNumber %v, want 20880 (the Gateway server's port)", got)
	}
	if got := str(ef, "spec", "workloadSelector", "labels"); got != "map[istio:ingressgateway]" {
		t.Errorf("workloadSelector.labels %s, want map[istio:ingressgateway] (the Gateway's selector)", got)
	}
	if got, _ := find(p["patch"], "route_config_name"); got != gwTable {
		t.Errorf("plugin config route_config_name %v, want %s", got, gwTable)
	}
	if got, _ := find(p["patch"], "address"); got != env.xds {
		t.Errorf("plugin config xds address %v, want the controller's %s", got, env.xds)
	}
	if got, _ := find(patch(t, ef, 1)["patch"], "name"); got != deploy.PlainTextCluster {
		t.Errorf("second patch adds cluster %v, want %s", got, deploy.PlainTextCluster)
	}
	if ef.GetNamespace() != ns {
		t.Errorf("EnvoyFilter namespace %s, want the Gateway's %s", ef.GetNamespace(), ns)
	}
	checkOwner(t, ef, "Gateway", gw)
	t.Logf("gateway EnvoyFilter %s/%s: context GATEWAY, portNumber 20880, selector istio=ingressgateway, route table %s", ns, ef.GetName(), gwTable)

	// Over xDS: the sidecars' table and the gateway's.
	c, err := client.New(client.Options{Address: env.xds, NodeID: "test-" + ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mesh, edge latest[*breezev1.RouteConfiguration]
	defer c.WatchRoutes(controlplane.RouteConfigName(host, 20880), func(rc *breezev1.RouteConfiguration) error { return mesh.apply(rc) })()
	defer c.WatchRoutes(gwTable, func(rc *breezev1.RouteConfiguration) error { return edge.apply(rc) })()
	cluster := controlplane.ClusterName(host, 20880)
	wait := func(what string, l *latest[*breezev1.RouteConfiguration], want string) {
		t.Helper()
		eventually(t, what+" routes "+want, func() (bool, string) {
			rc, _ := l.get()
			return routeTargets(rc) == want, routeTargets(rc)
		})
	}
	wait("sidecars'", &mesh, "default:"+cluster+"/")
	wait("gateway's", &edge, "default:"+cluster+"/")

	// Bound to the Gateway only: the gateway's table changes, the
	// sidecars' does not.
	apply(t, edgeRouter(ns, host, "ingress", "sayHello", "v2"))
	wait("gateway's", &edge, "by-method:"+cluster+"/version=v2")
	waitStatus(t, ns, "greeter", "True")
	// The snapshot that carried the gateway's new table carried the
	// sidecars' too (each is the whole mesh).
	if rc, _ := mesh.get(); routeTargets(rc) != "default:"+cluster+"/" {
		t.Errorf("sidecars' table after a MetaRouter bound to the gateway only: %s, want the default route, unchanged", routeTargets(rc))
	}
	t.Logf("bound to the gateway only: gateway %q, sidecars %q", routeTargets(must(edge.get())), routeTargets(must(mesh.get())))
	// mesh too, and a Gateway that is not there: both tables, a warning.
	apply(t, edgeRouter(ns, host, "mesh, ingress, missing", "sayHello", "v1"))
	wait("sidecars'", &mesh, "by-method:"+cluster+"/version=v1")
	wait("gateway's", &edge, "by-method:"+cluster+"/version=v1")
	waitStatus(t, ns, "greeter", "True")
	var warnings []any
	eventually(t, "a warning naming spec.gateways[2] in the MetaRouter's status", func() (bool, string) {
		st, _ := get(t, "MetaRouter", "metaprotocol.aeraki.io/v1alpha1", ns, "greeter").Object["status"].(map[string]any)
		warnings, _ = st["warnings"].([]any)
		for _, w := range warnings {
			if w.(map[string]any)["field"] == "spec.gateways[2]" {
				return true, fmt.Sprint(warnings)
			}
		}
		return false, fmt.Sprint(warnings)
	})
	t.Logf("status warnings: %v", warnings)

	// The Gateway gone: its EnvoyFilter goes, the Service's stay.
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("networking.istio.io/v1")
	u.SetKind("Gateway")
	u.SetNamespace(ns)
	u.SetName("ingress")
	if err := env.client.Delete(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	waitFilters(t, ns, "greeter-20880-breeze-inbound", "greeter-20880-breeze-outbound")
}

// Options.Revision labels every EnvoyFilter the controller computes,
// a Service's and a Gateway's, istio.io/rev=<revision>; without it none
// carries the label (every istiod revision applies them).
func TestRevisionLabel(t *testing.T) {
	svc := corev1.Service{ObjectMeta: objectMeta("demo", "greeter"), Spec: corev1.ServiceSpec{
		ClusterIP: "10.96.0.20", Selector: map[string]string{"app": "greeter"},
		Ports: []corev1.ServicePort{{Name: "tcp-metaprotocol-dubbo-greeter", Port: 20880}},
	}}
	gw := *object(t, strings.ReplaceAll(ingressGateway("demo"), `"./*"`, `"*"`))
	for _, revision := range []string{"canary", ""} {
		opts := Options{XDSAddress: "breeze:15010", Revision: revision}
		efs, _, err := ServiceEnvoyFilters(&svc, nil, opts)
		if err != nil {
			t.Fatal(err)
		}
		gefs, _, err := GatewayEnvoyFilters([]unstructured.Unstructured{gw}, nil, []corev1.Service{svc}, opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(efs) != 2 || len(gefs) != 1 {
			t.Fatalf("revision %q: %d EnvoyFilters for the Service, %d for the Gateway, want 2 and 1", revision, len(efs), len(gefs))
		}
		for _, ef := range append(efs, gefs...) {
			got, ok := ef.GetLabels()[LabelIstioRevision]
			if got != revision || ok != (revision != "") {
				t.Errorf("revision %q: EnvoyFilter %s labels %v", revision, ef.GetName(), ef.GetLabels())
			}
		}
	}
	t.Logf("with Revision canary, all three labelled istio.io/rev=canary; without, none")
}

// On a delta ADS stream subscribed to a host's sidecar table and its
// gateway table, a MetaRouter bound to the gateway sends the gateway's
// table alone: the sidecars' is not even sent again.
func TestGatewayMetaRouterSendsOnlyTheGatewayTable(t *testing.T) {
	ns := namespace(t)
	host := "greeter." + ns + ".svc.cluster.local"
	apply(t, greeterService(ns))
	apply(t, destinationRule(ns, host))
	apply(t, ingressGateway(ns))
	conn, err := grpc.NewClient(env.xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mesh, edge := controlplane.RouteConfigName(host, 20880), controlplane.GatewayRouteConfigName(ns, "ingress", host, 20880)
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: nodeOf(ns), TypeUrl: client.RouteConfigurationType, ResourceNamesSubscribe: []string{mesh, edge},
	}); err != nil {
		t.Fatal(err)
	}
	var got []string
	recv := func() {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("delta stream: %v", err)
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetResources() {
			got = append(got, r.GetName())
		}
	}
	// Both tables first (in one response or two, as the snapshots come).
	for !slices.Contains(got, mesh) || !slices.Contains(got, edge) {
		recv()
	}
	got = nil
	apply(t, edgeRouter(ns, host, "ingress", "sayHello", "v2"))
	recv()
	if !slices.Equal(got, []string{edge}) {
		t.Fatalf("after a MetaRouter bound to the gateway: delta response %v, want [%s] only", got, edge)
	}
	t.Logf("delta response after a gateway-bound MetaRouter: %v", got)
}

// Two Breeze Services on 20880 that a Gateway's server selects, and no
// MetaRouter bound to the Gateway to choose: a Warning Event on the
// Gateway naming both, and no gateway EnvoyFilter; a MetaRouter bound to
// the Gateway for one of them makes it the one exposed.
func TestGatewayAmbiguousHosts(t *testing.T) {
	ns := namespace(t)
	apply(t, greeterService(ns))
	apply(t, strings.ReplaceAll(greeterService(ns), "name: greeter,", "name: other,"))
	apply(t, ingressGateway(ns))
	ev := waitEvent(t, ns, "Gateway", "ingress", "Rejected")
	hosts := "greeter." + ns + ".svc.cluster.local, other." + ns + ".svc.cluster.local"
	if !strings.Contains(ev.Message, "selects 2 Breeze hosts ("+hosts+")") {
		t.Errorf("event message %q, want one naming both hosts (%s)", ev.Message, hosts)
	}
	t.Logf("event: %s %s: %s", ev.Type, ev.Reason, ev.Message)
	waitFilters(t, ns, "greeter-20880-breeze-inbound", "greeter-20880-breeze-outbound", "other-20880-breeze-inbound", "other-20880-breeze-outbound")

	host := "other." + ns + ".svc.cluster.local"
	apply(t, destinationRule(ns, host))
	apply(t, edgeRouter(ns, host, "ingress", "sayHello", "v1"))
	efs := waitFilters(t, ns, "greeter-20880-breeze-inbound", "greeter-20880-breeze-outbound", "other-20880-breeze-inbound", "other-20880-breeze-outbound", "ingress-20880-breeze-gateway")
	if got, _ := find(patch(t, efs["ingress-20880-breeze-gateway"], 0)["patch"], "route_config_name"); got != controlplane.GatewayRouteConfigName(ns, "ingress", host, 20880) {
		t.Errorf("gateway route_config_name %v, want other's gateway table", got)
	}
}
