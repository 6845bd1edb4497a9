package proxy

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/upstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// retries reads breeze_retries_total of a proxy's cluster.
func retries(proxy, cluster, reason, result string) float64 {
	return testutil.ToFloat64(metrics.Retries.WithLabelValues(proxy, cluster, reason, result))
}

// A provider that dies running a request (resets the connection) under a
// retry policy with "reset": every request is answered by the other one,
// and each reset is one retry.
func TestRetryOnResetGoesToAnotherEndpoint(t *testing.T) {
	good, bad := newBackend(t, "good"), newBackend(t, "bad")
	bad.dropAll.Store(true)
	addr := startProxy(t, strings.Replace(cfg(`  - {route: {cluster: c}, retry_policy: {retry_on: reset, num_retries: 1, retry_back_off: {base_interval: 0.001s}}}`,
		"- name: c\n  lb_policy: RANDOM\n  endpoints:\n"+ep(good, "")+"\n"+ep(bad, "")), "stat_prefix: t", "stat_prefix: retry_reset", 1))
	c := dial(t, addr)
	for i := range 60 {
		m, err := c.call(0, "x")
		if err != nil || m.status != codecs.StatusOK || md(m, "server") != "good" {
			t.Fatalf("call %d: %+v %v; want an answer from good", i, m, err)
		}
	}
	got := retries("retry_reset", "c", "reset", "attempted")
	t.Logf("60 calls, all answered by good; bad received %d and reset them; %v retries", bad.received.Load(), got)
	if bad.received.Load() == 0 || got != float64(bad.received.Load()) {
		t.Fatalf("retries %v, want one per request bad received (%d)", got, bad.received.Load())
	}
	if good.received.Load() != 60 {
		t.Fatalf("good received %d, want 60: a retry went back to bad, or a request ran twice on good", good.received.Load())
	}
}

// Without a retry policy, a request that may have run is never sent
// again: it fails once, and no provider sees it twice.
func TestNoRetryPolicyNeverResends(t *testing.T) {
	good, bad := newBackend(t, "good"), newBackend(t, "bad")
	bad.dropAll.Store(true)
	addr := startProxy(t, strings.Replace(cfg(`  - route: {cluster: c}`,
		"- name: c\n  endpoints:\n"+ep(good, "")+"\n"+ep(bad, "")), "stat_prefix: t", "stat_prefix: retry_none", 1))
	c := dial(t, addr)
	failed := 0
	for i := range 40 {
		m, err := c.call(0, "x")
		switch {
		case err != nil:
			t.Fatalf("call %d: %v", i, err)
		case m.status == codecs.StatusOK:
		case md(m, "error") == "no_healthy_upstream":
			failed++
		default:
			t.Fatalf("call %d: %+v", i, m)
		}
	}
	t.Logf("40 calls: %d failed (bad received %d), good received %d", failed, bad.received.Load(), good.received.Load())
	if got := bad.received.Load() + good.received.Load(); got != 40 {
		t.Fatalf("providers received %d requests for 40 calls: a request was sent twice", got)
	}
	if int64(failed) != bad.received.Load() {
		t.Fatalf("%d failed, want one per request bad received (%d)", failed, bad.received.Load())
	}
}

// Statuses listed in retriable_status_codes are retried on another
// endpoint; others reach the client as they are.
func TestRetriableStatusCodes(t *testing.T) {
	good, busy := newBackend(t, "good"), newBackend(t, "busy")
	busy.errorCode.Store(31)
	routes := `  - {match: {metadata: [{key: method, exact: Listed}]}, route: {cluster: c}, retry_policy: {retry_on: retriable-status-codes, retriable_status_codes: [31, 100], retry_back_off: {base_interval: 0.001s}}}
  - {route: {cluster: c}, retry_policy: {retry_on: retriable-status-codes, retriable_status_codes: [70]}}`
	addr := startProxy(t, strings.Replace(cfg(routes, "- name: c\n  endpoints:\n"+ep(good, "")+"\n"+ep(busy, "")), "stat_prefix: t", "stat_prefix: retry_status", 1))
	c := dial(t, addr)
	for i := range 30 {
		m, err := c.call(0, "x", "method", "Listed")
		if err != nil || m.status != codecs.StatusOK || md(m, "server") != "good" {
			t.Fatalf("listed call %d: %+v %v; want good's answer", i, m, err)
		}
	}
	errs := 0
	for i := range 30 {
		m, err := c.call(0, "x", "method", "Other")
		if err != nil {
			t.Fatal(err)
		}
		if m.status == codecs.StatusError {
			if md(m, "code") != "31" || md(m, "server") != "busy" {
				t.Fatalf("unlisted call %d: %+v; want busy's own status 31 relayed", i, m)
			}
			errs++
		}
	}
	t.Logf("30 listed calls all answered by good; 30 unlisted: %d relayed busy's status 31; retries %v",
		errs, retries("retry_status", "c", "retriable-status-codes", "attempted"))
	if errs == 0 {
		t.Fatal("no unlisted call reached busy: the test proves nothing")
	}
}

// A timeout is retried only on an idempotent route; per_try_timeout
// bounds each attempt.
func TestTimeoutRetriedWhenIdempotent(t *testing.T) {
	good, stuck := newBackend(t, "good"), newBackend(t, "stuck")
	stuck.hangAll.Store(true)
	addr := startProxy(t, strings.Replace(cfg(`  - {route: {cluster: c}, timeout: 60s, retry_policy: {retry_on: "timeout,reset", idempotent: true, num_retries: 2, per_try_timeout: 0.05s}}`,
		"- name: c\n  lb_policy: RANDOM\n  endpoints:\n"+ep(good, "")+"\n"+ep(stuck, "")), "stat_prefix: t", "stat_prefix: retry_timeout", 1))
	c := dial(t, addr)
	for i := range 20 {
		m, err := c.call(0, "x")
		if err != nil || m.status != codecs.StatusOK || md(m, "server") != "good" {
			t.Fatalf("call %d: %+v %v; want good's answer", i, m, err)
		}
	}
	t.Logf("20 calls answered by good; stuck held %d until their per-try timeout", stuck.received.Load())
	if got := retries("retry_timeout", "c", "timeout", "attempted"); got != float64(stuck.received.Load()) {
		t.Fatalf("timeout retries %v, want %d", got, stuck.received.Load())
	}
}

// retry_on "timeout" without idempotent is refused: a request that timed
// out may have run.
func TestTimeoutRetryNeedsIdempotent(t *testing.T) {
	b := newBackend(t, "b")
	err := proxyErr(t, cfg(`  - {route: {cluster: c}, retry_policy: {retry_on: timeout}}`, "- name: c\n  endpoints:\n"+ep(b, "")))
	if err == nil || !strings.Contains(err.Error(), "idempotent") {
		t.Fatalf("config error %v; want one saying timeout retries need idempotent", err)
	}
}

// The retry budget bounds retries in flight: with min_retry_concurrency
// 2 and no percentage, five requests failing at once get exactly two
// retries; the other three fail with their own error.
func TestRetryBudgetBoundsRetries(t *testing.T) {
	doomed, parking := newBackend(t, "doomed"), newBackend(t, "parking")
	doomed.hangAll.Store(true)
	parking.hangAll.Store(true) // retries stay in flight, holding the budget
	addr := startProxy(t, strings.Replace(cfg(`  - {route: {cluster: c}, retry_policy: {retry_on: reset, num_retries: 3, retry_back_off: {base_interval: 0.001s}}}`,
		"- name: c\n  circuit_breakers: {retry_budget: {budget_percent: 0, min_retry_concurrency: 2}}\n  endpoints:\n"+ep(doomed, "")+"\n"+ep(parking, ""),
		"request_timeout: 60s"), "stat_prefix: t", "stat_prefix: retry_budget", 1))
	c := dial(t, addr)
	var chans []chan tmsg
	for range 10 {
		chans = append(chans, c.send(codecs.Request, 0, "x"))
	}
	eventually(t, "5 requests held by each provider", func() bool {
		return doomed.received.Load() == 5 && parking.received.Load() == 5
	})
	doomed.kill()
	eventually(t, "the retries of 2 requests on parking", func() bool { return parking.received.Load() == 7 })
	var failed, other atomic.Int64
	for _, ch := range chans {
		go func() {
			if m := <-ch; md(m, "error") == "no_healthy_upstream" {
				failed.Add(1)
			} else {
				other.Add(1)
			}
		}()
	}
	eventually(t, "3 requests answered with their failure", func() bool { return failed.Load()+other.Load() == 3 })
	attempted, refused := retries("retry_budget", "c", "reset", "attempted"), retries("retry_budget", "c", "reset", "budget_exceeded")
	t.Logf("5 requests lost at once: %v retried, %v refused by the budget, %d answered with their failure", attempted, refused, failed.Load())
	if attempted != 2 || refused != 3 || failed.Load() != 3 {
		t.Fatalf("attempted %v, refused %v, failed %d (other answers %d); want 2, 3, 3", attempted, refused, failed.Load(), other.Load())
	}
}

// proxyErr returns the error the shim's config parser gave for a config,
// or nil.
func proxyErr(t *testing.T, yamlCfg string) error {
	t.Helper()
	return parsedProxy(t, yamlCfg).err
}

// max_requests N with N+k requests at once: exactly k get the overload
// reply, and the N are answered once the provider lets them go.
func TestCircuitBreakerMaxRequests(t *testing.T) {
	b := newBackend(t, "b")
	b.hangAll.Store(true)
	addr := startProxy(t, strings.Replace(cfg(`  - route: {cluster: c}`,
		"- name: c\n  circuit_breakers: {max_requests: 5}\n  endpoints:\n"+ep(b, ""), "request_timeout: 60s"),
		"stat_prefix: t", "stat_prefix: breaker_max", 1))
	c := dial(t, addr)
	var overloaded, other atomic.Int64
	for range 8 {
		ch := c.send(codecs.Request, 0, "x")
		go func() {
			if m := <-ch; md(m, "error") == "overloaded" {
				overloaded.Add(1)
			} else {
				other.Add(1)
			}
		}()
	}
	eventually(t, "5 requests at the provider and 3 answered", func() bool {
		return b.received.Load() == 5 && overloaded.Load()+other.Load() == 3
	})
	refused := testutil.ToFloat64(metrics.CircuitBreakerOverflows.WithLabelValues("breaker_max", "c", "max_requests"))
	t.Logf("8 requests against max_requests 5: %d at the provider, %d overloaded, %d other answers, %v counted", b.received.Load(), overloaded.Load(), other.Load(), refused)
	if overloaded.Load() != 3 || refused != 3 {
		t.Fatalf("overloaded %d, counted %v; want 3 and 3", overloaded.Load(), refused)
	}
}

// An endpoint answering protocol errors is ejected after
// consecutive_errors of them; traffic then goes to the healthy one.
func TestOutlierDetectionEjectsErroringEndpoint(t *testing.T) {
	good, failing := newBackend(t, "good"), newBackend(t, "failing")
	failing.errorCode.Store(80)
	addr := startProxy(t, strings.Replace(cfg(`  - route: {cluster: c}`,
		"- name: c\n  outlier_detection: {consecutive_errors: 3, base_ejection_time: 3600s, max_ejection_percent: 100}\n  endpoints:\n"+ep(good, "")+"\n"+ep(failing, "")),
		"stat_prefix: t", "stat_prefix: outlier", 1))
	c := dial(t, addr)
	errs := 0
	for range 6 {
		m, err := c.call(0, "x")
		if err != nil {
			t.Fatal(err)
		}
		if m.status == codecs.StatusError {
			errs++
		}
	}
	ejected := testutil.ToFloat64(metrics.OutlierEjections.WithLabelValues("outlier", "c", fmt.Sprintf("127.0.0.1:%d", failing.port()), "consecutive_errors"))
	if errs != 3 || ejected != 1 {
		t.Fatalf("6 round-robin calls: %d errors, %v ejections; want 3 errors then an ejection", errs, ejected)
	}
	before := failing.received.Load()
	for i := range 50 {
		if m, err := c.call(0, "x"); err != nil || m.status != codecs.StatusOK {
			t.Fatalf("call %d after the ejection: %+v %v", i, m, err)
		}
	}
	t.Logf("failing answered %d errors and was ejected; the next 50 calls all went to good (failing received %d more)", errs, failing.received.Load()-before)
	if failing.received.Load() != before {
		t.Fatalf("the ejected endpoint received %d more requests", failing.received.Load()-before)
	}
}

// The idle-close race: a provider closes a connection just as the proxy
// writes to it. With probing (upstream.ProbeAfter), what the provider gets
// first after a silence is a heartbeat; when it closes instead of
// answering, the request held back was never written, and goes out again
// at once without any retry policy. Without probing, the request itself
// meets the close and fails: it may have run.
func TestIdleCloseRaceNeverLosesARequest(t *testing.T) {
	for _, probe := range []bool{true, false} {
		t.Run(fmt.Sprintf("probe=%v", probe), func(t *testing.T) {
			old := upstream.ProbeAfter.Load()
			t.Cleanup(func() { upstream.ProbeAfter.Store(old) })
			upstream.ProbeAfter.Store(0)
			if probe {
				upstream.ProbeAfter.Store(1) // every request after a write is "after a silence"
			}
			b := newBackend(t, "b")
			addr := startProxy(t, strings.Replace(cfg(`  - route: {cluster: c}`, "- name: c\n  endpoints:\n"+ep(b, "")),
				"stat_prefix: t", fmt.Sprintf("stat_prefix: idle_race_%v", probe), 1))
			c := dial(t, addr)
			if m, err := c.call(0, "warm"); err != nil || m.status != codecs.StatusOK {
				t.Fatalf("first call: %+v %v", m, err)
			}
			b.closeNext.Store(true)
			m, err := c.call(0, "x")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("probe=%v: the call after the provider's close got status %v (error %q); provider executed %d calls", probe, m.status, md(m, "error"), b.received.Load())
			if probe && (m.status != codecs.StatusOK || b.received.Load() != 2) {
				t.Fatalf("with a probe: %+v, %d executions; want the call answered on a new connection, executed once", m, b.received.Load())
			}
			if !probe && md(m, "error") != "no_healthy_upstream" {
				t.Fatalf("without a probe: %+v; want the request lost with the connection (the race this closes)", m)
			}
		})
	}
}
