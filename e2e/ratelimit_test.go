package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// rateLimitRules are the rate-limit service's rules: tenant A 5 requests
// an hour, B 10, any other tenant unlimited. An hour, so that a test's few
// seconds fall inside one window (TestGlobalRateLimitCounts checks it did).
const rateLimitRules = `domain: breeze-e2e
descriptors:
- key: tenant
  value: A
  rate_limit: {unit: hour, requests_per_unit: 5}
- key: tenant
  value: B
  rate_limit: {unit: hour, requests_per_unit: 10}
`

// rateLimitedProxy is a runner config whose routes check requests with
// the rate-limit service at {{index .Extra "rls"}}: "fail-closed" (calls
// with attachment mode=closed, deny_on_fail) and "limited" (other Greet
// calls, fail open), each with descriptor tenant=<the tenant attachment>;
// "free" (Whoami) is not checked. The proxy lists no filters: the
// global_ratelimit filter is in every chain, for routes' configs.
const rateLimitedProxy = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    route_config:
      routes:
      - name: free
        match: {metadata: [{key: method, exact: Whoami}]}
        route: {cluster: greeter}
      - name: fail-closed
        match: {metadata: [{key: mode, exact: closed}]}
        route: {cluster: greeter}
        typed_per_filter_config:
          global_ratelimit:
            "@type": type.googleapis.com/breeze.filters.global_ratelimit.v1.GlobalRateLimit
            domain: breeze-e2e
            rate_limit_service: "{{index .Extra "rls"}}"
            request_timeout: {{index .Extra "timeout"}}
            deny_on_fail: true
            descriptors: [{entries: [{key: tenant, metadata_key: tenant}]}]
      - name: limited
        route: {cluster: greeter}
        typed_per_filter_config:
          global_ratelimit:
            "@type": type.googleapis.com/breeze.filters.global_ratelimit.v1.GlobalRateLimit
            domain: breeze-e2e
            rate_limit_service: "{{index .Extra "rls"}}"
            request_timeout: {{index .Extra "timeout"}}
            descriptors: [{entries: [{key: tenant, metadata_key: tenant}]}]
    clusters:
    - name: greeter
      endpoints: [{address: 127.0.0.1, port: {{port "p"}}}]
`

// startRateLimited starts a provider and the proxy, checking with the
// service at rls with the given per-call timeout.
func startRateLimited(t *testing.T, rls string, timeout time.Duration) *harness.Proxy {
	t.Helper()
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "p"})
	return harness.StartProxyVars(t, rateLimitedProxy, map[string]interface{}{"rls": rls, "timeout": timeout.String()}, ports(p))
}

// rlCounts reads breeze_global_ratelimit_total by result.
func rlCounts(t *testing.T, proxy *harness.Proxy) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, r := range []string{"ok", "over_limit", "error_allowed", "error_denied"} {
		m[r] = proxy.Metric(t, "breeze_global_ratelimit_total", `result="`+r+`"`)
	}
	return m
}

func delta(after, before map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

func equalCounts(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// The requests allowed per descriptor are the service's limits: of 20
// calls each, tenant A gets 5 through, B 10, C (no rule) 20; the others
// are refused with Dubbo's overload reply. Four client connections, six
// calls at a time. The limits count per hour: a run that straddles the
// hour (a new window, fresh counts) is done again on an emptied Redis.
func TestGlobalRateLimitCounts(t *testing.T) {
	rl := harness.StartRateLimit(t, rateLimitRules)
	proxy := startRateLimited(t, rl.Addr, 5*time.Second)
	c := newClient(t, proxy.Addr, harness.ClientSpec{Connections: 4})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const perTenant = 20
	tenants := []string{"A", "B", "C"}
	var passed map[string]int
	var counted map[string]float64
	for attempt := 1; ; attempt++ {
		before := rlCounts(t, proxy)
		window := time.Now().Truncate(time.Hour)
		outs := runCalls(ctx, c, perTenant*len(tenants), 6, greets("rl", func(i int) map[string]string {
			return map[string]string{"tenant": tenants[i%len(tenants)]}
		}))
		if !time.Now().Truncate(time.Hour).Equal(window) && attempt == 1 {
			t.Logf("the calls straddled the hour: the service's window changed; again on an empty Redis")
			rl.FlushRedis(t)
			continue
		}
		passed = map[string]int{}
		for _, o := range outs {
			tenant := o.Call.Attachments["tenant"]
			switch {
			case o.Err == nil:
				passed[tenant]++
			case !strings.Contains(o.Err.Error(), "over the global rate limit"):
				t.Errorf("tenant %s: %v; want a reply saying it is over the global rate limit", tenant, o.Err)
			}
		}
		counted = delta(rlCounts(t, proxy), before)
		break
	}
	t.Logf("passed of %d calls each: A %d (limit 5/hour), B %d (limit 10/hour), C %d (no limit); counted %v",
		perTenant, passed["A"], passed["B"], passed["C"], counted)
	if passed["A"] != 5 || passed["B"] != 10 || passed["C"] != perTenant {
		t.Errorf("passed A %d, B %d, C %d; want 5, 10, %d", passed["A"], passed["B"], passed["C"], perTenant)
	}
	if want := map[string]float64{"ok": 35, "over_limit": 25}; !equalCounts(counted, want) {
		t.Errorf("counted %v, want %v", counted, want)
	}
}

// With the service down (killed after it answered), the fail-open route
// lets every call through and the fail-closed one refuses every call with
// the overload reply; each is counted.
func TestGlobalRateLimitServiceDown(t *testing.T) {
	rl := harness.StartRateLimit(t, rateLimitRules)
	proxy := startRateLimited(t, rl.Addr, time.Second)
	c := newClient(t, proxy.Addr, harness.ClientSpec{Connections: 2})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	open := func(i int) map[string]string { return map[string]string{"tenant": "C"} }
	closed := func(i int) map[string]string { return map[string]string{"tenant": "C", "mode": "closed"} }
	// Up: both routes pass, checked.
	for _, o := range append(runCalls(ctx, c, 1, 1, greets("up-open", open)), runCalls(ctx, c, 1, 1, greets("up-closed", closed))...) {
		if o.Err != nil {
			t.Fatalf("with the service up: %v", o.Err)
		}
	}
	before := rlCounts(t, proxy)
	if before["ok"] != 2 {
		t.Fatalf("with the service up, counted %v; want ok 2", before)
	}

	rl.Proc.KillAndWait(t)
	const n = 10
	var openPassed, closedRefused int
	for _, o := range runCalls(ctx, c, n, 4, greets("down-open", open)) {
		if o.Err == nil {
			openPassed++
		} else {
			t.Errorf("fail-open, service down: %v", o.Err)
		}
	}
	for _, o := range runCalls(ctx, c, n, 4, greets("down-closed", closed)) {
		switch {
		case o.Err == nil:
			t.Errorf("fail-closed, service down: %s(%q) passed", o.Call.Method, o.Call.Arg)
		case strings.Contains(o.Err.Error(), "no answer from the rate-limit service"):
			closedRefused++
		default:
			t.Errorf("fail-closed, service down: %v; want a reply saying the rate-limit service did not answer", o.Err)
		}
	}
	counted := delta(rlCounts(t, proxy), before)
	t.Logf("service down: fail-open passed %d of %d, fail-closed refused %d of %d; counted %v", openPassed, n, closedRefused, n, counted)
	if want := map[string]float64{"error_allowed": n, "error_denied": n}; !equalCounts(counted, want) {
		t.Errorf("counted %v, want %v", counted, want)
	}
}

// While the service holds its answers, calls waiting for it are paused in
// the proxy, and nothing else waits for them: calls of a route that is not
// checked, on four other connections and on the waiting calls' own
// connection, all complete while the service still holds every answer.
// The service is gated by a relay in front of it (harness.H2Gate) that
// counts the calls reaching it, so the test knows that all of them are
// waiting before it sends the others. Counted, not timed.
func TestGlobalRateLimitHeldServiceDelaysNoOtherRequest(t *testing.T) {
	rl := harness.StartRateLimit(t, rateLimitRules)
	gate := harness.StartH2Gate(t, rl.Addr)
	proxy := startRateLimited(t, gate.Addr, 30*time.Second)
	waiting := newClient(t, proxy.Addr, harness.ClientSpec{Connections: 1, Timeout: 30 * time.Second})
	others := newClient(t, proxy.Addr, harness.ClientSpec{Connections: 4})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	tenantC := func(int) map[string]string { return map[string]string{"tenant": "C"} }
	if o := runCalls(ctx, waiting, 1, 1, greets("warm", tenantC))[0]; o.Err != nil {
		t.Fatalf("first checked call: %v", o.Err)
	}
	if n := gate.Calls(); n != 1 {
		t.Fatalf("%d calls reached the service, want 1", n)
	}

	gate.Hold()
	const held = 8
	results := make(chan harness.Outcome[harness.CallSpec], held)
	go func() {
		for _, o := range waiting.RunCalls(ctx, held, held, 30*time.Second, greets("held", tenantC)) {
			results <- o
		}
	}()
	if err := gate.WaitCalls(ctx, 1+held); err != nil {
		t.Fatal(err)
	}

	whoami := func(i int) harness.CallSpec { return harness.CallSpec{Method: "Whoami"} }
	otherConns := others.RunCalls(ctx, 40, 8, perCall, whoami)
	sameConn := waiting.RunCalls(ctx, 10, 4, perCall, whoami)
	stillHeld := len(results) == 0 && gate.Calls() == 1+held
	var otherOK, sameOK int
	for _, o := range otherConns {
		if o.Err == nil {
			otherOK++
		} else {
			t.Errorf("unchecked call on another connection: %v", o.Err)
		}
	}
	for _, o := range sameConn {
		if o.Err == nil {
			sameOK++
		} else {
			t.Errorf("unchecked call on the waiting calls' connection: %v", o.Err)
		}
	}
	if !stillHeld {
		t.Errorf("the held calls did not all wait for the service: %d ended before its answers were let through", len(results))
	}

	gate.Release()
	var heldOK int
	for range held {
		select {
		case o := <-results:
			if o.Err == nil {
				heldOK++
			} else {
				t.Errorf("held call, once the service answered: %v", o.Err)
			}
		case <-ctx.Done():
			t.Fatalf("the held calls did not end once the service answered: %d of %d ended", heldOK, held)
		}
	}
	t.Logf("while %d checked calls waited on the held service: %d/40 unchecked calls on 4 other connections and %d/10 on their own connection completed; after release %d/%d passed",
		held, otherOK, sameOK, heldOK, held)
	if c := rlCounts(t, proxy); c["ok"] != 1+held {
		t.Errorf("counted %v, want ok %d", c, 1+held)
	}
}
