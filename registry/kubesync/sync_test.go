package kubesync_test

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/kubesync"
	"github.com/breeze-mesh/breeze/registry/zookeeper"
	"github.com/breeze-mesh/breeze/registry/zookeeper/zktest"
)

// runSync runs a Sync of the ZooKeeper at zkAddr into ns, as the
// controller's leader runs it, until stop (or the test's end).
func runSync(t *testing.T, ns, zkAddr string, metrics *registry.Metrics) (p *passes, stop func()) {
	t.Helper()
	p = &passes{}
	ctx, cancel := context.WithCancel(context.Background())
	s := &kubesync.Sync{
		Registry: &zookeeper.Registry{Servers: []string{zkAddr}, Log: testLog()},
		Kind:     "zookeeper", Namespace: ns, Client: env.client, Log: testLog(), Metrics: metrics,
		// Passes without a registry change come this often: each must
		// write nothing.
		Resync: 20 * time.Millisecond, Retry: 50 * time.Millisecond,
		OnSync: p.record,
	}
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Sync.Start returned %v, want nil once its context ends", err)
			}
		})
	}
	t.Cleanup(stop)
	return p, stop
}

// waitEntry waits for ServiceEntry name in ns to hold the endpoints want
// (summary's form), and returns it.
func waitEntry(t *testing.T, ns, name, want string) *unstructured.Unstructured {
	t.Helper()
	var got *unstructured.Unstructured
	eventually(t, "ServiceEntry "+ns+"/"+name+" with "+want, func() (bool, string) {
		got = serviceEntries(t, ns)[name]
		if got == nil {
			return false, "no such ServiceEntry"
		}
		s := summary(strictSpec(t, got))
		return strings.HasSuffix(s, want), s
	})
	return got
}

func waitGone(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, "ServiceEntry "+ns+"/"+name+" deleted", func() (bool, string) {
		o := serviceEntries(t, ns)[name]
		if o == nil {
			return true, ""
		}
		return false, "still there: " + summary(strictSpec(t, o))
	})
}

// checkWritten checks what a Sync wrote against the registry's own
// translation of the providers: Breeze's labels, one address out of
// kubesync.DefaultVIPs, and otherwise exactly registry.ServiceEntries'
// spec, read back strictly as Istio's ServiceEntry.
func checkWritten(t *testing.T, o *unstructured.Unstructured, urls ...string) netip.Addr {
	t.Helper()
	var instances []registry.Instance
	for _, u := range urls {
		in, err := registry.ParseURL(u)
		if err != nil {
			t.Fatal(err)
		}
		instances = append(instances, in)
	}
	want := registry.ServiceEntries(instances, o.GetNamespace())
	if len(want) != 1 || want[0].Name != o.GetName() {
		t.Fatalf("the providers translate to %d ServiceEntries (%v), want the one %s", len(want), want, o.GetName())
	}
	l := o.GetLabels()
	if l[kubesync.LabelManagedBy] != "breeze" || l[kubesync.LabelSourceKind] != "registry" || l[kubesync.LabelRegistry] != "zookeeper" {
		t.Errorf("ServiceEntry %s labels %v, want app.kubernetes.io/managed-by=breeze, breeze.io/source-kind=registry, breeze.io/registry=zookeeper", o.GetName(), l)
	}
	got := strictSpec(t, o)
	if len(got.GetAddresses()) != 1 {
		t.Fatalf("ServiceEntry %s addresses %v, want one", o.GetName(), got.GetAddresses())
	}
	vip, err := netip.ParseAddr(got.GetAddresses()[0])
	if err != nil || !kubesync.DefaultVIPs.Contains(vip) {
		t.Errorf("ServiceEntry %s address %q, want one of %s", o.GetName(), got.GetAddresses()[0], kubesync.DefaultVIPs)
	}
	spec := proto.Clone(want[0].Spec).(*networkingv1alpha3.ServiceEntry)
	spec.Addresses = got.GetAddresses()
	if !proto.Equal(got, spec) {
		t.Errorf("ServiceEntry %s holds\n%v\nwant the registry's translation\n%v", o.GetName(), got, spec)
	}
	return vip
}

func writes(t *testing.T, op string) float64 {
	return metric(t, crmetricsGatherer, "breeze_registry_serviceentry_writes_total", map[string]string{"op": op})
}

// TestWritesOnlyWhatChanged: the providers of two interfaces, registered
// as Dubbo Java 3.3.6 wrote its node, become two ServiceEntries; passes
// without a change write nothing; a new interface is one create, a
// provider gone one update of its interface's object alone, an interface
// without providers one delete; each keeps its address.
func TestWritesOnlyWhatChanged(t *testing.T) {
	ns := namespace(t)
	zs := zktest.Start(t)
	g1URL, g2URL := providerURL(t, "org.breeze.Greeter", "10.0.0.1:20880"), providerURL(t, "org.breeze.Greeter", "10.0.0.2:20881")
	g1 := register(t, zs.Addr, g1URL)
	register(t, zs.Addr, g2URL)
	p, _ := runSync(t, ns, zs.Addr, nil)

	const greeter, other = "dubbo-org.breeze.greeter", "dubbo-org.breeze.other"
	se := waitEntry(t, ns, greeter, "endpoints=[10.0.0.1:20880(version=1.0.0,application=java-iface,w100) 10.0.0.2:20881(version=1.0.0,application=java-iface,w100)]")
	vip := checkWritten(t, se, g1URL, g2URL)
	t.Logf("written: %s %s labels %v", greeter, summary(strictSpec(t, se)), se.GetLabels())
	rv := se.GetResourceVersion()
	creates, updates, deletes := writes(t, "create"), writes(t, "update"), writes(t, "delete")

	// The same set, translated again on every pass: no write.
	n := p.count()
	p.waitPass(t, "three more passes", n+3, anyPass)
	if got := serviceEntries(t, ns)[greeter].GetResourceVersion(); got != rv {
		t.Errorf("%s: resourceVersion %s → %s after passes without a registry change", greeter, rv, got)
	}
	if c, u := writes(t, "create")-creates, writes(t, "update")-updates; c != 0 || u != 0 {
		t.Errorf("passes without a registry change wrote %v creates and %v updates, want none", c, u)
	}
	t.Logf("%d passes without a change: resourceVersion %s kept, no write", p.count()-n, rv)

	// A new interface: one create, the other object untouched.
	oURL := providerURL(t, "org.breeze.Other", "10.0.0.3:20880")
	o := register(t, zs.Addr, oURL)
	checkWritten(t, waitEntry(t, ns, other, "endpoints=[10.0.0.3:20880(version=1.0.0,application=java-iface,w100)]"), oURL)
	if c := writes(t, "create") - creates; c != 1 {
		t.Errorf("a new interface: %v creates, want 1", c)
	}
	if got := serviceEntries(t, ns)[greeter].GetResourceVersion(); got != rv {
		t.Errorf("%s: resourceVersion %s → %s when another interface appeared", greeter, rv, got)
	}

	// A provider stops: its interface's object is updated, once.
	g1.stop()
	se = waitEntry(t, ns, greeter, "endpoints=[10.0.0.2:20881(version=1.0.0,application=java-iface,w100)]")
	if got := checkWritten(t, se, g2URL); got != vip {
		t.Errorf("%s: address %s → %s when a provider left; want it kept", greeter, vip, got)
	}
	if u := writes(t, "update") - updates; u != 1 {
		t.Errorf("a provider gone: %v updates, want 1", u)
	}

	// The last provider of an interface stops: its object is deleted.
	o.stop()
	waitGone(t, ns, other)
	if d := writes(t, "delete") - deletes; d != 1 {
		t.Errorf("an interface gone: %v deletes, want 1", d)
	}
	t.Logf("writes: %v creates, %v updates, %v deletes", writes(t, "create")-creates, writes(t, "update")-updates, writes(t, "delete")-deletes)

	// Deleted by hand: put back by the next pass (Resync), at the same
	// address (the host's hash, free again).
	if err := env.client.Delete(context.Background(), se); err != nil {
		t.Fatal(err)
	}
	back := waitEntry(t, ns, greeter, "endpoints=[10.0.0.2:20881(version=1.0.0,application=java-iface,w100)]")
	if back.GetUID() == se.GetUID() {
		t.Fatalf("%s: still the object deleted (uid %s)", greeter, se.GetUID())
	}
	if got := checkWritten(t, back, g2URL); got != vip {
		t.Errorf("%s put back at %s, want its address %s again", greeter, got, vip)
	}
	t.Logf("deleted by hand: put back (uid %s → %s), address %s", se.GetUID(), back.GetUID(), vip)
}

// TestStaleAndRestart: with ZooKeeper stopped the registry is stale and
// nothing is deleted; a Sync started again (a new leader) after an
// interface lost its providers adopts the objects it finds — no write for
// an unchanged one, its address kept — and deletes only the one the
// registry no longer has, once it has read the registry.
func TestStaleAndRestart(t *testing.T) {
	ns := namespace(t)
	zs := zktest.Start(t)
	gURL, oURL := providerURL(t, "org.breeze.Greeter", "10.0.0.1:20880"), providerURL(t, "org.breeze.Other", "10.0.0.3:20880")
	register(t, zs.Addr, gURL)
	o := register(t, zs.Addr, oURL)
	reg := prometheus.NewRegistry()
	p, stop := runSync(t, ns, zs.Addr, registry.NewMetrics(reg))
	const greeter, other = "dubbo-org.breeze.greeter", "dubbo-org.breeze.other"
	vip := checkWritten(t, waitEntry(t, ns, greeter, "endpoints=[10.0.0.1:20880(version=1.0.0,application=java-iface,w100)]"), gURL)
	waitEntry(t, ns, other, "endpoints=[10.0.0.3:20880(version=1.0.0,application=java-iface,w100)]")
	versions := func() map[string]string {
		out := map[string]string{}
		for name, o := range serviceEntries(t, ns) {
			out[name] = o.GetResourceVersion()
		}
		return out
	}
	before := versions()
	name := "zookeeper " + zs.Addr

	zs.Stop()
	n := p.count()
	p.waitPass(t, "a pass of the stale set", n, func(u registry.Update) bool { return u.Stale })
	if got := versions(); !maps.Equal(got, before) {
		t.Errorf("ZooKeeper stopped: ServiceEntries %v, want them untouched %v", got, before)
	}
	if v := metric(t, reg, "breeze_registry_stale", map[string]string{"registry": name}); v != 1 {
		t.Errorf("ZooKeeper stopped: breeze_registry_stale %v, want 1", v)
	}
	t.Logf("stale: ServiceEntries kept %v, breeze_registry_stale 1", slices.Sorted(maps.Keys(before)))
	zs.Restart()
	p.waitPass(t, "a fresh pass", p.count(), func(u registry.Update) bool { return !u.Stale })
	if v := metric(t, reg, "breeze_registry_stale", map[string]string{"registry": name}); v != 0 {
		t.Errorf("ZooKeeper back: breeze_registry_stale %v, want 0", v)
	}

	// The leader goes; meanwhile an interface loses its providers and
	// ZooKeeper is down when the next leader starts.
	stop()
	o.stop()
	zs.Stop()
	p2, _ := runSync(t, ns, zs.Addr, nil)
	if got := versions(); !maps.Equal(got, before) {
		t.Errorf("a new Sync before its first read of the registry: ServiceEntries %v, want them untouched %v", got, before)
	}
	if p2.count() != 0 {
		t.Errorf("a new Sync made %d passes before the registry answered, want none", p2.count())
	}
	updates := writes(t, "update")
	zs.Restart()
	waitGone(t, ns, other)
	p2.waitPass(t, "the new Sync's first pass", 0, anyPass)
	after := versions()
	if after[greeter] != before[greeter] || writes(t, "update") != updates {
		t.Errorf("a new Sync adopting an unchanged ServiceEntry: resourceVersion %s → %s, %v updates; want no write",
			before[greeter], after[greeter], writes(t, "update")-updates)
	}
	if got := checkWritten(t, serviceEntries(t, ns)[greeter], gURL); got != vip {
		t.Errorf("adopted %s: address %s → %s, want it kept", greeter, vip, got)
	}
	t.Logf("restart: %s adopted (resourceVersion %s, address %s kept), %s deleted after the first read", greeter, after[greeter], vip, other)
}
