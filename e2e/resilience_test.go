package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// roundRobinConfig is a runner file with one cluster of the named providers
// and one catch-all route; extra route fields (e.g. a timeout) go in
// {{index .Extra "route"}}.
const roundRobinConfig = `
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
      endpoints:
{{- range $name, $port := .Extra}}
      - {address: 127.0.0.1, port: {{$port}}}
{{- end}}
`

// startRoundRobin starts the proxy over providers (by name) in one
// round-robin cluster.
func startRoundRobin(t *testing.T, providers ...*harness.Provider) *harness.Proxy {
	t.Helper()
	extra := map[string]interface{}{}
	for _, p := range providers {
		extra[p.Name] = p.Port
	}
	return harness.StartProxyVars(t, roundRobinConfig, extra, ports(providers...))
}

// TestProxyHeartbeats: dubbo-go's heartbeats on both sides of the proxy are
// answered, and neither connection is dropped for want of an answer. Tees
// watch the client→proxy and proxy→provider connections.
func TestProxyHeartbeats(t *testing.T) {
	harness.BreezeBin(t)
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "hb", Heartbeat: time.Second})
	up := harness.StartTee(t, p.Addr)
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
      endpoints: [{address: 127.0.0.1, port: {{port "tee"}}}]
`, map[string]int{"tee": up.Port()})
	down := harness.StartTee(t, proxy.Addr)
	c := newClient(t, down.Addr, harness.ClientSpec{Heartbeat: time.Second, Connections: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Greet(ctx, "first", nil); err != nil {
		t.Fatal(err)
	}
	const rounds = 3
	if err := down.WaitFor(ctx, fmt.Sprintf("%d client heartbeats answered", rounds), func(s harness.TeeState) bool {
		return s.HeartbeatRoundTrips(harness.Up) >= rounds
	}); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitFor(ctx, fmt.Sprintf("%d provider heartbeats answered", rounds), func(s harness.TeeState) bool {
		return s.HeartbeatRoundTrips(harness.Down) >= rounds
	}); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Greet(ctx, "after-heartbeats", nil); err != nil || r.Arg != "after-heartbeats" {
		t.Fatalf("call after heartbeats: %+v %v", r, err)
	}
	if st := down.State(); st.Conns != 1 || st.Open != 1 {
		t.Errorf("client side: %d connections, %d open; want the one connection kept", st.Conns, st.Open)
	}
	if st := up.State(); st.Open < 1 {
		t.Errorf("provider side: no upstream connection left open (%d made)", st.Conns)
	}
}

// TestProxyRawHeartbeat: a heartbeat frame sent by hand gets an event
// response with status 20 and the same id.
func TestProxyRawHeartbeat(t *testing.T) {
	harness.BreezeBin(t)
	proxy := startRoundRobin(t, harness.StartProvider(t, harness.ProviderSpec{Name: "solo"}))
	checkRawHeartbeat(t, proxy.Addr)
}

// TestProxyManyClients: 20 dubbo-go client processes, each numbering its
// requests from the same low ids over dubbo-go's default pool of
// connections, all get their own answers.
func TestProxyManyClients(t *testing.T) {
	harness.BreezeBin(t)
	proxy := startRoundRobin(t,
		harness.StartProvider(t, harness.ProviderSpec{Name: "m1"}),
		harness.StartProvider(t, harness.ProviderSpec{Name: "m2"}),
		harness.StartProvider(t, harness.ProviderSpec{Name: "m3"}))
	const clients, perClient = 20, 200
	procs := make([]*harness.Proc, clients)
	for i := range procs {
		procs[i] = harness.StartConsumer(t, fmt.Sprintf("consumer %d", i),
			"-addr", proxy.Addr, "-n", strconv.Itoa(perClient), "-concurrency", "4",
			"-arg", fmt.Sprintf("client%d", i), "-heartbeat", "1s")
	}
	total := map[string]int{}
	for i, p := range procs {
		s, exitErr, err := harness.Summary(p, 3*time.Minute)
		if err != nil {
			t.Fatalf("consumer %d: %v", i, err)
		}
		if exitErr != nil || s.OK != perClient || s.Mismatched != 0 {
			t.Errorf("consumer %d: exit %v, %d ok, %d failed, %d wrong answers; errors %v", i, exitErr, s.OK, s.Failed, s.Mismatched, s.Errors)
		}
		for p, n := range s.Providers {
			total[p] += n
		}
	}
	t.Logf("%d clients × %d calls: %v", clients, perClient, total)
}

// TestProxyProviderKilledUnderLoad: a provider is SIGKILLed while 10 callers
// keep calling. Every call ends within its deadline, with an answer or an
// error; none hangs. Afterwards every call succeeds on the two left.
func TestProxyProviderKilledUnderLoad(t *testing.T) {
	harness.BreezeBin(t)
	k1 := harness.StartProvider(t, harness.ProviderSpec{Name: "k1"})
	k2 := harness.StartProvider(t, harness.ProviderSpec{Name: "k2"})
	k3 := harness.StartProvider(t, harness.ProviderSpec{Name: "k3"})
	proxy := startRoundRobin(t, k1, k2, k3)
	c := newClient(t, proxy.Addr, harness.ClientSpec{})

	// The watchdog bounds the whole test; perCall bounds each call.
	watchdog, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		ok, failed, hung  atomic.Int64
		afterKill         atomic.Int64
		killed            atomic.Bool
		mu                sync.Mutex
		firstErrs         []string
		stop              = make(chan struct{})
		wg                sync.WaitGroup
		killAt, stopAfter = int64(300), int64(400) // successes before the kill; calls after it
	)
	killNow := make(chan struct{})
	var killOnce, stopOnce sync.Once
	for w := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-watchdog.Done():
					return
				default:
				}
				arg := fmt.Sprintf("w%d-%d", w, i)
				ctx, ccancel := context.WithTimeout(watchdog, perCall)
				r, err := c.Greet(ctx, arg, nil)
				ccancel()
				var ce *harness.CallError
				switch {
				case err == nil && r.Arg == arg:
					ok.Add(1)
				case err == nil:
					failed.Add(1)
					err = fmt.Errorf("%s got the answer to %s", arg, r.Arg)
				case errors.As(err, &ce):
					failed.Add(1)
				default: // no answer within perCall
					hung.Add(1)
				}
				if err != nil {
					mu.Lock()
					if len(firstErrs) < 5 {
						firstErrs = append(firstErrs, err.Error())
					}
					mu.Unlock()
				}
				if ok.Load() >= killAt {
					killOnce.Do(func() { close(killNow) })
				}
				if killed.Load() && afterKill.Add(1) >= stopAfter {
					stopOnce.Do(func() { close(stop) })
				}
			}
		}()
	}
	select {
	case <-killNow:
	case <-watchdog.Done():
		t.Fatalf("watchdog: only %d successful calls before the kill", ok.Load())
	}
	k2.Proc.KillAndWait(t)
	killed.Store(true)
	okBefore := ok.Load()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-watchdog.Done():
		t.Fatalf("watchdog: callers still running; %d ok, %d failed, %d hung", ok.Load(), failed.Load(), hung.Load())
	}
	t.Logf("%d ok before the kill; after it: %d ok, %d errors, %d hung; first errors:\n  %s",
		okBefore, ok.Load()-okBefore, failed.Load(), hung.Load(), strings.Join(firstErrs, "\n  "))
	if hung.Load() > 0 {
		t.Errorf("%d calls got no answer within %s", hung.Load(), perCall)
	}

	count := harness.Served(t, runCalls(watchdog, c, 60, 1, greets("after", nil)))
	harness.OnlyFrom(t, "after the kill", count, "k1", "k3")
	if count["k1"] == 0 || count["k3"] == 0 {
		t.Errorf("after the kill calls should spread over k1 and k3: %v", count)
	}
}

// TestProxyRequestTimeout: a route timeout of 200ms answers a slow call
// with an error well before the client's own 3s, and the provider's late
// answer does not disturb the connection's later calls.
func TestProxyRequestTimeout(t *testing.T) {
	harness.BreezeBin(t)
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "slow"})
	up := harness.StartTee(t, p.Addr)
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
      - match: {metadata: [{key: method, exact: Slow}]}
        route: {cluster: greeter}
        timeout: 0.2s
      - route: {cluster: greeter}
    clusters:
    - name: greeter
      endpoints: [{address: 127.0.0.1, port: {{port "tee"}}}]
`, map[string]int{"tee": up.Port()})
	down := harness.StartTee(t, proxy.Addr)
	c := newClient(t, down.Addr, harness.ClientSpec{Timeout: 3 * time.Second, Connections: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Slow(ctx, 10, nil); err != nil {
		t.Fatalf("a fast Slow call: %v", err)
	}

	start := time.Now()
	r, err := c.Slow(ctx, 2000, nil)
	elapsed := time.Since(start)
	var ce *harness.CallError
	if !errors.As(err, &ce) {
		t.Fatalf("Slow(2000) with a 200ms route timeout: reply %+v, err %v; want a dubbo-go error", r, err)
	}
	t.Logf("Slow(2000) failed after %s (client side %s): %s", elapsed, ce.Elapsed, ce.Msg)
	if ce.Elapsed > time.Second || ce.Elapsed < 150*time.Millisecond {
		t.Errorf("the timeout error came after %s; want it about 200ms after the call", ce.Elapsed)
	}

	// Wait for the provider's late answer to reach the proxy, then check
	// that the connection still carries calls, each with its own answer.
	if err := up.WaitFor(ctx, "the provider's late answer to Slow(2000)", func(s harness.TeeState) bool {
		return len(s.Find(func(f harness.TeeFrame) bool {
			return f.Dir == harness.Down && !f.Header.IsRequest() && !f.Header.IsEvent() &&
				f.At.Sub(start) > 1500*time.Millisecond
		})) > 0
	}); err != nil {
		t.Fatal(err)
	}
	harness.Served(t, runCalls(ctx, c, 50, 4, greets("after-timeout", nil)))
	if st := down.State(); st.Conns != 1 {
		t.Errorf("the client used %d connections to the proxy; the timeout or the late answer broke one", st.Conns)
	}
}

// TestProxyNoRoute: a call that matches no route gets a Dubbo error reply at
// once, on a connection that stays usable.
func TestProxyNoRoute(t *testing.T) {
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
      - match: {metadata: [{key: method, exact: Whoami}]}
        route: {cluster: greeter}
    clusters:
    - name: greeter
      endpoints: [{address: 127.0.0.1, port: {{port "solo"}}}]
`, ports(p))
	down := harness.StartTee(t, proxy.Addr)
	c := newClient(t, down.Addr, harness.ClientSpec{Connections: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 5 {
		r, err := c.Greet(ctx, "unrouted-"+strconv.Itoa(i), nil)
		var ce *harness.CallError
		if !errors.As(err, &ce) {
			t.Fatalf("unrouted Greet: reply %+v, err %v; want a dubbo-go error", r, err)
		}
		if ce.Elapsed > time.Second {
			t.Errorf("no-route error after %s; want it at once", ce.Elapsed)
		}
		if i == 0 {
			t.Logf("no route: %s", ce.Msg)
		}
		if _, err := c.Whoami(ctx, nil); err != nil {
			t.Fatalf("routed Whoami after a no-route error: %v", err)
		}
	}
	if st := down.State(); st.Conns != 1 {
		t.Errorf("the client used %d connections; the no-route reply broke one", st.Conns)
	}

	// The same by hand: the reply carries the request's id and an error.
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
		t.Fatalf("no reply to an unrouted request: %v", err)
	}
	resp, err := harness.DecodeResponse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.ID != 77 || !resp.Failed() {
		t.Errorf("reply to unrouted request 77: %s value %v exception %v", resp.Header, resp.Value, resp.Exception)
	}
	t.Logf("raw no-route reply: %s: %v", resp.Header, resp.Exception)
}

// TestProxyGarbage: bytes that are not Dubbo close their own connection and
// only that one; a dubbo-go client on another connection keeps working.
func TestProxyGarbage(t *testing.T) {
	harness.BreezeBin(t)
	proxy := startRoundRobin(t, harness.StartProvider(t, harness.ProviderSpec{Name: "solo"}))
	c := newClient(t, proxy.Addr, harness.ClientSpec{Connections: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Greet(ctx, "before", nil); err != nil {
		t.Fatal(err)
	}

	calls := make(chan []callResult, 1)
	go func() { calls <- runCalls(ctx, c, 300, 4, greets("beside-garbage", nil)) }()

	oversized := harness.HeartbeatRequest(1)[:harness.HeaderLen]
	oversized[12], oversized[13], oversized[14], oversized[15] = 0x7f, 0xff, 0xff, 0xff
	for name, junk := range map[string][]byte{
		"http request":      []byte("GET / HTTP/1.1\r\nHost: breeze\r\n\r\n"),
		"random bytes":      []byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11"),
		"2 GiB frame":       oversized,
		"valid then broken": append(harness.HeartbeatRequest(5), []byte("not dubbo at all, sorry.")...),
	} {
		conn, err := net.DialTimeout("tcp", proxy.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(junk); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := harness.WaitClosed(conn, 5*time.Second)
		conn.Close()
		if err != nil {
			t.Errorf("%s: the proxy did not close the connection: %v", name, err)
		}
		t.Logf("%s: closed after %d bytes back", name, len(got))
	}
	harness.Served(t, <-calls)
	if r, err := c.Greet(ctx, "after", nil); err != nil || r.Arg != "after" {
		t.Fatalf("after garbage: %+v %v", r, err)
	}
}
