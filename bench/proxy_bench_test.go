package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/bench/internal/echo"
	"github.com/breeze-mesh/breeze/bench/internal/wire"
	// Every codec and L7 filter Breeze ships (istio_stats among them).
	_ "github.com/breeze-mesh/breeze/builtin"
	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/proxy"
	"github.com/breeze-mesh/breeze/host"
)

// Allocations per request through the real proxy, reproducibly:
//
//	go test -run '^$' -bench BenchmarkProxy -benchtime 20000x ./bench/
//
// One op is one request: a client in this process keeps benchConns
// connections with benchInFlight requests in flight each (the bench route
// table's ten kinds of request in turn, benchPayload bytes of argument) and
// sends the next one when a response arrives, through Breeze on the
// standalone host (configs/breeze.yaml, configs/breeze-thrift.yaml, real
// sockets on 127.0.0.1) to three echo servers, until b.N responses came
// back. allocs/op and B/op are the whole process's (the testing package
// reads runtime.MemStats, which counts every goroutine's allocations): the
// proxy's, plus the client's and the echo servers', which is what the
// "direct" sub-benchmark measures alone (the same client straight to one
// echo server). cpu-ns/op is the process's CPU time (user + system) per
// request, ns/op the wall time per request over all connections.
//
// This file is self-contained on purpose: `make bench COMPARE=ref` copies it
// (with bench/internal) into the base ref's tree to measure both refs with
// the same client. It uses only proxy.Register and proxy.PluginName of the
// proxy package, and links the builtin codecs and filters.

const (
	benchConns    = 8
	benchInFlight = 4
	benchPayload  = 1024
	benchWarmup   = 2000 // requests before the timer starts (pools, buffers)
)

func BenchmarkProxyDubbo(b *testing.B) {
	benchProxy(b, "dubbo", "configs/breeze.yaml", 21001)
}

// BenchmarkProxyDubboResilience is BenchmarkProxyDubbo with retries,
// circuit breakers and outlier detection configured and never triggered:
// run both in one `go test -bench 'ProxyDubbo'` to compare them.
func BenchmarkProxyDubboResilience(b *testing.B) {
	benchProxy(b, "dubbo", "configs/breeze-resilience.yaml", 21001)
}

// BenchmarkProxyDubboFilters is BenchmarkProxyDubbo with the
// local_ratelimit and fault filters on every request, never refusing,
// delaying or aborting one: what they cost idle.
func BenchmarkProxyDubboFilters(b *testing.B) {
	benchProxy(b, "dubbo", "configs/breeze-filters.yaml", 21001)
}

// BenchmarkProxyDubboIstioStats is BenchmarkProxyDubbo with Istio's
// standard request series recorded for every request (the istio_stats
// filter) and the plugin's metrics server: run both in one
// `go test -bench 'ProxyDubbo'` to compare metrics on and off.
func BenchmarkProxyDubboIstioStats(b *testing.B) {
	benchProxy(b, "dubbo", "configs/breeze-istio-stats.yaml", 21001)
}

// BenchmarkProxyDubboAccessLog is BenchmarkProxyDubbo with an access log
// line in the default format written for every request (to /dev/null:
// the proxy's cost, not the disk's): run both in one
// `go test -bench 'ProxyDubbo'` to compare the access log on and off.
func BenchmarkProxyDubboAccessLog(b *testing.B) {
	benchProxy(b, "dubbo", "configs/breeze-accesslog.yaml", 21001)
}

// BenchmarkProxyDubboTracing1 and BenchmarkProxyDubboTracing100 are
// BenchmarkProxyDubbo with OpenTelemetry tracing at 1% and 100% random
// sampling, exporting to 127.0.0.1:21035: run the collector of
// configs/otelcol.yaml there (scripts/otelcol-peer.sh run
// bench/configs/otelcol.yaml), or the spans are dropped after failed
// exports, a cheaper path than a working export.
func BenchmarkProxyDubboTracing1(b *testing.B) {
	benchProxy(b, "dubbo", "configs/breeze-tracing-1.yaml", 21001)
}

func BenchmarkProxyDubboTracing100(b *testing.B) {
	benchProxy(b, "dubbo", "configs/breeze-tracing-100.yaml", 21001)
}

func BenchmarkProxyThrift(b *testing.B) {
	benchProxy(b, "thrift", "configs/breeze-thrift.yaml", 21101)
}

func benchProxy(b *testing.B, protoName, file string, firstPort int) {
	p, err := wire.Lookup(protoName)
	if err != nil {
		b.Fatal(err)
	}
	reqs, err := p.Requests(wire.MixRoutes, benchPayload)
	if err != nil {
		b.Fatal(err)
	}
	// The proxy logs an upstream's closing at info level, between the
	// benchmark's lines.
	slog.SetLogLoggerLevel(slog.LevelWarn)
	b.Cleanup(func() { slog.SetLogLoggerLevel(slog.LevelInfo) })
	// Servers and connections are set up once: the testing package calls a
	// sub-benchmark's function more than once (b.N = 1 first).
	_, direct := echoServers(b, p)
	directConns := dial(b, p, reqs, direct[0])
	servers, addrs := echoServers(b, p)
	b.Run("direct", func(b *testing.B) { measure(b, directConns) })
	// "breeze" runs on the host's default event loop (its workers), and
	// "breeze-goroutines" on its goroutine driver, chosen by the host's
	// environment variable (a string here: this file also builds in trees
	// older than the variable, where both run the one driver there is).
	// One Host after the other: two Hosts of one library ID in a process
	// would share the upstream connections.
	for _, v := range []struct{ name, loop string }{{"breeze", ""}, {"breeze-goroutines", "goroutines"}} {
		b.Setenv("BREEZE_HOST_EVENT_LOOP", v.loop)
		addr, h := startBreezeHost(b, file, firstPort, addrs)
		conns := dial(b, p, reqs, addr)
		b.Run(v.name, func(b *testing.B) { measure(b, conns) })
		for _, c := range conns {
			c.c.Close()
		}
		h.Close()
	}
	for i, s := range servers {
		if s.Requests.Load() == 0 {
			b.Errorf("endpoint v%d got no request", i+1)
		}
	}
}

func dial(b *testing.B, p wire.Protocol, reqs []wire.Request, addr string) []*benchConn {
	conns := make([]*benchConn, benchConns)
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		conns[i] = &benchConn{p: p, c: c, br: bufio.NewReaderSize(c, 64<<10), reqs: reqs, k: i, id: 1}
	}
	return conns
}

// measure sends benchWarmup requests untimed, then b.N timed, on conns.
func measure(b *testing.B, conns []*benchConn) {
	if err := runConns(conns, benchWarmup); err != nil {
		b.Fatal("warm-up: ", err)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	err := runConns(conns, int64(b.N))
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runConns sends n requests over all connections (a shared budget) and
// waits for their responses.
func runConns(conns []*benchConn, n int64) error {
	var budget atomic.Int64
	budget.Store(n)
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.run(&budget)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// benchConn is one client connection: one goroutine writes requests and
// reads responses, with buffers reused, so that the client allocates
// nothing per request.
type benchConn struct {
	p    wire.Protocol
	c    net.Conn
	br   *bufio.Reader
	out  []byte
	big  []byte
	reqs []wire.Request
	k    int    // next request kind
	id   uint64 // next request id
}

func (bc *benchConn) run(budget *atomic.Int64) error {
	mask := wire.IDMask(bc.p)
	outstanding := 0
	send := func(n int) error {
		bc.out = bc.out[:0]
		for range n {
			if budget.Add(-1) < 0 {
				break
			}
			bc.out = bc.p.AppendRequest(bc.out, &bc.reqs[bc.k], bc.id&mask)
			bc.k = (bc.k + 1) % len(bc.reqs)
			bc.id++
			outstanding++
		}
		if len(bc.out) == 0 {
			return nil
		}
		_, err := bc.c.Write(bc.out)
		return err
	}
	if err := send(benchInFlight); err != nil {
		return err
	}
	hl := bc.p.HeaderLen()
	done := 0
	for outstanding > 0 {
		h, err := bc.br.Peek(hl)
		if err != nil {
			return fmt.Errorf("read: %w (%d in flight)", err, outstanding)
		}
		n, err := bc.p.FrameLen(h)
		if err != nil {
			return err
		}
		var f []byte
		if n <= bc.br.Size() {
			if f, err = bc.br.Peek(n); err != nil {
				return fmt.Errorf("read: %w", err)
			}
		} else {
			if cap(bc.big) < n {
				bc.big = make([]byte, n)
			}
			f = bc.big[:n]
			if _, err := io.ReadFull(bc.br, f); err != nil {
				return fmt.Errorf("read: %w", err)
			}
		}
		r, err := bc.p.ParseResponse(f)
		if err != nil {
			return err
		}
		switch r.Kind {
		case wire.OK:
			outstanding--
			done++
		case wire.Ping:
			if bc.out, err = bc.p.Echo(bc.out[:0], f); err != nil {
				return err
			}
			if _, err := bc.c.Write(bc.out); err != nil {
				return err
			}
		case wire.Other:
		default:
			return fmt.Errorf("response %d: kind %d %s", r.ID, r.Kind, r.Status)
		}
		if n <= bc.br.Size() {
			bc.br.Discard(n)
		}
		// One write per batch of responses already read, as a pipelining
		// client does.
		if done > 0 && !wire.FrameBuffered(bc.br, bc.p) {
			if err := send(done); err != nil {
				return err
			}
			done = 0
		}
	}
	return nil
}

// Helpers shared with loadtest_test.go (here, so that this file stands alone).

func listen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ln
}

// echoServers starts three echo endpoints (v1, v2, v3), each its own Server
// so that the test can see which one answered.
func echoServers(tb testing.TB, p wire.Protocol) ([]*echo.Server, []string) {
	var servers []*echo.Server
	var addrs []string
	for range 3 {
		s := &echo.Server{Proto: p}
		ln := listen(tb)
		go s.Serve(ln)
		tb.Cleanup(s.Close)
		servers = append(servers, s)
		addrs = append(addrs, ln.Addr().String())
	}
	return servers, addrs
}

// startBreeze serves the first listener of the runner config file (ten
// routes) on the host in this process, with its endpoints, configured on
// ports firstPort, firstPort+1, firstPort+2, moved to addrs. It returns the
// listener's address.
func startBreeze(tb testing.TB, file string, firstPort int, addrs []string) string {
	tb.Helper()
	addr, _ := startBreezeHost(tb, file, firstPort, addrs)
	return addr
}

// startBreezeHost is startBreeze, also returning the Host (closed at the
// end of the test, or earlier by the caller).
func startBreezeHost(tb testing.TB, file string, firstPort int, addrs []string) (string, *host.Host) {
	tb.Helper()
	yaml, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	text := string(yaml)
	for i, a := range addrs {
		_, port, _ := net.SplitHostPort(a)
		text = strings.ReplaceAll(text, "port: "+strconv.Itoa(firstPort+i)+",", "port: "+port+",")
	}
	runner, err := config.ParseRunner(file, []byte(text))
	if err != nil {
		tb.Fatal(err)
	}
	if n := len(runner.GetListeners()[0].GetProxy().GetRouteConfig().GetRoutes()); n != 10 {
		tb.Fatalf("%d routes in %s, want 10", n, file)
	}
	proxy.Register()
	h := host.New(host.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	tb.Cleanup(func() { h.Close() })
	pc, err := config.ToAny(runner.GetListeners()[0].GetProxy())
	if err != nil {
		tb.Fatal(err)
	}
	ln := listen(tb)
	if err := h.AddListener(ln, proxy.PluginName, pc); err != nil {
		tb.Fatal(err)
	}
	return ln.Addr().String(), h
}
