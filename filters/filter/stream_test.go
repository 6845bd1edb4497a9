package filter

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
)

// fakeConn is a connection as the proxy implements it: a mutex for the
// codec, resumes on their own goroutine.
type fakeConn struct {
	mu      sync.Mutex
	replies atomic.Int32
	written atomic.Int32
	done    chan *Stream
	panics  atomic.Int32
	closed  atomic.Bool
}

func newFakeConn() *fakeConn { return &fakeConn{done: make(chan *Stream, 100)} }

func (c *fakeConn) LocalReply(s *Stream, kind codecs.ErrorKind, detail string, locked bool) {
	if !locked {
		c.mu.Lock()
		defer c.mu.Unlock()
	}
	c.replies.Add(1)
}
func (c *fakeConn) Write([]byte) { c.written.Add(1) }
func (c *fakeConn) Resume(s *Stream) {
	go func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed.Load() {
			s.Finish(ClientGone)
			return
		}
		s.Continue()
	}()
}
func (c *fakeConn) Done(s *Stream)                        { c.done <- s }
func (c *fakeConn) Panicked(*Stream, string, any, []byte) { c.panics.Add(1) }

// funcFilter runs a function as OnRequest and counts its callbacks.
type funcFilter struct {
	onRequest func(s *Stream) Status
	requests  atomic.Int32
	responses atomic.Int32
	dones     atomic.Int32
}

func (f *funcFilter) OnRequest(s *Stream) Status {
	f.requests.Add(1)
	if f.onRequest == nil {
		return Continue
	}
	return f.onRequest(s)
}
func (f *funcFilter) OnResponse(*Stream) { f.responses.Add(1) }
func (f *funcFilter) OnDone(*Stream)     { f.dones.Add(1) }

// terminal finishes every request it gets with a relayed "response".
type terminal struct {
	Base
	reached atomic.Int32
}

func (t *terminal) OnRequest(s *Stream) Status {
	t.reached.Add(1)
	resp := &codecs.Message{Type: codecs.Response, Status: codecs.StatusError, Code: 31, Frame: []byte("resp")}
	s.Respond(resp, echoCodec{})
	return Stop
}

type echoCodec struct{}

func (echoCodec) Decode([]byte, *codecs.Message) (int, error)                 { return 0, nil }
func (echoCodec) Encode(m *codecs.Message) ([]byte, error)                    { return m.Frame, nil }
func (echoCodec) LocalReply(*codecs.Message, codecs.ErrorKind, string) []byte { return []byte("err") }
func (echoCodec) HeartbeatReply(*codecs.Message) []byte                       { return nil }

func start(t *testing.T, conn *fakeConn, filters ...Filter) (*Stream, *terminal) {
	t.Helper()
	term := &terminal{}
	c := &Chain{}
	for i, f := range append(filters, term) {
		c.Filters = append(c.Filters, f)
		c.Names = append(c.Names, string(rune('a'+i)))
	}
	s := &Stream{}
	frame := []byte("request frame")
	s.Init(c, conn, &codecs.Message{Type: codecs.Request, ID: 7, Frame: frame,
		Metadata: codecs.Metadata{{Key: "method", Value: "A"}}}, time.Now())
	conn.mu.Lock()
	s.Run()
	conn.mu.Unlock()
	// The proxy reuses its read buffer: a paused request must not see it.
	copy(frame, "XXXXXXXXXXXXX")
	return s, term
}

func waitDone(t *testing.T, conn *fakeConn) *Stream {
	t.Helper()
	select {
	case s := <-conn.done:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("the stream never finished")
		return nil
	}
}

// A filter pauses and resumes from another goroutine: the rest of the
// chain runs, with the request's own copy of its frame.
func TestPauseResumeFromAnotherGoroutine(t *testing.T) {
	conn := newFakeConn()
	gate := make(chan struct{})
	var frameSeen atomic.Value
	pauser := &funcFilter{onRequest: func(s *Stream) Status {
		go func() { <-gate; s.Resume() }()
		return Pause
	}}
	after := &funcFilter{onRequest: func(s *Stream) Status {
		frameSeen.Store(string(s.Request.Frame))
		return Continue
	}}
	s, term := start(t, conn, pauser, after)
	if after.requests.Load() != 0 || term.reached.Load() != 0 {
		t.Fatal("the chain went on past a paused filter")
	}
	if s.Done() {
		t.Fatal("paused stream finished")
	}
	close(gate)
	waitDone(t, conn)
	if got := frameSeen.Load(); got != "request frame" {
		t.Fatalf("resumed filter saw frame %q", got)
	}
	if term.reached.Load() != 1 || !s.Outcome.Responded || conn.written.Load() != 1 {
		t.Fatalf("terminal reached %d times, outcome %+v", term.reached.Load(), s.Outcome)
	}
	for _, f := range []*funcFilter{pauser, after} {
		if f.dones.Load() != 1 || f.responses.Load() != 1 {
			t.Fatalf("OnDone %d OnResponse %d, want 1 each", f.dones.Load(), f.responses.Load())
		}
	}
}

// Resume racing with the walk that is still inside OnRequest: whichever
// way the race goes, the chain continues exactly once.
func TestResumeRacesWithPause(t *testing.T) {
	for range 200 {
		conn := newFakeConn()
		pauser := &funcFilter{onRequest: func(s *Stream) Status {
			go s.Resume()
			return Pause
		}}
		_, term := start(t, conn, pauser)
		s := waitDone(t, conn)
		if term.reached.Load() != 1 || !s.Outcome.Responded || pauser.dones.Load() != 1 {
			t.Fatalf("terminal reached %d, outcome %+v, OnDone %d", term.reached.Load(), s.Outcome, pauser.dones.Load())
		}
	}
}

// Resume called inside OnRequest itself behaves as Continue.
func TestResumeInsideOnRequest(t *testing.T) {
	conn := newFakeConn()
	f := &funcFilter{onRequest: func(s *Stream) Status { s.Resume(); return Pause }}
	_, term := start(t, conn, f)
	waitDone(t, conn)
	if term.reached.Load() != 1 {
		t.Fatal("terminal not reached")
	}
}

// Reply, inline or from another goroutine while paused, answers with the
// codec's error reply; the chain stops there and OnDone still runs on
// every filter, also those never reached.
func TestReply(t *testing.T) {
	for _, async := range []bool{false, true} {
		conn := newFakeConn()
		f := &funcFilter{onRequest: func(s *Stream) Status {
			if async {
				go s.Reply(codecs.ErrOverloaded, "limited", RateLimited)
				return Pause
			}
			s.Reply(codecs.ErrOverloaded, "limited", RateLimited)
			return Stop
		}}
		later := &funcFilter{}
		_, term := start(t, conn, f, later)
		s := waitDone(t, conn)
		if s.Outcome.LocalReply != codecs.ErrOverloaded || s.Outcome.Flags != RateLimited || conn.replies.Load() != 1 {
			t.Fatalf("async=%v: outcome %+v, %d replies", async, s.Outcome, conn.replies.Load())
		}
		if later.requests.Load() != 0 || term.reached.Load() != 0 || later.dones.Load() != 1 || later.responses.Load() != 0 {
			t.Fatalf("async=%v: a filter after the reply ran (requests %d, terminal %d, OnDone %d)", async, later.requests.Load(), term.reached.Load(), later.dones.Load())
		}
	}
}

// Flags a filter adds to a request it lets go on end up in the outcome,
// with the upstream's response (a delay that was injected: DI), with a
// reply, and when the client went away first.
func TestAddFlags(t *testing.T) {
	for _, how := range []string{"responded", "replied", "client gone"} {
		conn := newFakeConn()
		f := &funcFilter{onRequest: func(s *Stream) Status {
			s.AddFlags(DelayInjected)
			switch how {
			case "replied":
				s.Reply(codecs.ErrOverloaded, "fault", FaultInjected)
				return Stop
			case "client gone":
				conn.closed.Store(true)
				go s.Resume()
				return Pause
			}
			return Continue
		}}
		start(t, conn, f)
		s := waitDone(t, conn)
		want := map[string]Flag{"responded": DelayInjected, "replied": DelayInjected | FaultInjected,
			"client gone": DelayInjected | DownstreamConnectionTermination}[how]
		if s.Outcome.Flags != want {
			t.Errorf("%s: flags %v, want %v (outcome %+v)", how, s.Outcome.Flags, want, s.Outcome)
		}
	}
}

// A filter that stops without answering is a bug: the client gets an
// internal error rather than waiting forever.
func TestStopWithoutReplyIsAnswered(t *testing.T) {
	conn := newFakeConn()
	_, _ = start(t, conn, &funcFilter{onRequest: func(*Stream) Status { return Stop }})
	s := waitDone(t, conn)
	if s.Outcome.LocalReply != codecs.ErrInternal || s.Outcome.Flags != InternalError || conn.replies.Load() != 1 {
		t.Fatalf("outcome %+v", s.Outcome)
	}
}

// A panicking filter: reported, the request answered, OnDone once.
func TestPanicInOnRequest(t *testing.T) {
	conn := newFakeConn()
	f := &funcFilter{onRequest: func(*Stream) Status { panic("boom") }}
	start(t, conn, f)
	s := waitDone(t, conn)
	if conn.panics.Load() != 1 || s.Outcome.Flags != InternalError || conn.replies.Load() != 1 || f.dones.Load() != 1 {
		t.Fatalf("panics %d, outcome %+v, OnDone %d", conn.panics.Load(), s.Outcome, f.dones.Load())
	}
}

// Abort finishes a paused stream (its client left); a Resume after that
// does nothing.
func TestAbortPaused(t *testing.T) {
	conn := newFakeConn()
	f := &funcFilter{onRequest: func(*Stream) Status { return Pause }}
	s, term := start(t, conn, f)
	if !s.Abort() {
		t.Fatal("Abort of a paused stream reported false")
	}
	waitDone(t, conn)
	s.Resume()
	s.Reply(codecs.ErrInternal, "late", 0)
	if s.Outcome.Flags != DownstreamConnectionTermination || term.reached.Load() != 0 || f.dones.Load() != 1 {
		t.Fatalf("outcome %+v, terminal %d, OnDone %d", s.Outcome, term.reached.Load(), f.dones.Load())
	}
	if s.Abort() {
		t.Fatal("second Abort reported true")
	}
}

// Many parties finishing the same stream at once: OnDone runs once.
func TestFinishOnce(t *testing.T) {
	conn := newFakeConn()
	f := &funcFilter{onRequest: func(*Stream) Status { return Pause }}
	s, _ := start(t, conn, f)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch i % 3 {
			case 0:
				s.Finish(Outcome{Sent: true})
			case 1:
				s.ReplyAndFinish(codecs.ErrTimeout, "", UpstreamRequestTimeout, false)
			default:
				s.Abort()
			}
		}()
	}
	wg.Wait()
	waitDone(t, conn)
	if f.dones.Load() != 1 || len(conn.done) != 0 {
		t.Fatalf("OnDone ran %d times", f.dones.Load())
	}
}

func TestFlagString(t *testing.T) {
	for f, want := range map[Flag]string{0: "-", NoRoute: "NR", UpstreamConnectionFailure | UpstreamRetryLimitExceeded: "UF,URX", UnauthorizedExternalService: "UAEX"} {
		if got := f.String(); got != want {
			t.Errorf("%d: %q, want %q", f, got, want)
		}
	}
}

type panickyCodec struct{ echoCodec }

func (panickyCodec) Encode(*codecs.Message) ([]byte, error) { panic("codec bug") }

// A codec that panics encoding the response: the client gets an internal
// error reply and every filter its OnDone before the panic goes on to the
// caller (the upstream connection, whose codec it is).
func TestRespondEncodePanicAnswersFirst(t *testing.T) {
	conn := newFakeConn()
	f := &funcFilter{onRequest: func(s *Stream) Status { return Pause }}
	s, _ := start(t, conn, f)
	var panicked any
	func() {
		defer func() { panicked = recover() }()
		s.Respond(&codecs.Message{Type: codecs.Response, Frame: []byte("resp")}, panickyCodec{})
	}()
	if panicked == nil {
		t.Fatal("the codec's panic did not reach the caller")
	}
	if conn.replies.Load() != 1 || conn.written.Load() != 0 {
		t.Fatalf("%d local replies, %d writes; want the internal-error reply only", conn.replies.Load(), conn.written.Load())
	}
	if waitDone(t, conn); f.dones.Load() != 1 || s.Outcome.LocalReply != codecs.ErrInternal || s.Outcome.Flags != InternalError {
		t.Fatalf("OnDone %d times, outcome %+v", f.dones.Load(), s.Outcome)
	}
}

// Fail ends a paused stream with the internal-error reply; its filter's
// later Resume walks nothing.
func TestFailPaused(t *testing.T) {
	conn := newFakeConn()
	f := &funcFilter{onRequest: func(s *Stream) Status { return Pause }}
	s, term := start(t, conn, f)
	conn.mu.Lock()
	s.Fail("connection failed")
	conn.mu.Unlock()
	waitDone(t, conn)
	if conn.replies.Load() != 1 || s.Outcome.LocalReply != codecs.ErrInternal || s.Outcome.Flags != InternalError {
		t.Fatalf("%d replies, outcome %+v", conn.replies.Load(), s.Outcome)
	}
	s.Resume()
	s.Reply(codecs.ErrOverloaded, "late", RateLimited)
	if term.reached.Load() != 0 || conn.replies.Load() != 1 || f.dones.Load() != 1 {
		t.Fatalf("after Fail: terminal reached %d times, %d replies, OnDone %d times", term.reached.Load(), conn.replies.Load(), f.dones.Load())
	}
}

// The outcome of a relayed response carries its status and code, and
// BytesOut what was written.
func TestRespondOutcome(t *testing.T) {
	conn := newFakeConn()
	s, _ := start(t, conn)
	if o := s.Outcome; !o.Responded || o.Status != codecs.StatusError || o.Code != 31 || s.BytesOut != len("resp") {
		t.Errorf("outcome %+v, %d bytes out; want responded, status error, code 31, 4 bytes", o, s.BytesOut)
	}
}

// Removals a filter appends live in the stream: up to two without an
// allocation of their own.
func TestRemovalsInline(t *testing.T) {
	s := &Stream{}
	m := &codecs.Message{Type: codecs.Request, Frame: []byte("f")}
	c := &Chain{}
	allocs := testing.AllocsPerRun(100, func() {
		s.Init(c, nil, m, time.Time{})
		s.Request.Removals = append(s.Request.Removals, "x-a", "x-b")
	})
	if allocs != 0 || len(s.Request.Removals) != 2 {
		t.Errorf("%v allocations per request, removals %v; want 0 and [x-a x-b]", allocs, s.Request.Removals)
	}
}
