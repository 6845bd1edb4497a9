package upstream

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// fakeConn stands for Envoy's side of an upstream connection.
type fakeConn struct{}

func (fakeConn) StreamInfo() api.StreamInfo    { return nil }
func (fakeConn) Write([]byte, bool)            {}
func (fakeConn) Close(api.ConnectionCloseType) {}
func (fakeConn) EnableHalfClose(bool)          {}

// silentCodec decodes nothing and cannot heartbeat: these tests drive the
// connection's callbacks directly, and no keep-alive timer runs.
type silentCodec struct{}

func (silentCodec) Decode([]byte, *codecs.Message) (int, error)                 { return 0, nil }
func (silentCodec) Encode(m *codecs.Message) ([]byte, error)                    { return m.Frame, nil }
func (silentCodec) LocalReply(*codecs.Message, codecs.ErrorKind, string) []byte { return nil }
func (silentCodec) HeartbeatReply(*codecs.Message) []byte                       { return nil }

type nopHandler struct{}

func (nopHandler) OnResponse(*Request, *codecs.Message, codecs.Codec) {}
func (nopHandler) OnFailure(*Request, Failure)                        {}
func (nopHandler) OnSent(*Request)                                    {}

func testPool() *pool {
	m := New(Options{Proxy: "upstream-test", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return &pool{m: m, ep: &cluster.Endpoint{Addr: "10.0.0.1:20880"}, cluster: &cluster.Cluster{Name: "c"},
		metrics: metrics.NewCluster("upstream-test", "c")}
}

// open makes a connection of pl that Envoy reports open.
func open(pl *pool) *conn {
	uc := &conn{pool: pl, codec: silentCodec{}, pending: map[uint64]*Request{}}
	pl.mu.Lock()
	pl.conns = append(pl.conns, uc)
	pl.mu.Unlock()
	uc.OnPoolReady(fakeConn{})
	return uc
}

// closedAfter: the endpoint closes uc after it was silent for silence
// (back-dated rather than waited for).
func closedAfter(uc *conn, silence time.Duration) {
	uc.lastActive.Store(time.Now().Add(-silence).UnixNano())
	uc.OnEvent(api.RemoteClose)
}

// Which closes teach the pool an idle timeout, and which make it forget
// one, as the connection's callbacks see them.
func TestIdleCloses(t *testing.T) {
	def := time.Duration(Keepalive.Load())
	learn := func(t *testing.T, pl *pool) {
		t.Helper()
		closedAfter(open(pl), 5*time.Second)
		closedAfter(open(pl), 5*time.Second)
		// Half the silence measured (5s and the moment of the test).
		if got := pl.keepaliveEvery(); got < 2500*time.Millisecond || got > 3*time.Second {
			t.Fatalf("after two idle closes at 5s: keep-alive %v, want about 2.5s", got)
		}
	}
	t.Run("one close is no evidence", func(t *testing.T) {
		pl := testPool()
		closedAfter(open(pl), 5*time.Second)
		if got := pl.keepaliveEvery(); got != def {
			t.Fatalf("after a single close at 5s: keep-alive %v, want %v", got, def)
		}
	})
	t.Run("a provider closing after each reply", func(t *testing.T) {
		pl := testPool()
		for range 5 {
			closedAfter(open(pl), time.Millisecond)
		}
		if got := pl.keepaliveEvery(); got != def {
			t.Fatalf("after closes 1ms after each reply: keep-alive %v, want %v", got, def)
		}
	})
	t.Run("two idle closes at the same silence", func(t *testing.T) { learn(t, testPool()) })
	t.Run("connections closed together are one observation", func(t *testing.T) {
		pl := testPool()
		a, b := open(pl), open(pl)
		closedAfter(a, 5*time.Second)
		closedAfter(b, 5*time.Second)
		if got := pl.keepaliveEvery(); got != def {
			t.Fatalf("after two connections closed at once: keep-alive %v, want %v", got, def)
		}
	})
	t.Run("goaway forgets", func(t *testing.T) {
		pl := testPool()
		learn(t, pl)
		open(pl).handle(&codecs.Message{Type: codecs.GoAway})
		if got := pl.keepaliveEvery(); got != def {
			t.Fatalf("after a goaway: keep-alive %v, want %v", got, def)
		}
	})
	t.Run("a connect failure forgets", func(t *testing.T) {
		pl := testPool()
		learn(t, pl)
		uc := &conn{pool: pl, codec: silentCodec{}, pending: map[uint64]*Request{}}
		uc.OnPoolFailure(api.RemoteConnectionFailure, "refused")
		if got := pl.keepaliveEvery(); got != def {
			t.Fatalf("after a connect failure: keep-alive %v, want %v", got, def)
		}
	})
	t.Run("a close with requests in flight forgets", func(t *testing.T) {
		pl := testPool()
		learn(t, pl)
		uc := open(pl)
		r := &Request{Handler: nopHandler{}, Endpoint: pl.ep, id: 1, heapIdx: -1}
		uc.pending[1] = r
		closedAfter(uc, time.Millisecond)
		if got := pl.keepaliveEvery(); got != def {
			t.Fatalf("after a crash with a request in flight: keep-alive %v, want %v", got, def)
		}
	})
	t.Run("a crash after learning forgets", func(t *testing.T) {
		pl := testPool()
		learn(t, pl)
		closedAfter(open(pl), time.Millisecond)
		if got := pl.keepaliveEvery(); got != def {
			t.Fatalf("after the endpoint closed a connection heartbeated within its limit: keep-alive %v, want %v", got, def)
		}
	})
	t.Run("closes by the proxy teach nothing", func(t *testing.T) {
		pl := testPool()
		for range 3 {
			uc := open(pl)
			uc.closeByUs()
			uc.lastActive.Store(time.Now().Add(-5 * time.Second).UnixNano())
			uc.OnEvent(api.LocalClose)
		}
		if got := pl.keepaliveEvery(); got != def {
			t.Fatalf("after closing our own connections: keep-alive %v, want %v", got, def)
		}
	})
}
