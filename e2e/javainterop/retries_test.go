package javainterop

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// TestJavaProviderKilledUnderLoadWithRetries: two Apache Dubbo Java
// providers behind Breeze with a retry policy on resets; one is killed
// (SIGKILL, no READONLY) with Slow calls running on it and Greet calls
// streaming. Every call succeeds: those the dead provider took are retried
// on the other one.
func TestJavaProviderKilledUnderLoadWithRetries(t *testing.T) {
	t.Parallel()
	harness.BreezeBin(t)
	ps := startJavaProviders(t, javaProviderSpec{Name: "k1"}, javaProviderSpec{Name: "k2"})
	k1, k2 := ps[0], ps[1]
	proxy := harness.StartProxy(t, `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: java_retry
    codec: dubbo
    route_config:
      routes:
      - route: {cluster: greeter}
        timeout: 20s
        retry_policy: {retry_on: "connect-failure,reset", num_retries: 2}
    clusters:
    - name: greeter
      circuit_breakers: {retry_budget: {min_retry_concurrency: 20}}
      endpoints:
      - {address: 127.0.0.1, port: {{port "k1"}}}
      - {address: 127.0.0.1, port: {{port "k2"}}}
`, map[string]int{"k1": k1.Port, "k2": k2.Port})
	c := harness.StartClient(t, proxy.Addr, harness.ClientSpec{Timeout: 20 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// Slow calls until k1 runs some of them: round robin gives it half.
	const slowMS = 1500
	type res struct {
		provider string
		err      error
	}
	var slow []chan res
	for range 6 {
		ch := make(chan res, 1)
		slow = append(slow, ch)
		go func() {
			r, err := c.Slow(ctx, slowMS, nil)
			ch <- res{r.Provider, err}
		}()
	}
	if err := k1.Lines.waitCount(ctx, fmt.Sprintf("START Slow %d", slowMS), 3); err != nil {
		t.Fatalf("k1: %v", err)
	}
	// Greet calls streaming from four callers across the kill.
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	// Once every Slow call is answered, each caller makes 50 more calls,
	// so the proxy is seen answering after it saw k1 die.
	var finishing atomic.Bool
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			after := 0
			for i := 0; after < 50 && ctx.Err() == nil; i++ {
				if finishing.Load() {
					after++
				}
				arg := fmt.Sprintf("w%d-%d", w, i)
				r, err := c.Greet(ctx, arg, nil)
				if err != nil || r.Arg != arg {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %+v %v", arg, r, err))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	if err := syscall.Kill(k1.Proc.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	byProvider := map[string]int{}
	for i, ch := range slow {
		select {
		case r := <-ch:
			if r.err != nil {
				t.Errorf("slow call %d: %v", i, r.err)
			}
			byProvider[r.provider]++
		case <-ctx.Done():
			t.Fatalf("slow call %d hangs after k1 was killed", i)
		}
	}
	finishing.Store(true)
	wg.Wait()
	attempted := proxy.Metric(t, "breeze_retries_total", `result="attempted"`)
	t.Logf("k1 killed with 3 Slow calls on it: slow calls answered by %v; %d Greet calls ok, %d failed; %v retries", byProvider, ok.Load(), failed.Load(), attempted)
	if failed.Load() != 0 {
		t.Fatalf("%d Greet calls failed across the kill; first: %v", failed.Load(), firstErr.Load())
	}
	if byProvider["k2"] != 6 {
		t.Fatalf("slow calls answered by %v; want all 6 by k2 (3 of them retried from k1)", byProvider)
	}
	if attempted < 3 {
		t.Fatalf("%v retries; want at least the 3 Slow calls k1 held", attempted)
	}
}
