package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/controlplane"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

// latest keeps the last version of a resource a client applied.
type latest[M proto.Message] struct {
	mu sync.Mutex
	m  M
	n  int
}

func (l *latest[M]) apply(m proto.Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m != nil {
		l.m = m.(M)
	}
	l.n++
	return nil
}

func (l *latest[M]) get() (M, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m, l.n
}

// routeTargets summarises a route table: "name:cluster/subset" per route.
func routeTargets(rc *breezev1.RouteConfiguration) string {
	var out []string
	for _, r := range rc.GetRoutes() {
		var sub []string
		for k, v := range r.GetRoute().GetSubset() {
			sub = append(sub, k+"="+v)
		}
		slices.Sort(sub)
		out = append(out, r.GetName()+":"+r.GetRoute().GetCluster()+"/"+strings.Join(sub, ","))
	}
	return strings.Join(out, " ")
}

func endpointAddrs(cla *endpointv3.ClusterLoadAssignment) string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			a := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s:%d", a.GetAddress(), a.GetPortValue()))
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func endpointSlice(ns, svc, name string, ready map[string]bool) string {
	var eps strings.Builder
	for _, addr := range slices.Sorted(func(yield func(string) bool) {
		for a := range ready {
			if !yield(a) {
				return
			}
		}
	}) {
		fmt.Fprintf(&eps, "- addresses: [%s]\n  conditions: {ready: %t}\n", addr, ready[addr])
	}
	// As the endpoint controller writes them: labelled with the Service,
	// ports by the Service port's name with the target port's number.
	return `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ` + name + `
  namespace: ` + ns + `
  labels:
    kubernetes.io/service-name: ` + svc + `
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
addressType: IPv4
ports:
- {name: tcp-metaprotocol-dubbo-greeter, port: 20881, protocol: TCP}
endpoints:
` + eps.String()
}

func greeterService(ns string) string {
	return `
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: ` + ns + `}
spec:
  selector: {app: greeter}
  ports:
  - {name: tcp-metaprotocol-dubbo-greeter, port: 20880, targetPort: 20881}
`
}

func metaRouter(ns, host, method, subset string) string {
	return `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: greeter, namespace: ` + ns + `}
spec:
  hosts: [` + host + `]
  routes:
  - name: by-method
    match:
      attributes:
        method: {exact: ` + method + `}
    route:
    - destination: {host: ` + host + `, subset: ` + subset + `}
`
}

func destinationRule(ns, host string) string {
	return `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter, namespace: ` + ns + `}
spec:
  host: ` + host + `
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`
}

// condition is a MetaRouter's Accepted condition and observedGeneration.
func condition(t *testing.T, ns, name string) (status, reason, message string, observed, generation int64, errs []any) {
	u := get(t, "MetaRouter", "metaprotocol.aeraki.io/v1alpha1", ns, name)
	st, _ := u.Object["status"].(map[string]any)
	conds, _ := st["conditions"].([]any)
	if len(conds) == 0 {
		return "", "", "", 0, u.GetGeneration(), nil
	}
	c := conds[0].(map[string]any)
	og, _ := st["observedGeneration"].(int64)
	errs, _ = st["errors"].([]any)
	return fmt.Sprint(c["status"]), fmt.Sprint(c["reason"]), fmt.Sprint(c["message"]), og, u.GetGeneration(), errs
}

func waitStatus(t *testing.T, ns, name, wantStatus string) (message string, errs []any) {
	t.Helper()
	eventually(t, "MetaRouter "+name+" status "+wantStatus+" for its generation", func() (bool, string) {
		s, r, m, og, gen, e := condition(t, ns, name)
		message, errs = m, e
		return s == wantStatus && og == gen, fmt.Sprintf("status=%s reason=%s observedGeneration=%d generation=%d message=%q", s, r, og, gen, m)
	})
	return message, errs
}

// TestXDSFromTheAPIServer: an xDS client of the controller gets the route
// table and endpoints of a Service with a Breeze port (EndpointSlices
// written as the endpoint controller would), follows MetaRouter and
// EndpointSlice changes, keeps the last good routes when a MetaRouter is
// rejected (status Rejected with the field, an Event); and no routing
// change rewrites an EnvoyFilter.
func TestXDSFromTheAPIServer(t *testing.T) {
	ns := namespace(t)
	host := "greeter." + ns + ".svc.cluster.local"
	apply(t, greeterService(ns))
	apply(t, endpointSlice(ns, "greeter", "greeter-abc", map[string]bool{"10.1.0.1": true, "10.1.0.2": true, "10.1.0.9": false}))
	efs := waitFilters(t, ns, "greeter-20880-breeze-inbound", "greeter-20880-breeze-outbound")
	versions := map[string]string{}
	for name, ef := range efs {
		versions[name] = ef.GetResourceVersion()
	}
	// The API server keeps the resourceVersion of an update that changes
	// nothing: the controller's own count shows it sends none either.
	updates := testutil.ToFloat64(filterWrites.WithLabelValues("update"))

	c, err := client.New(client.Options{Address: env.xds, NodeID: "test-" + ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var routes latest[*breezev1.RouteConfiguration]
	var eps latest[*endpointv3.ClusterLoadAssignment]
	defer c.WatchRoutes(controlplane.RouteConfigName(host, 20880), func(rc *breezev1.RouteConfiguration) error { return routes.apply(rc) })()
	defer c.WatchEndpoints(controlplane.ClusterName(host, 20880), func(cla *endpointv3.ClusterLoadAssignment) error { return eps.apply(cla) })()
	cluster := controlplane.ClusterName(host, 20880)
	waitRoutes := func(want string) {
		t.Helper()
		eventually(t, "routes "+want, func() (bool, string) {
			rc, _ := routes.get()
			return routeTargets(rc) == want, routeTargets(rc)
		})
	}
	waitEndpoints := func(want string) {
		t.Helper()
		eventually(t, "endpoints "+want, func() (bool, string) {
			cla, _ := eps.get()
			return endpointAddrs(cla) == want, endpointAddrs(cla)
		})
	}
	// No MetaRouter: the default route to the whole cluster; the ready
	// endpoints only, on the target port.
	waitRoutes("default:" + cluster + "/")
	waitEndpoints("10.1.0.1:20881 10.1.0.2:20881")
	t.Logf("served: routes %q, endpoints %q", routeTargets(must(routes.get())), endpointAddrs(must(eps.get())))

	apply(t, destinationRule(ns, host))
	apply(t, metaRouter(ns, host, "sayHello", "v1"))
	waitRoutes("by-method:" + cluster + "/version=v1")
	waitStatus(t, ns, "greeter", "True")
	apply(t, metaRouter(ns, host, "sayHello", "v2"))
	waitRoutes("by-method:" + cluster + "/version=v2")
	waitStatus(t, ns, "greeter", "True")

	// A subset the DestinationRule does not define: rejected, and the
	// last good routes keep serving.
	apply(t, metaRouter(ns, host, "sayHello", "v9"))
	msg, errs := waitStatus(t, ns, "greeter", "False")
	t.Logf("rejected: %s", msg)
	if len(errs) == 0 || errs[0].(map[string]any)["field"] != "spec.routes[0].route[0].destination.subset" {
		t.Errorf("status.errors %v, want the first naming spec.routes[0].route[0].destination.subset", errs)
	}
	if _, reason, _, _, _, _ := condition(t, ns, "greeter"); reason != "Rejected" {
		t.Errorf("condition reason %q, want Rejected", reason)
	}
	ev := waitEvent(t, ns, "MetaRouter", "greeter", "Rejected")
	t.Logf("event: %s", ev.Message)

	// The endpoint controller's next write: one endpoint gone, one new.
	apply(t, endpointSlice(ns, "greeter", "greeter-abc", map[string]bool{"10.1.0.2": true, "10.1.0.3": true}))
	waitEndpoints("10.1.0.2:20881 10.1.0.3:20881")
	// The snapshot that carried these endpoints held the rejected
	// MetaRouter too (each snapshot is the whole mesh, and this one came
	// after it): the client holds the last good routes.
	if rc, _ := routes.get(); routeTargets(rc) != "by-method:"+cluster+"/version=v2" {
		t.Errorf("routes after a rejected MetaRouter: %s, want the last good by-method:%s/version=v2", routeTargets(rc), cluster)
	}

	// Routing and endpoints changed five times; the EnvoyFilters not once.
	for name, ef := range envoyFilters(t, ns) {
		if ef.GetResourceVersion() != versions[name] {
			t.Errorf("EnvoyFilter %s: resourceVersion %s → %s after routing and endpoint changes only", name, versions[name], ef.GetResourceVersion())
		}
	}
	if n := testutil.ToFloat64(filterWrites.WithLabelValues("update")) - updates; n != 0 {
		t.Errorf("the controller sent %v EnvoyFilter updates during routing and endpoint changes, want none", n)
	}
}

func must[M any](m M, _ int) M { return m }

// TestOnlyChangedResourcesSent: on a delta ADS stream subscribed to two
// hosts' route tables, a change to one sends that one only.
func TestOnlyChangedResourcesSent(t *testing.T) {
	ns := namespace(t)
	hostA := "greeter." + ns + ".svc.cluster.local"
	hostB := "other." + ns + ".svc.cluster.local"
	apply(t, greeterService(ns))
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
	nameA, nameB := controlplane.RouteConfigName(hostA, 20880), controlplane.RouteConfigName(hostB, 20880)
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: nodeOf(ns), TypeUrl: client.RouteConfigurationType, ResourceNamesSubscribe: []string{nameA, nameB},
	}); err != nil {
		t.Fatal(err)
	}
	recv := func() []string {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("delta stream: %v", err)
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range resp.GetResources() {
			names = append(names, r.GetName())
		}
		return names
	}
	if got := recv(); !slices.Equal(got, []string{nameA}) {
		t.Fatalf("first delta response: %v, want [%s]", got, nameA)
	}
	// Another service appears, and a MetaRouter for it: host A's table
	// is not sent again.
	apply(t, strings.ReplaceAll(greeterService(ns), "name: greeter,", "name: other,"))
	if got := recv(); !slices.Equal(got, []string{nameB}) {
		t.Fatalf("after creating Service other: delta response %v, want [%s] only", got, nameB)
	}
	apply(t, destinationRule(ns, hostB))
	apply(t, metaRouter(ns, hostB, "sayHello", "v1"))
	got := recv()
	if !slices.Equal(got, []string{nameB}) {
		t.Fatalf("after a MetaRouter for other: delta response %v, want [%s] only", got, nameB)
	}
	t.Logf("delta responses carried only the changed table: %v", got)
}

func nodeOf(id string) *corev3.Node { return &corev3.Node{Id: id} }
