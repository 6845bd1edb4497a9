package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

func staticCluster(t *testing.T, policy breezev1.Cluster_LbPolicy, n int, subsets map[string]map[string]string) *Cluster {
	t.Helper()
	c := &breezev1.Cluster{Name: "c", LbPolicy: policy}
	for i := range n {
		v := "v1"
		if i%2 == 1 {
			v = "v2"
		}
		c.Endpoints = append(c.Endpoints, &breezev1.Endpoint{Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 20880, Labels: map[string]string{"version": v}})
	}
	cl, err := New(c, Options{Subsets: subsets})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func TestRoundRobinIsEven(t *testing.T) {
	cl := staticCluster(t, breezev1.Cluster_ROUND_ROBIN, 3, nil)
	counts := map[string]int{}
	for range 300 {
		counts[cl.Set("").Pick("", false).Addr]++
	}
	for addr, n := range counts {
		if n != 100 {
			t.Errorf("%s got %d of 300", addr, n)
		}
	}
	if len(counts) != 3 {
		t.Fatalf("endpoints used: %v", counts)
	}
}

func TestWeightedRoundRobin(t *testing.T) {
	c := &breezev1.Cluster{Name: "w", Endpoints: []*breezev1.Endpoint{
		{Address: "10.0.0.1", Port: 1, Weight: 1}, {Address: "10.0.0.2", Port: 1, Weight: 3},
	}}
	cl, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for range 4000 {
		counts[cl.Set("").Pick("", false).Addr]++
	}
	if counts["10.0.0.1:1"] != 1000 || counts["10.0.0.2:1"] != 3000 {
		t.Fatalf("weighted round robin: %v", counts)
	}
}

func TestSubsets(t *testing.T) {
	cl := staticCluster(t, breezev1.Cluster_ROUND_ROBIN, 4, map[string]map[string]string{"version=v2": {"version": "v2"}})
	set := cl.Set("version=v2")
	if set.Len() != 2 {
		t.Fatalf("subset size %d", set.Len())
	}
	for range 10 {
		if ep := set.Pick("", false); ep.Labels["version"] != "v2" {
			t.Fatalf("picked %s with labels %v", ep.Addr, ep.Labels)
		}
	}
	if cl.Set("version=v9") != nil {
		t.Fatal("unknown subset has a balancer")
	}
}

func TestEjectedEndpointSkipped(t *testing.T) {
	for _, policy := range []breezev1.Cluster_LbPolicy{breezev1.Cluster_ROUND_ROBIN, breezev1.Cluster_RANDOM, breezev1.Cluster_LEAST_REQUEST, breezev1.Cluster_RING_HASH, breezev1.Cluster_MAGLEV} {
		cl := staticCluster(t, policy, 3, nil)
		dead := cl.Endpoints()[1]
		dead.Failed()
		for i := range 300 {
			if ep := cl.Set("").Pick(fmt.Sprint("user", i), true); ep == dead {
				t.Fatalf("%v picked the ejected endpoint", policy)
			}
		}
		// All ejected: still pick something rather than nothing.
		for _, ep := range cl.Endpoints() {
			ep.Failed()
		}
		if cl.Set("").Pick("k", true) == nil {
			t.Fatalf("%v: nil pick with all endpoints ejected", policy)
		}
	}
}

func TestConsistentHashSticky(t *testing.T) {
	for _, policy := range []breezev1.Cluster_LbPolicy{breezev1.Cluster_RING_HASH, breezev1.Cluster_MAGLEV} {
		cl := staticCluster(t, policy, 4, nil)
		first := map[string]string{}
		used := map[string]bool{}
		for i := range 200 {
			k := fmt.Sprint("user-", i)
			first[k] = cl.Set("").Pick(k, true).Addr
			used[first[k]] = true
		}
		if len(used) != 4 {
			t.Fatalf("%v spread 200 keys over %d endpoints", policy, len(used))
		}
		for range 3 {
			for k, addr := range first {
				if got := cl.Set("").Pick(k, true).Addr; got != addr {
					t.Fatalf("%v: key %s moved %s -> %s", policy, k, addr, got)
				}
			}
		}
		// Removing one endpoint moves only (about) its own keys.
		var specs []Spec
		for _, ep := range cl.Endpoints()[:3] {
			specs = append(specs, Spec{Addr: ep.Addr, Labels: ep.Labels})
		}
		removed := cl.Endpoints()[3].Addr
		cl.Update(specs)
		moved := 0
		for k, addr := range first {
			if got := cl.Set("").Pick(k, true).Addr; got != addr && addr != removed {
				moved++
			}
		}
		if moved > 20 {
			t.Fatalf("%v: %d of 200 keys on surviving endpoints moved", policy, moved)
		}
	}
}

func TestLeastRequestPrefersIdle(t *testing.T) {
	cl := staticCluster(t, breezev1.Cluster_LEAST_REQUEST, 2, nil)
	busy := cl.Endpoints()[0]
	for range 100 {
		busy.Begin()
	}
	n := 0
	for range 1000 {
		if cl.Set("").Pick("", false) == busy {
			n++
		}
	}
	// Only when both draws hit the busy one: about a quarter.
	if math.Abs(float64(n)-250) > 80 {
		t.Fatalf("busy endpoint picked %d of 1000", n)
	}
}

func TestUpdateKeepsState(t *testing.T) {
	cl := staticCluster(t, breezev1.Cluster_ROUND_ROBIN, 2, nil)
	ep := cl.Endpoints()[0]
	ep.Begin()
	cl.Update([]Spec{{Addr: ep.Addr, Labels: ep.Labels}, {Addr: "10.0.0.9:20880"}})
	if got := cl.Endpoints()[0]; got != ep || got.Inflight() != 1 {
		t.Fatal("unchanged endpoint lost its state")
	}
}

func TestStaticRejectsHostname(t *testing.T) {
	_, err := New(&breezev1.Cluster{Name: "x", Endpoints: []*breezev1.Endpoint{{Address: "provider.local", Port: 1}}}, Options{})
	if err == nil {
		t.Fatal("STATIC cluster accepted a host name")
	}
}

func TestDNSRefreshKeepsAddressesOnFailure(t *testing.T) {
	cl := &Cluster{Name: "dns", log: slog.Default(), byAddr: map[string]*Endpoint{}}
	cl.Update(nil)
	var mu sync.Mutex
	answer := []netip.Addr{netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.1.0.2")}
	var fail error
	r := &resolver{cluster: cl, every: 1, endpoints: []*breezev1.Endpoint{{Address: "svc.example", Port: 9, Labels: map[string]string{"version": "v1"}}},
		lookup: func(ctx context.Context, network, host string) ([]netip.Addr, error) {
			mu.Lock()
			defer mu.Unlock()
			return answer, fail
		}}
	r.resolveOnce(context.Background())
	if n := len(cl.Endpoints()); n != 2 {
		t.Fatalf("resolved %d endpoints", n)
	}
	if cl.Endpoints()[0].Labels["version"] != "v1" {
		t.Fatal("labels lost")
	}
	fail = errors.New("SERVFAIL")
	r.resolveOnce(context.Background())
	if n := len(cl.Endpoints()); n != 2 {
		t.Fatalf("failed lookup left %d endpoints, want the previous 2", n)
	}
	fail, answer = nil, []netip.Addr{netip.MustParseAddr("10.1.0.3")}
	r.resolveOnce(context.Background())
	if eps := cl.Endpoints(); len(eps) != 1 || eps[0].Addr != "10.1.0.3:9" {
		t.Fatalf("refresh: %v", eps)
	}
}

func TestDNSClusterResolvesLocalhost(t *testing.T) {
	cl, err := New(&breezev1.Cluster{Name: "lh", Type: breezev1.Cluster_STRICT_DNS,
		Endpoints: []*breezev1.Endpoint{{Address: "localhost", Port: 20880}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	eps := cl.Endpoints()
	if len(eps) == 0 {
		t.Fatal("localhost did not resolve")
	}
	for _, ep := range eps {
		if _, err := netip.ParseAddrPort(ep.Addr); err != nil {
			t.Fatalf("endpoint %q is not a literal ip:port", ep.Addr)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, policy := range []breezev1.Cluster_LbPolicy{breezev1.Cluster_ROUND_ROBIN, breezev1.Cluster_LEAST_REQUEST, breezev1.Cluster_RANDOM, breezev1.Cluster_RING_HASH, breezev1.Cluster_MAGLEV} {
		b.Run(policy.String(), func(b *testing.B) {
			c := &breezev1.Cluster{Name: "b", LbPolicy: policy}
			for i := range 10 {
				c.Endpoints = append(c.Endpoints, &breezev1.Endpoint{Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 1})
			}
			cl, _ := New(c, Options{})
			set := cl.Set("")
			b.ReportAllocs()
			for b.Loop() {
				set.Pick("user-42", true)
			}
		})
	}
}

// An ejected endpoint's turns are spread over the others, by weight, not
// all given to the one after it: [A, B, C] with C ejected served A 398 /
// B 202 of 600.
func TestRoundRobinEvenAfterEjection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []uint32
		want    []int // of 600 picks per endpoint, the last one ejected
	}{
		{"equal", []uint32{1, 1, 1}, []int{300, 300, 0}},
		{"weighted", []uint32{1, 2, 3}, []int{200, 400, 0}},
		{"two ejected", []uint32{1, 1, 1, 1}, nil},
	} {
		for _, workers := range []int{1, 10} {
			t.Run(fmt.Sprintf("%s/concurrency %d", tc.name, workers), func(t *testing.T) {
				c := &breezev1.Cluster{Name: "rr", LbPolicy: breezev1.Cluster_ROUND_ROBIN}
				for i, w := range tc.weights {
					c.Endpoints = append(c.Endpoints, &breezev1.Endpoint{Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 1, Weight: w})
				}
				cl, err := New(c, Options{})
				if err != nil {
					t.Fatal(err)
				}
				eps := cl.Endpoints()
				want := tc.want
				if want == nil { // the first and last ejected of [A B C D]
					eps[0].Draining(time.Hour)
					want = []int{0, 300, 300, 0}
				}
				eps[len(eps)-1].Draining(time.Hour)
				var mu sync.Mutex
				counts := map[*Endpoint]int{}
				var wg sync.WaitGroup
				for range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range 600 / workers {
							ep := cl.Set("").Pick("", false)
							mu.Lock()
							counts[ep]++
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				for i, ep := range eps {
					if counts[ep] != want[i] {
						t.Errorf("endpoint %d (weight %d) got %d of 600, want %d (all: %v)", i, tc.weights[i], counts[ep], want[i], countsByIndex(eps, counts))
					}
				}
			})
		}
	}
}

func countsByIndex(eps []*Endpoint, counts map[*Endpoint]int) []int {
	out := make([]int, len(eps))
	for i, ep := range eps {
		out[i] = counts[ep]
	}
	return out
}

// When random draws keep hitting ejected endpoints, the fallback must
// still draw evenly (by weight) among the healthy ones: a scan from a
// random start would give the endpoint after a run of ejected ones
// nearly all of it.
func TestRandomPoliciesEvenAfterEjection(t *testing.T) {
	for _, tc := range []struct {
		policy  breezev1.Cluster_LbPolicy
		weights [2]uint32
	}{
		{breezev1.Cluster_RANDOM, [2]uint32{1, 1}},
		{breezev1.Cluster_RANDOM, [2]uint32{1, 3}},
		{breezev1.Cluster_LEAST_REQUEST, [2]uint32{1, 1}},
	} {
		// Two healthy endpoints, then eight ejected ones.
		c := &breezev1.Cluster{Name: "r", LbPolicy: tc.policy}
		for i := range 10 {
			w := uint32(1)
			if i < 2 {
				w = tc.weights[i]
			}
			// Two digits: the cluster lists its endpoints by address.
			c.Endpoints = append(c.Endpoints, &breezev1.Endpoint{Address: fmt.Sprintf("10.0.0.%d", 10+i), Port: 1, Weight: w})
		}
		cl, err := New(c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		eps := cl.Endpoints()
		if eps[0].Weight != tc.weights[0] || eps[1].Weight != tc.weights[1] {
			t.Fatalf("endpoints not in the order given: %v %v", eps[0].Addr, eps[1].Addr)
		}
		for _, ep := range eps[2:] {
			ep.Draining(time.Hour)
		}
		const picks = 20000
		n := [2]int{}
		for range picks {
			switch cl.Set("").Pick("", false) {
			case eps[0]:
				n[0]++
			case eps[1]:
				n[1]++
			default:
				t.Fatalf("%v picked an ejected endpoint", tc.policy)
			}
		}
		// Least request balances by requests in flight, not weight.
		share := float64(tc.weights[0]) / float64(tc.weights[0]+tc.weights[1])
		if tc.policy == breezev1.Cluster_LEAST_REQUEST {
			share = 0.5
		}
		// Six standard deviations of a binomial draw: never by chance.
		want := share * picks
		if tol := 6 * math.Sqrt(picks*share*(1-share)); math.Abs(float64(n[0])-want) > tol {
			t.Errorf("%v, weights %v: the first healthy endpoint got %d of %d, want %.0f ± %.0f", tc.policy, tc.weights, n[0], picks, want, tol)
		}
	}
}

// Of the failures of one outage, reported by many connections at once,
// exactly one is the first; of the successes that end it, exactly one
// says so. (The log has a line for each, the upstream layer writes them.)
func TestOutageHasOneFirstFailureAndOneRecovery(t *testing.T) {
	ep := &Endpoint{Addr: "10.0.0.1:1"}
	for round := range 3 {
		var firsts, recoveries, failures atomic.Int64
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				if d, first := ep.Failed(); first {
					firsts.Add(1)
					if d != 100*time.Millisecond {
						t.Errorf("first failure ejects for %v, want 100ms", d)
					}
				}
			})
		}
		wg.Wait()
		if ep.Healthy(time.Now().UnixNano()) {
			t.Fatal("failed endpoint is healthy")
		}
		for range 32 {
			wg.Go(func() {
				if n := ep.Succeeded(); n > 0 {
					recoveries.Add(1)
					failures.Add(int64(n))
				}
			})
		}
		wg.Wait()
		if firsts.Load() != 1 || recoveries.Load() != 1 || failures.Load() != 32 {
			t.Fatalf("round %d: %d first failures, %d recoveries reporting %d failures; want 1, 1, 32",
				round, firsts.Load(), recoveries.Load(), failures.Load())
		}
		if !ep.Healthy(time.Now().UnixNano()) {
			t.Fatal("recovered endpoint is still ejected")
		}
	}
}

// One address under two label sets (a Dubbo provider registered under
// versions 1.0.0 and 2.0.0 of one interface: two registry endpoints): one
// endpoint of the whole cluster, weighted once, in the subset of each
// version; its state survives an update and a subset added later.
func TestOneAddressUnderTwoLabelSets(t *testing.T) {
	v1, v2 := map[string]string{"version": "1.0.0"}, map[string]string{"version": "2.0.0"}
	cl, err := New(&breezev1.Cluster{Name: "c", LbPolicy: breezev1.Cluster_ROUND_ROBIN}, Options{Subsets: map[string]map[string]string{"v1": v1, "v2": v2}})
	if err != nil {
		t.Fatal(err)
	}
	specs := []Spec{{Addr: "10.0.0.1:20880", Labels: v1}, {Addr: "10.0.0.1:20880", Labels: v2}, {Addr: "10.0.0.2:20880", Labels: v2}}
	cl.Update(specs)
	counts := map[string]int{}
	for range 1000 {
		counts[cl.Set("").Pick("", false).Addr]++
	}
	if counts["10.0.0.1:20880"] != 500 || counts["10.0.0.2:20880"] != 500 {
		t.Errorf("whole cluster: picks %v, want 500 each (the address registered twice weighted once)", counts)
	}
	for key, want := range map[string][]string{"v1": {"10.0.0.1:20880"}, "v2": {"10.0.0.1:20880", "10.0.0.2:20880"}} {
		var got []string
		for _, ep := range cl.Set(key).endpoints {
			got = append(got, ep.Addr)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("subset %s has %v, want %v", key, got, want)
		}
	}
	ep := cl.Endpoints()[0]
	ep.Begin()
	cl.Update(specs)
	cl.AddSubsets(map[string]map[string]string{"v2only": {"version": "2.0.0"}})
	if got := cl.Endpoints()[0]; got != ep || got.Inflight() != 1 {
		t.Errorf("the same specs again (and a subset added) replaced the endpoint or lost its state")
	}
	if n := cl.Set("v2only").Len(); n != 2 {
		t.Errorf("a subset added later has %d endpoints, want 2 (the second label set kept through AddSubsets)", n)
	}
}
