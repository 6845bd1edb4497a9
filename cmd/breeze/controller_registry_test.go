package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/breeze-mesh/breeze/registry/zookeeper/zktest"
)

// registryEntries maps the names of the ServiceEntries in ns to their
// resourceVersions.
func registryEntries(c client.Client, ns string) (map[string]string, error) {
	l := &unstructured.UnstructuredList{}
	l.SetAPIVersion("networking.istio.io/v1")
	l.SetKind("ServiceEntryList")
	if err := c.List(context.Background(), l, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, o := range l.Items {
		out[o.GetName()] = o.GetResourceVersion()
	}
	return out, nil
}

// registryWrites is a replica's breeze_registry_serviceentry_writes_total
// by op; an absent series (no write of that op yet) counts 0.
func registryWrites(p *controllerProcess) map[string]float64 {
	_, body := status("http://" + p.metrics + "/metrics")
	out := map[string]float64{}
	for _, op := range []string{"create", "update", "delete"} {
		out[op] = max(0, counter(body, `breeze_registry_serviceentry_writes_total{op="`+op+`"}`))
	}
	return out
}

// Two `breeze controller -leader-elect -zookeeper` replicas against a real
// ZooKeeper and API server: only the leader writes the registry's
// ServiceEntries (the other's write counters stay at 0 while a new
// interface appears); SIGTERM on the leader hands the Lease to the other,
// which adopts the objects as they are (no write: their resourceVersions
// do not move) and then follows a new provider (one create).
func TestControllerRegistryWritesOnTheLeaderOnly(t *testing.T) {
	c, kubeconfig := kubeAPIServer(t)
	zs := zktest.Start(t)
	conn, _, err := zk.Connect([]string{zs.Addr}, 10*time.Second, zk.WithLogger(quietZK{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const ns = "dubbo-registry"
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	registerProvider(t, conn, "org.breeze.Greeter", "10.0.0.1:20880")
	regFlags := []string{"-zookeeper", zs.Addr, "-registry-namespace", ns}

	first := startController(t, "first replica", kubeconfig, regFlags...)
	var holder string
	waitFor(t, "the first replica to take the Lease", func() (bool, string) {
		h, err := leaseHolder(c)
		holder = h
		return err == nil && h != "", fmt.Sprintf("holder %q, %v", h, err)
	})
	const greeter, other, added = "dubbo-org.breeze.greeter", "dubbo-org.breeze.other", "dubbo-org.breeze.added"
	entriesAre := func(what string, names ...string) map[string]string {
		t.Helper()
		var got map[string]string
		waitFor(t, what, func() (bool, string) {
			var err error
			got, err = registryEntries(c, ns)
			if err != nil {
				return false, err.Error()
			}
			return slices.Equal(slices.Sorted(maps.Keys(got)), names), fmt.Sprintf("ServiceEntries %v", got)
		})
		return got
	}
	entriesAre("the leader to write "+greeter, greeter)

	second := startController(t, "second replica", kubeconfig, regFlags...)
	waitFor(t, "the second replica's leader_election_master_status 0", func() (bool, string) {
		_, body := status("http://" + second.metrics + "/metrics")
		return counter(body, `leader_election_master_status{name="breeze-controller"}`) == 0, body
	})
	registerProvider(t, conn, "org.breeze.Other", "10.0.0.2:20880")
	before := entriesAre("the leader to write "+other+" with both replicas up", greeter, other)
	// The leader counts a write once the API server has answered it,
	// which may come after the object shows.
	waitFor(t, "the leader to count two creates", func() (bool, string) {
		w := registryWrites(first)
		return w["create"] == 2, fmt.Sprintf("leader's breeze_registry_serviceentry_writes_total %v", w)
	})
	if w := registryWrites(first); w["update"] != 0 || w["delete"] != 0 {
		t.Errorf("leader's breeze_registry_serviceentry_writes_total %v, want create 2 (one per interface), no update or delete", w)
	}
	if w := registryWrites(second); w["create"]+w["update"]+w["delete"] != 0 {
		t.Errorf("the replica that is not leader wrote ServiceEntries: %v", w)
	}
	// Not even read: the registry's series appear with its first set.
	instances := `breeze_registry_instances{registry="zookeeper ` + zs.Addr + `"}`
	if _, body := status("http://" + second.metrics + "/metrics"); counter(body, instances) != -1 {
		t.Errorf("the replica that is not leader follows the registry: %s %v", instances, counter(body, instances))
	}
	t.Logf("both replicas up: leader %v, other %v; ServiceEntries %v", registryWrites(first), registryWrites(second), before)

	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	if code := first.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("first replica after SIGTERM: exit status %d\n%s", code, first.stderr.String())
	}
	waitFor(t, "the second replica to take the Lease", func() (bool, string) {
		h, err := leaseHolder(c)
		return err == nil && h != "" && h != holder, fmt.Sprintf("holder %q (the first was %q), %v", h, holder, err)
	})
	// The new leader has adopted what it found once it has read the
	// registry (the sync touches nothing before); its pass over that read
	// comes before the pass for the provider registered after it.
	waitFor(t, "the new leader to read the registry", func() (bool, string) {
		_, body := status("http://" + second.metrics + "/metrics")
		n := counter(body, instances)
		return n == 2, fmt.Sprintf("breeze_registry_instances %v", n)
	})
	registerProvider(t, conn, "org.breeze.Added", "10.0.0.3:20880")
	after := entriesAre("the new leader to write "+added, added, greeter, other)
	for _, name := range []string{greeter, other} {
		if after[name] != before[name] {
			t.Errorf("ServiceEntry %s rewritten on the change of leader: resourceVersion %s, was %s", name, after[name], before[name])
		}
	}
	waitFor(t, "the new leader to count its create", func() (bool, string) {
		w := registryWrites(second)
		return w["create"] == 1, fmt.Sprintf("new leader's breeze_registry_serviceentry_writes_total %v", w)
	})
	if w := registryWrites(second); w["update"] != 0 || w["delete"] != 0 {
		t.Errorf("new leader's breeze_registry_serviceentry_writes_total %v, want create 1 (%s) and nothing else: it should adopt the others", w, added)
	}
	t.Logf("after the leader's SIGTERM: new leader %v; ServiceEntries %v (were %v)", registryWrites(second), after, before)
}
