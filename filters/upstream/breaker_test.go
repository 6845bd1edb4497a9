package upstream

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/metrics"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// countingHandler counts the outcomes its requests get.
type countingHandler struct{ responses, failures, sent atomic.Int64 }

func (h *countingHandler) OnResponse(*Request, *codecs.Message, codecs.Codec) { h.responses.Add(1) }
func (h *countingHandler) OnFailure(*Request, Failure)                        { h.failures.Add(1) }
func (h *countingHandler) OnSent(*Request)                                    { h.sent.Add(1) }

func (h *countingHandler) calls() int64 {
	return h.responses.Load() + h.failures.Load() + h.sent.Load()
}

type failingEncoder struct{ silentCodec }

func (failingEncoder) Encode(*codecs.Message) ([]byte, error) {
	return nil, errors.New("cannot encode")
}

// waitBench is a manager with one pool, to a cluster whose circuit breaker
// lets maxPending requests wait for a connection (and so does its subset
// version=v1, apart), and that pool's one connection, still opening.
type waitBench struct {
	m       *Manager
	uc      *conn
	target  Target
	breaker *cluster.Breaker
	subset  *cluster.Breaker
	handler countingHandler
	proxy   string
}

func newWaitBench(t *testing.T, proxy string, maxPending uint32) *waitBench {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	v1 := map[string]string{"version": "v1"}
	cb := &breezev1.CircuitBreakers{MaxPendingRequests: maxPending}
	cl, err := cluster.New(&breezev1.Cluster{Name: "c", CircuitBreakers: cb,
		Subsets:   []*breezev1.ClusterSubset{{Name: "v1", Labels: v1, CircuitBreakers: cb}},
		Endpoints: []*breezev1.Endpoint{{Address: "10.0.0.1", Port: 20880, Labels: v1}},
	}, cluster.Options{Proxy: proxy, Log: log, Subsets: map[string]map[string]string{cluster.SubsetKey(v1): v1}})
	if err != nil {
		t.Fatal(err)
	}
	ep := cl.Endpoints()[0]
	m := New(Options{Proxy: proxy, Log: log})
	pl := &pool{m: m, ep: ep, cluster: cl, metrics: metrics.NewCluster(proxy, "c")}
	m.pools[poolKey{ep: ep}] = pl
	w := &waitBench{m: m, uc: opening(pl), proxy: proxy, breaker: cl.Set("").Breaker(), subset: cl.Set(cluster.SubsetKey(v1)).Breaker()}
	w.target = Target{Endpoint: ep, Cluster: cl, Metrics: pl.metrics, Breaker: w.breaker}
	t.Cleanup(func() {
		// Stops the requests' deadline timer.
		w.uc.closeByUs()
		w.uc.OnEvent(api.LocalClose)
	})
	return w
}

func (w *waitBench) send(oneway bool) (*Request, error) {
	r := &Request{Handler: &w.handler, Timeout: time.Hour, Oneway: oneway}
	typ := codecs.Request
	if oneway {
		typ = codecs.Oneway
	}
	_, err := w.m.Send(w.target, r, &codecs.Message{Type: typ, ID: 7, Frame: []byte("frame")}, silentCodec{})
	return r, err
}

// sendN sends n requests and fails unless each is queued.
func (w *waitBench) sendN(t *testing.T, n int, oneway bool) []*Request {
	t.Helper()
	var rs []*Request
	for i := range n {
		r, err := w.send(oneway)
		if err != nil {
			t.Fatalf("request %d of %d: %v", i+1, n, err)
		}
		rs = append(rs, r)
	}
	return rs
}

func (w *waitBench) pending() int64 {
	_, p, _ := w.breaker.Counts()
	return p
}

func (w *waitBench) expectPending(t *testing.T, what string, want int64) {
	t.Helper()
	if got := w.pending(); got != want {
		t.Fatalf("%s: the breaker counts %d requests waiting, want %d", what, got, want)
	}
}

// max_pending_requests requests may wait for a connection to open; the
// next is refused with ErrOverflow, not sent, its handler not called, and
// counted. Every wait ends exactly once, however the queue ends.
func TestPendingRequestsLimit(t *testing.T) {
	t.Run("the next is refused", func(t *testing.T) {
		w := newWaitBench(t, "upstream-pending-refused", 2)
		w.sendN(t, 2, false)
		if _, err := w.send(false); !errors.Is(err, ErrOverflow) {
			t.Fatalf("third request with 2 waiting at max_pending_requests 2: %v, want ErrOverflow", err)
		}
		if _, err := w.send(true); !errors.Is(err, ErrOverflow) {
			t.Fatalf("a oneway with 2 waiting at max_pending_requests 2: %v, want ErrOverflow", err)
		}
		overflows := testutil.ToFloat64(metrics.CircuitBreakerOverflows.WithLabelValues(w.proxy, "c", "max_pending_requests"))
		if len(w.uc.queue) != 2 || w.handler.calls() != 0 || overflows != 2 || w.target.Endpoint.Inflight() != 2 {
			t.Fatalf("after 2 refusals: %d queued, %d handler calls, %v overflows counted, %d in flight; want 2, 0, 2, 2",
				len(w.uc.queue), w.handler.calls(), overflows, w.target.Endpoint.Inflight())
		}
		w.expectPending(t, "2 queued, 2 refused", 2)
	})
	t.Run("the connection opens", func(t *testing.T) {
		w := newWaitBench(t, "upstream-pending-open", 3)
		w.sendN(t, 2, false)
		w.sendN(t, 1, true)
		w.uc.OnPoolReady(fakeConn{})
		w.expectPending(t, "3 flushed", 0)
		// On an open connection nothing waits.
		w.sendN(t, 5, false)
		w.expectPending(t, "5 sent on an open connection", 0)
	})
	t.Run("the connection fails to open", func(t *testing.T) {
		w := newWaitBench(t, "upstream-pending-failure", 3)
		w.sendN(t, 2, false)
		w.sendN(t, 1, true)
		w.uc.OnPoolFailure(api.RemoteConnectionFailure, "connection refused")
		if w.handler.failures.Load() != 3 {
			t.Fatalf("connect failure: %d requests failed, want 3", w.handler.failures.Load())
		}
		w.expectPending(t, "connect failed", 0)
	})
	t.Run("the connection fails while opening", func(t *testing.T) {
		w := newWaitBench(t, "upstream-pending-fail", 3)
		w.sendN(t, 2, false)
		w.sendN(t, 1, true)
		w.uc.fail() // what a recovered panic does
		w.expectPending(t, "failed while opening", 0)
		w.uc.OnPoolReady(fakeConn{}) // Envoy's connection opens after all
		w.expectPending(t, "failed, then opened", 0)
	})
	t.Run("a cancelled request waits until the flush", func(t *testing.T) {
		w := newWaitBench(t, "upstream-pending-cancel", 2)
		rs := w.sendN(t, 2, false)
		if !w.m.Cancel(rs[0]) {
			t.Fatal("Cancel of a waiting request: false")
		}
		w.expectPending(t, "one of 2 cancelled", 2)
		w.uc.OnPoolReady(fakeConn{})
		w.expectPending(t, "one cancelled, then flushed", 0)
	})
	t.Run("a request that cannot be encoded", func(t *testing.T) {
		w := newWaitBench(t, "upstream-pending-encode", 2)
		r := &Request{Handler: &w.handler, Timeout: time.Hour}
		if _, err := w.m.Send(w.target, r, &codecs.Message{Type: codecs.Request, Frame: []byte("x")}, failingEncoder{}); err == nil || errors.Is(err, ErrOverflow) {
			t.Fatalf("Send with a failing encoder: %v, want its error", err)
		}
		w.expectPending(t, "encoding failed", 0)
	})
	t.Run("requests of two breakers on one connection", func(t *testing.T) {
		w := newWaitBench(t, "upstream-pending-two", 3)
		for _, b := range []*cluster.Breaker{w.breaker, w.breaker, w.subset, w.breaker, w.subset, w.subset} {
			w.target.Breaker = b
			w.sendN(t, 1, false)
		}
		if _, p, _ := w.subset.Counts(); p != 3 || w.pending() != 3 {
			t.Fatalf("3 requests waiting on each breaker: the cluster's counts %d, the subset's %d", w.pending(), p)
		}
		w.uc.OnPoolReady(fakeConn{})
		if _, p, _ := w.subset.Counts(); p != 0 || w.pending() != 0 {
			t.Fatalf("flushed: the cluster's breaker counts %d waiting, the subset's %d", w.pending(), p)
		}
	})
	t.Run("no breaker", func(t *testing.T) {
		w := newWaitBench(t, "upstream-pending-none", 1)
		w.target.Breaker = nil
		w.sendN(t, 10, false)
	})
	t.Run("concurrent senders", func(t *testing.T) {
		w := newWaitBench(t, "upstream-pending-concurrent", 50)
		var queued, refused atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 20 {
					_, err := w.send(false)
					switch {
					case err == nil:
						queued.Add(1)
					case errors.Is(err, ErrOverflow):
						refused.Add(1)
					default:
						t.Errorf("Send: %v", err)
					}
				}
			})
		}
		wg.Wait()
		if queued.Load() != 50 || refused.Load() != 110 {
			t.Fatalf("160 concurrent sends at max_pending_requests 50: %d queued, %d refused", queued.Load(), refused.Load())
		}
		w.uc.OnPoolReady(fakeConn{})
		w.expectPending(t, "50 flushed", 0)
	})
}
