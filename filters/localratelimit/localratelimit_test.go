package localratelimit

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
)

// Requests sent well above the rate: the number allowed is exactly the
// bucket arithmetic, max_tokens plus tokens_per_fill for every whole
// fill_interval elapsed since the bucket was made (each fill is used up
// before the next).
func TestBucketArithmetic(t *testing.T) {
	p := proxyName(t)
	clk := useClock(t)
	chain := newChain(t, p, `{"tokenBucket": {"maxTokens": 5, "tokensPerFill": 2, "fillInterval": "1s"}}`)
	c := &conn{}
	const n, step = 1000, 10 * time.Millisecond
	for range n {
		send(c, chain, nil, md("method", "sayHello"))
		clk.advance(step)
	}
	last := (n - 1) * step // when the last request was sent
	want := 5 + 2*int(last/time.Second)
	if got := c.allowed(t); got != want {
		t.Fatalf("%d requests, one every %v: %d allowed, want 5 + 2×%d fills = %d", n, step, got, int(last/time.Second), want)
	}
	t.Logf("%d requests over %v: %d allowed = 5 + 2×%d", n, last, want, int(last/time.Second))
	if got := testutil.ToFloat64(decisions.WithLabelValues(p, "filter", "over_limit")); got != float64(n-want) {
		t.Errorf(`breeze_local_ratelimit_total{result="over_limit"} = %v, want %d`, got, n-want)
	}
	if got := testutil.ToFloat64(decisions.WithLabelValues(p, "filter", "ok")); got != float64(want) {
		t.Errorf(`breeze_local_ratelimit_total{result="ok"} = %v, want %d`, got, want)
	}
}

// Ten client connections send at once, in rounds, far more than the
// bucket holds; the clock moves between rounds. They share one bucket: the
// total allowed is the arithmetic of one bucket, exactly.
func TestSharedAcrossConnections(t *testing.T) {
	p := proxyName(t)
	clk := useClock(t)
	chain := newChain(t, p, `{"tokenBucket": {"maxTokens": 10, "tokensPerFill": 4, "fillInterval": "1s"}}`)
	conns := make([]*conn, 10)
	for i := range conns {
		conns[i] = &conn{}
	}
	const rounds, perConn, step = 20, 10, 300 * time.Millisecond
	for range rounds {
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() {
				for range perConn {
					send(c, chain, nil, nil)
				}
			})
		}
		wg.Wait()
		clk.advance(step)
	}
	got := 0
	for _, c := range conns {
		got += c.allowed(t)
	}
	fills := int((rounds - 1) * step / time.Second)
	if want := 10 + 4*fills; got != want {
		t.Fatalf("%d requests from 10 connections: %d allowed, want 10 + 4×%d = %d", rounds*perConn*10, got, fills, want)
	}
	t.Logf("%d requests from 10 connections over %v: %d allowed = 10 + 4×%d", rounds*perConn*10, (rounds-1)*step, got, fills)
}

// Aeraki's sample (demo/metaprotocol-dubbo/metarouter-local-ratelimit.yaml):
// sayHello takes from its condition's bucket, every other method from the
// default one; without a default bucket, other methods are not limited.
func TestConditionsFirstMatchThenDefault(t *testing.T) {
	p := proxyName(t)
	clk := useClock(t)
	const sample = `{"tokenBucket": {"fillInterval": "60s", "maxTokens": 10, "tokensPerFill": 10},
		"conditions": [{"tokenBucket": {"fillInterval": "10s", "maxTokens": 2, "tokensPerFill": 2},
			"match": [{"key": "method", "exact": "sayHello"}]},
			{"tokenBucket": {"fillInterval": "10s", "maxTokens": 100},
			"match": [{"key": "method", "prefix": "say"}]}]}`
	chain := newChain(t, p, sample)
	hello, bye := &conn{}, &conn{}
	for range 5 {
		send(hello, chain, nil, md("method", "sayHello"))
	}
	for range 20 {
		send(bye, chain, nil, md("method", "goodbye"))
	}
	if h, b := hello.allowed(t), bye.allowed(t); h != 2 || b != 10 {
		t.Fatalf("allowed: sayHello %d, want 2 (its condition, the first that matches); goodbye %d, want 10 (the default bucket)", h, b)
	}
	clk.advance(10 * time.Second)
	for range 5 {
		send(hello, chain, nil, md("method", "sayHello"))
	}
	send(bye, chain, nil, md("method", "goodbye"))
	if h, b := hello.allowed(t), bye.allowed(t); h != 4 || b != 10 {
		t.Fatalf("after 10s: allowed sayHello %d in all, want 4 (refilled by 2); goodbye %d, want 10 (its 60s interval has not passed)", h, b)
	}

	noDefault := newChain(t, p+"/no-default", `{"conditions": [{"tokenBucket": {"fillInterval": "10s", "maxTokens": 2}, "match": [{"key": "method", "exact": "sayHello"}]}]}`)
	other := &conn{}
	for range 50 {
		send(other, noDefault, nil, md("method", "goodbye"))
	}
	if got := other.allowed(t); got != 50 {
		t.Fatalf("without a default bucket, %d of 50 requests no condition matches were allowed, want all", got)
	}
}

// A descriptor makes one bucket per distinct combination of values;
// requests lacking a key share the bucket of "absent".
func TestDescriptors(t *testing.T) {
	p := proxyName(t)
	useClock(t)
	chain := newChain(t, p, `{"conditions": [{"tokenBucket": {"fillInterval": "3600s", "maxTokens": 2}, "descriptorKeys": ["interface", "method"]}]}`)
	counts := map[string]*conn{}
	for _, call := range []string{"Greeter.Hello", "Greeter.Bye", "Other.Hello", "Greeter.", ".Hello"} {
		c := &conn{}
		counts[call] = c
		iface, method, _ := strings.Cut(call, ".")
		for range 5 {
			var m []string
			if iface != "" {
				m = append(m, "interface", iface)
			}
			if method != "" {
				m = append(m, "method", method)
			}
			send(c, chain, nil, md(m...))
		}
	}
	for call, c := range counts {
		if got := c.allowed(t); got != 2 {
			t.Errorf("%s: %d of 5 allowed, want 2 (a bucket of its own)", call, got)
		}
	}
	// "a" then "b,c" must not be one value: the key says where values end.
	k1 := descriptor(nil, md("a", "x\x00", "b", "y"), []string{"a", "b"})
	k2 := descriptor(nil, md("a", "x", "b", "\x00y"), []string{"a", "b"})
	if string(k1) == string(k2) {
		t.Errorf("distinct values make one descriptor key %q", k1)
	}
}

// Past max_buckets, new values share one overflow bucket (counted); once
// a bucket has refilled to max_tokens, a new value takes its slot.
func TestDescriptorBound(t *testing.T) {
	p := proxyName(t)
	clk := useClock(t)
	chain := newChain(t, p, `{"conditions": [{"tokenBucket": {"fillInterval": "1s", "maxTokens": 2}, "descriptorKeys": ["caller"], "maxBuckets": 2}]}`)
	allowed := func(caller string) int {
		c := &conn{}
		for range 5 {
			send(c, chain, nil, md("caller", caller))
		}
		return c.allowed(t)
	}
	got := map[string]int{}
	for _, caller := range []string{"a", "b", "c", "d"} {
		got[caller] = allowed(caller)
	}
	if got["a"] != 2 || got["b"] != 2 || got["c"]+got["d"] != 2 {
		t.Fatalf("allowed by caller %v, want a: 2, b: 2 (buckets of their own), c+d: 2 (sharing the overflow bucket)", got)
	}
	overflow := overflows.WithLabelValues(p, "filter")
	if n := testutil.ToFloat64(overflow); n != 10 {
		t.Fatalf("breeze_local_ratelimit_overflow_total = %v, want 10 (the requests of c and d)", n)
	}
	clk.advance(2 * time.Second) // a and b are full again: their slots are free
	if n := allowed("e"); n != 2 {
		t.Fatalf("a new caller once the buckets refilled: %d of 5 allowed, want 2 (a bucket of its own)", n)
	}
	if n := testutil.ToFloat64(overflow); n != 10 {
		t.Fatalf("breeze_local_ratelimit_overflow_total = %v after the sweep, want still 10", n)
	}
}

// A new route table with the same settings keeps the route's bucket: it
// is not refilled, even once the old table is garbage. Changed settings
// start a new, full bucket. Routes with a scope of their own share it.
func TestBucketsSurviveRouteTableUpdate(t *testing.T) {
	p := proxyName(t)
	useClock(t)
	chain := newChain(t, p, "")
	const three = `{"tokenBucket": {"maxTokens": 3, "fillInterval": "3600s"}}`
	count := func(routes string, n int, tables ...string) int {
		tb := table(t, tables...)
		c := &conn{}
		for range n {
			send(c, chain, tb, md("route", routes))
		}
		return c.allowed(t)
	}
	if got := count("r0", 5, three); got != 3 {
		t.Fatalf("first table: %d of 5 allowed, want 3", got)
	}
	// The first table is garbage now: its bucket must not go with it.
	waitUnheld(t, p+"\x00route:r0\x00default 3+1/1h0m0s")
	if got := count("r0", 5, three); got != 0 {
		t.Fatalf("a new table with the same settings: %d of 5 allowed, want 0 (the bucket is empty, not refilled)", got)
	}
	if got := count("r0", 5, `{"tokenBucket": {"maxTokens": 4, "fillInterval": "3600s"}}`); got != 4 {
		t.Fatalf("a new table with max_tokens 4: %d of 5 allowed, want 4 (a new bucket)", got)
	}
	if got := count("r1", 5, three, three); got != 3 {
		t.Fatalf("another route with the same settings: %d of 5 allowed, want 3 (a bucket of its own)", got)
	}
	shared := `{"scope": "greeter", "tokenBucket": {"maxTokens": 3, "fillInterval": "3600s"}}`
	tb := table(t, shared, shared)
	c := &conn{}
	for range 5 {
		send(c, chain, tb, md("route", "r0"))
		send(c, chain, tb, md("route", "r1"))
	}
	if got := c.allowed(t); got != 3 {
		t.Fatalf("two routes of one scope: %d of 10 allowed, want 3 (one bucket)", got)
	}
	// An empty route config: that route is not limited, whatever the filter's.
	limited := newChain(t, p+"/filter", `{"tokenBucket": {"maxTokens": 1, "fillInterval": "3600s"}}`)
	free, tb2 := &conn{}, table(t, "{}")
	for range 5 {
		send(free, limited, tb2, md("route", "r0"))
	}
	if got := free.allowed(t); got != 5 {
		t.Fatalf("a route with an empty config: %d of 5 allowed, want all", got)
	}
}

// A new proxy config version (a new filter instance) with the same bucket
// keeps it; other settings, or another proxy, make another.
func TestBucketsSurviveProxyConfigUpdate(t *testing.T) {
	p := proxyName(t)
	useClock(t)
	const cfg = `{"tokenBucket": {"maxTokens": 3, "fillInterval": "3600s"}}`
	count := func(proxy, js string) int {
		chain, c := newChain(t, proxy, js), &conn{}
		for range 5 {
			send(c, chain, nil, nil)
		}
		return c.allowed(t)
	}
	for _, step := range []struct {
		proxy, cfg string
		want       int
		what       string
	}{
		{p, cfg, 3, "first config"},
		{p, cfg, 0, "the same config again"},
		{p, `{"tokenBucket": {"maxTokens": 3, "tokensPerFill": 2, "fillInterval": "3600s"}}`, 3, "tokens_per_fill changed"},
		{p + "-other", cfg, 3, "another proxy"},
	} {
		if got := count(step.proxy, step.cfg); got != step.want {
			t.Fatalf("%s: %d of 5 allowed, want %d", step.what, got, step.want)
		}
	}
}

// Groups nobody holds stay while they are not full (a config coming back
// finds them), and are dropped once they are: memory does not grow with
// config changes.
func TestRegistryDropsUnheldFullGroups(t *testing.T) {
	clk := useClock(t)
	p := proxyName(t)
	key := p + "\x00filter\x00default 2+1/1s"
	held := func() (*group, bool) {
		registry.Lock()
		defer registry.Unlock()
		g, ok := registry.groups[key]
		return g, ok
	}
	func() {
		chain, c := newChain(t, p, `{"tokenBucket": {"maxTokens": 2, "fillInterval": "1s"}}`), &conn{}
		send(c, chain, nil, nil)
	}()
	waitUnheld(t, key)
	newChain(t, p+"/other", `{"tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}`) // a bind sweeps
	if _, ok := held(); !ok {
		t.Fatal("a group with a token taken was dropped: a config coming back would find it full")
	}
	clk.advance(time.Second)
	newChain(t, p+"/other", `{"tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}`)
	if _, ok := held(); ok {
		t.Fatal("a full group nobody holds was kept")
	}
}

// waitUnheld waits until the group of key is held by no binding: the
// configs that used it are garbage and their cleanups ran.
func waitUnheld(t *testing.T, key string) {
	t.Helper()
	registry.Lock()
	g := registry.groups[key]
	registry.Unlock()
	if g == nil {
		t.Fatalf("no group %q", key)
	}
	deadline := time.Now().Add(10 * time.Second)
	for g.holders.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("group %q is still held by %d bindings after its configs became garbage", key, g.holders.Load())
		}
		runtime.GC()
		runtime.Gosched()
	}
}

// The arithmetic of one bucket under concurrent takes: never more tokens
// than the bucket had.
func TestBucketConcurrentTakes(t *testing.T) {
	sp := spec{max: 1000, perFill: 1, interval: int64(time.Second)}
	var b bucket
	b.fill(&sp, 0)
	var mu sync.Mutex
	got := 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			n := 0
			for range 500 {
				if b.take(&sp, 0) {
					n++
				}
			}
			mu.Lock()
			got += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if got != 1000 {
		t.Fatalf("8×500 concurrent takes from a bucket of 1000: %d succeeded", got)
	}
	// A taker that read an older interval does not count fills twice.
	b.fill(&sp, 10)
	for b.take(&sp, 10) {
	}
	if b.take(&sp, 9) {
		t.Fatal("a take at an earlier interval refilled the bucket")
	}
	if !b.take(&sp, 11) || b.take(&sp, 11) {
		t.Fatal("one interval later, the bucket did not hold exactly one token")
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct{ cfg, want string }{
		{`{"tokenBucket": {"maxTokens": 0, "fillInterval": "1s"}}`, "token_bucket.max_tokens: 0: must be at least 1"},
		{`{"tokenBucket": {"maxTokens": 1}}`, "token_bucket.fill_interval: required"},
		{`{"tokenBucket": {"maxTokens": 1, "fillInterval": "0.010s"}}`, "token_bucket.fill_interval: 10ms: must be at least 50ms"},
		{`{"tokenBucket": {"maxTokens": 1, "tokensPerFill": 0, "fillInterval": "1s"}}`, "token_bucket.tokens_per_fill: 0: must be at least 1 (unset: 1)"},
		{`{"conditions": [{"match": [{"key": "method", "exact": "a"}]}]}`, "conditions[0].token_bucket: required"},
		{`{"conditions": [{"tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}, "match": [{"key": "method", "regex": "("}]}]}`, `conditions[0].match[0].regex: "(": error parsing regexp: missing closing ): ` + "`(`"},
		{`{"conditions": [{"tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}, "descriptorKeys": ["a", ""]}]}`, `conditions[0].descriptor_keys[1]: "": must not be empty`},
	} {
		err := Validate(parse(t, c.cfg))
		if err == nil || err.Error() != c.want {
			t.Errorf("%s: error %v, want %s", c.cfg, err, c.want)
		}
	}
	if err := Validate(parse(t, `{}`)); err != nil {
		t.Errorf("an empty config (no limit): %v", err)
	}
}

// The path of an allowed request allocates nothing, with a single bucket
// and with a descriptor value seen before.
func TestAllowedPathAllocatesNothing(t *testing.T) {
	useClock(t)
	for name, cfg := range map[string]string{
		"single":     `{"tokenBucket": {"maxTokens": 4000000000, "fillInterval": "1s"}}`,
		"descriptor": `{"conditions": [{"match": [{"key": "method", "prefix": "say"}], "tokenBucket": {"maxTokens": 4000000000, "fillInterval": "1s"}, "descriptorKeys": ["interface", "method"]}]}`,
	} {
		for _, perRoute := range []bool{false, true} {
			s, f := benchStream(t, fmt.Sprintf("%s/%s/%v", t.Name(), name, perRoute), cfg, perRoute)
			f.OnRequest(s) // the first value of a descriptor makes its bucket
			if n := testing.AllocsPerRun(1000, func() {
				if f.OnRequest(s) != filter.Continue {
					t.Fatal("refused")
				}
			}); n != 0 {
				t.Errorf("%s (per route %v): %v allocations per request", name, perRoute, n)
			}
		}
	}
}

// benchStream is a request (with a route when perRoute) and the filter,
// configured with cfg on the filter or on the route.
func benchStream(t testing.TB, proxy, cfg string, perRoute bool) (*filter.Stream, filter.Filter) {
	filterCfg, routeCfg := cfg, ""
	if perRoute {
		filterCfg, routeCfg = "", cfg
	}
	chain := newChain(t, proxy, filterCfg)
	m := md("route", "r0", "interface", "org.breeze.Greeter", "method", "sayHello")
	s := &filter.Stream{}
	s.Init(chain, &conn{}, &codecs.Message{Type: codecs.Request, Metadata: m}, time.Now())
	if perRoute {
		s.Route = table(t, routeCfg).Match(m)
	}
	return s, chain.Filters[0]
}

func BenchmarkOnRequest(b *testing.B) {
	clk := useClock(b)
	for name, cfg := range map[string]string{
		"single":     `{"tokenBucket": {"maxTokens": 4000000000, "fillInterval": "1s"}}`,
		"descriptor": `{"conditions": [{"match": [{"key": "method", "prefix": "say"}], "tokenBucket": {"maxTokens": 4000000000, "fillInterval": "1s"}, "descriptorKeys": ["interface", "method"]}]}`,
	} {
		b.Run(name, func(b *testing.B) {
			s, f := benchStream(b, b.Name(), cfg, true)
			b.ReportAllocs()
			for b.Loop() {
				f.OnRequest(s)
				clk.advance(time.Microsecond)
			}
		})
	}
}
