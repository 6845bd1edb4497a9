package cluster

import (
	"fmt"
	"slices"
	"testing"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// labelledCluster is a STATIC cluster of six endpoints 10.0.0.1-6 labelled
// version v1/v2 (alternating) and zone a (the first three) or b.
func labelledCluster(policy breezev1.Cluster_LbPolicy, hashKey string, subsets ...*breezev1.ClusterSubset) *breezev1.Cluster {
	c := &breezev1.Cluster{Name: "c", LbPolicy: policy, HashKey: hashKey, Subsets: subsets}
	for i := range 6 {
		labels := map[string]string{"version": "v1", "zone": "a"}
		if i%2 == 1 {
			labels["version"] = "v2"
		}
		if i >= 3 {
			labels["zone"] = "b"
		}
		c.Endpoints = append(c.Endpoints, &breezev1.Endpoint{Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 20880, Labels: labels})
	}
	return c
}

// routeSubsets is Options.Subsets for routes that target these label sets.
func routeSubsets(sets ...map[string]string) map[string]map[string]string {
	m := map[string]map[string]string{}
	for _, labels := range sets {
		m[SubsetKey(labels)] = labels
	}
	return m
}

// checkSticky fails unless set is a consistent hash: one hash value always
// picks the same endpoint, and a hundred values reach every endpoint.
func checkSticky(t *testing.T, name string, set *Set) {
	t.Helper()
	used := map[*Endpoint]bool{}
	for i := range 100 {
		k := fmt.Sprint("user-", i)
		first := set.Pick(k, true)
		for range set.Len() + 1 {
			if ep := set.Pick(k, true); ep != first {
				t.Fatalf("%s: hash value %q picked %s then %s", name, k, first.Addr, ep.Addr)
			}
		}
		used[first] = true
	}
	if len(used) != set.Len() {
		t.Fatalf("%s: 100 hash values reached %d of %d endpoints", name, len(used), set.Len())
	}
}

// checkRotates fails unless set ignores the hash value and rotates: one
// round of its (weighted) schedule, picking one hash value, visits every
// endpoint.
func checkRotates(t *testing.T, name string, set *Set) {
	t.Helper()
	picks := max(len(set.schedule), set.Len())
	seen := map[*Endpoint]bool{}
	for range picks {
		seen[set.Pick("user-1", true)] = true
	}
	if len(seen) != set.Len() {
		t.Fatalf("%s: %d picks of one hash value visited %d endpoints, want round robin over all %d", name, picks, len(seen), set.Len())
	}
}

// checkMembers fails unless every endpoint of set has labels, and set
// holds want endpoints.
func checkMembers(t *testing.T, name string, set *Set, labels map[string]string, want int) {
	t.Helper()
	if set == nil {
		t.Fatalf("%s: no balancer", name)
	}
	if set.Len() != want {
		t.Fatalf("%s: %d endpoints, want %d", name, set.Len(), want)
	}
	for _, ep := range set.Endpoints() {
		if !hasLabels(ep.Labels, labels) {
			t.Fatalf("%s: holds %s with labels %v", name, ep.Addr, ep.Labels)
		}
	}
}

func TestSubsetKeyCanonical(t *testing.T) {
	if k := SubsetKey(nil); k != "" {
		t.Fatalf("SubsetKey(nil) = %q", k)
	}
	if k := SubsetKey(map[string]string{}); k != "" {
		t.Fatalf("SubsetKey({}) = %q", k)
	}
	if k := SubsetKey(map[string]string{"zone": "a", "version": "v2"}); k != "version=v2,zone=a" {
		t.Fatalf("SubsetKey = %q, want labels sorted by name: version=v2,zone=a", k)
	}
	// The same labels give the same key however the map was built.
	want := SubsetKey(map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"})
	for range 20 {
		m := map[string]string{}
		for _, k := range []string{"d", "b", "c", "a"} {
			m[k] = map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"}[k]
		}
		if got := SubsetKey(m); got != want {
			t.Fatalf("SubsetKey = %q, then %q", want, got)
		}
	}
}

// Distinct label sets have distinct keys, whatever their names and values
// hold: a route to one must never share the balancer of another.
func TestSubsetKeyDistinct(t *testing.T) {
	sets := []map[string]string{
		{"a": "1", "b": "2"},
		{"a": "1,b=2"},
		{"a=1,b": "2"},
		{"a": "1,b", "": "2"},
		{"a": "1\\", "b": "2"},
		{"a": "1\\,b=2"},
		{"a": "1=", "b": "2"},
		{"a": "1", "b": "2,"},
		{"a": ""},
		{"a=": ""},
		{"": "a"},
	}
	seen := map[string]map[string]string{}
	for _, labels := range sets {
		k := SubsetKey(labels)
		if other, dup := seen[k]; dup {
			t.Errorf("labels %q and %q have the same key %q", other, labels, k)
		}
		seen[k] = labels
	}
}

// A subset the config gives a policy of its own is balanced with it, and
// with its hash key; the whole cluster keeps the cluster's.
func TestSubsetOwnPolicy(t *testing.T) {
	v2 := map[string]string{"version": "v2"}
	cfg := labelledCluster(breezev1.Cluster_ROUND_ROBIN, "cluster-key",
		&breezev1.ClusterSubset{Name: "v2", Labels: v2, LbPolicy: breezev1.Cluster_RING_HASH.Enum(), HashKey: "user"})
	cl, err := New(cfg, Options{Subsets: routeSubsets(v2)})
	if err != nil {
		t.Fatal(err)
	}
	all, sub := cl.Set(""), cl.Set(SubsetKey(v2))
	checkMembers(t, "subset v2", sub, v2, 3)
	if all.HashKey != "cluster-key" || sub.HashKey != "user" {
		t.Fatalf("hash keys: cluster %q, subset %q; want cluster-key, user", all.HashKey, sub.HashKey)
	}
	checkSticky(t, "subset v2 (RING_HASH)", sub)
	checkRotates(t, "whole cluster (ROUND_ROBIN)", all)

	// An update rebuilds the subset with its policy.
	cl.Update(cl.Specs()[:4])
	sub = cl.Set(SubsetKey(v2))
	checkMembers(t, "subset v2 after update", sub, v2, 2)
	if sub.HashKey != "user" {
		t.Fatalf("subset hash key after update %q", sub.HashKey)
	}
	checkSticky(t, "subset v2 after update", sub)
	checkRotates(t, "whole cluster after update", cl.Set(""))
}

// A subset without a policy (or hash key) of its own uses the cluster's; an
// explicit ROUND_ROBIN, the zero value, is a policy of its own.
func TestSubsetInheritsClusterPolicy(t *testing.T) {
	v1 := map[string]string{"version": "v1"}
	v2 := map[string]string{"version": "v2"}
	zoneA := map[string]string{"zone": "a"}
	zoneB := map[string]string{"zone": "b"}
	cfg := labelledCluster(breezev1.Cluster_RING_HASH, "ck",
		// Hash key only: the cluster's RING_HASH.
		&breezev1.ClusterSubset{Name: "v1", Labels: v1, HashKey: "h1"},
		// Policy only: the cluster's hash key.
		&breezev1.ClusterSubset{Name: "v2", Labels: v2, LbPolicy: breezev1.Cluster_ROUND_ROBIN.Enum()},
		// Neither.
		&breezev1.ClusterSubset{Name: "b", Labels: zoneB},
	)
	// zone=a is in no subset of the config.
	cl, err := New(cfg, Options{Subsets: routeSubsets(v1, v2, zoneA, zoneB)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		labels  map[string]string
		n       int
		hashKey string
		sticky  bool
	}{
		{"v1 (own hash key)", v1, 3, "h1", true},
		{"v2 (own ROUND_ROBIN)", v2, 3, "ck", false},
		{"zone=b (nothing own)", zoneB, 3, "ck", true},
		{"zone=a (not configured)", zoneA, 3, "ck", true},
	} {
		set := cl.Set(SubsetKey(tc.labels))
		checkMembers(t, tc.name, set, tc.labels, tc.n)
		if set.HashKey != tc.hashKey {
			t.Errorf("%s: hash key %q, want %q", tc.name, set.HashKey, tc.hashKey)
		}
		if tc.sticky {
			checkSticky(t, tc.name, set)
		} else {
			checkRotates(t, tc.name, set)
		}
	}
	checkSticky(t, "whole cluster", cl.Set(""))
}

// A subset a later route table asks for (AddSubsets) gets the policy the
// config gives it.
func TestSubsetPolicyOfLaterRoute(t *testing.T) {
	v2 := map[string]string{"zone": "b", "version": "v2"}
	cfg := labelledCluster(breezev1.Cluster_ROUND_ROBIN, "",
		// The config spells the labels in another map than the route's.
		&breezev1.ClusterSubset{Name: "v2b", Labels: map[string]string{"version": "v2", "zone": "b"}, LbPolicy: breezev1.Cluster_MAGLEV.Enum(), HashKey: "user"})
	cl, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if cl.Set(SubsetKey(v2)) != nil {
		t.Fatal("a subset no route asked for has a balancer")
	}
	cl.AddSubsets(routeSubsets(v2))
	set := cl.Set(SubsetKey(v2))
	checkMembers(t, "v2b", set, v2, 2)
	if set.HashKey != "user" {
		t.Fatalf("hash key %q", set.HashKey)
	}
	checkSticky(t, "v2b (MAGLEV)", set)
	checkRotates(t, "whole cluster", cl.Set(""))
	for _, ep := range set.Endpoints() {
		if !slices.Contains(cl.Endpoints(), ep) {
			t.Fatalf("subset endpoint %s is not the cluster's", ep.Addr)
		}
	}
}
