package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// Routing and load balancing through the proxy. Each test writes the runner
// file a person would write (see protos/breeze/v1/config.proto); the harness
// fills in {{.Listen}}, {{.Admin}} and {{port "NAME"}}.

func TestProxyPassThroughAndMutation(t *testing.T) {
	harness.BreezeBin(t)
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "solo"})
	proxy := harness.StartProxy(t, `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    route_config:
      routes:
      - name: all
        route: {cluster: greeter}
        request_mutation:
        - {key: x-breeze-route, value: all}
    clusters:
    - name: greeter
      endpoints: [{address: 127.0.0.1, port: {{port "solo"}}}]
`, ports(p))
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), perCall)
	defer cancel()
	r, err := c.Greet(ctx, "alice", map[string]string{"tenant": "gold", "user": "u42"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Provider != "solo" || r.Arg != "alice" {
		t.Errorf("reply %+v", r)
	}
	for k, v := range map[string]string{"tenant": "gold", "user": "u42", "x-breeze-route": "all", "interface": "org.breeze.Greeter"} {
		if r.Attachments[k] != v {
			t.Errorf("provider saw attachment %s=%q, want %q (all: %v)", k, r.Attachments[k], v, r.Attachments)
		}
	}
	if _, err := proxy.Metrics(ctx); err != nil {
		t.Errorf("admin /metrics: %v", err)
	}
}

func TestProxyRouteByMethod(t *testing.T) {
	harness.BreezeBin(t)
	a, b := harness.StartProvider(t, harness.ProviderSpec{Name: "a1"}), harness.StartProvider(t, harness.ProviderSpec{Name: "b1"})
	proxy := harness.StartProxy(t, `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    route_config:
      routes:
      - match: {metadata: [{key: method, exact: Whoami}]}
        route: {cluster: a}
      - match: {metadata: [{key: method, exact: Greet}]}
        route: {cluster: b}
    clusters:
    - name: a
      endpoints: [{address: 127.0.0.1, port: {{port "a1"}}}]
    - name: b
      endpoints: [{address: 127.0.0.1, port: {{port "b1"}}}]
`, ports(a, b))
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	who := harness.Served(t, runCalls(ctx, c, 30, 4, func(int) callSpec { return callSpec{Method: "Whoami"} }))
	harness.OnlyFrom(t, "Whoami", who, "a1")
	greet := harness.Served(t, runCalls(ctx, c, 30, 4, greets("m", nil)))
	harness.OnlyFrom(t, "Greet", greet, "b1")
}

// threeSubsetProviders starts v1-a and v1-b (label version=v1) and v2-a
// (version=v2), all unversioned services.
func threeSubsetProviders(t *testing.T) []*harness.Provider {
	return []*harness.Provider{
		harness.StartProvider(t, harness.ProviderSpec{Name: "v1-a"}),
		harness.StartProvider(t, harness.ProviderSpec{Name: "v1-b"}),
		harness.StartProvider(t, harness.ProviderSpec{Name: "v2-a"}),
	}
}

const subsetCluster = `
    clusters:
    - name: greeter
      endpoints:
      - {address: 127.0.0.1, port: {{port "v1-a"}}, labels: {version: v1}}
      - {address: 127.0.0.1, port: {{port "v1-b"}}, labels: {version: v1}}
      - {address: 127.0.0.1, port: {{port "v2-a"}}, labels: {version: v2}}
`

func TestProxyRouteByAttachment(t *testing.T) {
	harness.BreezeBin(t)
	ps := threeSubsetProviders(t)
	proxy := harness.StartProxy(t, `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    route_config:
      routes:
      - name: gold-to-v2
        match: {metadata: [{key: tenant, exact: gold}]}
        route: {cluster: greeter, subset: {version: v2}}
      - name: rest-to-v1
        route: {cluster: greeter, subset: {version: v1}}
`+subsetCluster, ports(ps...))
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gold := harness.Served(t, runCalls(ctx, c, 40, 4, greets("gold", func(int) map[string]string {
		return map[string]string{"tenant": "gold"}
	})))
	harness.OnlyFrom(t, "tenant=gold", gold, "v2-a")
	silver := harness.Served(t, runCalls(ctx, c, 40, 4, greets("silver", func(int) map[string]string {
		return map[string]string{"tenant": "silver"}
	})))
	harness.OnlyFrom(t, "tenant=silver", silver, "v1-a", "v1-b")
	none := harness.Served(t, runCalls(ctx, c, 40, 4, greets("none", nil)))
	harness.OnlyFrom(t, "no tenant", none, "v1-a", "v1-b")
	if none["v1-a"] == 0 || none["v1-b"] == 0 {
		t.Errorf("subset v1 should spread over v1-a and v1-b: %v", none)
	}
}

// TestProxyRouteByVersion routes on the Dubbo service version a caller asks
// for to the endpoints labelled for it; the providers export only their own
// version, so a misroute shows as dubbo-go's "no exporter" error.
func TestProxyRouteByVersion(t *testing.T) {
	harness.BreezeBin(t)
	v1 := harness.StartProvider(t, harness.ProviderSpec{Name: "v1", Versions: []string{"1.0.0"}})
	v2 := harness.StartProvider(t, harness.ProviderSpec{Name: "v2", Versions: []string{"2.0.0"}})
	proxy := harness.StartProxy(t, `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    route_config:
      routes:
      - match: {metadata: [{key: version, exact: "2.0.0"}]}
        route: {cluster: greeter, subset: {version: v2}}
      - match: {metadata: [{key: version, prefix: "1."}]}
        route: {cluster: greeter, subset: {version: v1}}
    clusters:
    - name: greeter
      endpoints:
      - {address: 127.0.0.1, port: {{port "v1"}}, labels: {version: v1}}
      - {address: 127.0.0.1, port: {{port "v2"}}, labels: {version: v2}}
`, ports(v1, v2))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct{ version, provider string }{{"1.0.0", "v1"}, {"2.0.0", "v2"}} {
		c := newClient(t, proxy.Addr, harness.ClientSpec{Version: tc.version})
		results := runCalls(ctx, c, 30, 4, greets("ver"+tc.version, nil))
		count := harness.Served(t, results)
		harness.OnlyFrom(t, "version "+tc.version, count, tc.provider)
		for _, r := range results {
			if r.Reply.Version != tc.version {
				t.Fatalf("asked version %s, served as %q", tc.version, r.Reply.Version)
			}
		}
	}
}

func TestProxyWeightedSplit(t *testing.T) {
	harness.BreezeBin(t)
	a, b := harness.StartProvider(t, harness.ProviderSpec{Name: "a1"}), harness.StartProvider(t, harness.ProviderSpec{Name: "b1"})
	proxy := harness.StartProxy(t, `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    route_config:
      routes:
      - route:
          weighted_clusters:
            clusters:
            - {name: a, weight: 20}
            - {name: b, weight: 80}
    clusters:
    - name: a
      endpoints: [{address: 127.0.0.1, port: {{port "a1"}}}]
    - name: b
      endpoints: [{address: 127.0.0.1, port: {{port "b1"}}}]
`, ports(a, b))
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 1000
	count := harness.Served(t, runCalls(ctx, c, n, 10, greets("w", nil)))
	harness.OnlyFrom(t, "split", count, "a1", "b1")
	// Not exact counts: within 5 standard deviations of Binomial(1000, 0.2)
	// (200 ± 63), wrong only about once in 1.7 million runs.
	ok, lo, hi := harness.WithinSigmas(count["a1"], n, 0.2, 5)
	t.Logf("20/80 split over %d calls: %v (a1 bounds %.0f..%.0f)", n, count, lo, hi)
	if !ok {
		t.Errorf("cluster a got %d of %d calls, want %.0f..%.0f for weight 20/100", count["a1"], n, lo, hi)
	}
}

func TestProxyConsistentHash(t *testing.T) {
	harness.BreezeBin(t)
	ps := []*harness.Provider{
		harness.StartProvider(t, harness.ProviderSpec{Name: "h1"}),
		harness.StartProvider(t, harness.ProviderSpec{Name: "h2"}),
		harness.StartProvider(t, harness.ProviderSpec{Name: "h3"}),
	}
	proxy := harness.StartProxy(t, `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    route_config:
      routes:
      - route: {cluster: greeter, hash_key: user}
    clusters:
    - name: greeter
      lb_policy: RING_HASH
      endpoints:
      - {address: 127.0.0.1, port: {{port "h1"}}}
      - {address: 127.0.0.1, port: {{port "h2"}}}
      - {address: 127.0.0.1, port: {{port "h3"}}}
`, ports(ps...))
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const users, perUser = 40, 5
	results := runCalls(ctx, c, users*perUser, 8, greets("hash", func(i int) map[string]string {
		return map[string]string{"user": fmt.Sprintf("user-%d", i%users)}
	}))
	harness.Served(t, results)
	served := map[string]map[string]bool{} // user -> providers
	used := map[string]int{}
	for _, r := range results {
		u := r.Call.Attachments["user"]
		if served[u] == nil {
			served[u] = map[string]bool{}
		}
		served[u][r.Reply.Provider] = true
		used[r.Reply.Provider]++
	}
	for u, ps := range served {
		if len(ps) != 1 {
			t.Errorf("user %s was served by %d providers %v, want always the same one", u, len(ps), ps)
		}
	}
	if len(used) < 2 {
		t.Errorf("%d users all hashed to %v, want them spread over more than one provider", users, used)
	}
	t.Logf("calls per provider: %v", used)
}

// TestProxyRoundRobin: the requests of one client connection are balanced
// per request, not per connection.
func TestProxyRoundRobin(t *testing.T) {
	harness.BreezeBin(t)
	ps := []*harness.Provider{
		harness.StartProvider(t, harness.ProviderSpec{Name: "r1"}),
		harness.StartProvider(t, harness.ProviderSpec{Name: "r2"}),
		harness.StartProvider(t, harness.ProviderSpec{Name: "r3"}),
	}
	proxy := harness.StartProxy(t, `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    route_config:
      routes:
      - route: {cluster: greeter}
    clusters:
    - name: greeter
      lb_policy: ROUND_ROBIN
      endpoints:
      - {address: 127.0.0.1, port: {{port "r1"}}}
      - {address: 127.0.0.1, port: {{port "r2"}}}
      - {address: 127.0.0.1, port: {{port "r3"}}}
`, ports(ps...))
	tee := harness.StartTee(t, proxy.Addr)
	c := newClient(t, tee.Addr, harness.ClientSpec{Connections: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 300
	count := harness.Served(t, runCalls(ctx, c, n, 1, greets("rr", nil)))
	t.Logf("one connection, %d calls: %v", n, count)
	for _, name := range []string{"r1", "r2", "r3"} {
		if got := count[name]; got < 80 || got > 120 {
			t.Errorf("%s served %d of %d calls, want about a third (80..120)", name, got, n)
		}
	}
	if st := tee.State(); st.Conns != 1 {
		t.Errorf("the client used %d connections to the proxy, want 1", st.Conns)
	}
}
