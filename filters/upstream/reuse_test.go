package upstream

import (
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
)

// recordingConn counts what is written to an upstream connection.
type recordingConn struct {
	fakeConn
	writes *[]string
}

func (c recordingConn) Write(b []byte, _ bool) { *c.writes = append(*c.writes, string(b)) }

// The proxy recycles a finished request's state (the Request inside the
// router's Call) for the next request of its connection. A request that
// timed out (or was cancelled) while its connection was still opening
// keeps its place in the connection's queue until the queue is flushed;
// the same Request, sent again meanwhile for a new request on the same
// connection, must be written once when the connection opens, with the
// new request's bytes, and fail once if it never opens.
func TestRecycledRequestInQueue(t *testing.T) {
	resend := func(t *testing.T, w *waitBench) *Request {
		t.Helper()
		r := &Request{Handler: &w.handler, Timeout: time.Hour}
		if _, err := w.m.Send(w.target, r, &codecs.Message{Type: codecs.Request, ID: 7, Frame: []byte("first")}, silentCodec{}); err != nil {
			t.Fatal(err)
		}
		// Its client gave up (a timeout does the same: out of pending,
		// still in the queue).
		if !w.m.Cancel(r) {
			t.Fatal("the queued request was not found waiting")
		}
		if _, err := w.m.Send(w.target, r, &codecs.Message{Type: codecs.Request, ID: 8, Frame: []byte("second")}, silentCodec{}); err != nil {
			t.Fatal(err)
		}
		return r
	}
	t.Run("the connection opens", func(t *testing.T) {
		w := newWaitBench(t, "upstream-recycled-open", 10)
		resend(t, w)
		var writes []string
		w.uc.OnPoolReady(recordingConn{writes: &writes})
		if len(writes) != 1 || writes[0] != "second" {
			t.Fatalf("written on open: %q, want [\"second\"] once", writes)
		}
		w.expectPending(t, "flushed", 0)
	})
	t.Run("the connection fails", func(t *testing.T) {
		w := newWaitBench(t, "upstream-recycled-fail", 10)
		resend(t, w)
		w.uc.OnPoolFailure(0, "refused")
		if got := w.handler.failures.Load(); got != 1 {
			t.Fatalf("the recycled request failed %d times, want once", got)
		}
		w.expectPending(t, "failed", 0)
	})
}
