// Package upstream is Breeze's upstream layer: pools of connections per
// endpoint and codec flavor, shared by every downstream connection of a
// proxy; request-id rewriting so that requests of many clients share one
// connection; per-request deadlines; keep-alives; drain on GoAway and on
// retirement. Its API is narrow: Send a request to an endpoint, Cancel it,
// Retire endpoints that left their cluster.
package upstream

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/logs"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// Failure says why a request got no response.
type Failure uint8

const (
	// NotSent: the request never reached the upstream (its connection
	// failed to open); Request.Message holds it, to send elsewhere.
	NotSent Failure = iota + 1
	// Closed: the connection closed with the request in flight.
	Closed
	// GoneAway: as Closed, on a connection whose upstream had announced
	// its shutdown (GoAway, Dubbo READONLY) before it closed.
	GoneAway
	// Timeout: no response within Request.Timeout.
	Timeout
	// Internal: the proxy failed with the request in flight: a panic was
	// recovered on its connection (in a callback, the codec, a handler),
	// and the connection closed. Answer it as an internal error.
	Internal
)

// Handler receives a request's outcome, on an upstream goroutine, once.
type Handler interface {
	// OnResponse gets the response; c decoded it and must encode it (only
	// during the call). m.ID is still the upstream id.
	OnResponse(r *Request, m *codecs.Message, c codecs.Codec)
	// OnFailure: the request will get no response from this attempt.
	OnFailure(r *Request, f Failure)
	// OnSent: a oneway request that waited for its connection was written.
	OnSent(r *Request)
}

// Request is one request's upstream state. The caller owns it (the router
// keeps it with its stream) and fills the exported fields before Send.
type Request struct {
	Handler Handler
	Timeout time.Duration
	Oneway  bool
	// Endpoint is where the last Send went.
	Endpoint *cluster.Endpoint

	conn     atomic.Pointer[conn]
	id       uint64
	deadline int64 // monotonic nanos, see now
	heapIdx  int
	// While its connection is still opening, the request waits with its
	// own copy of the message (the downstream buffer moves on).
	queued      *codecs.Message
	queuedBytes []byte
}

// Message is the request as it was sent, after OnFailure(NotSent).
func (r *Request) Message() *codecs.Message { return r.queued }

// ErrUnavailable: the endpoint's pool is retired or its connection is
// closing; nothing was sent, so the request may go to another endpoint.
var ErrUnavailable = errors.New("endpoint removed from its cluster or its connection is closing")

// ErrOverflow: the request would wait for a connection still opening, and
// its circuit breaker's max_pending_requests already wait; nothing was
// sent. Answer it as overloaded (flag UO).
var ErrOverflow = errors.New("circuit breaker: too many requests waiting for an upstream connection to open")

// Target is where Send sends.
type Target struct {
	Endpoint *cluster.Endpoint
	Cluster  *cluster.Cluster
	Metrics  *metrics.Cluster
	// Breaker counts the request while it waits for a connection to open
	// (max_pending_requests): the circuit breaker of the set it was
	// balanced on (cluster.Set.Breaker). Nil: no limit.
	Breaker *cluster.Breaker
	// Flavor is the codec's wire variant (codecs.Flavored): one pool each.
	Flavor string
}

// Options configure a Manager.
type Options struct {
	Proxy     string // stat_prefix, for metrics and logs
	Codec     codecs.Factory
	CodecOpts codecs.Options
	Log       *slog.Logger
	// PeerLog writes the lines an upstream can trigger, limited per
	// reason (a new one on Log by default).
	PeerLog *logs.Logger
	// Connect is how connections are opened: through Envoy (default) or
	// the Go runtime's own socket, to loopback addresses only.
	Connect Connect

	// goWriteLimit overrides the Go socket's write queue bound (tests).
	goWriteLimit int
}

// Manager holds the pools of one proxy.
type Manager struct {
	opts Options
	log  *slog.Logger
	plog *logs.Logger
	// dial opens a connection (Options.Connect).
	dial func(addr string, f api.UpstreamFilter)

	mu    sync.RWMutex
	pools map[poolKey]*pool
	// suspended: the proxy has no connection left; no pool opens until
	// Resume (a straggling request gets ErrUnavailable).
	suspended bool
}

type poolKey struct {
	ep     *cluster.Endpoint
	flavor string
}

// New makes an empty manager.
func New(opts Options) *Manager {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.PeerLog == nil {
		opts.PeerLog = logs.New(opts.Log, logs.Options{})
	}
	return &Manager{opts: opts, log: opts.Log, plog: opts.PeerLog, dial: dialer(opts, opts.PeerLog), pools: map[poolKey]*pool{}}
}

// Pools is how many pools are open (for tests and debugging).
func (m *Manager) Pools() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.pools)
}

// pool returns the shared pool of an endpoint for a flavor, or nil when
// the endpoint has left its cluster (balanced on a set replaced since).
func (m *Manager) pool(t Target) *pool {
	key := poolKey{t.Endpoint, t.Flavor}
	// Every request looks its pool up: share the lock for that, and take
	// it exclusively only to add a pool.
	m.mu.RLock()
	pl := m.pools[key]
	m.mu.RUnlock()
	if pl != nil {
		return pl
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if pl = m.pools[key]; pl != nil {
		return pl
	}
	if m.suspended {
		return nil
	}
	// Checked under m.mu: Retire runs after the cluster published its new
	// set and takes m.mu, so either it sees this pool or this check sees
	// the new set.
	if !slices.Contains(t.Cluster.Endpoints(), t.Endpoint) {
		return nil
	}
	pl = &pool{m: m, ep: t.Endpoint, cluster: t.Cluster, metrics: t.Metrics}
	m.pools[key] = pl
	return pl
}

// Send writes msg (routed to t, encoded by enc after its id is rewritten)
// to a connection of t's pool; the outcome reaches r.Handler later.
// queued says the connection is still opening: a oneway request is then
// written (OnSent) or fails (OnFailure) later; otherwise a oneway is
// written when Send returns. An error means nothing was sent and the
// handler will not be called: ErrUnavailable (try another endpoint),
// ErrOverflow (too many requests wait for connections to open: answer it
// as overloaded) or the codec's encoding error. The caller holds enc (the
// downstream connection's codec).
func (m *Manager) Send(t Target, r *Request, msg *codecs.Message, enc codecs.Codec) (queued bool, err error) {
	pl := m.pool(t)
	if pl == nil {
		return false, ErrUnavailable
	}
	uc, fresh, err := pl.pick(t.Cluster.ConnsPerHost)
	if err != nil {
		return false, err
	}
	queued, err = uc.send(r, msg, enc, t.Breaker)
	if fresh {
		// Dialed once the request that wanted it is queued on it: both
		// dialers are asynchronous and their callbacks run on another
		// thread, which may be quicker than this one (a refused connect
		// in particular); they must find the request there to answer it.
		pl.m.dial(pl.ep.Addr, uc)
	}
	return queued, err
}

// Cancel withdraws a request whose client went away. It reports whether
// the request was still waiting, in which case its handler will not be
// called; false means the handler has been or is being called.
func (m *Manager) Cancel(r *Request) bool {
	uc := r.conn.Load()
	if uc == nil {
		return false
	}
	owned, drained := uc.cancel(r)
	if drained {
		uc.closeByUs()
	}
	if owned {
		r.Endpoint.End()
	}
	return owned
}

// Retire stops new requests to the endpoints' pools (every flavor); each
// of their connections closes once the requests it carries are answered,
// so that removing an endpoint fails no request.
func (m *Manager) Retire(eps []*cluster.Endpoint) {
	m.mu.Lock()
	var gone []*pool
	for key, pl := range m.pools {
		if slices.Contains(eps, key.ep) {
			delete(m.pools, key)
			gone = append(gone, pl)
		}
	}
	m.mu.Unlock()
	for _, pl := range gone {
		pl.retire()
	}
}

// Close closes every connection at once. Envoy never frees a parsed
// config; the standalone runner and tests do.
func (m *Manager) Close() { m.closeAll(false) }

// Suspend closes every connection, with their timers and goroutines, and
// opens none until Resume: the proxy has no downstream connection left, so
// whatever they carried was answered or abandoned.
func (m *Manager) Suspend() { m.closeAll(true) }

// Resume lets pools open again after Suspend.
func (m *Manager) Resume() {
	m.mu.Lock()
	m.suspended = false
	m.mu.Unlock()
}

func (m *Manager) closeAll(suspend bool) {
	m.mu.Lock()
	pools := m.pools
	m.pools = map[poolKey]*pool{}
	m.suspended = m.suspended || suspend
	m.mu.Unlock()
	for _, pl := range pools {
		pl.closeAll()
	}
}

// epoch anchors now: deadlines use the monotonic clock, immune to wall
// clock steps.
var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

// Keepalive is how long an upstream connection may stay silent before the
// proxy sends a heartbeat on it. Dubbo providers close a connection after
// three heartbeat periods without traffic (Java: 3×60 s); clients
// heartbeat to prevent that, and the proxy, being the client of its
// upstream connections, must too. Atomic, so that tests can shorten it.
var Keepalive atomic.Int64

func init() { Keepalive.Store(int64(30 * time.Second)) }
