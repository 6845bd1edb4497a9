package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// localRateLimitConfig: Greet takes its tokens from one bucket of 40 for
// the whole proxy; Whoami from one bucket of 3 per caller attachment. The
// fill interval is an hour, so that no refill happens during the test: the
// runner's clock is real, and a separate process cannot be given a fake
// one; the arithmetic is then max_tokens exactly.
const localRateLimitConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    filters:
    - name: local_ratelimit
      typed_config:
        "@type": type.googleapis.com/breeze.filters.local_ratelimit.v1.LocalRateLimit
        token_bucket: {max_tokens: 40, fill_interval: 3600s}
        conditions:
        - match: [{key: method, exact: Whoami}]
          descriptor_keys: [caller]
          token_bucket: {max_tokens: 3, fill_interval: 3600s}
    route_config:
      routes:
      - route: {cluster: greeter}
    clusters:
    - name: greeter
      endpoints: [{address: 127.0.0.1, port: {{port "rl"}}}]
`

// TestLocalRateLimit: ten dubbo-go clients, one connection each, call
// through one proxy far above the rate. They share the proxy's buckets:
// 40 Greet calls in all are served, 3 Whoami per caller; every other call
// gets Dubbo's overload reply (status 100), counted.
func TestLocalRateLimit(t *testing.T) {
	harness.BreezeBin(t)
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "rl"})
	proxy := harness.StartProxy(t, localRateLimitConfig, ports(p))
	const clients, greets, whoamis = 10, 20, 10
	cs := make([]*harness.Client, clients)
	for i := range cs {
		cs[i] = newClient(t, proxy.Addr, harness.ClientSpec{Connections: 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Ten connections open (the probe that saw the proxy listening has
	// closed), before any call and after all of them.
	tenOpen := func(when string) {
		t.Helper()
		if err := proxy.WaitMetric(ctx, "10 client connections "+when, "breeze_downstream_connections_active", func(v float64) bool { return v == clients }, `proxy="e2e"`); err != nil {
			t.Fatal(err)
		}
	}
	tenOpen("before the calls")

	type tally struct{ greetOK, whoamiOK, refused int }
	results := make([]tally, clients)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			caller := fmt.Sprintf("caller-%d", i)
			outs := c.RunCalls(ctx, greets+whoamis, 4, 10*time.Second, func(j int) harness.CallSpec {
				if j%3 == 2 && j/3 < whoamis {
					return harness.CallSpec{Method: "Whoami", Attachments: map[string]string{"caller": caller}}
				}
				return harness.CallSpec{Method: "Greet", Arg: fmt.Sprintf("%s-%d", caller, j), Attachments: map[string]string{"caller": caller}}
			})
			for _, o := range outs {
				var ce *harness.CallError
				switch {
				case o.Err == nil && o.Call.Method == "Greet":
					results[i].greetOK++
				case o.Err == nil:
					results[i].whoamiOK++
				case errors.As(o.Err, &ce) && strings.Contains(ce.Msg, "overloaded") && strings.Contains(ce.Msg, "local rate limit exceeded"):
					results[i].refused++
				default:
					t.Errorf("%s: %v, want a reply or the rate limit's overload error", caller, o.Err)
				}
			}
		})
	}
	wg.Wait()
	greetOK, refused := 0, 0
	for i, r := range results {
		greetOK += r.greetOK
		refused += r.refused
		if r.whoamiOK != 3 {
			t.Errorf("caller-%d: %d Whoami served, want 3 (its own bucket)", i, r.whoamiOK)
		}
	}
	total := clients * (greets + whoamis)
	if greetOK != 40 {
		t.Errorf("%d Greet calls served by 10 connections, want 40 (one bucket of 40, no refill)", greetOK)
	}
	t.Logf("%d calls from %d connections: %d Greet served (bucket 40), 3 Whoami per caller, %d refused", total, clients, greetOK, refused)
	tenOpen("after the calls")
	if ok, over := proxy.Metric(t, "breeze_local_ratelimit_total", `result="ok"`), proxy.Metric(t, "breeze_local_ratelimit_total", `result="over_limit"`); ok != 40+3*clients || over != float64(refused) {
		t.Errorf("breeze_local_ratelimit_total: ok %v, over_limit %v; want %d and %d", ok, over, 40+3*clients, refused)
	}

	// On the wire: Dubbo's SERVER_THREADPOOL_EXHAUSTED_ERROR (100), with
	// the request's id.
	conn, err := net.DialTimeout("tcp", proxy.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	req, err := harness.EncodeRequest(77, harness.Invocation{
		Service: "org.breeze.Greeter", Method: "Greet", ParamTypes: "Ljava/lang/String;", Args: []interface{}{"raw"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	_, raw, err := harness.ReadFrame(conn)
	if err != nil {
		t.Fatalf("no reply to a request over the limit: %v", err)
	}
	resp, err := harness.DecodeResponse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.ID != 77 || resp.Header.Status != 100 {
		t.Errorf("reply to a request over the limit: %s: %v; want id 77, status 100", resp.Header, resp.Exception)
	}
	t.Logf("raw reply over the limit: %s: %v", resp.Header, resp.Exception)
}
