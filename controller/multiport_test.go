package controller

import (
	"fmt"
	"strings"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

// TestMultiPortService: one Service with a Dubbo port, a Thrift port, an
// HTTP port and a port whose name says Dubbo but whose appProtocol says
// http gets EnvoyFilters for the two Breeze ports only, each what `breeze
// render` makes of that port with its own route table; the overridden
// name is said in an Event.
func TestMultiPortService(t *testing.T) {
	ns := namespace(t)
	apply(t, `
apiVersion: v1
kind: Service
metadata:
  name: shop
  namespace: `+ns+`
  annotations: {breeze.io/clients: app=consumer}
spec:
  selector: {app: shop}
  ports:
  - {name: tcp-metaprotocol-dubbo-orders, port: 20880, targetPort: 20881}
  - {name: tcp-metaprotocol-thrift-stock, port: 9090, targetPort: 9091}
  - {name: http-web, port: 8080}
  - {name: tcp-metaprotocol-dubbo-admin, port: 8081, appProtocol: http}
`)
	svc := get(t, "Service", "v1", ns, "shop")
	vip := str(svc, "spec", "clusterIP")
	host := "shop." + ns + ".svc.cluster.local"
	efs := waitFilters(t, ns, "shop-20880-breeze-inbound", "shop-20880-breeze-outbound", "shop-9090-breeze-inbound", "shop-9090-breeze-outbound")
	for _, p := range []struct {
		port, target uint32
		codec        string
	}{{20880, 20881, "dubbo"}, {9090, 9091, "thrift"}} {
		name := fmt.Sprintf("shop-%d", p.port)
		rendered, err := deploy.Render(&deploy.Service{Host: host, Name: name, Namespace: ns, VIP: vip, Port: p.port, TargetPort: p.target,
			Protocol: p.codec, Direction: deploy.Both, Clients: map[string]string{"app": "consumer"}, Selector: map[string]string{"app": "shop"},
			Outbound: &breezev1.ProxyConfig{Xds: &breezev1.XdsSource{Address: env.xds, RouteConfigName: deploy.RouteConfigName(host, p.port)}}})
		if err != nil || len(rendered) != 2 {
			t.Fatalf("render %s: %d EnvoyFilters, %v; want 2", name, len(rendered), err)
		}
		for _, ef := range rendered {
			want, err := toUnstructured(ef)
			if err != nil {
				t.Fatal(err)
			}
			got := efs[ef.Name]
			if got == nil {
				t.Errorf("no EnvoyFilter %s", ef.Name)
				continue
			}
			if g, w := specJSON(got), specJSON(want); g != w {
				t.Errorf("%s spec:\n got %s\nwant %s", got.GetName(), g, w)
			}
			checkOwner(t, got, "Service", svc)
		}
		out := efs[name+"-breeze-outbound"]
		if rn, _ := find(out.Object["spec"], "route_config_name"); rn != fmt.Sprintf("%s_%d", host, p.port) {
			t.Errorf("%s: route_config_name %v, want %s_%d (its own port's table)", out.GetName(), rn, host, p.port)
		}
		for _, dir := range []string{"outbound", "inbound"} {
			if c, _ := find(efs[name+"-breeze-"+dir].Object["spec"], "codec"); c != p.codec {
				t.Errorf("%s-breeze-%s: codec %v, want %s", name, dir, c, p.codec)
			}
		}
	}
	// Nothing of the HTTP ports appears in any of them.
	for name, ef := range efs {
		for _, port := range []string{"8080", "8081"} {
			if s := specJSON(ef); strings.Contains(s, vip+"_"+port) || strings.Contains(s, `"portNumber":`+port) || strings.Contains(s, `"destinationPort":`+port) {
				t.Errorf("%s touches HTTP port %s: %s", name, port, s)
			}
		}
	}
	ev := waitEvent(t, ns, "Service", "shop", "AppProtocolOverridesName")
	if !strings.Contains(ev.Message, "tcp-metaprotocol-dubbo-admin") {
		t.Errorf("AppProtocolOverridesName event %q, want it to name port tcp-metaprotocol-dubbo-admin", ev.Message)
	}
	t.Logf("event: %s %s: %s", ev.Type, ev.Reason, ev.Message)
}

// TestSameCodecTwoPorts: two Dubbo ports of one Service are two route
// tables over xDS, <host>_<port> each. Aeraki's MetaRouter has no port of
// its own (one per host, the same routes on every port of it): a route
// without a destination port goes to the table's own port, one with a
// port to that port, so the tables differ; their endpoints are each
// port's target port. A second MetaRouter for the same host is rejected.
func TestSameCodecTwoPorts(t *testing.T) {
	ns := namespace(t)
	host := "pay." + ns + ".svc.cluster.local"
	apply(t, `
apiVersion: v1
kind: Service
metadata: {name: pay, namespace: `+ns+`}
spec:
  selector: {app: pay}
  ports:
  - {name: tcp-metaprotocol-dubbo-v2api, port: 20880, targetPort: 20881}
  - {name: tcp-metaprotocol-dubbo-v3api, port: 20990, targetPort: 20991}
`)
	apply(t, `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: pay-abc
  namespace: `+ns+`
  labels: {kubernetes.io/service-name: pay}
addressType: IPv4
ports:
- {name: tcp-metaprotocol-dubbo-v2api, port: 20881, protocol: TCP}
- {name: tcp-metaprotocol-dubbo-v3api, port: 20991, protocol: TCP}
endpoints:
- addresses: [10.2.0.1]
  conditions: {ready: true}
`)
	apply(t, destinationRule(ns, host))
	apply(t, `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: pay, namespace: `+ns+`}
spec:
  hosts: [`+host+`]
  routes:
  - name: refunds
    match:
      attributes:
        method: {exact: refund}
    route:
    - destination: {host: `+host+`, subset: v2}
  - name: rest
    route:
    - destination: {host: `+host+`, port: {number: 20880}}
`)
	waitFilters(t, ns, "pay-20880-breeze-inbound", "pay-20880-breeze-outbound", "pay-20990-breeze-inbound", "pay-20990-breeze-outbound")

	c, err := client.New(client.Options{Address: env.xds, NodeID: "test-" + ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c1, c2 := controlplane.ClusterName(host, 20880), controlplane.ClusterName(host, 20990)
	var r1, r2 latest[*breezev1.RouteConfiguration]
	var e1, e2 latest[*endpointv3.ClusterLoadAssignment]
	defer c.WatchRoutes(controlplane.RouteConfigName(host, 20880), func(rc *breezev1.RouteConfiguration) error { return r1.apply(rc) })()
	defer c.WatchRoutes(controlplane.RouteConfigName(host, 20990), func(rc *breezev1.RouteConfiguration) error { return r2.apply(rc) })()
	defer c.WatchEndpoints(c1, func(cla *endpointv3.ClusterLoadAssignment) error { return e1.apply(cla) })()
	defer c.WatchEndpoints(c2, func(cla *endpointv3.ClusterLoadAssignment) error { return e2.apply(cla) })()
	for _, tc := range []struct {
		table string
		got   *latest[*breezev1.RouteConfiguration]
		want  string
	}{
		{controlplane.RouteConfigName(host, 20880), &r1, "refunds:" + c1 + "/version=v2 rest:" + c1 + "/"},
		{controlplane.RouteConfigName(host, 20990), &r2, "refunds:" + c2 + "/version=v2 rest:" + c1 + "/"},
	} {
		eventually(t, "route table "+tc.table+": "+tc.want, func() (bool, string) {
			rc, _ := tc.got.get()
			return rc.GetName() == tc.table && routeTargets(rc) == tc.want, rc.GetName() + ": " + routeTargets(rc)
		})
		rc, _ := tc.got.get()
		t.Logf("table %s: %s", rc.GetName(), routeTargets(rc))
	}
	for _, tc := range []struct {
		cluster string
		got     *latest[*endpointv3.ClusterLoadAssignment]
		want    string
	}{{c1, &e1, "10.2.0.1:20881"}, {c2, &e2, "10.2.0.1:20991"}} {
		eventually(t, "endpoints of "+tc.cluster+": "+tc.want, func() (bool, string) {
			cla, _ := tc.got.get()
			return endpointAddrs(cla) == tc.want, endpointAddrs(cla)
		})
	}
	waitStatus(t, ns, "pay", "True")

	// A second MetaRouter for the host (one per port, say) is not how
	// Aeraki's API scopes routes: rejected, the first keeps serving.
	apply(t, `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: pay-v3, namespace: `+ns+`}
spec:
  hosts: [`+host+`]
  routes:
  - name: all
    route:
    - destination: {host: `+host+`, port: {number: 20990}}
`)
	msg, _ := waitStatus(t, ns, "pay-v3", "False")
	if !strings.Contains(msg, "already taken") {
		t.Errorf("second MetaRouter for %s: status message %q, want it to say the host is already taken", host, msg)
	}
	t.Logf("second MetaRouter: %s", msg)
	if rc, _ := r2.get(); routeTargets(rc) != "refunds:"+c2+"/version=v2 rest:"+c1+"/" {
		t.Errorf("table %s after a second MetaRouter: %s, want the first MetaRouter's", rc.GetName(), routeTargets(rc))
	}
}
