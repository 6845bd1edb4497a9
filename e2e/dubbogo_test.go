package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// These tests pin down how dubbo-go's client reacts to what a proxy may send
// it, against a hand-written fake provider: error statuses, a response with
// an id it never sent, a heartbeat from the server side. The proxy's error
// replies and heartbeat handling are designed from them.

// fakeProvider answers Dubbo frames by hand. Greet's argument picks the
// answer: "status-N" an error status N, "unknown-id" a response with an id
// the client never sent (then the right answer), anything else a normal
// Reply.
type fakeProvider struct {
	ln net.Listener

	mu    sync.Mutex
	conns []net.Conn
	// heartbeatReplies counts heartbeat replies the client sent back.
	heartbeatReplies int
	changed          chan struct{}
}

func startFakeProvider(t *testing.T) *fakeProvider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeProvider{ln: ln, changed: make(chan struct{})}
	go f.accept()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			c.Close()
		}
	})
	return f
}

func (f *fakeProvider) Addr() string { return f.ln.Addr().String() }

func (f *fakeProvider) signal() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeProvider) connCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

func (f *fakeProvider) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.signal()
		f.mu.Unlock()
		go f.serve(c)
	}
}

func (f *fakeProvider) serve(c net.Conn) {
	defer c.Close()
	var wmu sync.Mutex
	write := func(b []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		_, _ = c.Write(b)
	}
	for {
		h, raw, err := harness.ReadFrame(c)
		if err != nil {
			return
		}
		switch {
		case h.IsHeartbeat():
			write(heartbeatReply(h.ID))
			continue
		case h.IsHeartbeatReply():
			f.mu.Lock()
			f.heartbeatReplies++
			f.signal()
			f.mu.Unlock()
			continue
		}
		_, inv, err := harness.DecodeRequest(raw)
		if err != nil {
			return
		}
		arg := ""
		if len(inv.Args) > 0 {
			arg = fmt.Sprint(inv.Args[0])
		}
		switch {
		case strings.HasPrefix(arg, "status-"):
			n, _ := strconv.Atoi(strings.TrimPrefix(arg, "status-"))
			write(harness.ErrorResponse(h.ID, byte(n), fmt.Sprintf("breeze-e2e: status %d", n)))
		case arg == "unknown-id":
			write(harness.ValueResponse(h.ID+1_000_000, "stray"))
			write(harness.ValueResponse(h.ID, fakeReply(inv.Method, arg)))
		default:
			write(harness.ValueResponse(h.ID, fakeReply(inv.Method, arg)))
		}
	}
}

func heartbeatReply(id uint64) []byte {
	b := harness.HeartbeatRequest(id)
	b[2] = harness.FlagEvent | harness.SerialHessian2 // response, event
	b[3] = harness.StatusOK
	return b
}

func fakeReply(method, arg string) string {
	b, _ := json.Marshal(greeter.Reply{Provider: "fake", Method: method, Arg: arg})
	return string(b)
}

// TestDubboGoErrorStatuses: every non-20 status reaches the dubbo-go caller
// as an error carrying the body's text, at once, and the connection stays
// usable: a proxy can answer failures with an error status and keep the
// client's connection.
func TestDubboGoErrorStatuses(t *testing.T) {
	f := startFakeProvider(t)
	c := newClient(t, f.Addr(), harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if _, err := c.Greet(ctx, "hello", nil); err != nil {
		t.Fatal(err)
	}
	for _, status := range []int{30, 31, 40, 50, 60, 70, 80, 90, 100} {
		callCtx, callCancel := context.WithTimeout(ctx, 2*time.Second)
		start := time.Now()
		r, err := c.Greet(callCtx, "status-"+strconv.Itoa(status), nil)
		callCancel()
		var ce *harness.CallError
		if !errors.As(err, &ce) {
			t.Fatalf("status %d: got reply %+v, error %v; want a dubbo-go error", status, r, err)
		}
		if want := fmt.Sprintf("breeze-e2e: status %d", status); !strings.Contains(ce.Msg, want) {
			t.Errorf("status %d: error %q does not carry the body text %q", status, ce.Msg, want)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("status %d: error after %s, want it at once", status, el)
		}
		t.Logf("status %d -> dubbo-go error %q", status, ce.Msg)
		if r, err := c.Greet(ctx, "after-"+strconv.Itoa(status), nil); err != nil || r.Arg != "after-"+strconv.Itoa(status) {
			t.Fatalf("after status %d: %+v %v", status, r, err)
		}
	}
	if n := f.connCount(); n != 1 {
		t.Errorf("the client opened %d connections; error statuses should not break its connection", n)
	}
}

// TestDubboGoUnknownResponseID records what dubbo-go does with a response
// whose id it never sent: its decoder dereferences the missing pending call
// (protocol/dubbo/impl.ProtocolCodec.Decode), getty recovers the panic and
// closes the connection, failing every call in flight on it. A proxy must
// never let such a response through to a client.
func TestDubboGoUnknownResponseID(t *testing.T) {
	f := startFakeProvider(t)
	c := newClient(t, f.Addr(), harness.ClientSpec{Timeout: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Greet(ctx, "hello", nil); err != nil {
		t.Fatal(err)
	}
	_, err := c.Greet(ctx, "unknown-id", nil)
	var ce *harness.CallError
	if !errors.As(err, &ce) {
		t.Fatalf("after a stray response id: %v; want dubbo-go to fail the call (it drops the connection)", err)
	}
	// The call in flight is not failed when the connection drops: it waits
	// out its whole timeout.
	t.Logf("call in flight when the stray response id came: %v", err)
	// dubbo-go reconnects; later calls work again.
	deadline, dcancel := context.WithTimeout(ctx, 15*time.Second)
	defer dcancel()
	for {
		if _, err := c.Greet(deadline, "again", nil); err == nil {
			break
		} else if deadline.Err() != nil {
			t.Fatalf("no successful call after the stray id: %v", err)
		}
	}
	if f.connCount() < 2 {
		t.Errorf("the call failed but dubbo-go kept its connection (%d)", f.connCount())
	}
}

// TestDubboGoAnswersServerHeartbeats: a dubbo-go client answers heartbeat
// requests that come from the server side with a heartbeat reply of the same
// id, so a proxy may heartbeat its downstream connections.
func TestDubboGoAnswersServerHeartbeats(t *testing.T) {
	f := startFakeProvider(t)
	c := newClient(t, f.Addr(), harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Greet(ctx, "hello", nil); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	conn := f.conns[0]
	f.mu.Unlock()
	if _, err := conn.Write(harness.HeartbeatRequest(4242)); err != nil {
		t.Fatal(err)
	}
	for {
		f.mu.Lock()
		n, changed := f.heartbeatReplies, f.changed
		f.mu.Unlock()
		if n > 0 {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatal("the dubbo-go client did not answer a server heartbeat")
		}
	}
	if _, err := c.Greet(ctx, "after", nil); err != nil {
		t.Fatal(err)
	}
}

// TestDubboGoProviderFailures pins down what the test provider answers when
// told to fail a call, as seen on the wire by a tee: a plain error and a
// panic in the method both go out as an exception in a status-20 response
// (dubbo-go v3.3.0 never writes another status itself), and a StatusError
// with its own status (70, 80, 100), whose text reaches dubbo-go's caller.
// The connection survives every kind.
func TestDubboGoProviderFailures(t *testing.T) {
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "failing"})
	up := harness.StartTee(t, p.Addr)
	c := newClient(t, up.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	cases := []struct {
		pattern string
		status  byte
		want    byte // status on the wire
	}{
		{"X", 0, 20}, {"P", 0, 20}, {"E", 70, 70}, {"E", 80, 80}, {"E", 100, 100},
	}
	for _, tc := range cases {
		p.Fail(t, "Greet", tc.pattern, tc.status)
		arg := fmt.Sprintf("fail-%s-%d", tc.pattern, tc.status)
		r, err := c.Greet(ctx, arg, nil)
		var ce *harness.CallError
		if !errors.As(err, &ce) {
			t.Fatalf("pattern %q status %d: reply %+v, err %v; want a dubbo-go error", tc.pattern, tc.status, r, err)
		}
		var frames []harness.TeeFrame
		if err := up.WaitFor(ctx, "the response to "+arg, func(s harness.TeeState) bool {
			frames = s.Find(func(f harness.TeeFrame) bool {
				return f.Dir == harness.Down && !f.Header.IsEvent() && bytes.Contains(f.Raw, []byte(arg))
			})
			return len(frames) > 0
		}); err != nil {
			t.Fatal(err)
		}
		if got := frames[0].Header.Status; got != tc.want {
			t.Errorf("pattern %q status %d: the provider answered with status %d, want %d (%s)", tc.pattern, tc.status, got, tc.want, frames[0].Header)
		}
		t.Logf("pattern %q: status %d on the wire, dubbo-go error %q", tc.pattern, frames[0].Header.Status, ce.Msg)
	}
	p.Fail(t, "Greet", "", 0)
	if r, err := c.Greet(ctx, "healthy", nil); err != nil || r.Arg != "healthy" {
		t.Fatalf("after the failures: %+v %v", r, err)
	}
	if st := up.State(); st.Conns != 1 {
		t.Errorf("the client used %d connections; a failure broke one", st.Conns)
	}
	s := p.MustStats(t)
	if s.Executions["Greet"] != len(cases)+1 {
		t.Errorf("the provider counted %d executions of Greet, want %d: %v", s.Executions["Greet"], len(cases)+1, s.Args)
	}
}

// TestDubboGoProviderGate: calls of a gated method wait in the provider,
// counted, until the test releases them; other methods run meanwhile.
func TestDubboGoProviderGate(t *testing.T) {
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "gated"})
	c := newClient(t, p.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	p.Gate(t, "Greet")
	const n = 8
	calls := make(chan []callResult, 1)
	go func() { calls <- runCalls(ctx, c, n, n, greets("held", nil)) }()
	if _, err := p.WaitStats(ctx, fmt.Sprintf("%d calls held", n), func(s harness.ProviderStats) bool { return s.Held == n }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Whoami(ctx, nil); err != nil {
		t.Fatalf("Whoami while Greet is gated: %v", err)
	}
	select {
	case outs := <-calls:
		t.Fatalf("the gated calls ended before the release: %v", outs)
	default:
	}
	p.Release(t, "Greet")
	count := harness.Served(t, <-calls)
	s := p.MustStats(t)
	if count["gated"] != n || s.Held != 0 || s.Executions["Greet"] != n || len(s.Args["Greet"]) != n {
		t.Errorf("after the release: %v served, stats %+v; want %d calls, each run once, none held", count, s, n)
	}
	t.Logf("%d calls held, then released: executions %v", n, s.Executions)

	// GateFirst holds only the next few calls; the others run.
	p.GateFirst(t, "Greet", 3)
	go func() { calls <- runCalls(ctx, c, 6, 6, greets("first", nil)) }()
	s, err := p.WaitStats(ctx, "3 calls held and 3 more executed", func(s harness.ProviderStats) bool {
		return s.Held == 3 && s.Executions["Greet"] == n+6
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.HeldArgs["Greet"]) != 3 {
		t.Errorf("held arguments %v, want 3", s.HeldArgs)
	}
	p.Release(t, "Greet")
	if count := harness.Served(t, <-calls); count["gated"] != 6 {
		t.Errorf("GateFirst: %v served, want 6 calls", count)
	}
}
