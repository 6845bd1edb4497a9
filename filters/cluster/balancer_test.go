package cluster

import (
	"fmt"
	"slices"
	"testing"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

var allPolicies = []breezev1.Cluster_LbPolicy{
	breezev1.Cluster_ROUND_ROBIN, breezev1.Cluster_LEAST_REQUEST, breezev1.Cluster_RANDOM,
	breezev1.Cluster_RING_HASH, breezev1.Cluster_MAGLEV,
}

// Every policy picks, for a request with or without the hash key, on the
// whole cluster and on a subset with a policy of its own, with every
// endpoint healthy, one ejected, or all ejected: never a panic, always an
// endpoint of the set, a healthy one while there is one, and a request
// without the hash key is spread over the set like any other (Envoy hashes
// a random value then).
func TestPickEveryPolicyWithAndWithoutHash(t *testing.T) {
	v2 := map[string]string{"version": "v2"}
	for _, clusterPolicy := range allPolicies {
		for _, subsetPolicy := range allPolicies {
			cfg := labelledCluster(clusterPolicy, "tenant",
				&breezev1.ClusterSubset{Name: "v2", Labels: v2, LbPolicy: subsetPolicy.Enum(), HashKey: "user"})
			for _, hasHash := range []bool{true, false} {
				for _, ejected := range []string{"none", "one", "all"} {
					cl, err := New(cfg, Options{Subsets: routeSubsets(v2)})
					if err != nil {
						t.Fatal(err)
					}
					for _, set := range []struct {
						name   string
						policy breezev1.Cluster_LbPolicy
						set    *Set
					}{
						{"cluster", clusterPolicy, cl.Set("")},
						{"subset", subsetPolicy, cl.Set(SubsetKey(v2))},
					} {
						name := fmt.Sprintf("%s %v (cluster %v), hash key present %v, ejected %s", set.name, set.policy, clusterPolicy, hasHash, ejected)
						checkPicks(t, name, set.set, hasHash, ejected)
					}
				}
			}
		}
	}
}

func checkPicks(t *testing.T, name string, set *Set, hasHash bool, ejected string) {
	t.Helper()
	eps := set.Endpoints()
	var dead *Endpoint
	switch ejected {
	case "one":
		dead = eps[0]
		dead.Failed()
	case "all":
		for _, ep := range eps {
			ep.Failed()
		}
	}
	used := map[*Endpoint]int{}
	for i := range 300 {
		var ep *Endpoint
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("%s: Pick panicked: %v", name, r)
				}
			}()
			if hasHash {
				ep = set.Pick(fmt.Sprint("user-", i), true)
			} else {
				ep = set.Pick("", false)
			}
		}()
		if !slices.Contains(eps, ep) {
			t.Fatalf("%s: picked %v, not an endpoint of the set", name, ep)
		}
		if ep == dead {
			t.Fatalf("%s: picked the ejected endpoint %s", name, ep.Addr)
		}
		used[ep]++
	}
	want := len(eps)
	if ejected == "one" {
		want--
	}
	// With all ejected, policies may keep probing a few; any will do.
	if ejected != "all" && len(used) != want {
		t.Fatalf("%s: 300 picks reached %d endpoints, want all %d usable", name, len(used), want)
	}
}
