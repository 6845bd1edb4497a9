package proxy

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/filters/localratelimit"
	localratelimitv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/local_ratelimit/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

var rateLimitProxies atomic.Int32

// Through the host and Envoy's Go shim, ten client connections share a
// route's local rate limit bucket; a new route table (as from xDS) with
// the same bucket keeps it, empty, and one with other settings starts a
// new one. The fill interval is an hour: no refill during the test.
func TestLocalRateLimitAcrossConnectionsAndRouteUpdates(t *testing.T) {
	b := newBackend(t, "b")
	// A stat_prefix of its own: buckets are process-wide, and -count=N
	// runs the test again in this process.
	prefix := fmt.Sprintf("lrl%d", rateLimitProxies.Add(1))
	yml := fmt.Sprintf(`stat_prefix: %s
codec: tframe
filters: [{name: local_ratelimit}]
route_config:
  routes:
  - name: limited
    route: {cluster: b}
    typed_per_filter_config:
      local_ratelimit: {"@type": type.googleapis.com/breeze.filters.local_ratelimit.v1.LocalRateLimit, token_bucket: {max_tokens: 30, fill_interval: 3600s}}
clusters:
- name: b
  endpoints:
%s
`, prefix, ep(b, ""))
	addr := startProxy(t, yml)
	conns := make([]*client, 10)
	for i := range conns {
		conns[i] = dial(t, addr)
	}
	// round sends n requests on every connection at once and counts the
	// answered and the refused.
	round := func(n int) (answered, refused int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() {
				for range n {
					m, err := c.call(0, "x")
					mu.Lock()
					switch {
					case err != nil:
						t.Errorf("call: %v", err)
					case md(m, "error") == "":
						answered++
					case md(m, "error") == codecs.ErrOverloaded.String():
						refused++
					default:
						t.Errorf("answer %+v, want a response or an overloaded reply", m)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return answered, refused
	}
	if a, r := round(10); a != 30 || r != 70 {
		t.Fatalf("100 requests on 10 connections: %d answered, %d refused; want 30 (one bucket of 30) and 70", a, r)
	}
	p := proxyFor(t, yml)
	update := func(maxTokens uint32) {
		t.Helper()
		a, err := anypb.New(&localratelimitv1.LocalRateLimit{TokenBucket: &localratelimitv1.TokenBucket{MaxTokens: maxTokens, FillInterval: durationpb.New(3600e9)}})
		if err != nil {
			t.Fatal(err)
		}
		rc := &breezev1.RouteConfiguration{Routes: []*breezev1.Route{{Name: "limited",
			Route:                &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "b"}},
			TypedPerFilterConfig: map[string]*anypb.Any{"local_ratelimit": a}}}}
		if err := p.UpdateRoutes(rc); err != nil {
			t.Fatal(err)
		}
	}
	update(30)
	if a, _ := round(1); a != 0 {
		t.Fatalf("after a new route table with the same bucket: %d of 10 answered, want 0 (the bucket is kept, empty)", a)
	}
	update(5)
	if a, _ := round(1); a != 5 {
		t.Fatalf("after a new route table with max_tokens 5: %d of 10 answered, want 5 (a new bucket)", a)
	}
}
