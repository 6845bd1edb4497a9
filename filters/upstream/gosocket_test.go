package upstream

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/breeze-mesh/breeze/filters/logs"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// recorder is an api.UpstreamFilter that records what the Go socket
// delivers, and fails the test when two callbacks overlap (Envoy calls
// them serialized, on the connection's worker).
type recorder struct {
	t      *testing.T
	inCall atomic.Int32

	ready   chan api.ConnectionCallback
	failure chan string // "<reason>: <transport failure>"
	events  chan api.ConnectionEvent

	mu   sync.Mutex
	data bytes.Buffer
	got  chan struct{} // a token per OnData
}

func newRecorder(t *testing.T) *recorder {
	return &recorder{t: t, ready: make(chan api.ConnectionCallback, 1), failure: make(chan string, 1),
		events: make(chan api.ConnectionEvent, 2), got: make(chan struct{}, 1)}
}

func (r *recorder) enter(what string) func() {
	if n := r.inCall.Add(1); n != 1 {
		r.t.Errorf("%s called while another callback of the connection runs (%d at once)", what, n)
	}
	return func() { r.inCall.Add(-1) }
}

func (r *recorder) OnPoolReady(cb api.ConnectionCallback) {
	defer r.enter("OnPoolReady")()
	r.ready <- cb
}

func (r *recorder) OnPoolFailure(reason api.PoolFailureReason, transport string) {
	defer r.enter("OnPoolFailure")()
	r.failure <- reason.String() + ": " + transport
}

func (r *recorder) OnData(b []byte, end bool) {
	defer r.enter("OnData")()
	r.mu.Lock()
	r.data.Write(b)
	r.mu.Unlock()
	select {
	case r.got <- struct{}{}:
	default:
	}
}

func (r *recorder) OnEvent(e api.ConnectionEvent) {
	defer r.enter("OnEvent")()
	r.events <- e
}

// waitData waits until the bytes received equal want.
func (r *recorder) waitData(want string) {
	r.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		got := r.data.String()
		r.mu.Unlock()
		if got == want {
			return
		}
		select {
		case <-r.got:
		case <-deadline:
			r.t.Fatalf("received %q, want %q", got, want)
		}
	}
}

func (r *recorder) waitReady() api.ConnectionCallback {
	r.t.Helper()
	select {
	case cb := <-r.ready:
		return cb
	case f := <-r.failure:
		r.t.Fatalf("OnPoolFailure(%s), want OnPoolReady", f)
	case <-time.After(10 * time.Second):
		r.t.Fatal("neither OnPoolReady nor OnPoolFailure")
	}
	return nil
}

func (r *recorder) waitEvent() api.ConnectionEvent {
	r.t.Helper()
	select {
	case e := <-r.events:
		return e
	case <-time.After(10 * time.Second):
		r.t.Fatal("no close event")
	}
	return 0
}

func (r *recorder) waitFailure() string {
	r.t.Helper()
	select {
	case f := <-r.failure:
		return f
	case <-r.ready:
		r.t.Fatal("OnPoolReady, want OnPoolFailure")
	case <-time.After(10 * time.Second):
		r.t.Fatal("neither OnPoolReady nor OnPoolFailure")
	}
	return ""
}

func testGoDialer(limit int) *goDialer {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return &goDialer{proxy: "gosocket-test", plog: logs.New(log, logs.Options{}), timeout: goConnectTimeout, writeLimit: limit, readSize: goReadSize}
}

// app is a loopback server that hands each accepted connection to serve.
func app(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// Writes reach the app in order even though the caller reuses its buffer
// at once; what the app sends comes back through OnData; Close(FlushWrite)
// delivers everything written before it, then LocalClose.
func TestGoSocketWritesReadsAndFlushes(t *testing.T) {
	received := make(chan string, 1)
	addr := app(t, func(c net.Conn) {
		b, _ := io.ReadAll(c) // until our close
		received <- string(b)
	})
	echo := app(t, func(c net.Conn) { _, _ = io.Copy(c, c) })

	r := newRecorder(t)
	testGoDialer(1<<20).dial(echo, r)
	cb := r.waitReady()
	buf := []byte("ping")
	cb.Write(buf, false)
	copy(buf, "XXXX") // the socket copied it: the app still gets "ping"
	cb.Write([]byte("pong"), false)
	r.waitData("pingpong")
	cb.Close(api.NoFlush)
	if e := r.waitEvent(); e != api.LocalClose {
		t.Fatalf("after Close(NoFlush): event %v, want LocalClose", e)
	}
	cb.Write([]byte("late"), false) // after the close: dropped, no panic

	r2 := newRecorder(t)
	testGoDialer(1<<20).dial(addr, r2)
	cb2 := r2.waitReady()
	want := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, more than one write
	cb2.Write(want[:len(want)/2], false)
	cb2.Write(want[len(want)/2:], false)
	cb2.Close(api.FlushWrite)
	if got := <-received; got != string(want) {
		t.Fatalf("the app got %d bytes before the close, want the %d written before Close(FlushWrite)", len(got), len(want))
	}
	if e := r2.waitEvent(); e != api.LocalClose {
		t.Fatalf("after Close(FlushWrite): event %v, want LocalClose", e)
	}
}

// The app closing its end is RemoteClose.
func TestGoSocketAppCloses(t *testing.T) {
	addr := app(t, func(c net.Conn) {
		b := make([]byte, 4)
		_, _ = io.ReadFull(c, b)
		_, _ = c.Write([]byte("bye"))
		c.Close()
	})
	r := newRecorder(t)
	testGoDialer(1<<20).dial(addr, r)
	cb := r.waitReady()
	cb.Write([]byte("quit"), false)
	r.waitData("bye")
	if e := r.waitEvent(); e != api.RemoteClose {
		t.Fatalf("app closed: event %v, want RemoteClose", e)
	}
}

// An app that stops reading fills the socket's buffers, then the
// connection's queue: past its bound the connection closes, counted and
// logged, instead of holding more and more memory.
func TestGoSocketBoundsWhatWaitsForAnAppThatDoesNotRead(t *testing.T) {
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	addr := app(t, func(net.Conn) { <-stuck }) // accepts, never reads
	const limit = 256 << 10
	full := metrics.GoSocketFailures.WithLabelValues("gosocket-test", "write_queue_full")
	before := testutil.ToFloat64(full)

	r := newRecorder(t)
	testGoDialer(limit).dial(addr, r)
	cb := r.waitReady()
	chunk := make([]byte, 32<<10)
	written := 0
	closed := func(e api.ConnectionEvent) {
		if e != api.LocalClose {
			t.Fatalf("event %v, want LocalClose", e)
		}
		if got := testutil.ToFloat64(full) - before; got != 1 {
			t.Fatalf("breeze_upstream_go_socket_failures_total{reason=write_queue_full} went up by %v, want 1", got)
		}
		t.Logf("closed after %d KiB written to an app that reads nothing (queue bound %d KiB)", written>>10, limit>>10)
	}
	// Far more than the socket buffers and the queue hold; the close event
	// comes asynchronously, so writing stops there and the test waits for it.
	for written < 1<<30 {
		select {
		case e := <-r.events:
			closed(e)
			return
		default:
		}
		cb.Write(chunk, false)
		written += len(chunk)
	}
	select {
	case e := <-r.events:
		closed(e)
	case <-time.After(30 * time.Second): // a guard against hanging, not a timing
		t.Fatalf("%d MiB written to an app that reads nothing and the connection is still open", written>>20)
	}
}

// Only loopback addresses are dialed: another would carry the proxy's
// traffic out of the pod without the mesh's mTLS.
func TestGoSocketRefusesNonLoopback(t *testing.T) {
	refused := metrics.GoSocketFailures.WithLabelValues("gosocket-test", "not_loopback")
	before := testutil.ToFloat64(refused)
	for _, addr := range []string{"10.0.0.7:20880", "[2001:db8::1]:20880", "0.0.0.0:20880", "localhost:20880"} {
		r := newRecorder(t)
		testGoDialer(1<<20).dial(addr, r)
		if f := r.waitFailure(); f != "LocalConnectionFailure: not a loopback address" {
			t.Errorf("%s: OnPoolFailure(%s), want LocalConnectionFailure: not a loopback address", addr, f)
		}
	}
	if got := testutil.ToFloat64(refused) - before; got != 4 {
		t.Errorf("breeze_upstream_go_socket_failures_total{reason=not_loopback} went up by %v, want 4", got)
	}
	// Loopback in both families is dialed (and refused by the OS here:
	// nothing listens on port 1).
	for _, addr := range []string{"127.0.0.1:1", "[::1]:1"} {
		r := newRecorder(t)
		testGoDialer(1<<20).dial(addr, r)
		if f := r.waitFailure(); f == "LocalConnectionFailure: not a loopback address" {
			t.Errorf("%s: refused as not loopback", addr)
		}
	}
}

// Nothing listening: RemoteConnectionFailure with the OS's reason, as Envoy
// reports it.
func TestGoSocketConnectRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := newRecorder(t)
	testGoDialer(1<<20).dial(addr, r)
	if f := r.waitFailure(); f != "RemoteConnectionFailure: connection refused" {
		t.Fatalf("dial to a closed port: OnPoolFailure(%s), want RemoteConnectionFailure: connection refused", f)
	}
}

// A panic in a callback the socket makes fails the connection (LocalClose
// to the filter) and never escapes the goroutine.
func TestGoSocketRecoversPanics(t *testing.T) {
	addr := app(t, func(c net.Conn) { _, _ = c.Write([]byte("boom")); _, _ = io.Copy(io.Discard, c) })
	r := &panicky{recorder: newRecorder(t)}
	testGoDialer(1<<20).dial(addr, r)
	r.waitReady()
	if e := r.waitEvent(); e != api.LocalClose {
		t.Fatalf("after a panic in OnData: event %v, want LocalClose", e)
	}
}

type panicky struct{ *recorder }

func (p *panicky) OnData([]byte, bool) { panic("decoder bug") }

// Writing through the Go socket allocates nothing once its two buffers
// have grown: the caller's bytes are copied into the queue the writer
// swaps with its own.
func BenchmarkGoSocketWrite(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
		}
	}()
	r := &recorder{ready: make(chan api.ConnectionCallback, 1), failure: make(chan string, 1),
		events: make(chan api.ConnectionEvent, 2), got: make(chan struct{}, 1)}
	testGoDialer(1<<20).dial(ln.Addr().String(), r)
	cb := <-r.ready
	frame := make([]byte, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for range b.N {
		cb.Write(frame, false)
	}
	b.StopTimer()
	cb.Close(api.NoFlush)
	<-r.events
}
