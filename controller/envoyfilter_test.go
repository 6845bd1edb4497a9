package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/breeze-mesh/breeze/deploy"
	"github.com/breeze-mesh/breeze/internal/kubetest"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	xdsclient "github.com/breeze-mesh/breeze/xds/client"
)

// envoyFilters lists the EnvoyFilters of a namespace, by name.
func envoyFilters(t *testing.T, ns string) map[string]*unstructured.Unstructured {
	t.Helper()
	l := &unstructured.UnstructuredList{}
	l.SetGroupVersionKind(EnvoyFilterGVK.GroupVersion().WithKind("EnvoyFilterList"))
	if err := env.client.List(context.Background(), l, client.InNamespace(ns)); err != nil {
		t.Fatalf("listing EnvoyFilters: %v", err)
	}
	out := map[string]*unstructured.Unstructured{}
	for i := range l.Items {
		out[l.Items[i].GetName()] = &l.Items[i]
	}
	return out
}

// waitFilters waits until the namespace holds exactly the EnvoyFilters
// named, and returns them.
func waitFilters(t *testing.T, ns string, names ...string) map[string]*unstructured.Unstructured {
	t.Helper()
	slices.Sort(names)
	var got map[string]*unstructured.Unstructured
	eventually(t, fmt.Sprintf("EnvoyFilters %v in %s", names, ns), func() (bool, string) {
		got = envoyFilters(t, ns)
		have := slices.Sorted(maps.Keys(got))
		return slices.Equal(have, names), fmt.Sprint(have)
	})
	return got
}

func get(t *testing.T, kind, apiVersion, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	if err := env.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		t.Fatalf("getting %s %s/%s: %v", kind, ns, name, err)
	}
	return u
}

// specJSON is the EnvoyFilter's spec as JSON, for comparing.
func specJSON(u *unstructured.Unstructured) string {
	b, _ := json.Marshal(u.Object["spec"])
	return string(b)
}

// expected renders, with deploy's Render (what `breeze render` ships),
// the EnvoyFilter a service description makes, as the API server returns it.
func expected(t *testing.T, s deploy.Service) *unstructured.Unstructured {
	t.Helper()
	efs, err := deploy.Render(&s)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	if len(efs) != 1 {
		t.Fatalf("render: %d EnvoyFilters, want 1", len(efs))
	}
	u, err := toUnstructured(efs[0])
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// find returns the first value under key anywhere in v.
func find(v any, key string) (any, bool) {
	switch x := v.(type) {
	case map[string]any:
		if val, ok := x[key]; ok {
			return val, true
		}
		for _, k := range slices.Sorted(maps.Keys(x)) {
			if val, ok := find(x[k], key); ok {
				return val, true
			}
		}
	case []any:
		for _, e := range x {
			if val, ok := find(e, key); ok {
				return val, true
			}
		}
	}
	return nil, false
}

func str(u *unstructured.Unstructured, fields ...string) string {
	v, _, _ := unstructured.NestedFieldNoCopy(u.Object, fields...)
	return fmt.Sprint(v)
}

// patch returns the n-th configPatch of an EnvoyFilter.
func patch(t *testing.T, u *unstructured.Unstructured, n int) map[string]any {
	t.Helper()
	ps, _, _ := unstructured.NestedSlice(u.Object, "spec", "configPatches")
	if n >= len(ps) {
		t.Fatalf("%s: %d configPatches, want more than %d", u.GetName(), len(ps), n)
	}
	return ps[n].(map[string]any)
}

func checkOwner(t *testing.T, ef *unstructured.Unstructured, kind string, owner *unstructured.Unstructured) {
	t.Helper()
	refs := ef.GetOwnerReferences()
	if len(refs) != 1 || refs[0].Kind != kind || refs[0].Name != owner.GetName() || refs[0].UID != owner.GetUID() || refs[0].Controller == nil || !*refs[0].Controller {
		t.Errorf("%s: ownerReferences %+v, want the one controller reference to %s %s (uid %s)", ef.GetName(), refs, kind, owner.GetName(), owner.GetUID())
	}
	l := ef.GetLabels()
	want := map[string]string{LabelManagedBy: "breeze", LabelSourceKind: kind, LabelSourceName: owner.GetName()}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("%s: label %s = %q, want %q (labels %v)", ef.GetName(), k, l[k], v, l)
		}
	}
}

// TestServiceEnvoyFilters: a Service with a Breeze port gets an outbound
// EnvoyFilter on its clients and an inbound one on its pods, field by
// field what `breeze render` makes of it, owned by the Service; an HTTP
// Service in the same namespace gets nothing; a change of shape updates
// them; deleting the Service deletes them.
func TestServiceEnvoyFilters(t *testing.T) {
	ns := namespace(t)
	svc := apply(t, `
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: `+ns+`}
spec:
  selector: {app: greeter}
  ports:
  - {name: tcp-metaprotocol-dubbo-greeter, port: 20880, targetPort: 20881}
  - {name: http-admin, port: 8080}
`)
	apply(t, `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: `+ns+`}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, appProtocol: http}
`)
	svc = get(t, "Service", "v1", ns, "greeter")
	vip := str(svc, "spec", "clusterIP")
	host := "greeter." + ns + ".svc.cluster.local"
	efs := waitFilters(t, ns, "greeter-20880-breeze-inbound", "greeter-20880-breeze-outbound")

	out, in := efs["greeter-20880-breeze-outbound"], efs["greeter-20880-breeze-inbound"]
	wantOut := expected(t, deploy.Service{Host: host, Name: "greeter-20880", Namespace: ns, VIP: vip, Port: 20880, TargetPort: 20881,
		Protocol: "dubbo", Direction: deploy.Outbound,
		Outbound: &breezev1.ProxyConfig{Xds: &breezev1.XdsSource{Address: env.xds, RouteConfigName: host + "_20880"}}})
	wantIn := expected(t, deploy.Service{Host: host, Name: "greeter-20880", Namespace: ns, Port: 20880, TargetPort: 20881,
		Protocol: "dubbo", Direction: deploy.Inbound, Selector: map[string]string{"app": "greeter"}})
	if got, want := specJSON(out), specJSON(wantOut); got != want {
		t.Errorf("outbound spec:\n got %s\nwant %s", got, want)
	}
	if got, want := specJSON(in), specJSON(wantIn); got != want {
		t.Errorf("inbound spec:\n got %s\nwant %s", got, want)
	}
	// The fields that put it where it belongs, one by one.
	p := patch(t, out, 0)
	if got := fmt.Sprint(p["match"].(map[string]any)["context"]); got != "SIDECAR_OUTBOUND" {
		t.Errorf("outbound patch context %s, want SIDECAR_OUTBOUND", got)
	}
	if got, _ := find(p["match"], "name"); got != vip+"_20880" {
		t.Errorf("outbound listener %v, want %s_20880 (Istio's <vip>_<port>)", got, vip)
	}
	if _, ok := out.Object["spec"].(map[string]any)["workloadSelector"]; ok {
		t.Errorf("outbound workloadSelector %v, want none (every client pod of the namespace)", out.Object["spec"].(map[string]any)["workloadSelector"])
	}
	if got, _ := find(p["patch"], "route_config_name"); got != host+"_20880" {
		t.Errorf("plugin config route_config_name %v, want %s_20880", got, host)
	}
	if got, _ := find(p["patch"], "address"); got != env.xds {
		t.Errorf("plugin config xds address %v, want the controller's %s", got, env.xds)
	}
	if got := str(in, "spec", "workloadSelector", "labels"); got != "map[app:greeter]" {
		t.Errorf("inbound workloadSelector.labels %s, want map[app:greeter] (the Service's selector)", got)
	}
	var inPort any
	for i := range 3 {
		if v, ok := find(patch(t, in, i)["match"], "destinationPort"); ok {
			inPort = v
			break
		}
	}
	if fmt.Sprint(inPort) != "20881" {
		t.Errorf("inbound filterChain.destinationPort %v, want 20881 (the targetPort)", inPort)
	}
	checkOwner(t, out, "Service", svc)
	checkOwner(t, in, "Service", svc)
	// Without breeze.io/clients, the outbound side lands on the
	// service's own pods too: their inbound side dials the app with the
	// Go socket and adds no plainText cluster, so the pod's is the
	// outbound side's (mTLS).
	if got, _ := find(patch(t, in, 0)["patch"], "upstream_connect"); got != "GO_LOOPBACK" {
		t.Errorf("inbound plugin config upstream_connect %v, want GO_LOOPBACK", got)
	}
	for _, cp := range in.Object["spec"].(map[string]any)["configPatches"].([]any) {
		if cp.(map[string]any)["applyTo"] == "CLUSTER" {
			t.Errorf("inbound EnvoyFilter patches a cluster: %v; want none (the pod's plainText is the outbound side's)", cp)
		}
	}

	// A new selector is a new shape: the inbound EnvoyFilter follows, the
	// outbound one is left as it was.
	outVersion := out.GetResourceVersion()
	apply(t, `
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: `+ns+`}
spec:
  clusterIP: `+vip+`
  selector: {app: greeter, tier: v2}
  ports:
  - {name: tcp-metaprotocol-dubbo-greeter, port: 20880, targetPort: 20881}
  - {name: http-admin, port: 8080}
`)
	eventually(t, "the inbound EnvoyFilter to select app=greeter,tier=v2", func() (bool, string) {
		in = envoyFilters(t, ns)["greeter-20880-breeze-inbound"]
		if in == nil {
			return false, "no inbound EnvoyFilter"
		}
		got := str(in, "spec", "workloadSelector", "labels")
		return got == "map[app:greeter tier:v2]", got
	})
	if v := envoyFilters(t, ns)["greeter-20880-breeze-outbound"].GetResourceVersion(); v != outVersion {
		t.Errorf("outbound EnvoyFilter resourceVersion %s → %s: rewritten for a selector change, which does not concern it", outVersion, v)
	}

	// A port renamed to HTTP is no longer Breeze's: its EnvoyFilters go.
	apply(t, `
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: `+ns+`}
spec:
  clusterIP: `+vip+`
  selector: {app: greeter, tier: v2}
  ports:
  - {name: http-greeter, port: 20880, targetPort: 20881}
  - {name: http-admin, port: 8080}
`)
	waitFilters(t, ns)

	apply(t, `
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: `+ns+`}
spec:
  clusterIP: `+vip+`
  selector: {app: greeter}
  ports:
  - {name: tcp-metaprotocol-dubbo-greeter, port: 20880, targetPort: 20881}
`)
	waitFilters(t, ns, "greeter-20880-breeze-inbound", "greeter-20880-breeze-outbound")
	// Envtest runs no garbage collector: the controller deletes what it
	// owns itself.
	if err := env.client.Delete(context.Background(), &corev1.Service{ObjectMeta: objectMeta(ns, "greeter")}); err != nil {
		t.Fatal(err)
	}
	waitFilters(t, ns)
}

// TestUnknownCodec: a port named for a MetaProtocol codec Breeze does not
// have gets an Event on its Service, and no EnvoyFilter.
func TestUnknownCodec(t *testing.T) {
	ns := namespace(t)
	apply(t, `
apiVersion: v1
kind: Service
metadata: {name: odd, namespace: `+ns+`}
spec:
  selector: {app: odd}
  ports:
  - {name: tcp-metaprotocol-brpc-odd, port: 9000}
`)
	ev := waitEvent(t, ns, "Service", "odd", "UnknownCodec")
	if !strings.Contains(ev.Message, `"brpc"`) {
		t.Errorf("event message %q, want it to name the protocol brpc", ev.Message)
	}
	t.Logf("event: %s %s: %s", ev.Type, ev.Reason, ev.Message)
	// The Event is written after the EnvoyFilters were: none is there.
	if efs := envoyFilters(t, ns); len(efs) != 0 {
		t.Errorf("EnvoyFilters %v for a port Breeze has no codec for, want none", slices.Sorted(maps.Keys(efs)))
	}

	// An Aeraki ApplicationProtocol that maps the protocol to a codec
	// Breeze has makes the port Breeze's.
	apply(t, `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {name: brpc, namespace: `+ns+`}
spec: {protocol: brpc, codec: aeraki.meta_protocol.codec.dubbo}
`)
	efs := waitFilters(t, ns, "odd-9000-breeze-inbound", "odd-9000-breeze-outbound")
	if got, _ := find(patch(t, efs["odd-9000-breeze-outbound"], 0)["patch"], "codec"); got != "dubbo" {
		t.Errorf("plugin config codec %v, want dubbo (the ApplicationProtocol's)", got)
	}
}

// waitEvent waits for an Event with reason on an object.
func waitEvent(t *testing.T, ns, kind, name, reason string) corev1.Event {
	t.Helper()
	return kubetest.WaitEvent(t, env.client, 30*time.Second, ns, kind, name, reason)
}

// TestServiceEntryEnvoyFilters: a ServiceEntry's Breeze port gets an
// outbound EnvoyFilter on its address and an inbound one on the workloads
// its workloadSelector selects, owned by it; one exported only to another
// namespace gets none here (its EnvoyFilters would live in its own).
func TestServiceEntryEnvoyFilters(t *testing.T) {
	ns := namespace(t)
	se := apply(t, `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: calc, namespace: `+ns+`}
spec:
  hosts: [calc.example.com]
  addresses: [240.240.0.5]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {name: tcp-metaprotocol-thrift-calc, number: 9090, protocol: TCP, targetPort: 9091}
  workloadSelector:
    labels: {app: calc}
`)
	apply(t, `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hidden, namespace: `+ns+`}
spec:
  hosts: [hidden.example.com]
  addresses: [240.240.0.6]
  exportTo: [elsewhere]
  resolution: STATIC
  ports:
  - {name: tcp-metaprotocol-thrift-hidden, number: 9090, protocol: TCP}
  endpoints:
  - address: 10.9.0.1
`)
	se = get(t, "ServiceEntry", "networking.istio.io/v1", ns, "calc")
	efs := waitFilters(t, ns, "calc-9090-breeze-inbound", "calc-9090-breeze-outbound")
	wantOut := expected(t, deploy.Service{Host: "calc.example.com", Name: "calc-9090", Namespace: ns, VIP: "240.240.0.5", Port: 9090, TargetPort: 9091,
		Protocol: "thrift", Direction: deploy.Outbound,
		Outbound: &breezev1.ProxyConfig{Xds: &breezev1.XdsSource{Address: env.xds, RouteConfigName: "calc.example.com_9090"}}})
	wantIn := expected(t, deploy.Service{Host: "calc.example.com", Name: "calc-9090", Namespace: ns, Port: 9090, TargetPort: 9091,
		Protocol: "thrift", Direction: deploy.Inbound, Selector: map[string]string{"app": "calc"}})
	if got, want := specJSON(efs["calc-9090-breeze-outbound"]), specJSON(wantOut); got != want {
		t.Errorf("outbound spec:\n got %s\nwant %s", got, want)
	}
	if got, want := specJSON(efs["calc-9090-breeze-inbound"]), specJSON(wantIn); got != want {
		t.Errorf("inbound spec:\n got %s\nwant %s", got, want)
	}
	checkOwner(t, efs["calc-9090-breeze-outbound"], "ServiceEntry", se)
	checkOwner(t, efs["calc-9090-breeze-inbound"], "ServiceEntry", se)

	// Its endpoints are the WorkloadEntries its workloadSelector selects;
	// the hidden one's are served too (exportTo decides where its
	// EnvoyFilters go, not what a plugin that asks may fetch).
	apply(t, `
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: calc-vm, namespace: `+ns+`}
spec:
  address: 10.2.0.1
  labels: {app: calc}
  ports: {tcp-metaprotocol-thrift-calc: 9095}
`)
	apply(t, `
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other-vm, namespace: `+ns+`}
spec:
  address: 10.2.0.2
  labels: {app: other}
`)
	c, err := xdsclient.New(xdsclient.Options{Address: env.xds, NodeID: "test-" + ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var calc, hidden latest[*endpointv3.ClusterLoadAssignment]
	defer c.WatchEndpoints("outbound|9090||calc.example.com", func(cla *endpointv3.ClusterLoadAssignment) error { return calc.apply(cla) })()
	defer c.WatchEndpoints("outbound|9090||hidden.example.com", func(cla *endpointv3.ClusterLoadAssignment) error { return hidden.apply(cla) })()
	eventually(t, "calc's endpoints: the selected WorkloadEntry", func() (bool, string) {
		cla, _ := calc.get()
		return endpointAddrs(cla) == "10.2.0.1:9095", endpointAddrs(cla)
	})
	eventually(t, "hidden's endpoints", func() (bool, string) {
		cla, _ := hidden.get()
		return endpointAddrs(cla) == "10.9.0.1:9090", endpointAddrs(cla)
	})

	if err := env.client.Delete(context.Background(), se); err != nil {
		t.Fatal(err)
	}
	waitFilters(t, ns)
}

// TestClientsAnnotation: breeze.io/clients selects the client pods of the
// outbound EnvoyFilter, and both sides are rendered together; the clients
// may be the providers themselves.
func TestClientsAnnotation(t *testing.T) {
	ns := namespace(t)
	apply(t, `
apiVersion: v1
kind: Service
metadata:
  name: greeter
  namespace: `+ns+`
  annotations: {breeze.io/clients: app=consumer}
spec:
  selector: {app: greeter}
  ports:
  - {name: tcp-dubbo, port: 20880}
`)
	efs := waitFilters(t, ns, "greeter-20880-breeze-inbound", "greeter-20880-breeze-outbound")
	if got := str(efs["greeter-20880-breeze-outbound"], "spec", "workloadSelector", "labels"); got != "map[app:consumer]" {
		t.Errorf("outbound workloadSelector.labels %s, want map[app:consumer] (the annotation)", got)
	}
	if got := str(efs["greeter-20880-breeze-inbound"], "spec", "workloadSelector", "labels"); got != "map[app:greeter]" {
		t.Errorf("inbound workloadSelector.labels %s, want map[app:greeter]", got)
	}
	// Clients that overlap the providers (pods that call the service and
	// serve it): both sides stay, the outbound one on the new clients;
	// the inbound side dials the app with the Go socket and brings no
	// plainText cluster, so the pods' plainText is the outbound side's.
	apply(t, `
apiVersion: v1
kind: Service
metadata:
  name: greeter
  namespace: `+ns+`
  annotations: {breeze.io/clients: app=greeter}
spec:
  selector: {app: greeter}
  ports:
  - {name: tcp-dubbo, port: 20880}
`)
	eventually(t, "the outbound EnvoyFilter to select app=greeter", func() (bool, string) {
		out := envoyFilters(t, ns)["greeter-20880-breeze-outbound"]
		if out == nil {
			return false, "no outbound EnvoyFilter"
		}
		got := str(out, "spec", "workloadSelector", "labels")
		return got == "map[app:greeter]", "outbound workloadSelector.labels " + got
	})
	in := envoyFilters(t, ns)["greeter-20880-breeze-inbound"]
	if in == nil {
		t.Fatal("the inbound EnvoyFilter is gone")
	}
	if got, _ := find(patch(t, in, 0)["patch"], "upstream_connect"); got != "GO_LOOPBACK" {
		t.Errorf("inbound plugin config upstream_connect %v, want GO_LOOPBACK", got)
	}
	if ps, _, _ := unstructured.NestedSlice(in.Object, "spec", "configPatches"); len(ps) != 1 {
		t.Errorf("inbound EnvoyFilter has %d configPatches, want 1 (the Go filter; no plainText cluster)", len(ps))
	}
}
