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
	slog.SetDefault(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
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

// An upstream that refuses every connect must not write a line per
// attempt either.
func TestFailingUpstreamDoesNotFloodTheLog(t *testing.T) {
	dead := newBackend(t, "dead")
	dead.kill()
	var clk fakeClock
	addr, log := startLoggedProxy(t, fmt.Sprintf("stat_prefix: deadup\ncodec: tframe\nroute_config: {routes: [{route: {cluster: c}}]}\nclusters:\n- name: c\n  endpoints:\n%s\n", ep(dead, "")), &clk)
	c := dial(t, addr)
	fails := metrics.UpstreamEvents.WithLabelValues("deadup", "c", "connect_failure")
	for i := 0; testutil.ToFloat64(fails) < 30; i++ {
		if m, err := c.call(uint64(i+1), "x"); err != nil || m.status == codecs.StatusOK {
			t.Fatalf("request to a dead upstream: %+v %v", m, err)
		}
	}
	if got := log.lines("proxy=deadup", "upstream connect failed"); len(got) != testBurst {
		t.Fatalf("%v connect failures wrote %d log lines, want the burst of %d", testutil.ToFloat64(fails), len(got), testBurst)
	}
}
