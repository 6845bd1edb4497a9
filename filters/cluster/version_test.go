package cluster

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// removals records what OnRemove is told.
type removals struct {
	mu    sync.Mutex
	calls [][]*Endpoint
}

func (r *removals) onRemove(eps []*Endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, slices.Clone(eps))
}

// all is every endpoint reported, in all calls.
func (r *removals) all() []*Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Concat(r.calls...)
}

func (r *removals) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func addrs(eps []*Endpoint) string {
	var s []string
	for _, ep := range eps {
		s = append(s, fmt.Sprintf("%s(%p)", ep.Addr, ep))
	}
	return "[" + strings.Join(s, " ") + "]"
}

// sameEndpoints fails unless got and want hold the same *Endpoint objects,
// each once, in any order.
func sameEndpoints(t *testing.T, what string, got, want []*Endpoint) {
	t.Helper()
	ok := len(got) == len(want)
	for _, ep := range want {
		if !slices.Contains(got, ep) {
			ok = false
		}
	}
	for i, ep := range got {
		if slices.Contains(got[i+1:], ep) {
			ok = false
		}
	}
	if !ok {
		t.Fatalf("%s: %s, want %s", what, addrs(got), addrs(want))
	}
}

func byAddr(t *testing.T, eps []*Endpoint, addr string) *Endpoint {
	t.Helper()
	for _, ep := range eps {
		if ep.Addr == addr {
			return ep
		}
	}
	t.Fatalf("no endpoint %s in %s", addr, addrs(eps))
	return nil
}

func ep(addr string, weight uint32, labels map[string]string) *breezev1.Endpoint {
	return &breezev1.Endpoint{Address: addr, Port: 1, Weight: weight, Labels: labels}
}

func staticConfig(policy breezev1.Cluster_LbPolicy, eps ...*breezev1.Endpoint) *breezev1.Cluster {
	return &breezev1.Cluster{Name: "c", LbPolicy: policy, Endpoints: eps}
}

func edsConfig(policy breezev1.Cluster_LbPolicy) *breezev1.Cluster {
	return &breezev1.Cluster{Name: "c", Type: breezev1.Cluster_EDS, LbPolicy: policy}
}

func mustNew(t *testing.T, c *breezev1.Cluster, opts Options) *Cluster {
	t.Helper()
	cl, err := New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

var (
	labelsV1 = map[string]string{"version": "v1"}
	labelsV2 = map[string]string{"version": "v2"}
)

// A new version of a cluster with another policy and the same endpoints
// keeps the endpoint objects, with their requests in flight, and removes
// nothing.
func TestPreviousKeepsEndpoints(t *testing.T) {
	eps := []*breezev1.Endpoint{ep("10.0.0.1", 0, labelsV1), ep("10.0.0.2", 3, labelsV2), ep("10.0.0.3", 0, nil)}
	var r1, r2 removals
	v1 := mustNew(t, staticConfig(breezev1.Cluster_ROUND_ROBIN, eps...), Options{OnRemove: r1.onRemove})
	old := slices.Clone(v1.Endpoints())
	busy := old[0]
	busy.Begin()
	busy.Begin()

	v2 := mustNew(t, staticConfig(breezev1.Cluster_RING_HASH, eps...), Options{Previous: v1, OnRemove: r2.onRemove})
	sameEndpoints(t, "new version", v2.Endpoints(), old)
	if n := byAddr(t, v2.Endpoints(), busy.Addr).Inflight(); n != 2 {
		t.Fatalf("requests in flight: %d, want 2", n)
	}
	if r1.count()+r2.count() != 0 {
		t.Fatalf("removed %s and %s, want nothing", addrs(r1.all()), addrs(r2.all()))
	}
	// Each version balances with its own policy over the shared endpoints.
	checkSticky(t, "new version (RING_HASH)", v2.Set(""))
	sameEndpoints(t, "previous version after New", v1.Endpoints(), old)
	checkRotates(t, "previous version (ROUND_ROBIN)", v1.Set(""))
}

// A new version reports to its OnRemove exactly the endpoints it dropped:
// gone from its config, or replaced because their weight or labels changed.
func TestPreviousReportsOnlyDropped(t *testing.T) {
	var r1, r2 removals
	v1 := mustNew(t, staticConfig(breezev1.Cluster_ROUND_ROBIN,
		ep("10.0.0.1", 0, labelsV1), // kept
		ep("10.0.0.2", 1, labelsV1), // weight changes
		ep("10.0.0.3", 0, labelsV1), // dropped
		ep("10.0.0.4", 0, labelsV1), // labels change
	), Options{OnRemove: r1.onRemove})
	old := slices.Clone(v1.Endpoints())
	v2 := mustNew(t, staticConfig(breezev1.Cluster_LEAST_REQUEST,
		ep("10.0.0.1", 0, labelsV1),
		ep("10.0.0.2", 2, labelsV1),
		ep("10.0.0.4", 0, labelsV2),
		ep("10.0.0.5", 0, labelsV1), // new
	), Options{Previous: v1, OnRemove: r2.onRemove})

	if r2.count() != 1 {
		t.Fatalf("OnRemove told %d times, want once", r2.count())
	}
	sameEndpoints(t, "removed", r2.all(), []*Endpoint{old[1], old[2], old[3]})
	if r1.count() != 0 {
		t.Fatalf("the previous version's OnRemove told of %s", addrs(r1.all()))
	}
	eps := v2.Endpoints()
	if byAddr(t, eps, "10.0.0.1:1") != old[0] {
		t.Fatal("an unchanged endpoint was replaced")
	}
	if e := byAddr(t, eps, "10.0.0.2:1"); e == old[1] || e.Weight != 2 {
		t.Fatalf("weight change: %p weight %d (previous %p)", e, e.Weight, old[1])
	}
	if e := byAddr(t, eps, "10.0.0.4:1"); e == old[3] || e.Labels["version"] != "v2" {
		t.Fatalf("label change: %p labels %v (previous %p)", e, e.Labels, old[3])
	}
	byAddr(t, eps, "10.0.0.5:1")
	if len(eps) != 4 {
		t.Fatalf("new version: %s", addrs(eps))
	}
	sameEndpoints(t, "previous version after New", v1.Endpoints(), old)
}

// An EDS cluster starts with its previous version's endpoints (the same
// objects), and then owns them.
func TestPreviousEDSStartsWithItsEndpoints(t *testing.T) {
	var r1, r2 removals
	v1 := mustNew(t, edsConfig(breezev1.Cluster_ROUND_ROBIN), Options{OnRemove: r1.onRemove, Subsets: routeSubsets(labelsV2)})
	v1.Update([]Spec{{Addr: "10.0.0.1:1", Labels: labelsV1}, {Addr: "10.0.0.2:1", Labels: labelsV2}, {Addr: "10.0.0.3:1", Labels: labelsV2}})
	old := slices.Clone(v1.Endpoints())
	old[1].Begin()

	if eps := mustNew(t, edsConfig(breezev1.Cluster_LEAST_REQUEST), Options{}).Endpoints(); len(eps) != 0 {
		t.Fatalf("an EDS cluster without a previous version starts with %s", addrs(eps))
	}
	v2 := mustNew(t, edsConfig(breezev1.Cluster_LEAST_REQUEST), Options{Previous: v1, OnRemove: r2.onRemove})
	sameEndpoints(t, "new version", v2.Endpoints(), old)
	if old[1].Inflight() != 1 || byAddr(t, v2.Endpoints(), old[1].Addr).Inflight() != 1 {
		t.Fatal("requests in flight lost")
	}
	// The previous version's subsets are built over them.
	checkMembers(t, "subset v2", v2.Set(SubsetKey(labelsV2)), labelsV2, 2)
	if r1.count()+r2.count() != 0 {
		t.Fatalf("removed %s and %s, want nothing", addrs(r1.all()), addrs(r2.all()))
	}

	v2.Update([]Spec{{Addr: "10.0.0.1:1", Labels: labelsV1}, {Addr: "10.0.0.2:1", Labels: labelsV2}})
	sameEndpoints(t, "removed by the new version's update", r2.all(), old[2:])
	sameEndpoints(t, "after the update", v2.Endpoints(), old[:2])
}

// The subsets routes asked the previous version for (at New or later) are
// the new version's too, balanced with the new version's subset policies.
func TestPreviousCarriesSubsetKeys(t *testing.T) {
	zoneA := map[string]string{"zone": "a"}
	v1 := mustNew(t, labelledCluster(breezev1.Cluster_RING_HASH, ""), Options{Subsets: routeSubsets(labelsV2)})
	v1.AddSubsets(routeSubsets(zoneA))

	cfg := labelledCluster(breezev1.Cluster_RING_HASH, "",
		&breezev1.ClusterSubset{Labels: labelsV2, LbPolicy: breezev1.Cluster_ROUND_ROBIN.Enum(), HashKey: "user"})
	v2 := mustNew(t, cfg, Options{Previous: v1, Subsets: routeSubsets(labelsV1)})
	checkMembers(t, "version=v1 (the new version's own)", v2.Set(SubsetKey(labelsV1)), labelsV1, 3)
	checkMembers(t, "version=v2 (the previous version's, at New)", v2.Set(SubsetKey(labelsV2)), labelsV2, 3)
	checkMembers(t, "zone=a (the previous version's, added later)", v2.Set(SubsetKey(zoneA)), zoneA, 3)
	if k := v2.Set(SubsetKey(labelsV2)).HashKey; k != "user" {
		t.Fatalf("carried subset's hash key %q, want the new config's", k)
	}
	checkRotates(t, "version=v2 (the new config's ROUND_ROBIN)", v2.Set(SubsetKey(labelsV2)))
	checkSticky(t, "zone=a (RING_HASH)", v2.Set(SubsetKey(zoneA)))
	if v1.Set(SubsetKey(labelsV1)) != nil {
		t.Fatal("New gave the previous version the new version's subsets")
	}
}

// Handover leaves the old version with only the endpoints the new one has
// (in every set), returns exactly the others, and closes the old version.
func TestHandover(t *testing.T) {
	var r1, r2 removals
	v1 := mustNew(t, staticConfig(breezev1.Cluster_ROUND_ROBIN,
		ep("10.0.0.1", 0, labelsV1), // kept
		ep("10.0.0.2", 0, labelsV2), // kept
		ep("10.0.0.3", 0, labelsV2), // dropped
		ep("10.0.0.4", 0, labelsV2), // labels change
		ep("10.0.0.5", 0, labelsV1), // dropped
	), Options{OnRemove: r1.onRemove, Subsets: routeSubsets(labelsV1, labelsV2)})
	old := slices.Clone(v1.Endpoints())
	v2 := mustNew(t, staticConfig(breezev1.Cluster_RING_HASH,
		ep("10.0.0.1", 0, labelsV1),
		ep("10.0.0.2", 0, labelsV2),
		ep("10.0.0.4", 0, labelsV1),
		ep("10.0.0.6", 0, labelsV2), // new
	), Options{Previous: v1, OnRemove: r2.onRemove})
	afterNew := slices.Clone(v2.Endpoints())

	gone := v1.Handover(v2)
	sameEndpoints(t, "Handover's result", gone, []*Endpoint{old[2], old[3], old[4]})
	sameEndpoints(t, "old version after Handover", v1.Endpoints(), old[:2])
	checkMembers(t, "old version's subset v1", v1.Set(SubsetKey(labelsV1)), labelsV1, 1)
	checkMembers(t, "old version's subset v2", v1.Set(SubsetKey(labelsV2)), labelsV2, 1)
	for i := range 100 {
		for _, set := range []*Set{v1.Set(""), v1.Set(SubsetKey(labelsV1)), v1.Set(SubsetKey(labelsV2))} {
			if e := set.Pick(fmt.Sprint(i), true); slices.Contains(gone, e) {
				t.Fatalf("old version picked %s, which the new one dropped", e.Addr)
			}
		}
	}
	if r1.count() != 0 {
		t.Fatalf("Handover told OnRemove of %s; it returns them", addrs(r1.all()))
	}
	sameEndpoints(t, "new version after Handover", v2.Endpoints(), afterNew)

	// Closed: updates of the old version are ignored.
	v1.Update([]Spec{{Addr: "10.0.0.3:1", Labels: labelsV2}, {Addr: "10.0.0.7:1"}})
	sameEndpoints(t, "old version after an update", v1.Endpoints(), old[:2])
	if r1.count() != 0 {
		t.Fatalf("an update after Handover removed %s", addrs(r1.all()))
	}
}

// An endpoint the old version got while the new one was being built (an
// EDS update) is one the new version has not: Handover returns it.
func TestHandoverReturnsEndpointsAddedMeanwhile(t *testing.T) {
	v1 := mustNew(t, edsConfig(breezev1.Cluster_ROUND_ROBIN), Options{})
	v1.Update([]Spec{{Addr: "10.0.0.1:1"}, {Addr: "10.0.0.2:1"}})
	v2 := mustNew(t, edsConfig(breezev1.Cluster_RANDOM), Options{Previous: v1})
	v1.Update([]Spec{{Addr: "10.0.0.1:1"}, {Addr: "10.0.0.2:1"}, {Addr: "10.0.0.3:1"}})
	added := byAddr(t, v1.Endpoints(), "10.0.0.3:1")

	gone := v1.Handover(v2)
	sameEndpoints(t, "Handover's result", gone, []*Endpoint{added})
	sameEndpoints(t, "old version after Handover", v1.Endpoints(), v2.Endpoints())
}

// Shutdown empties the cluster, tells OnRemove of every endpoint once, and
// closes it.
func TestShutdown(t *testing.T) {
	var r removals
	cl := mustNew(t, labelledCluster(breezev1.Cluster_RING_HASH, ""), Options{OnRemove: r.onRemove, Subsets: routeSubsets(labelsV2)})
	old := slices.Clone(cl.Endpoints())
	specs := cl.Specs()

	cl.Shutdown()
	if r.count() != 1 {
		t.Fatalf("OnRemove told %d times, want once", r.count())
	}
	sameEndpoints(t, "removed", r.all(), old)
	for _, key := range []string{"", SubsetKey(labelsV2)} {
		if set := cl.Set(key); set != nil && (set.Len() != 0 || set.Pick("k", true) != nil) {
			t.Fatalf("set %q after Shutdown: %s", key, addrs(set.Endpoints()))
		}
	}

	cl.Update(specs)
	if eps := cl.Endpoints(); len(eps) != 0 {
		t.Fatalf("update after Shutdown: %s", addrs(eps))
	}
	cl.Shutdown()
	if r.count() != 1 {
		t.Fatalf("later update or Shutdown removed %s", addrs(r.all()[len(old):]))
	}
}
