package upstream

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// logBuffer keeps the lines of a test's pool, without their time.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(b.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// loggedPool is testPool logging at level, as a proxy does (its lines
// carry proxy=).
func loggedPool(level slog.Level) (*pool, *logBuffer) {
	buf := &logBuffer{}
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: level, ReplaceAttr: noTime})).With("proxy", "upstream-test")
	m := New(Options{Proxy: "upstream-test", Log: log})
	return &pool{m: m, ep: &cluster.Endpoint{Addr: "10.0.0.1:20880"}, cluster: &cluster.Cluster{Name: "c"},
		metrics: metrics.NewCluster("upstream-test", "c")}, buf
}

// opening makes a connection of pl that Envoy is still opening.
func opening(pl *pool) *conn {
	uc := &conn{pool: pl, codec: silentCodec{}, pending: map[uint64]*Request{}}
	pl.mu.Lock()
	pl.conns = append(pl.conns, uc)
	pl.mu.Unlock()
	return uc
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s: log lines\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A dead provider is one line when it goes (with the OS error, and for
// how long it is ejected), one when it is back: not a line per connect
// attempt, of which a dead provider gets three per request.
func TestEndpointOutageIsOneLineEachWay(t *testing.T) {
	pl, log := loggedPool(slog.LevelInfo)
	for range 50 {
		opening(pl).OnPoolFailure(api.RemoteConnectionFailure, "connection refused")
	}
	sameLines(t, "50 refused connects", log.lines(), []string{
		`level=WARN msg="upstream endpoint ejected" proxy=upstream-test cluster=c endpoint=10.0.0.1:20880 reason=remote_connection_failure err="connection refused" ejected_for=100ms`,
	})
	open(pl)
	open(pl)
	sameLines(t, "then two connections open", log.lines()[1:], []string{
		`level=INFO msg="upstream endpoint back" proxy=upstream-test cluster=c endpoint=10.0.0.1:20880 failures=50`,
	})
}

// Inside Envoy the plugin is not told why a connect failed: the line
// says what it knows.
func TestEndpointEjectedWithoutOSError(t *testing.T) {
	pl, log := loggedPool(slog.LevelInfo)
	opening(pl).OnPoolFailure(api.Timeout, "")
	sameLines(t, "a connect timeout", log.lines(), []string{
		`level=WARN msg="upstream endpoint ejected" proxy=upstream-test cluster=c endpoint=10.0.0.1:20880 reason=connect_timeout ejected_for=100ms`,
	})
}

// A connection that closes with requests in flight ejects its endpoint:
// the same line, with that reason.
func TestEndpointEjectedByCloseInFlight(t *testing.T) {
	pl, log := loggedPool(slog.LevelInfo)
	uc := open(pl)
	r := &Request{Handler: nopHandler{}, Endpoint: pl.ep, heapIdx: -1}
	uc.mu.Lock()
	r.id = uc.allocID()
	uc.pending[r.id] = r
	uc.mu.Unlock()
	uc.OnEvent(api.RemoteClose)
	sameLines(t, "a close with a request in flight", log.lines(), []string{
		`level=WARN msg="upstream endpoint ejected" proxy=upstream-test cluster=c endpoint=10.0.0.1:20880 reason=closed_in_flight ejected_for=100ms`,
	})
}

// Envoy's own connection limit is not the endpoint's fault: no ejection,
// and the line says which limit to raise.
func TestOverflowSaysWhatToRaise(t *testing.T) {
	pl, log := loggedPool(slog.LevelInfo)
	opening(pl).OnPoolFailure(api.Overflow, "")
	sameLines(t, "an overflow", log.lines(), []string{
		`level=WARN msg="upstream connection not opened: the circuit breaker of Envoy's plainText cluster is open; raise its thresholds (max_connections, max_pending_requests) or lower connections_per_endpoint" proxy=upstream-test cluster=c endpoint=10.0.0.1:20880`,
	})
	if !pl.ep.Healthy(time.Now().UnixNano()) {
		t.Fatal("an overflow ejected the endpoint")
	}
}

// Each attempt is still there for whoever turns debug on.
func TestEachConnectFailureAtDebug(t *testing.T) {
	pl, log := loggedPool(slog.LevelDebug)
	opening(pl).OnPoolFailure(api.RemoteConnectionFailure, "connection refused")
	opening(pl).OnPoolFailure(api.RemoteConnectionFailure, "connection refused")
	sameLines(t, "two refused connects", log.lines(), []string{
		`level=DEBUG msg="upstream connect failed" proxy=upstream-test cluster=c endpoint=10.0.0.1:20880 reason=remote_connection_failure err="connection refused"`,
		`level=WARN msg="upstream endpoint ejected" proxy=upstream-test cluster=c endpoint=10.0.0.1:20880 reason=remote_connection_failure err="connection refused" ejected_for=100ms`,
		`level=DEBUG msg="upstream connect failed" proxy=upstream-test cluster=c endpoint=10.0.0.1:20880 reason=remote_connection_failure err="connection refused"`,
	})
}

// badCodec takes every frame for garbage.
type badCodec struct{ silentCodec }

func (badCodec) Decode([]byte, *codecs.Message) (int, error) {
	return 0, &codecs.ProtocolError{Reason: "bad_magic", Detail: "not a frame"}
}

// The upstream's other lines name the cluster as well as the endpoint.
func TestUpstreamLinesNameTheCluster(t *testing.T) {
	t.Run("goaway", func(t *testing.T) {
		pl, log := loggedPool(slog.LevelInfo)
		open(pl).handle(&codecs.Message{Type: codecs.GoAway})
		sameLines(t, "a goaway", log.lines(), []string{
			`level=INFO msg="upstream is shutting down; draining its connection" proxy=upstream-test cluster=c endpoint=10.0.0.1:20880 ejected_for=5s`,
		})
	})
	t.Run("bad frame", func(t *testing.T) {
		pl, log := loggedPool(slog.LevelInfo)
		uc := open(pl)
		uc.codec = badCodec{}
		uc.OnData([]byte("garbage"), false)
		sameLines(t, "a bad frame", log.lines(), []string{
			`level=WARN msg="closing upstream connection: bad frame" proxy=upstream-test cluster=c endpoint=10.0.0.1:20880 reason=bad_magic err="protocol error: bad_magic: not a frame"`,
		})
	})
	t.Run("idle timeout learned", func(t *testing.T) {
		pl, log := loggedPool(slog.LevelInfo)
		closedAfter(open(pl), 5*time.Second)
		closedAfter(open(pl), 5*time.Second)
		// The timeout is the silence measured: 5s and the moment of the test.
		got := log.lines()
		if len(got) != 1 || !strings.HasPrefix(got[0], `level=INFO msg="upstream closes connections idle for its idle timeout; heartbeating its connections more often" proxy=upstream-test cluster=c endpoint=10.0.0.1:20880 idle_timeout=5`) {
			t.Fatalf("two idle closes at 5s: log lines\n%s", strings.Join(got, "\n"))
		}
	})
}
