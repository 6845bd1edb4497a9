package cluster

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/breeze-mesh/breeze/filters/metrics"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// breakerCluster is a STATIC cluster of two endpoints labelled version
// v1 and v2, with cb, and subsets for each version (given to New as the
// routes' subsets); proxy names it in metrics.
func breakerCluster(t *testing.T, proxy string, cb *breezev1.CircuitBreakers, subsets ...*breezev1.ClusterSubset) *Cluster {
	t.Helper()
	c := &breezev1.Cluster{Name: "c", CircuitBreakers: cb, Subsets: subsets, Endpoints: []*breezev1.Endpoint{
		{Address: "10.0.0.1", Port: 1, Labels: map[string]string{"version": "v1"}},
		{Address: "10.0.0.2", Port: 1, Labels: map[string]string{"version": "v2"}},
	}}
	cl, err := New(c, Options{Proxy: proxy, Subsets: routeSubsets(v1, v2)})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

var (
	v1 = map[string]string{"version": "v1"}
	v2 = map[string]string{"version": "v2"}
)

func overflows(proxy, limit string) int {
	return int(testutil.ToFloat64(metrics.CircuitBreakerOverflows.WithLabelValues(proxy, "c", limit)))
}

// Each limit admits exactly its number, refuses the rest, counts each
// refusal, and admits again once one ends.
func TestBreakerLimitsAreExact(t *testing.T) {
	for _, tc := range []struct {
		limit string
		cb    *breezev1.CircuitBreakers
		try   func(*Breaker) bool
		end   func(*Breaker)
	}{
		{"max_requests", &breezev1.CircuitBreakers{MaxRequests: 7}, (*Breaker).TryRequest, (*Breaker).EndRequest},
		{"max_pending_requests", &breezev1.CircuitBreakers{MaxPendingRequests: 7}, (*Breaker).TryPending, func(b *Breaker) { b.EndPending(1) }},
	} {
		proxy := "breaker-exact-" + tc.limit
		b := breakerCluster(t, proxy, tc.cb).Set("").Breaker()
		refused := 0
		for range 7 + 4 {
			if !tc.try(b) {
				refused++
			}
		}
		if refused != 4 || overflows(proxy, tc.limit) != 4 {
			t.Errorf("%s 7: 11 tries refused %d, counted %d overflows; want 4, 4", tc.limit, refused, overflows(proxy, tc.limit))
		}
		tc.end(b)
		if !tc.try(b) {
			t.Errorf("%s 7: refused after one of 7 ended", tc.limit)
		}
		if tc.try(b) {
			t.Errorf("%s 7: admitted an eighth", tc.limit)
		}
	}
}

// Concurrent tries at the limit admit exactly the limit, never one more
// nor one less.
func TestBreakerConcurrentTries(t *testing.T) {
	b := breakerCluster(t, "breaker-concurrent", &breezev1.CircuitBreakers{MaxRequests: 100}).Set("").Breaker()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if b.TryRequest() {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if requests, _, _ := b.Counts(); admitted.Load() != 100 || requests != 100 {
		t.Fatalf("800 concurrent tries at max_requests 100: %d admitted, %d counted", admitted.Load(), requests)
	}
}

// Retries in flight may reach neither max_retries nor the budget: a share
// of the requests in flight, rounded down, at least min_retry_concurrency.
func TestRetryBudget(t *testing.T) {
	pct := func(v float64) *float64 { return &v }
	n := func(v uint32) *uint32 { return &v }
	for i, tc := range []struct {
		cb        *breezev1.CircuitBreakers
		active    int
		want      int
		refusedBy string
	}{
		{nil, 0, 3, "retry_budget"}, // unset: 20%, at least 3
		{nil, 19, 3, "retry_budget"},
		{nil, 20, 4, "retry_budget"},
		{nil, 100, 20, "retry_budget"},
		{&breezev1.CircuitBreakers{RetryBudget: &breezev1.RetryBudget{}}, 100, 20, "retry_budget"}, // fields unset: the same
		{&breezev1.CircuitBreakers{RetryBudget: &breezev1.RetryBudget{BudgetPercent: pct(50), MinRetryConcurrency: n(0)}}, 7, 3, "retry_budget"},
		{&breezev1.CircuitBreakers{RetryBudget: &breezev1.RetryBudget{BudgetPercent: pct(25), MinRetryConcurrency: n(0)}}, 3, 0, "retry_budget"},
		{&breezev1.CircuitBreakers{RetryBudget: &breezev1.RetryBudget{BudgetPercent: pct(0), MinRetryConcurrency: n(1)}}, 100, 1, "retry_budget"},
		{&breezev1.CircuitBreakers{RetryBudget: &breezev1.RetryBudget{MinRetryConcurrency: n(10)}}, 15, 10, "retry_budget"},
		{&breezev1.CircuitBreakers{MaxRetries: 2}, 100, 2, "max_retries"},
		{&breezev1.CircuitBreakers{MaxRetries: 10}, 20, 4, "retry_budget"},
	} {
		proxy := fmt.Sprint("retry-budget-", i)
		b := breakerCluster(t, proxy, tc.cb).Set("").Breaker()
		for range tc.active {
			b.TryRequest()
		}
		got := 0
		for b.TryRetry() {
			got++
		}
		if got != tc.want || overflows(proxy, tc.refusedBy) != 1 {
			t.Errorf("%v with %d requests in flight: %d retries admitted, %d overflows of %s; want %d, 1",
				tc.cb, tc.active, got, overflows(proxy, tc.refusedBy), tc.refusedBy, tc.want)
		}
		if tc.want > 0 {
			b.EndRetry()
			if !b.TryRetry() {
				t.Errorf("%v: a retry ended, the next refused", tc.cb)
			}
		}
	}
}

// The budget follows the requests in flight as they end.
func TestRetryBudgetShrinksWithRequests(t *testing.T) {
	b := breakerCluster(t, "retry-budget-shrinks", nil).Set("").Breaker()
	for range 30 {
		b.TryRequest()
	}
	for range 6 {
		if !b.TryRetry() {
			t.Fatal("30 requests in flight: fewer than 6 retries admitted")
		}
	}
	for range 30 - 20 {
		b.EndRequest()
	}
	b.EndRetry()
	b.EndRetry()
	if b.TryRetry() {
		t.Fatal("20 requests and 4 retries in flight: a fifth retry admitted")
	}
}

func TestNilBreakerHasNoLimits(t *testing.T) {
	var b *Breaker
	for range 3 {
		if !b.TryRequest() || !b.TryPending() || !b.TryRetry() {
			t.Fatal("a nil breaker refused")
		}
		b.EndRequest()
		b.EndPending(1)
		b.EndRetry()
	}
	if r, p, rt := b.Counts(); r != 0 || p != 0 || rt != 0 {
		t.Fatalf("a nil breaker counts %d %d %d", r, p, rt)
	}
}

// A new version of the cluster (xDS) counts on from the requests in
// flight on the previous one, with its own limits; the requests that
// started on the previous one end there and free the new one's room.
func TestBreakerCountsSurviveVersions(t *testing.T) {
	cb := func(max uint32) *breezev1.CircuitBreakers { return &breezev1.CircuitBreakers{MaxRequests: max} }
	sub := &breezev1.ClusterSubset{Name: "v2", Labels: v2, CircuitBreakers: cb(2)}
	old := breakerCluster(t, "breaker-versions", cb(3), sub)
	for _, s := range []string{"", SubsetKey(v2)} {
		for range 2 {
			if !old.Set(s).Breaker().TryRequest() {
				t.Fatalf("version 1, set %q: refused below its limit", s)
			}
		}
	}
	next := &breezev1.Cluster{Name: "c", CircuitBreakers: cb(5), Subsets: []*breezev1.ClusterSubset{
		{Name: "v2", Labels: v2, CircuitBreakers: cb(3)},
	}, Endpoints: []*breezev1.Endpoint{
		{Address: "10.0.0.1", Port: 1, Labels: v1},
		{Address: "10.0.0.2", Port: 1, Labels: v2},
	}}
	cl, err := New(next, Options{Proxy: "breaker-versions", Subsets: routeSubsets(v1, v2), Previous: old})
	if err != nil {
		t.Fatal(err)
	}
	old.Handover(cl)
	for _, tc := range []struct {
		set  string
		room int
	}{{"", 5 - 2}, {SubsetKey(v2), 3 - 2}} {
		b := cl.Set(tc.set).Breaker()
		if got := admit(b, 10); got != tc.room {
			t.Errorf("version 2, set %q, 2 requests in flight on version 1: admitted %d, want %d", tc.set, got, tc.room)
		}
		for range 2 {
			old.Set(tc.set).Breaker().EndRequest()
		}
		if got := admit(b, 10); got != 2 {
			t.Errorf("version 2, set %q: the 2 requests of version 1 ended, then %d admitted, want 2", tc.set, got)
		}
	}
}

// admit tries up to n requests and returns how many were admitted.
func admit(b *Breaker, n int) int {
	got := 0
	for range n {
		if b.TryRequest() {
			got++
		}
	}
	return got
}

// A subset with circuit breakers of its own counts apart from the
// cluster; one without counts against the cluster's.
func TestSubsetBreaker(t *testing.T) {
	cl := breakerCluster(t, "breaker-subset", &breezev1.CircuitBreakers{MaxRequests: 10},
		&breezev1.ClusterSubset{Name: "v2", Labels: v2, CircuitBreakers: &breezev1.CircuitBreakers{MaxRequests: 1}})
	all, own, shared := cl.Set("").Breaker(), cl.Set(SubsetKey(v2)).Breaker(), cl.Set(SubsetKey(v1)).Breaker()
	if own == all || shared != all {
		t.Fatalf("breakers: cluster %p, subset v2 (own limits) %p, subset v1 (none) %p; want v2's apart, v1's the cluster's", all, own, shared)
	}
	if got := admit(own, 3); got != 1 {
		t.Fatalf("subset v2, max_requests 1: admitted %d of 3", got)
	}
	if got := admit(shared, 4) + admit(all, 10); got != 10 {
		t.Fatalf("cluster, max_requests 10, shared with subset v1: admitted %d of 14", got)
	}
}

// max_connections caps connections_per_endpoint.
func TestMaxConnections(t *testing.T) {
	for _, tc := range []struct {
		perEndpoint, max uint32
		want             int
	}{{0, 0, 1}, {4, 0, 4}, {4, 2, 2}, {1, 3, 1}, {0, 3, 1}} {
		c := &breezev1.Cluster{Name: "c", ConnectionsPerEndpoint: tc.perEndpoint}
		if tc.max > 0 {
			c.CircuitBreakers = &breezev1.CircuitBreakers{MaxConnections: tc.max}
		}
		cl, err := New(c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if cl.ConnsPerHost != tc.want {
			t.Errorf("connections_per_endpoint %d, max_connections %d: %d connections per endpoint, want %d", tc.perEndpoint, tc.max, cl.ConnsPerHost, tc.want)
		}
	}
}

func TestBreakerDoesNotAllocate(t *testing.T) {
	b := breakerCluster(t, "breaker-allocs", &breezev1.CircuitBreakers{MaxRequests: 10, MaxRetries: 3}).Set("").Breaker()
	if n := testing.AllocsPerRun(100, func() {
		b.TryRequest()
		b.TryRetry()
		b.EndRetry()
		b.EndRequest()
	}); n != 0 {
		t.Fatalf("a request and a retry through the breaker: %v allocations", n)
	}
}
