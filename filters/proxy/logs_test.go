package proxy

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/logs"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeClock decides the log budgets of the proxies a test starts.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// logBuffer collects the lines of the proxies a test starts.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines are the lines containing every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, l := range strings.Split(b.buf.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

const testBurst, testInterval = 3, time.Minute

// startLoggedProxy starts a proxy whose log goes to the returned buffer,
// limited with a burst of testBurst per testInterval of clk.
func startLoggedProxy(t *testing.T, yamlCfg string, clk *fakeClock) (string, *logBuffer) {
	t.Helper()
	buf := &logBuffer{}
	oldLog, oldOpts := slog.Default(), peerLogOptions
	// Without the time, so that tests can compare whole lines.
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: noTime})))
	peerLogOptions = logs.Options{Burst: testBurst, Interval: testInterval, Now: clk.now}
	defer func() { slog.SetDefault(oldLog); peerLogOptions = oldOpts }()
	return startProxy(t, yamlCfg), buf
}

// hostile opens a connection, writes b and waits for the proxy to close it.
func hostile(t *testing.T, addr string, b []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(b)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("connection not closed by the proxy: %v", err)
	}
}

// 300 connections of garbage must not write 300 lines: the first few are
// logged, then one per interval says how many were suppressed; the
// counter has every one.
func TestHostileConnectionsDoNotFloodTheLog(t *testing.T) {
	b := newBackend(t, "b")
	var clk fakeClock
	addr, log := startLoggedProxy(t, fmt.Sprintf("stat_prefix: hostile\ncodec: tframe\nroute_config: {routes: [{route: {cluster: c}}]}\nclusters:\n- name: c\n  endpoints:\n%s\n", ep(b, "")), &clk)
	errs := metrics.ProtocolErrors.WithLabelValues("hostile", "downstream", "frame_too_large")
	oversized := []byte{0x7f, 0xff, 0xff, 0xff}
	for range 300 {
		hostile(t, addr, oversized)
	}
	if n := testutil.ToFloat64(errs); n != 300 {
		t.Fatalf("breeze_protocol_errors_total = %v, want exactly 300", n)
	}
	got := log.lines("proxy=hostile", "bad frame")
	if len(got) != testBurst {
		t.Fatalf("300 bad connections wrote %d log lines, want the burst of %d", len(got), testBurst)
	}
	clk.advance(testInterval)
	hostile(t, addr, oversized)
	hostile(t, addr, oversized)
	got = log.lines("proxy=hostile", "bad frame")
	if len(got) != testBurst+1 || !strings.Contains(got[testBurst], "suppressed=297") {
		t.Fatalf("an interval later, want one more line saying 297 were suppressed; got %d lines:\n%s", len(got), strings.Join(got, "\n"))
	}
	if n := testutil.ToFloat64(errs); n != 302 {
		t.Fatalf("breeze_protocol_errors_total = %v, want exactly 302", n)
	}
}

// Every connection to a rejected config is refused; the refusals are
// counted, and logged as a sample.
func TestRefusedConnectionsDoNotFloodTheLog(t *testing.T) {
	var clk fakeClock
	addr, log := startLoggedProxy(t, "stat_prefix: refused\ncodec: no-such-codec-either\nroute_config: {}\n", &clk)
	before := testutil.ToFloat64(metrics.ConfigErrors)
	for range 50 {
		hostile(t, addr, nil)
	}
	if n := testutil.ToFloat64(metrics.ConfigErrors) - before; n != 50 {
		t.Fatalf("breeze_config_errors_total grew by %v for 50 refused connections, want 50", n)
	}
	if got := log.lines("refusing connection", "no-such-codec-either"); len(got) != testBurst {
		t.Fatalf("50 refused connections wrote %d log lines, want the burst of %d:\n%s", len(got), testBurst, strings.Join(got, "\n"))
	}
}

// A dead provider, however many requests it fails, is one line when it
// goes, with the OS error, and one when it is back; not a line per connect
// attempt (three per request).
func TestDeadUpstreamIsOneLineEachWay(t *testing.T) {
	dead := newBackend(t, "dead")
	deadAddr := dead.ln.Addr().String()
	dead.kill()
	var clk fakeClock
	addr, log := startLoggedProxy(t, fmt.Sprintf("stat_prefix: deadup\ncodec: tframe\nroute_config: {routes: [{route: {cluster: c}}]}\nclusters:\n- name: c\n  endpoints:\n%s\n", ep(dead, "")), &clk)
	c := dial(t, addr)
	fails := metrics.UpstreamEvents.WithLabelValues("deadup", "c", "connect_failure")
	for i := range 100 {
		if m, err := c.call(uint64(i+1), "x"); err != nil || m.status == codecs.StatusOK {
			t.Fatalf("request to a dead upstream: %+v %v", m, err)
		}
	}
	if n := testutil.ToFloat64(fails); n < 100 {
		t.Fatalf("%v connect failures counted for 100 requests to a dead upstream", n)
	}
	sameLines(t, "100 requests to a dead upstream", log.lines("proxy=deadup", "upstream endpoint"), []string{
		`level=WARN msg="upstream endpoint ejected" proxy=deadup cluster=c endpoint=` + deadAddr + ` reason=remote_connection_failure err="connection refused" ejected_for=100ms`,
	})
	back := newBackendAt(t, "back", deadAddr)
	for i := 0; ; i++ {
		m, err := c.call(uint64(1000+i), "x")
		if err != nil {
			t.Fatal(err)
		}
		if md(m, "server") == "back" {
			break
		}
	}
	for i := range 10 {
		if m, err := c.call(uint64(2000+i), "x"); err != nil || md(m, "server") != "back" {
			t.Fatalf("request to the provider back: %+v %v", m, err)
		}
	}
	_ = back
	got := log.lines("proxy=deadup", "upstream endpoint back")
	if len(got) != 1 || !strings.HasPrefix(got[0], `level=INFO msg="upstream endpoint back" proxy=deadup cluster=c endpoint=`+deadAddr+` failures=`) {
		t.Fatalf("the provider back: want one line saying so, got:\n%s", strings.Join(got, "\n"))
	}
}

// sameLines compares log lines whole: their text is part of the interface.
func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s: log lines\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A request the proxy answers itself is a warning naming why, where it
// was going and what it asked for; 1,000 of them are counted exactly and
// logged as a sample, the next line saying how many were suppressed.
func TestLocalRepliesAreASampleOfTheLog(t *testing.T) {
	var clk fakeClock
	addr, log := startLoggedProxy(t, "stat_prefix: noroute\ncodec: tframe\nroute_config: {routes: [{match: {metadata: [{key: interface, exact: svc}]}, route: {cluster: c}}]}\nclusters: [{name: c}]\n", &clk)
	replies := metrics.LocalReplies.WithLabelValues("noroute", "no_route")
	c := dial(t, addr)
	for i := range 1000 {
		if m, err := c.call(uint64(i+1), "x", "interface", "other", "method", "Get"); err != nil || md(m, "error") != "no_route" {
			t.Fatalf("request %d: %+v %v", i, m, err)
		}
	}
	// Counted (and logged) as the request ends, after its reply is written.
	eventually(t, "1000 local replies counted", func() bool { return testutil.ToFloat64(replies) >= 1000 })
	if n := testutil.ToFloat64(replies); n != 1000 {
		t.Fatalf("breeze_local_replies_total{reason=no_route} = %v, want exactly 1000", n)
	}
	line := func(id int, suppressed string) string {
		return fmt.Sprintf(`level=WARN msg="local reply" proxy=noroute reason=no_route flags=NR service=other method=Get detail="breeze: no route matches for service \"other\" method \"Get\"" id=%d%s`, id, suppressed)
	}
	sameLines(t, "1000 requests with no route", log.lines("proxy=noroute"), []string{line(1, ""), line(2, ""), line(3, "")})
	clk.advance(testInterval)
	if _, err := c.call(1001, "x", "interface", "other", "method", "Get"); err != nil {
		t.Fatal(err)
	}
	// The line is written after the counter: wait for both.
	eventually(t, "the 1001st counted and logged", func() bool {
		return testutil.ToFloat64(replies) == 1001 && len(log.lines("proxy=noroute")) > testBurst
	})
	sameLines(t, "an interval later", log.lines("proxy=noroute")[testBurst:], []string{line(1001, " suppressed=997")})
}

// The other local replies: each its reason, and the route, cluster and
// endpoint it got to.
func TestLocalReplyLines(t *testing.T) {
	slow, dead := newBackend(t, "slow"), newBackend(t, "dead")
	slowAddr, deadAddr := slow.ln.Addr().String(), dead.ln.Addr().String()
	dead.kill()
	var clk fakeClock
	addr, log := startLoggedProxy(t, fmt.Sprintf(`stat_prefix: replies
codec: tframe
route_config:
  routes:
  - {name: slow, match: {metadata: [{key: interface, exact: slowsvc}]}, route: {cluster: s}, timeout: 0.1s}
  - {name: dead, match: {metadata: [{key: interface, exact: deadsvc}]}, route: {cluster: d}}
clusters:
- name: s
  endpoints:
%s
- name: d
  endpoints:
%s
`, ep(slow, ""), ep(dead, "")), &clk)
	c := dial(t, addr)
	for i, svc := range []string{"slowsvc", "deadsvc"} {
		if _, err := c.call(uint64(i+1), "x", "interface", svc, "method", "Get", "hang", "1"); err != nil {
			t.Fatal(err)
		}
		// A reply is written before its request's end is logged.
		eventually(t, "its line", func() bool { return len(log.lines("proxy=replies", "local reply")) == i+1 })
	}
	sameLines(t, "a timeout, a dead upstream", log.lines("proxy=replies", "local reply"), []string{
		`level=WARN msg="local reply" proxy=replies reason=timeout flags=UT route=slow cluster=s endpoint=` + slowAddr + ` service=slowsvc method=Get detail="breeze: upstream ` + slowAddr + ` of cluster \"s\" did not answer within 100ms" id=1`,
		`level=WARN msg="local reply" proxy=replies reason=no_healthy_upstream flags=UF,URX route=dead cluster=d endpoint=` + deadAddr + ` service=deadsvc method=Get detail="breeze: no upstream of cluster \"d\" reachable (last tried ` + deadAddr + `)" id=2`,
	})
}

// A oneway the proxy cannot send is dropped: a warning as well.
func TestDroppedOnewayLine(t *testing.T) {
	var clk fakeClock
	addr, log := startLoggedProxy(t, "stat_prefix: owlog\ncodec: tframe\nroute_config: {routes: [{match: {metadata: [{key: interface, exact: svc}]}, route: {cluster: c}}]}\nclusters: [{name: c}]\n", &clk)
	c := dial(t, addr)
	dropped := metrics.Dropped.WithLabelValues("owlog", "oneway_no_route")
	c.send(codecs.Oneway, 7, "x", "interface", "other", "method", "Tell")
	// The line is written after the counter: wait for both.
	eventually(t, "the oneway dropped and logged", func() bool {
		return testutil.ToFloat64(dropped) == 1 && len(log.lines("proxy=owlog")) > 0
	})
	sameLines(t, "a oneway with no route", log.lines("proxy=owlog"), []string{
		`level=WARN msg="oneway dropped" proxy=owlog reason=no_route flags=NR service=other method=Tell detail="breeze: no route matches for service \"other\" method \"Tell\"" id=7`,
	})
}

// Clients that each send more than max_requests_in_flight are closed,
// every one counted, and logged as a sample.
func TestGreedyClientsDoNotFloodTheLog(t *testing.T) {
	b := newBackend(t, "b")
	b.hangAll.Store(true)
	var clk fakeClock
	addr, log := startLoggedProxy(t, fmt.Sprintf("stat_prefix: greedy\ncodec: tframe\nmax_requests_in_flight: 2\nroute_config: {routes: [{route: {cluster: c}}]}\nclusters:\n- name: c\n  endpoints:\n%s\n", ep(b, "")), &clk)
	closes := metrics.DownstreamClosed.WithLabelValues("greedy", "max_requests_in_flight")
	var frames []byte
	for id := range uint64(3) {
		frames = append(frames, tencode(tmsg{typ: codecs.Request, id: id + 1, body: "x"})...)
	}
	for range 20 {
		hostile(t, addr, frames)
	}
	if n := testutil.ToFloat64(closes); n != 20 {
		t.Fatalf("breeze_downstream_closes_total{reason=max_requests_in_flight} = %v, want 20", n)
	}
	if got := log.lines("proxy=greedy", "too many requests in flight"); len(got) != testBurst {
		t.Fatalf("20 greedy clients wrote %d log lines, want the burst of %d:\n%s", len(got), testBurst, strings.Join(got, "\n"))
	}
}

// A request that makes the codec panic is a bug any client can trigger
// again and again: every panic is counted, and its stack logged as a
// sample, not once per connection.
func TestRepeatedPanicsDoNotFloodTheLog(t *testing.T) {
	b := newBackend(t, "b")
	var clk fakeClock
	addr, log := startLoggedProxy(t, fmt.Sprintf("stat_prefix: panicky\ncodec: tframe\nroute_config: {routes: [{route: {cluster: c}}]}\nclusters:\n- name: c\n  endpoints:\n%s\n", ep(b, "")), &clk)
	panics := metrics.Panics.WithLabelValues("OnData")
	before := testutil.ToFloat64(panics)
	frame := tencode(tmsg{typ: codecs.Request, id: 1, md: []codecs.KV{{Key: "panic", Value: "decode"}}, body: "x"})
	for range 30 {
		hostile(t, addr, frame)
	}
	if n := testutil.ToFloat64(panics) - before; n != 30 {
		t.Fatalf("breeze_panics_total{where=OnData} rose by %v for 30 panics, want 30", n)
	}
	if got := log.lines("proxy=panicky", "panic in proxy"); len(got) != testBurst {
		t.Fatalf("30 panics wrote %d log lines, want the burst of %d", len(got), testBurst)
	}
}
