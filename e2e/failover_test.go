package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// These tests drive the proxy's retries, circuit breakers and outlier
// detection with real dubbo-go providers that count what they execute and
// hold calls at a gate until the test releases them, so that every
// assertion is on counts, never on how long something took.

// batch is a set of calls made concurrently, whose completions the test
// can wait for one by one.
type batch struct {
	outs []callResult

	mu      sync.Mutex
	done    int
	changed chan struct{}
	all     chan struct{}
}

// startBatch makes n calls through c, conc at a time, each bounded by
// perCall, in the background.
func startBatch(ctx context.Context, c *harness.Client, n, conc int, spec func(int) callSpec) *batch {
	b := &batch{outs: make([]callResult, n), changed: make(chan struct{}), all: make(chan struct{})}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				call := spec(i)
				cctx, cancel := context.WithTimeout(ctx, perCall)
				r, err := c.Call(cctx, call.Method, call.Arg, call.Attachments)
				cancel()
				if err == nil && r.Arg != call.Arg {
					err = fmt.Errorf("%s(%q) got the answer to %q", call.Method, call.Arg, r.Arg)
				}
				b.mu.Lock()
				b.outs[i] = callResult{Call: call, Reply: r, Err: err}
				b.done++
				close(b.changed)
				b.changed = make(chan struct{})
				b.mu.Unlock()
			}
		}()
	}
	go func() {
		for i := range n {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		close(b.all)
	}()
	return b
}

// Done is the number of calls that have ended.
func (b *batch) Done() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done
}

// waitDone waits until at least k calls have ended.
func (b *batch) waitDone(ctx context.Context, k int) error {
	for {
		b.mu.Lock()
		done, changed := b.done, b.changed
		b.mu.Unlock()
		if done >= k {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d calls to end: %d ended: %w", k, done, ctx.Err())
		}
	}
}

// results waits for every call and returns the outcomes.
func (b *batch) results(ctx context.Context) ([]callResult, error) {
	select {
	case <-b.all:
		return b.outs, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%d calls of %d ended: %w", b.Done(), len(b.outs), ctx.Err())
	}
}

// load keeps workers calling Greet through a client, each call with a
// unique argument, until stop.
type load struct {
	ok, failed, hung atomic.Int64

	mu       sync.Mutex
	errs     []string        // the first few errors
	failures map[string]bool // arguments of the calls that failed
	changed  chan struct{}

	stopping chan struct{}
	wg       sync.WaitGroup
}

func startLoad(ctx context.Context, c *harness.Client, workers int) *load {
	l := &load{failures: map[string]bool{}, changed: make(chan struct{}), stopping: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stopping:
					return
				case <-ctx.Done():
					return
				default:
				}
				arg := fmt.Sprintf("w%d-%d", w, i)
				cctx, cancel := context.WithTimeout(ctx, perCall)
				r, err := c.Greet(cctx, arg, nil)
				cancel()
				var ce *harness.CallError
				switch {
				case err == nil && r.Arg == arg:
					l.ok.Add(1)
				case err == nil:
					l.failed.Add(1)
					err = fmt.Errorf("%s got the answer to %s", arg, r.Arg)
				case errors.As(err, &ce):
					l.failed.Add(1)
				default: // no answer within perCall
					l.hung.Add(1)
				}
				l.mu.Lock()
				if err != nil {
					l.failures[arg] = true
					if len(l.errs) < 5 {
						l.errs = append(l.errs, err.Error())
					}
				}
				close(l.changed)
				l.changed = make(chan struct{})
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// calls is the number of calls that have ended.
func (l *load) calls() int64 { return l.ok.Load() + l.failed.Load() + l.hung.Load() }

// waitCalls waits until n calls have ended in all.
func (l *load) waitCalls(ctx context.Context, n int64) error {
	for {
		l.mu.Lock()
		changed := l.changed
		l.mu.Unlock()
		if l.calls() >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d calls of the load: %d ok, %d failed, %d hung: %w",
				n, l.ok.Load(), l.failed.Load(), l.hung.Load(), ctx.Err())
		}
	}
}

// stop ends the load once every worker's call in flight has ended.
func (l *load) stop(ctx context.Context) error {
	close(l.stopping)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the load's workers still calling: %w", ctx.Err())
	}
}

func (l *load) firstErrors() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.errs, "\n  ")
}

// retryConfig: Greet is idempotent and retried on connect failures and
// resets, twice at most; the cluster balances round robin over the
// providers in Extra, and lets 10 requests retry at once (the default
// budget lets 3, TestRetryBudgetExact).
const retryConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    route_config:
      routes:
      - match: {metadata: [{key: method, exact: Greet}]}
        route: {cluster: greeter}
        retry_policy: {retry_on: "connect-failure,reset", num_retries: 2, idempotent: true}
      - route: {cluster: greeter}
    clusters:
    - name: greeter
      circuit_breakers: {retry_budget: {min_retry_concurrency: 10}}
      endpoints:
{{- range $name, $port := .Extra}}
      - {address: 127.0.0.1, port: {{$port}}}
{{- end}}
`

// clusterOf renders a config template whose cluster lists providers.
func clusterOf(t *testing.T, tmpl string, providers ...*harness.Provider) *harness.Proxy {
	t.Helper()
	extra := map[string]interface{}{}
	for _, p := range providers {
		extra[p.Name] = p.Port
	}
	return harness.StartProxyVars(t, tmpl, extra, ports(providers...))
}

// retries reads breeze_retries_total by result, summed over the reasons.
func retries(t *testing.T, p *harness.Proxy) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, result := range []string{"attempted", "budget_exceeded", "exhausted", "deadline"} {
		m[result] = p.Metric(t, "breeze_retries_total", `result="`+result+`"`)
	}
	return m
}

// metricLines returns the samples of the named metrics in the proxy's
// /metrics, for the log.
func metricLines(t *testing.T, p *harness.Proxy, names ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := p.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, line := range strings.Split(text, "\n") {
		for _, name := range names {
			if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
				lines = append(lines, line)
			}
		}
	}
	return strings.Join(lines, "\n  ")
}

// TestRetriesProviderKilledUnderLoad: three providers, ten workers calling
// Greet (idempotent, retried on connect failure and reset) without pause.
// Provider r2 holds its next three calls; once it holds them it is
// SIGKILLed, and the load goes on for 400 more calls. No call fails: the
// three held calls, and those r2 was answering when it died, are retried
// on the providers left, each held call executed there once; the calls
// balanced to r2 after its death are retried or re-balanced. Ten workers
// have at most ten requests retrying at once: the cluster's budget allows
// that many, and no retry may be refused.
func TestRetriesProviderKilledUnderLoad(t *testing.T) {
	harness.BreezeBin(t)
	r1 := harness.StartProvider(t, harness.ProviderSpec{Name: "r1"})
	r2 := harness.StartProvider(t, harness.ProviderSpec{Name: "r2"})
	r3 := harness.StartProvider(t, harness.ProviderSpec{Name: "r3"})
	proxy := clusterOf(t, retryConfig, r1, r2, r3)
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	l := startLoad(ctx, c, 10)
	if err := l.waitCalls(ctx, 300); err != nil {
		t.Fatal(err)
	}
	const held = 3
	r2.GateFirst(t, "Greet", held)
	s, err := r2.WaitStats(ctx, fmt.Sprintf("%d calls held", held), func(s harness.ProviderStats) bool { return s.Held == held })
	if err != nil {
		t.Fatal(err)
	}
	heldArgs := s.HeldArgs["Greet"]
	r2.Proc.KillAndWait(t)
	before := l.calls()
	if err := l.waitCalls(ctx, before+400); err != nil {
		t.Fatal(err)
	}
	if err := l.stop(ctx); err != nil {
		t.Fatal(err)
	}
	got := retries(t, proxy)
	s1, s3 := r1.MustStats(t), r3.MustStats(t)
	t.Logf("%d calls before the kill, %d after; %d ok, %d failed, %d hung; held on r2 when killed: %v",
		before, l.calls()-before, l.ok.Load(), l.failed.Load(), l.hung.Load(), heldArgs)
	t.Logf("breeze_retries_total %v; executions r1 %d, r3 %d; metrics:\n  %s",
		got, s1.Executions["Greet"], s3.Executions["Greet"],
		metricLines(t, proxy, "breeze_retries_total", "breeze_circuit_breaker_overflows_total", "breeze_local_replies_total", "breeze_upstream_connection_events_total"))
	if l.failed.Load() != 0 || l.hung.Load() != 0 {
		t.Errorf("%d calls failed and %d hung; want none with retries; first errors:\n  %s", l.failed.Load(), l.hung.Load(), l.firstErrors())
	}
	for _, arg := range heldArgs {
		if n := s1.Args["Greet"][arg] + s3.Args["Greet"][arg]; n != 1 || l.failures[arg] {
			t.Errorf("call %s, held on r2 when it was killed: executed %d times on r1 and r3 (failed: %v); want its retry executed once",
				arg, n, l.failures[arg])
		}
	}
	if got["attempted"] < held {
		t.Errorf("%v retries attempted; want at least one for each of the %d calls held on r2", got["attempted"], held)
	}
	if got["budget_exceeded"] != 0 || got["exhausted"] != 0 {
		t.Errorf("retries over the budget or exhausted: %v; want none", got)
	}
}

// TestRetryBudgetExact: the default retry budget lets 3 requests retry at
// once (20 % of those in flight, at least 3). Providers b1 and b2 share a
// round-robin cluster, Greet retried on reset. b2 holds every call; of 16
// concurrent calls, those balanced to b1 are answered, the others (H) wait
// on b2. Then b1 holds every call too, and b2 is SIGKILLed: its H calls
// are reset at once. Exactly 3 are retried (and wait on b1, keeping their
// budget), exactly H-3 fail at once; released, the 3 succeed.
func TestRetryBudgetExact(t *testing.T) {
	harness.BreezeBin(t)
	b1 := harness.StartProvider(t, harness.ProviderSpec{Name: "b1"})
	b2 := harness.StartProvider(t, harness.ProviderSpec{Name: "b2"})
	proxy := clusterOf(t, `
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
        retry_policy: {retry_on: reset, num_retries: 2, idempotent: true}
    clusters:
    - name: greeter
      endpoints:
{{- range $name, $port := .Extra}}
      - {address: 127.0.0.1, port: {{$port}}}
{{- end}}
`, b1, b2)
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const calls, budget = 16, 3
	b2.Gate(t, "Greet")
	b := startBatch(ctx, c, calls, calls, greets("budget", nil))
	s2, err := b2.WaitStats(ctx, "every call held by b2 or ended", func(s harness.ProviderStats) bool { return s.Held+b.Done() == calls })
	if err != nil {
		t.Fatal(err)
	}
	held, answered := s2.Held, b.Done()
	if held <= budget {
		t.Fatalf("b2 holds %d calls (b1 answered %d); the test needs more than %d", held, answered, budget)
	}
	b1.Gate(t, "Greet")
	b2.Proc.KillAndWait(t)
	s1, err := b1.WaitStats(ctx, "the retries held by b1, the other reset calls ended", func(s harness.ProviderStats) bool {
		return s.Held+b.Done() == calls
	})
	if err != nil {
		t.Fatal(err)
	}
	failedAtOnce := b.Done() - answered
	got := retries(t, proxy)
	b1.Release(t, "Greet")
	outs, err := b.results(ctx)
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, o := range outs {
		if o.Err != nil {
			failed++
		}
	}
	t.Logf("%d calls: %d answered by b1, %d held on b2 when killed; then %d retried (held by b1), %d failed at once; %d failed in all; retries %v; metrics:\n  %s",
		calls, answered, held, s1.Held, failedAtOnce, failed, got,
		metricLines(t, proxy, "breeze_retries_total", "breeze_circuit_breaker_overflows_total"))
	if s1.Held != budget || failedAtOnce != held-budget || failed != held-budget {
		t.Errorf("of %d reset calls, want exactly %d retried and %d failed", held, budget, held-budget)
	}
	if got["attempted"] != budget || got["budget_exceeded"] != float64(held-budget) {
		t.Errorf("breeze_retries_total %v; want %d attempted, %d budget_exceeded", got, budget, held-budget)
	}
}

// TestNoRetryNeverDuplicates: without a retry policy, a call that reached
// a provider is never sent again. Provider n1 holds its next five calls;
// every other call of the batch ends; then n1 is SIGKILLed with exactly
// those five in flight. Exactly those five fail, each once, and the
// surviving provider n2 never executed any of them: its executions are the
// calls it answered, each once.
func TestNoRetryNeverDuplicates(t *testing.T) {
	harness.BreezeBin(t)
	n1 := harness.StartProvider(t, harness.ProviderSpec{Name: "n1"})
	n2 := harness.StartProvider(t, harness.ProviderSpec{Name: "n2"})
	proxy := clusterOf(t, roundRobinConfig, n1, n2)
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const held, calls = 5, 40
	n1.GateFirst(t, "Greet", held)
	b := startBatch(ctx, c, calls, calls, greets("once", nil))
	s, err := n1.WaitStats(ctx, fmt.Sprintf("%d calls held", held), func(s harness.ProviderStats) bool { return s.Held == held })
	if err != nil {
		t.Fatal(err)
	}
	if err := b.waitDone(ctx, calls-held); err != nil {
		t.Fatal(err)
	}
	heldArgs := s.HeldArgs["Greet"]
	n1.Proc.KillAndWait(t)
	outs, err := b.results(ctx)
	if err != nil {
		t.Fatal(err)
	}

	failed := map[string]string{}
	served := map[string]int{}
	for _, o := range outs {
		if o.Err != nil {
			failed[o.Call.Arg] = o.Err.Error()
			continue
		}
		served[o.Reply.Provider]++
	}
	s2 := n2.MustStats(t)
	t.Logf("%d calls: %d failed, served %v; held on n1 when killed: %v; n2 executed Greet %d times",
		calls, len(failed), served, heldArgs, s2.Executions["Greet"])
	for _, arg := range heldArgs {
		if _, ok := failed[arg]; !ok {
			t.Errorf("call %s was in flight on n1 when it was killed, yet did not fail", arg)
		}
		if n := s2.Args["Greet"][arg]; n != 0 {
			t.Errorf("call %s, in flight on n1 when it was killed, was executed %d times on n2", arg, n)
		}
	}
	if len(failed) != held {
		t.Errorf("%d calls failed, want exactly the %d held on n1 (%v): %v", len(failed), held, heldArgs, failed)
	}
	for arg, errText := range failed {
		if !strings.Contains(errText, "dubbo-go error") {
			t.Errorf("call %s did not end with an error reply but %s", arg, errText)
		}
	}
	if s2.Executions["Greet"] != served["n2"] {
		t.Errorf("n2 executed Greet %d times and answered %d calls; want one execution per answer", s2.Executions["Greet"], served["n2"])
	}
	for arg, n := range s2.Args["Greet"] {
		if n != 1 {
			t.Errorf("n2 executed %s %d times", arg, n)
		}
	}
	if r := proxy.Metric(t, "breeze_retries_total"); r != 0 {
		t.Errorf("breeze_retries_total %v without a retry policy", r)
	}
}

// TestCircuitBreakerExactOverflow: a cluster allows max_requests 5 in
// flight. The provider holds every Greet; 8 calls at once: 5 reach it and
// wait there, 3 are answered at once by the proxy with the overload reply
// (Dubbo status 100, seen on the wire). Released, the 5 succeed.
func TestCircuitBreakerExactOverflow(t *testing.T) {
	harness.BreezeBin(t)
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "cb"})
	proxy := clusterOf(t, `
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
      circuit_breakers: {max_requests: 5}
      endpoints:
{{- range $name, $port := .Extra}}
      - {address: 127.0.0.1, port: {{$port}}}
{{- end}}
`, p)
	down := harness.StartTee(t, proxy.Addr)
	c := newClient(t, down.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const limit, over = 5, 3
	p.Gate(t, "Greet")
	b := startBatch(ctx, c, limit+over, limit+over, greets("cb", nil))
	// Every call is either held by the provider or ended (held calls cannot
	// end): wait until all are accounted for, then count each kind.
	s, err := p.WaitStats(ctx, "every call held or ended", func(s harness.ProviderStats) bool { return s.Held+b.Done() == limit+over })
	if err != nil {
		t.Fatal(err)
	}
	ended := b.Done()
	p.Release(t, "Greet")
	outs, err := b.results(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rejected, ok int
	for _, o := range outs {
		if o.Err != nil {
			rejected++
		} else {
			ok++
		}
	}
	overload := down.State().Find(func(f harness.TeeFrame) bool {
		return f.Dir == harness.Down && !f.Header.IsEvent() && f.Header.Status == 100
	})
	t.Logf("%d calls with max_requests %d: %d ended before the release, %d rejected, %d ok; %d status-100 replies; provider held %d, executed %d",
		limit+over, limit, ended, rejected, ok, len(overload), s.Held, s.Executions["Greet"])
	if ended != over || rejected != over || ok != limit || len(overload) != over {
		t.Errorf("want exactly %d calls rejected with status 100 and %d answered after the release", over, limit)
	}
	if n := proxy.Metric(t, "breeze_circuit_breaker_overflows_total", `limit="max_requests"`); n != over {
		t.Errorf("breeze_circuit_breaker_overflows_total{limit=\"max_requests\"} %v; want %d", n, over)
	}
	if s.Held != limit || s.Executions["Greet"] != limit {
		t.Errorf("the provider held %d calls and executed %d; want %d: the rejected calls must not reach it", s.Held, s.Executions["Greet"], limit)
	}
	for _, o := range outs {
		if o.Err != nil {
			t.Logf("overload reply: %v", o.Err)
			break
		}
	}
}

// outlierConfig: Greet is not retried; the cluster ejects an endpoint
// after 3 consecutive errors, for base_ejection_time times the number of
// its ejections.
const outlierConfig = `
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
      outlier_detection: {consecutive_errors: 3, base_ejection_time: {{index .Extra "base"}}, max_ejection_percent: 100}
      endpoints:
      - {address: 127.0.0.1, port: {{port "oa"}}}
      - {address: 127.0.0.1, port: {{port "ob"}}}
`

// TestOutlierEjectsErroringProvider: provider oa answers half its calls,
// three in a row, with Dubbo status 80 (SERVER_ERROR); ob answers all.
// Calls are made one at a time, so that oa's errors come in the order it
// made them. The client sees exactly oa's three errors in a row before the
// proxy reports an ejection. The calls made surely inside an ejection all
// go to ob; once the ejection ends, oa receives calls again.
//
// "Surely inside": the proxy exposes no gauge of ejected endpoints, so an
// ejection is known to start after the call that caused it started (the
// call after which the counter rose, or the one before it, should the
// proxy count an error after answering it), and to last at least
// base_ejection_time. A call that starts after the ejection
// was counted and ends before that start plus base_ejection_time is inside
// it. The clock only picks which calls are checked: on a slow machine fewer
// fit in an ejection, and the test waits for the next ejections (each
// longer) to gather them, never failing for slowness.
func TestOutlierEjectsErroringProvider(t *testing.T) {
	harness.BreezeBin(t)
	const base = time.Second
	oa := harness.StartProvider(t, harness.ProviderSpec{Name: "oa"})
	ob := harness.StartProvider(t, harness.ProviderSpec{Name: "ob"})
	oa.Fail(t, "Greet", "EEE...", 80)
	proxy := harness.StartProxyVars(t, outlierConfig, map[string]interface{}{"base": base.String()}, ports(oa, ob))
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	n := 0
	// greet makes one call and says who answered it ("" for an error
	// reply) and when it started and ended.
	greet := func() (who string, start, end time.Time) {
		n++
		arg := fmt.Sprintf("od-%d", n)
		cctx, ccancel := context.WithTimeout(ctx, perCall)
		defer ccancel()
		start = time.Now()
		r, err := c.Greet(cctx, arg, nil)
		end = time.Now()
		var ce *harness.CallError
		switch {
		case errors.As(err, &ce):
			return "", start, end
		case err != nil:
			t.Fatalf("call %s: %v", arg, err)
		case r.Arg != arg:
			t.Fatalf("call %s got the answer to %s", arg, r.Arg)
		}
		return r.Provider, start, end
	}
	ejections := func() float64 { return proxy.Metric(t, "breeze_outlier_ejections_total") }

	// Until the first ejection.
	errs := 0
	served := map[string]int{}
	// The starts of the last two calls.
	var prevStart, lastStart time.Time
	for ejections() == 0 {
		if n == 100 {
			t.Fatalf("no ejection after 100 calls (%d errors, served %v)", errs, served)
		}
		who, start, _ := greet()
		prevStart, lastStart = lastStart, start
		if who == "" {
			errs++
		} else {
			served[who]++
		}
	}
	t.Logf("ejected after %d calls: %d errors, served %v; oa executed %d", n, errs, served, oa.MustStats(t).Executions["Greet"])
	if errs != 3 {
		t.Errorf("the client saw %d errors before oa's ejection; want oa's 3 in a row", errs)
	}

	// The calls surely inside an ejection, until m of them.
	const m = 20
	inside, outside := 0, 0
	count := ejections()
	// The ejection counted last started after this call did.
	ejectedAfter := prevStart
	for inside < m {
		if ctx.Err() != nil {
			t.Fatalf("only %d calls made surely inside an ejection (%d outside) by the test's deadline", inside, outside)
		}
		who, start, end := greet()
		prevStart, lastStart = lastStart, start
		if start.After(ejectedAfter) && end.Before(ejectedAfter.Add(base)) {
			inside++
			if who != "ob" {
				t.Errorf("call od-%d, made while oa was ejected, was answered by %q (\"\": an error); want ob", n, who)
			}
		} else {
			outside++
		}
		if now := ejections(); now != count {
			count, ejectedAfter = now, prevStart
		}
	}

	// After the ejection: oa is called again.
	before := oa.MustStats(t).Executions["Greet"]
	back := 0
	for oa.MustStats(t).Executions["Greet"] == before {
		if ctx.Err() != nil {
			t.Fatalf("oa received no call after its ejection by the test's deadline (%d calls)", back)
		}
		greet()
		back++
	}
	t.Logf("%d calls made surely inside an ejection, all answered by ob (%d others); oa called again %d calls later; metrics:\n  %s",
		inside, outside, back, metricLines(t, proxy, "breeze_outlier_ejections_total", "breeze_responses_total"))
	// oa's pattern: its first answer after the ejection is not an error.
	if n := proxy.Metric(t, "breeze_responses_total", `status="error"`); n != float64(errs) {
		t.Errorf("breeze_responses_total{status=\"error\"} %v; want the %d status-80 answers the client saw", n, errs)
	}
	if n := proxy.Metric(t, "breeze_outlier_ejections_total", `reason="consecutive_errors"`); n < 1 {
		t.Errorf("no ejection for consecutive_errors (%v)", n)
	}
}
