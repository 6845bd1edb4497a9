package kubesync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	// The codec of the registry's port (tcp-dubbo).
	_ "github.com/breeze-mesh/breeze/codecs/dubbo"
	"github.com/breeze-mesh/breeze/controller"
	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/internal/kubetest"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/zookeeper"
	"github.com/breeze-mesh/breeze/registry/zookeeper/zktest"
	xdsclient "github.com/breeze-mesh/breeze/xds/client"
)

// latest keeps the last version of a resource an xDS client applied.
type latest[M proto.Message] struct {
	mu sync.Mutex
	m  M
}

func (l *latest[M]) apply(m proto.Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m != nil {
		l.m = m.(M)
	}
	return nil
}

func (l *latest[M]) get() M {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m
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

func envoyFilters(t *testing.T, ns string) map[string]*unstructured.Unstructured {
	t.Helper()
	l := &unstructured.UnstructuredList{}
	l.SetAPIVersion("networking.istio.io/v1alpha3")
	l.SetKind("EnvoyFilterList")
	if err := env.client.List(context.Background(), l, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]*unstructured.Unstructured{}
	for i := range l.Items {
		out[l.Items[i].GetName()] = &l.Items[i]
	}
	return out
}

func create(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatal(err)
	}
	if err := env.client.Create(context.Background(), u); err != nil {
		t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return u
}

// TestControllerServesTheRegistry: `breeze controller -zookeeper` end to
// end against a real ZooKeeper and kube-apiserver. Providers registered
// as Dubbo Java writes them become a ServiceEntry the controller then
// treats as any other: an outbound EnvoyFilter on its address, owned by
// it, and over xDS its cluster, endpoints and default route. A provider
// gone updates the endpoints; an interface without providers loses its
// ServiceEntry and EnvoyFilter; a hand-written ServiceEntry holding an
// interface's name is left alone (Event NameTaken); ZooKeeper stopped
// deletes nothing and sets breeze_registry_stale.
func TestControllerServesTheRegistry(t *testing.T) {
	ns := namespace(t)
	zs := zktest.Start(t)
	g1URL, g2URL := providerURL(t, "org.breeze.Greeter", "10.0.0.1:20880"), providerURL(t, "org.breeze.Greeter", "10.0.0.2:20881")
	g2URL = strings.Replace(g2URL, "&version=1.0.0", "&version=2.0.0", 1)
	g1 := register(t, zs.Addr, g1URL)
	register(t, zs.Addr, g2URL)
	o := register(t, zs.Addr, providerURL(t, "org.breeze.Other", "10.0.0.3:20880"))
	register(t, zs.Addr, providerURL(t, "org.breeze.Taken", "10.0.0.4:20880"))
	// Someone's own ServiceEntry, under the name the interface
	// org.breeze.Taken would get.
	mine := create(t, `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dubbo-org.breeze.taken, namespace: `+ns+`, labels: {team: payments}}
spec:
  hosts: [taken.example]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: DNS
`)
	conflicts := metric(t, crmetricsGatherer, "breeze_registry_serviceentry_conflicts_total", nil)

	p := &passes{}
	ctx, cancel := context.WithCancel(context.Background())
	serving := make(chan net.Addr, 1)
	done := make(chan error, 1)
	reg := &zookeeper.Registry{Servers: []string{zs.Addr}, Log: testLog()}
	go func() {
		done <- controller.Run(ctx, controller.Config{
			Rest: env.rest, XDSListen: "127.0.0.1:0", HealthAddr: "0", MetricsAddr: "0",
			Options:  controller.Options{Log: testLog()},
			Registry: reg, RegistryKind: "zookeeper", RegistryNamespace: ns,
			OnRegistrySync: p.record,
			OnServing:      func(a net.Addr) { serving <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	var xdsAddr string
	select {
	case a := <-serving:
		xdsAddr = a.String()
	case err := <-done:
		t.Fatalf("controller: %v", err)
	}

	const greeter, other = "dubbo-org.breeze.greeter", "dubbo-org.breeze.other"
	se := waitEntry(t, ns, greeter, "endpoints=[10.0.0.1:20880(version=1.0.0,application=java-iface,w100) 10.0.0.2:20881(version=2.0.0,application=java-iface,w100)]")
	vip := checkWritten(t, se, g1URL, g2URL)
	t.Logf("ServiceEntry %s: %s labels %v", greeter, summary(strictSpec(t, se)), se.GetLabels())
	waitEntry(t, ns, other, "endpoints=[10.0.0.3:20880(version=1.0.0,application=java-iface,w100)]")

	// The controller's EnvoyFilter for it: on the clients' <vip>_20880
	// listener, fetching route table org.breeze.Greeter_20880, owned by
	// the ServiceEntry.
	// Named after the ServiceEntry, its dots made dashes (a DNS label).
	outbound := "dubbo-org-breeze-greeter-20880-breeze-outbound"
	var ef *unstructured.Unstructured
	eventually(t, "EnvoyFilter "+outbound, func() (bool, string) {
		efs := envoyFilters(t, ns)
		ef = efs[outbound]
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range efs {
				if !yield(n) {
					return
				}
			}
		})
		return ef != nil, fmt.Sprint(names)
	})
	spec, _ := json.Marshal(ef.Object["spec"])
	host := "org.breeze.Greeter"
	routeName, cluster := controlplane.RouteConfigName(host, registry.ServicePort), controlplane.ClusterName(host, registry.ServicePort)
	if !strings.Contains(string(spec), `"`+vip.String()+`_20880"`) || !strings.Contains(string(spec), routeName) {
		t.Errorf("EnvoyFilter %s: want listener %s_20880 and route table %s in its spec:\n%s", outbound, vip, routeName, spec)
	}
	if refs := ef.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != se.GetUID() || refs[0].Kind != "ServiceEntry" {
		t.Errorf("EnvoyFilter %s owners %v, want the ServiceEntry %s (uid %s)", outbound, refs, greeter, se.GetUID())
	}
	t.Logf("EnvoyFilter %s: listener %s_20880, route table %s, owned by ServiceEntry %s", outbound, vip, routeName, greeter)

	// Over xDS: the cluster, its endpoints, the default route.
	c, err := xdsclient.New(xdsclient.Options{Address: xdsAddr, NodeID: "test-" + ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var clusters latest[*clusterv3.Cluster]
	var eps latest[*endpointv3.ClusterLoadAssignment]
	var routes latest[*breezev1.RouteConfiguration]
	defer c.WatchClusters(cluster, func(m *clusterv3.Cluster) error { return clusters.apply(m) })()
	defer c.WatchEndpoints(cluster, func(m *endpointv3.ClusterLoadAssignment) error { return eps.apply(m) })()
	defer c.WatchRoutes(routeName, func(m *breezev1.RouteConfiguration) error { return routes.apply(m) })()
	waitEndpoints := func(want string) {
		t.Helper()
		eventually(t, "xDS endpoints "+want, func() (bool, string) {
			got := endpointAddrs(eps.get())
			return got == want, got
		})
	}
	waitEndpoints("10.0.0.1:20880 10.0.0.2:20881")
	eventually(t, "xDS cluster "+cluster+" and route table "+routeName, func() (bool, string) {
		cl, rc := clusters.get(), routes.get()
		ok := cl.GetName() == cluster && len(rc.GetRoutes()) == 1 && rc.GetRoutes()[0].GetRoute().GetCluster() == cluster
		return ok, fmt.Sprintf("cluster %q, routes %v", cl.GetName(), rc.GetRoutes())
	})
	t.Logf("xDS: cluster %s, endpoints %s, route %s → %s", clusters.get().GetName(), endpointAddrs(eps.get()), routes.get().GetRoutes()[0].GetName(), cluster)

	// A provider stops: the endpoints follow, in the API and over xDS.
	g1.stop()
	waitEntry(t, ns, greeter, "endpoints=[10.0.0.2:20881(version=2.0.0,application=java-iface,w100)]")
	waitEndpoints("10.0.0.2:20881")

	// The last provider of an interface stops: its ServiceEntry and
	// EnvoyFilter go.
	eventually(t, "EnvoyFilter dubbo-org-breeze-other-20880-breeze-outbound", func() (bool, string) {
		_, there := envoyFilters(t, ns)["dubbo-org-breeze-other-20880-breeze-outbound"]
		return there, "not there"
	})
	o.stop()
	waitGone(t, ns, other)
	eventually(t, "EnvoyFilter dubbo-org-breeze-other-20880-breeze-outbound deleted", func() (bool, string) {
		_, there := envoyFilters(t, ns)["dubbo-org-breeze-other-20880-breeze-outbound"]
		return !there, "still there"
	})

	// The hand-written ServiceEntry: untouched, an Event says why.
	ev := waitEvent(t, ns, "ServiceEntry", "dubbo-org.breeze.taken", "NameTaken")
	t.Logf("Event on the hand-written ServiceEntry: %s %s: %s", ev.Type, ev.Reason, ev.Message)
	now := serviceEntries(t, ns)["dubbo-org.breeze.taken"]
	if now.GetResourceVersion() != mine.GetResourceVersion() || now.GetLabels()["breeze.io/source-kind"] != "" {
		t.Errorf("the hand-written ServiceEntry was written: resourceVersion %s → %s, labels %v", mine.GetResourceVersion(), now.GetResourceVersion(), now.GetLabels())
	}
	if hosts := strictSpec(t, now).GetHosts(); !slices.Equal(hosts, []string{"taken.example"}) {
		t.Errorf("the hand-written ServiceEntry's hosts %v, want its own [taken.example]", hosts)
	}
	if n := metric(t, crmetricsGatherer, "breeze_registry_serviceentry_conflicts_total", nil) - conflicts; n != 1 {
		t.Errorf("breeze_registry_serviceentry_conflicts_total rose by %v, want 1 (one name taken, reported once)", n)
	}

	// ZooKeeper stops: stale, nothing deleted, the endpoints still served.
	before := serviceEntries(t, ns)[greeter].GetResourceVersion()
	zs.Stop()
	p.waitPass(t, "a pass of the stale set", p.count(), func(u registry.Update) bool { return u.Stale })
	if v := metric(t, crmetricsGatherer, "breeze_registry_stale", map[string]string{"registry": reg.Name()}); v != 1 {
		t.Errorf("ZooKeeper stopped: breeze_registry_stale %v on /metrics, want 1", v)
	}
	se = serviceEntries(t, ns)[greeter]
	if se == nil || se.GetResourceVersion() != before {
		t.Fatalf("ZooKeeper stopped: ServiceEntry %s %v, want it kept unchanged (resourceVersion %s)", greeter, se, before)
	}
	if got := endpointAddrs(eps.get()); got != "10.0.0.2:20881" {
		t.Errorf("ZooKeeper stopped: xDS endpoints %q, want the last known 10.0.0.2:20881", got)
	}
	t.Logf("ZooKeeper stopped: breeze_registry_stale 1, %s kept (resourceVersion %s), xDS endpoints %s", greeter, before, endpointAddrs(eps.get()))
}

func waitEvent(t *testing.T, ns, kind, name, reason string) corev1.Event {
	t.Helper()
	return kubetest.WaitEvent(t, env.client, 60*time.Second, ns, kind, name, reason)
}
