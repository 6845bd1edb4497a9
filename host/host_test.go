package host_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/breeze-mesh/breeze/host"
)

const deadline = 20 * time.Second

// start returns a Host serving plugin on a fresh loopback listener, and the
// listener's address. The Host is closed at the end of the test.
func start(t *testing.T, opts host.Options, plugin, upstream string) (*host.Host, *recorder, string) {
	t.Helper()
	rec := newRecorder(t.Name())
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	h := newHost(t, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddListener(ln, plugin, config(t.Name(), upstream)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Error(err)
		}
	})
	return h, rec, ln.Addr().String()
}

type testWriter struct{ t *testing.T }

// lockedBuffer collects log lines written from any goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(deadline))
	return c
}

// eventually waits for cond, running the GC between checks so that the shim's
// finalizers get their chance.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.GC()
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(deadline):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// released waits until every wrapper the Host handed out has been finalized (or
// released for a filterless connection) and nothing is open.
func released(t *testing.T, h *host.Host) {
	t.Helper()
	eventually(t, "all connections released", func() bool {
		s := h.Stats()
		return s.DownstreamOpen == 0 && s.UpstreamOpen == 0 &&
			s.DownstreamAccepted == s.DownstreamFinalized+s.DownstreamFilterless+s.DownstreamUnfinalizable &&
			s.UpstreamConnects == s.UpstreamFinalized
	})
}

func noAborts(t *testing.T, h *host.Host) {
	t.Helper()
	if s := h.Stats(); s.EnvoyWouldAbort != 0 || s.Panics != 0 {
		t.Fatalf("EnvoyWouldAbort=%d Panics=%d, want 0", s.EnvoyWouldAbort, s.Panics)
	}
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	var b [1]byte
	n, err := c.Read(b[:])
	if n != 0 || err == nil {
		t.Fatalf("read %d bytes, err %v; want EOF", n, err)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("want EOF, got %v", err)
	}
}

func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

// echoServer is a plain TCP echo server, the upstream of the relay tests.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestEchoManyConnections(t *testing.T) { eachEventLoop(t, testEchoManyConnections) }

func testEchoManyConnections(t *testing.T) {
	h, rec, addr := start(t, host.Options{}, "echo", "")
	const conns, msgs = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(deadline))
			for j := 0; j < msgs; j++ {
				msg := make([]byte, 1+(i*131+j*17)%4000)
				_, _ = rand.Read(msg)
				if _, err := c.Write(msg); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("conn %d msg %d: echo differs", i, j)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := 0; i < conns; i++ {
		if e := recv(t, rec.events, "close event"); e != api.RemoteClose {
			t.Errorf("event %v, want RemoteClose", e)
		}
	}
	released(t, h)
	noAborts(t, h)
	if n := rec.concurrentData.Load(); n != 0 {
		t.Errorf("%d callbacks of one connection overlapped", n)
	}
	if s := h.Stats(); s.DownstreamAccepted != conns || s.DownstreamFinalized != conns {
		t.Errorf("stats %+v", s)
	}
}

func TestWritesDeliveredAfterCallbackInOrder(t *testing.T) {
	eachEventLoop(t, testWritesDeliveredAfterCallbackInOrder)
}

func testWritesDeliveredAfterCallbackInOrder(t *testing.T) {
	h, rec, addr := start(t, host.Options{}, "echo", "")
	c := dial(t, addr)
	if _, err := c.Write([]byte("ORDER")); err != nil {
		t.Fatal(err)
	}
	if got := string(readN(t, c, 5)); got != "abcde" {
		t.Fatalf("got %q, want abcde", got)
	}
	if rec.writeCalls.Load() != 5 {
		t.Errorf("OnWrite ran %d times, want 5", rec.writeCalls.Load())
	}
	if n := rec.writeInData.Load(); n != 0 {
		t.Errorf("%d writes were processed inside OnData", n)
	}
	noAborts(t, h)
}

// TestWritesGoOutFromTheLoop: a connection's writes reach the socket from
// its loop at the end of the turn that made them, as Envoy writes from its
// worker thread, without a hand-off to the writer goroutine while the
// socket takes them.
func TestWritesGoOutFromTheLoop(t *testing.T) { eachEventLoop(t, testWritesGoOutFromTheLoop) }

func testWritesGoOutFromTheLoop(t *testing.T) {
	h, _, addr := start(t, host.Options{}, "echo", "")
	c := dial(t, addr)
	const rounds = 50
	for i := range rounds {
		msg := fmt.Sprintf("hello %02d", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if got := string(readN(t, c, len(msg))); got != msg {
			t.Fatalf("round %d: got %q, want %q", i, got, msg)
		}
	}
	// Writes of one turn share a writev, so there may be fewer direct
	// writes than messages; none may go through the writer goroutine.
	s := h.Stats()
	if s.DirectWrites == 0 || s.WriterBatches != 0 {
		t.Errorf("%d direct writes and %d writer batches for %d echoed messages; want every write direct", s.DirectWrites, s.WriterBatches, rounds)
	}
	noAborts(t, h)
}

func TestLargePayloadSplitAcrossReads(t *testing.T) {
	eachEventLoop(t, testLargePayloadSplitAcrossReads)
}

func testLargePayloadSplitAcrossReads(t *testing.T) {
	h, rec, addr := start(t, host.Options{}, "echo", "")
	c := dial(t, addr)
	payload := make([]byte, 8<<20)
	_, _ = rand.Read(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		werr <- err
	}()
	got := readN(t, c, len(payload))
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("echoed payload differs (a filter's buffer must be its own copy)")
	}
	if n := rec.dataCalls.Load(); n < 2 {
		t.Errorf("OnData ran %d times; an 8 MiB payload should arrive in several reads", n)
	}
	c.Close()
	released(t, h)
	noAborts(t, h)
}

func TestRelayThroughUpstream(t *testing.T) { eachEventLoop(t, testRelayThroughUpstream) }

func testRelayThroughUpstream(t *testing.T) {
	up := echoServer(t)
	h, rec, addr := start(t, host.Options{}, "relay", up)
	const conns = 32
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(deadline))
			msg := bytes.Repeat([]byte{byte('a' + i%26)}, 100_000+i)
			go c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("conn %d: relayed bytes differ", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := 0; i < conns; i++ {
		recv(t, rec.events, "downstream close")
		if e := recv(t, rec.upEvents, "upstream close"); e != api.LocalClose {
			t.Errorf("upstream event %v, want LocalClose (the relay closes it)", e)
		}
	}
	released(t, h)
	noAborts(t, h)
	if s := h.Stats(); s.UpstreamReady != conns || s.UpstreamFinalized != conns {
		t.Errorf("stats %+v", s)
	}
}

// Options.UpstreamWorker: with two workers, round-robin puts a relay's
// upstream connection on the other worker than its downstream one (Envoy's
// Go filter), "caller" on the same, so that its requests cross no thread.
func TestUpstreamWorker(t *testing.T) {
	for _, tc := range []struct {
		upstream string
		same     bool
	}{{host.UpstreamWorkerRoundRobin, false}, {host.UpstreamWorkerCaller, true}} {
		t.Run(tc.upstream, func(t *testing.T) {
			up := echoServer(t)
			_, rec, addr := start(t, host.Options{EventLoop: host.EventLoopWorkers, Workers: 2, UpstreamWorker: tc.upstream}, "relay", up)
			for i := range 4 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(deadline))
				if _, err := c.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
					t.Fatal(err)
				}
				c.Close()
				var g [2]uint64
				select {
				case g = <-rec.relayThreads:
				case <-time.After(deadline):
					t.Fatal("no upstream OnData recorded")
				}
				if same := g[0] == g[1]; same != tc.same {
					t.Errorf("connection %d: downstream callbacks on goroutine %d, upstream on %d; want the same worker: %v", i, g[0], g[1], tc.same)
				}
			}
		})
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestUpstreamDialFailure(t *testing.T) { eachEventLoop(t, testUpstreamDialFailure) }

func testUpstreamDialFailure(t *testing.T) {
	h, rec, addr := start(t, host.Options{}, "relay", closedPort(t))
	c := dial(t, addr)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if line != "failure:RemoteConnectionFailure\n" {
		t.Fatalf("got %q", line)
	}
	if r := recv(t, rec.poolFailures, "pool failure"); r != api.RemoteConnectionFailure {
		t.Fatalf("reason %v", r)
	}
	// The OS error, for the plugin's log (Envoy's shim passes "").
	if d := recv(t, rec.poolDetails, "pool failure detail"); d != "connection refused" {
		t.Fatalf("transportFailure %q, want the dial's OS error %q", d, "connection refused")
	}
	if e := recv(t, rec.events, "close"); e != api.LocalClose {
		t.Fatalf("event %v, want LocalClose", e)
	}
	released(t, h)
	noAborts(t, h)
}

func TestUpstreamNonLiteralAddressRejected(t *testing.T) {
	eachEventLoop(t, testUpstreamNonLiteralAddressRejected)
}

func testUpstreamNonLiteralAddressRejected(t *testing.T) {
	h, rec, addr := start(t, host.Options{}, "relay", "localhost:80")
	c := dial(t, addr)
	if r := recv(t, rec.poolFailures, "pool failure"); r != api.LocalConnectionFailure {
		t.Fatalf("reason %v, want LocalConnectionFailure", r)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	if line != "failure:LocalConnectionFailure\n" {
		t.Fatalf("got %q", line)
	}
	s := h.Stats()
	if s.UpstreamRejected != 1 || s.EnvoyWouldAbort != 1 {
		t.Fatalf("UpstreamRejected=%d EnvoyWouldAbort=%d, want 1 and 1", s.UpstreamRejected, s.EnvoyWouldAbort)
	}
	released(t, h)
}

func TestUpstreamCircuitBreaker(t *testing.T) { eachEventLoop(t, testUpstreamCircuitBreaker) }

func testUpstreamCircuitBreaker(t *testing.T) {
	up := echoServer(t)
	var log lockedBuffer
	h, rec, addr := start(t, host.Options{MaxUpstreamConnections: 1,
		Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelInfo}))}, "relay", up)
	first := dial(t, addr)
	if _, err := first.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	readN(t, first, 1) // the first relay is connected and holds the only slot
	second := dial(t, addr)
	if r := recv(t, rec.poolFailures, "pool failure"); r != api.Overflow {
		t.Fatalf("reason %v, want Overflow", r)
	}
	line, _ := bufio.NewReader(second).ReadString('\n')
	if line != "failure:Overflow\n" {
		t.Fatalf("got %q", line)
	}
	if s := h.Stats(); s.UpstreamOverflows != 1 || s.UpstreamOpen != 1 {
		t.Fatalf("stats %+v", s)
	}
	// As in Envoy, an overflow is a counter and the plugin's pool failure,
	// not a line per connection: load must not flood the log.
	if s := log.String(); strings.Contains(s, "circuit breaker") {
		t.Fatalf("an overflow was logged at info level or above:\n%s", s)
	}
	first.Close()
	released(t, h)
	noAborts(t, h)
}

func TestCloseFromFilter(t *testing.T) { eachEventLoop(t, testCloseFromFilter) }

func testCloseFromFilter(t *testing.T) {
	h, rec, addr := start(t, host.Options{}, "echo", "")
	c := dial(t, addr)
	if _, err := c.Write([]byte("CLOSE")); err != nil {
		t.Fatal(err)
	}
	if got := string(readN(t, c, 4)); got != "bye\n" {
		t.Fatalf("got %q", got)
	}
	expectEOF(t, c)
	if e := recv(t, rec.events, "close event"); e != api.LocalClose {
		t.Fatalf("event %v, want LocalClose", e)
	}
	released(t, h)
	noAborts(t, h)
}

func TestClientDisconnect(t *testing.T) { eachEventLoop(t, testClientDisconnect) }

func testClientDisconnect(t *testing.T) {
	h, rec, addr := start(t, host.Options{}, "echo", "")
	c := dial(t, addr)
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	readN(t, c, 2)
	c.Close()
	if e := recv(t, rec.events, "close event"); e != api.RemoteClose {
		t.Fatalf("event %v, want RemoteClose", e)
	}
	eventually(t, "the filter finalized", func() bool { return h.Stats().DownstreamFinalized == 1 })
	noAborts(t, h)
}

func TestPanicInCallbackClosesOnlyThatConnection(t *testing.T) {
	eachEventLoop(t, testPanicInCallbackClosesOnlyThatConnection)
}

func testPanicInCallbackClosesOnlyThatConnection(t *testing.T) {
	// One worker: the other connection is on the worker whose callback
	// panicked, which must go on serving it.
	h, rec, addr := start(t, host.Options{Workers: 1}, "echo", "")
	other := dial(t, addr)
	c := dial(t, addr)
	if _, err := c.Write([]byte("PANIC")); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, c)
	if e := recv(t, rec.events, "close event"); e != api.LocalClose {
		t.Fatalf("event %v, want LocalClose", e)
	}
	if s := h.Stats(); s.Panics != 1 || s.EnvoyWouldAbort != 1 {
		t.Fatalf("Panics=%d EnvoyWouldAbort=%d, want 1 and 1", s.Panics, s.EnvoyWouldAbort)
	}
	// The other connection is unaffected.
	if _, err := other.Write([]byte("still")); err != nil {
		t.Fatal(err)
	}
	if got := string(readN(t, other, 5)); got != "still" {
		t.Fatalf("got %q", got)
	}
	other.Close()
	released(t, h)
}

func TestGetFilterStateRefused(t *testing.T) { eachEventLoop(t, testGetFilterStateRefused) }

func testGetFilterStateRefused(t *testing.T) {
	h, _, addr := start(t, host.Options{}, "echo", "")
	c := dial(t, addr)
	if _, err := c.Write([]byte("GETSTATE")); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, c)
	if s := h.Stats(); s.Panics != 1 || s.EnvoyWouldAbort != 2 {
		t.Fatalf("Panics=%d EnvoyWouldAbort=%d, want 1 and 2", s.Panics, s.EnvoyWouldAbort)
	}
}

func TestDownstreamInfo(t *testing.T) { eachEventLoop(t, testDownstreamInfo) }

func testDownstreamInfo(t *testing.T) {
	h, _, addr := start(t, host.Options{}, "echo", "")
	c := dial(t, addr)
	if _, err := c.Write([]byte("INFO")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	want := c.RemoteAddr().String() + " " + c.LocalAddr().String() + "\n"
	if line != want {
		t.Fatalf("got %q, want %q", line, want)
	}
	noAborts(t, h)
}

// A callback object kept past its filter's finalization reaches Envoy with a
// freed wrapper. The host counts that instead of crashing.
func TestUseAfterFinalizeCounted(t *testing.T) { eachEventLoop(t, testUseAfterFinalizeCounted) }

func testUseAfterFinalizeCounted(t *testing.T) {
	h, rec, addr := start(t, host.Options{}, "echo", "")
	c := dial(t, addr)
	if _, err := c.Write([]byte("KEEPCB")); err != nil {
		t.Fatal(err)
	}
	readN(t, c, 5)
	c.Close()
	recv(t, rec.events, "close event")
	eventually(t, "the filter finalized", func() bool { return h.Stats().DownstreamFinalized == 1 })
	before := h.Stats().StaleCalls
	rec.mu.Lock()
	cb := rec.keptCbs[0]
	rec.mu.Unlock()
	cb.Write([]byte("late"), false)
	if got := h.Stats().StaleCalls; got != before+1 {
		t.Fatalf("StaleCalls %d, want %d", got, before+1)
	}
}

// The shim sets its finalizer on the plugin's filter object itself. Go never
// finalizes an object in a reference cycle through another object (filter ->
// session -> filter), so such a filter, everything it references, and Envoy's
// FilterWrapper all leak. This pins that down.
func TestCyclicFilterIsNeverFinalized(t *testing.T) {
	eachEventLoop(t, testCyclicFilterIsNeverFinalized)
}

func testCyclicFilterIsNeverFinalized(t *testing.T) {
	hc, rec, cyclicAddr := start(t, host.Options{}, "cyclic", "")
	he := newHost(t, host.Options{})
	t.Cleanup(func() { he.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := he.AddListener(ln, "echo", config(t.Name(), "")); err != nil {
		t.Fatal(err)
	}
	a := dial(t, cyclicAddr)
	b := dial(t, ln.Addr().String())
	a.Close()
	b.Close()
	recv(t, rec.events, "close")
	recv(t, rec.events, "close")
	eventually(t, "the acyclic filter finalized", func() bool { return he.Stats().DownstreamFinalized == 1 })
	for i := 0; i < 5; i++ {
		runtime.GC()
	}
	if n := hc.Stats().DownstreamFinalized; n != 0 {
		t.Fatalf("cyclic filter finalized %d times; the shim or Go changed", n)
	}
}

func TestUpstreamHalfClose(t *testing.T) { eachEventLoop(t, testUpstreamHalfClose) }

func testUpstreamHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	server := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			server <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(deadline))
		got := make([]byte, 5)
		if _, err := io.ReadFull(c, got); err != nil {
			server <- err.Error()
			return
		}
		_, _ = c.Write([]byte("hello"))
		_ = c.(*net.TCPConn).CloseWrite()
		rest, err := io.ReadAll(c) // until the plugin's end of stream
		server <- fmt.Sprintf("%s|%s|%v", got, rest, err)
	}()
	h, rec, addr := start(t, host.Options{}, "halfclose", ln.Addr().String())
	c := dial(t, addr)
	// UpstreamLocalAddress is the address dialled (Envoy returns addr_), not the
	// socket's local address.
	want := "info:" + ln.Addr().String() + " " + ln.Addr().String()
	if got := recv(t, rec.halfClose, "upstream info"); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := recv(t, rec.halfClose, "upstream data"); got != "data:hello:end" {
		t.Fatalf("got %q", got)
	}
	if got := recv(t, server, "server"); got != "ready|bye|<nil>" {
		t.Fatalf("server saw %q", got)
	}
	if got := recv(t, rec.halfClose, "upstream event"); got != "event:LocalClose" {
		t.Fatalf("got %q", got)
	}
	c.Close()
	released(t, h)
	noAborts(t, h)
}

func TestHostCloseClosesConnections(t *testing.T) { eachEventLoop(t, testHostCloseClosesConnections) }

func testHostCloseClosesConnections(t *testing.T) {
	rec := newRecorder(t.Name())
	h := newHost(t, host.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddListener(ln, "echo", config(t.Name(), "")); err != nil {
		t.Fatal(err)
	}
	var cs []net.Conn
	for i := 0; i < 5; i++ {
		c := dial(t, ln.Addr().String())
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		readN(t, c, 1)
		cs = append(cs, c)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		expectEOF(t, c)
	}
	for range cs {
		if e := recv(t, rec.events, "close"); e != api.LocalClose {
			t.Fatalf("event %v, want LocalClose", e)
		}
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("listener still accepting after Close")
	}
	released(t, h)
}

func TestTwoHostsInOneProcess(t *testing.T) { eachEventLoop(t, testTwoHostsInOneProcess) }

func testTwoHostsInOneProcess(t *testing.T) {
	h1, _, a1 := start(t, host.Options{LibraryID: "one"}, "echo", "")
	h2, _, a2 := start(t, host.Options{LibraryID: "two"}, "echo", "")
	for _, a := range []string{a1, a1, a2} {
		c := dial(t, a)
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		readN(t, c, 4)
		c.Close()
	}
	released(t, h1)
	released(t, h2)
	if s1, s2 := h1.Stats(), h2.Stats(); s1.DownstreamFinalized != 2 || s2.DownstreamFinalized != 1 {
		t.Fatalf("finalized %d and %d, want 2 and 1", s1.DownstreamFinalized, s2.DownstreamFinalized)
	}
}

func TestAddListenerUnknownPlugin(t *testing.T) {
	h := host.New(host.Options{})
	defer h.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := h.AddListener(ln, "no-such-plugin", nil); err == nil {
		t.Fatal("want an error")
	}
}

func TestZeroSizeFilterDetected(t *testing.T) { eachEventLoop(t, testZeroSizeFilterDetected) }

func testZeroSizeFilterDetected(t *testing.T) {
	h, _, addr := start(t, host.Options{}, "zerosize", "")
	c := dial(t, addr)
	c.Close()
	eventually(t, "connection closed", func() bool {
		s := h.Stats()
		return s.DownstreamAccepted == 1 && s.DownstreamOpen == 0
	})
	if s := h.Stats(); s.DownstreamUnfinalizable != 1 || s.DownstreamFinalized != 0 {
		t.Fatalf("stats %+v", s)
	}
	released(t, h)
}

// TestWriteBufferLimitHoldsBackClientThatDoesNotRead: a client that sends
// without reading what comes back is not read either once its write buffer is
// above the limit (Envoy's watermarks, readDisable), so the bytes the host
// holds for it stay bounded instead of growing with what it sends. When it
// reads, everything arrives, in order.
func TestWriteBufferLimitHoldsBackClientThatDoesNotRead(t *testing.T) {
	eachEventLoop(t, testWriteBufferLimitHoldsBackClientThatDoesNotRead)
}

func testWriteBufferLimitHoldsBackClientThatDoesNotRead(t *testing.T) {
	const limit, readSize = 64 << 10, 4 << 10
	h, _, addr := start(t, host.Options{WriteBufferLimit: limit, ReadSize: readSize}, "echo", "")
	c := dial(t, addr)
	payload := make([]byte, 32<<20)
	_, _ = rand.Read(payload)
	sent := make(chan error, 1)
	go func() {
		for p := payload; len(p) > 0; p = p[64<<10:] {
			if _, err := c.Write(p[:64<<10]); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	// Wait until the host stops reading, or (without the limit) until the
	// client could send everything.
	var done bool
	eventually(t, "the host to stop reading the client", func() bool {
		select {
		case err := <-sent:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		default:
		}
		return done || h.Stats().ReadPaused == 1
	})
	// What the host buffers: the limit, plus one OnData's worth of echo (the
	// reader's queue, 16 reads) written before the pause took effect.
	bound := int64(limit + 16*readSize)
	if s := h.Stats(); s.WriteBufferedPeak > bound {
		t.Fatalf("the host buffered up to %d bytes for a client that does not read (%d now, done sending: %v), over the bound of %d",
			s.WriteBufferedPeak, s.WriteBuffered, done, bound)
	}
	got := readN(t, c, len(payload))
	if err := <-sent; err != nil && !done {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("echo differs")
	}
	s := h.Stats()
	if s.ReadPauses == 0 || s.WriteBufferedPeak > bound {
		t.Errorf("ReadPauses=%d WriteBufferedPeak=%d (bound %d)", s.ReadPauses, s.WriteBufferedPeak, bound)
	}

	eventually(t, "reading resumed and the buffer drained", func() bool {
		s := h.Stats()
		return s.ReadPaused == 0 && s.WriteBuffered == 0
	})
	c.Close()
	released(t, h)
	noAborts(t, h)
}

// TestNoWriteBufferLimitAsInEnvoy: with a negative limit the host behaves as
// Envoy does with the Go filter, whose watermark callbacks are empty: it keeps
// reading a client that does not read, and buffers what it is given.
func TestNoWriteBufferLimitAsInEnvoy(t *testing.T) { eachEventLoop(t, testNoWriteBufferLimitAsInEnvoy) }

func testNoWriteBufferLimitAsInEnvoy(t *testing.T) {
	h, _, addr := start(t, host.Options{WriteBufferLimit: -1}, "echo", "")
	c := dial(t, addr)
	payload := make([]byte, 16<<20)
	_, _ = rand.Read(payload)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	got := readN(t, c, len(payload))
	if !bytes.Equal(got, payload) {
		t.Fatal("echo differs")
	}
	// The client wrote all 16 MiB before reading a byte: more than the kernel's
	// socket buffers hold, so the host held the rest.
	if s := h.Stats(); s.ReadPauses != 0 || s.WriteBufferedPeak < 4<<20 {
		t.Errorf("ReadPauses=%d WriteBufferedPeak=%d; want no pause and megabytes buffered", s.ReadPauses, s.WriteBufferedPeak)
	}
	// After the last read nothing made the loop turn again: what the
	// socket had not taken then was written by the writer goroutine.
	if s := h.Stats(); s.WriterBatches == 0 {
		t.Errorf("the writer goroutine wrote nothing (%d direct writes): what the socket does not take at once must be handed to it", s.DirectWrites)
	}
	c.Close()
	released(t, h)
	noAborts(t, h)
}

// DialUpstream replaces the TCP dial (the plainText cluster's transport
// socket): its connection carries the relay, and a dial that outlasts
// ConnectTimeout fails the connection with Timeout, as Envoy's
// connect_timeout does.
func TestDialUpstream(t *testing.T) { eachEventLoop(t, testDialUpstream) }

func testDialUpstream(t *testing.T) {
	up := echoServer(t)
	var dialed []string
	var mu sync.Mutex
	h, _, addr := start(t, host.Options{DialUpstream: func(ctx context.Context, a string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, a)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, "tcp", a)
	}}, "relay", up)
	c := dial(t, addr)
	if _, err := c.Write([]byte("through the hook\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "through the hook\n" {
		t.Fatalf("relayed %q, %v", line, err)
	}
	mu.Lock()
	if len(dialed) != 1 || dialed[0] != up {
		t.Errorf("DialUpstream saw %v, want one dial to %s", dialed, up)
	}
	mu.Unlock()
	noAborts(t, h)

	t.Run("timeout", func(t *testing.T) {
		_, rec, addr := start(t, host.Options{ConnectTimeout: time.Millisecond, DialUpstream: func(ctx context.Context, _ string) (net.Conn, error) {
			<-ctx.Done() // a handshake that never completes
			return nil, ctx.Err()
		}}, "relay", up)
		dial(t, addr)
		if r := recv(t, rec.poolFailures, "pool failure"); r != api.Timeout {
			t.Fatalf("a dial past ConnectTimeout failed with %v, want Timeout", r)
		}
	})
}

// eachEventLoop runs test once per driver of Options.EventLoop, as the
// subtests "workers" and "goroutines": every semantic the host keeps must
// hold in both.
func eachEventLoop(t *testing.T, test func(t *testing.T)) {
	for _, loop := range []string{host.EventLoopWorkers, host.EventLoopGoroutines} {
		t.Run(loop, test)
	}
}

// eventLoopOf is the driver a test runs against: the name of its subtest
// of eachEventLoop.
func eventLoopOf(t *testing.T) string {
	parts := strings.Split(t.Name(), "/")
	if len(parts) < 2 || (parts[1] != host.EventLoopWorkers && parts[1] != host.EventLoopGoroutines) {
		t.Fatalf("test %s does not run under eachEventLoop", t.Name())
	}
	return parts[1]
}

// newHost is host.New with the test's driver.
func newHost(t *testing.T, opts host.Options) *host.Host {
	if opts.EventLoop == "" {
		opts.EventLoop = eventLoopOf(t)
	}
	return host.New(opts)
}

// opaqueConn hides the socket of a net.Conn, as a TLS connection does: a
// worker cannot drive it as a raw descriptor.
type opaqueConn struct{ net.Conn }

type opaqueListener struct{ net.Listener }

func (l opaqueListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return opaqueConn{c}, nil
}

// Connections that are no plain socket (TLS, from the listener or from
// DialUpstream) keep goroutines of their own under the workers driver, and
// behave the same: relayed both ways, closed, released.
func TestConnectionsWithoutRawSocket(t *testing.T) { eachEventLoop(t, testConnectionsWithoutRawSocket) }

func testConnectionsWithoutRawSocket(t *testing.T) {
	up := echoServer(t)
	rec := newRecorder(t.Name())
	h := newHost(t, host.Options{
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		DialUpstream: func(ctx context.Context, a string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", a)
			if err != nil {
				return nil, err
			}
			return opaqueConn{c}, nil
		}})
	t.Cleanup(func() { h.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddListener(opaqueListener{ln}, "relay", config(t.Name(), up)); err != nil {
		t.Fatal(err)
	}
	c := dial(t, ln.Addr().String())
	br := bufio.NewReader(c)
	for i := range 3 {
		msg := fmt.Sprintf("opaque %d\n", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if line, err := br.ReadString('\n'); err != nil || line != msg {
			t.Fatalf("relayed %q, %v; want %q", line, err, msg)
		}
	}
	c.Close()
	if ev := recv(t, rec.events, "downstream close"); ev != api.RemoteClose {
		t.Errorf("downstream closed with %v, want RemoteClose", ev)
	}
	if ev := recv(t, rec.upEvents, "upstream close"); ev != api.LocalClose {
		t.Errorf("upstream closed with %v, want LocalClose", ev)
	}
	released(t, h)
	noAborts(t, h)
}

// An idle connection costs the workers driver no goroutine (Envoy's idle
// connection costs no thread); the goroutine driver spends one per
// connection at least (its reader, waiting in the poller).
func TestIdleConnectionGoroutines(t *testing.T) { eachEventLoop(t, testIdleConnectionGoroutines) }

func testIdleConnectionGoroutines(t *testing.T) {
	const n = 50
	h, _, addr := start(t, host.Options{}, "echo", "")
	// One connection first, so that the workers have started.
	first := dial(t, addr)
	if _, err := first.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	readN(t, first, 1)
	before := runtime.NumGoroutine()
	for range n {
		c := dial(t, addr)
		if _, err := c.Write([]byte("y")); err != nil {
			t.Fatal(err)
		}
		readN(t, c, 1) // accepted and served: now idle
	}
	grew := runtime.NumGoroutine() - before
	switch eventLoopOf(t) {
	case host.EventLoopWorkers:
		// Slack for goroutines of the runtime and the test's own.
		if grew >= n/2 {
			t.Errorf("%d idle connections added %d goroutines; the workers driver should add none", n, grew)
		}
	case host.EventLoopGoroutines:
		if grew < n {
			t.Errorf("%d idle connections added %d goroutines; the goroutine driver has a reader per connection", n, grew)
		}
	}
	if s := h.Stats(); s.DownstreamOpen != n+1 {
		t.Errorf("DownstreamOpen = %d, want %d", s.DownstreamOpen, n+1)
	}
}

// A client that does not read its replies holds up no other connection of
// its worker: writes never block the loop, what the socket refuses waits.
func TestSlowReaderHoldsUpNoOtherConnection(t *testing.T) {
	eachEventLoop(t, testSlowReaderHoldsUpNoOtherConnection)
}

func testSlowReaderHoldsUpNoOtherConnection(t *testing.T) {
	h, _, addr := start(t, host.Options{Workers: 1, WriteBufferLimit: -1}, "echo", "")
	slow := dial(t, addr)
	payload := make([]byte, 8<<20) // more than the kernel's buffers hold
	if _, err := slow.Write(payload); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the slow reader's replies buffered in the host", func() bool {
		return h.Stats().WriteBuffered > 0
	})
	other := dial(t, addr)
	for i := range 3 {
		msg := fmt.Sprintf("meanwhile %d", i)
		if _, err := other.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if got := string(readN(t, other, len(msg))); got != msg {
			t.Fatalf("the other connection got %q, want %q", got, msg)
		}
	}
	if got := readN(t, slow, len(payload)); !bytes.Equal(got, payload) {
		t.Fatal("the slow reader's echo differs")
	}
	slow.Close()
	other.Close()
	released(t, h)
	noAborts(t, h)
}

// An EventLoop or UpstreamWorker the host does not know is a programming
// error, refused at once rather than silently replaced by the default.
func TestUnknownEventLoopRefused(t *testing.T) {
	for _, opts := range []host.Options{{EventLoop: "threads"}, {UpstreamWorker: "nearest"}} {
		func() {
			bad := opts.EventLoop + opts.UpstreamWorker
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(fmt.Sprint(r), bad) {
					t.Errorf("host.New with %+v recovered %v; want a panic naming %q", opts, r, bad)
				}
			}()
			h := host.New(opts)
			h.Close()
		}()
	}
}
