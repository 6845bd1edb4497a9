package proxy

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/cluster"
)

// pool is the set of upstream connections to one endpoint, shared by every
// downstream connection of the proxy. Requests from many clients are
// multiplexed onto them with request ids unique per upstream connection.
type pool struct {
	proxy   *Proxy
	ep      *cluster.Endpoint
	cluster *clusterEntry

	mu    sync.Mutex
	conns []*upConn
	next  int
	// retired: the endpoint left its cluster; no new connections (xds.go).
	retired bool
	// idleLimit (nanos) is what the endpoint showed it tolerates: it closed
	// a connection of ours that had been silent that long. 0: not seen.
	idleLimit atomic.Int64
}

// keepaliveEvery is the heartbeat period for the pool's connections: the
// default, or half the silence the endpoint was seen to close a connection
// after, so that a provider with a short idle timeout keeps the next one.
func (pl *pool) keepaliveEvery() time.Duration {
	every := time.Duration(upstreamKeepalive.Load())
	if l := time.Duration(pl.idleLimit.Load()); l > 0 {
		every = min(every, max(l/2, 10*time.Millisecond))
	}
	return every
}

var errRetired = errors.New("endpoint removed from its cluster")

// goAwayEjection is how long an endpoint that announced its shutdown gets
// no new requests; a restarted provider is used again after it.
const goAwayEjection = 5 * time.Second

type connState uint8

const (
	connecting connState = iota
	ready
	// draining: the upstream announced shutdown (GoAway); requests in
	// flight complete, no new ones are sent.
	draining
	closed
)

// upConn is one upstream connection. Envoy calls its callbacks serialized,
// on a goroutine other than any downstream connection's; downstream
// goroutines send on it concurrently, so its state is under mu.
type upConn struct {
	pool *pool

	mu      sync.Mutex
	state   connState
	cb      api.ConnectionCallback
	queue   []*pending // waiting for the connection to open
	pending map[uint64]*pending
	nextID  uint64
	byUs    bool // we closed it (drained or shut down): not the endpoint's fault

	// lastActive (unix nanos of the last write or read) decides whether the
	// keep-alive timer sends a heartbeat.
	lastActive atomic.Int64
	keepalive  *time.Timer

	// Used only from Envoy's serialized upstream callbacks.
	codec codecs.Codec
	buf   []byte
	msg   codecs.Message
}

func (pl *pool) get() (*upConn, error) {
	pl.mu.Lock()
	if pl.retired {
		pl.mu.Unlock()
		return nil, errRetired
	}
	if len(pl.conns) < pl.cluster.ConnsPerHost {
		codec, err := pl.proxy.codec(pl.proxy.codecOpts)
		if err != nil {
			pl.mu.Unlock()
			return nil, err
		}
		uc := &upConn{pool: pl, codec: codec, pending: map[uint64]*pending{}}
		pl.conns = append(pl.conns, uc)
		pl.mu.Unlock()
		// Envoy dials asynchronously; the callbacks find uc in the connecting state.
		network.CreateUpstreamConn(pl.ep.Addr, uc)
		return uc, nil
	}
	uc := pl.conns[pl.next%len(pl.conns)]
	pl.next++
	pl.mu.Unlock()
	return uc, nil
}

func (pl *pool) remove(uc *upConn) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for i, c := range pl.conns {
		if c == uc {
			pl.conns = append(pl.conns[:i], pl.conns[i+1:]...)
			return
		}
	}
}

func (pl *pool) closeAll() {
	pl.mu.Lock()
	conns := append([]*upConn(nil), pl.conns...)
	pl.conns = nil
	pl.mu.Unlock()
	for _, uc := range conns {
		uc.closeByUs()
	}
}

// send writes req (message m, already routed) to an upstream connection of
// the pool. It runs with the downstream connection's mutex held.
func (pl *pool) send(req *pending, m *codecs.Message) {
	d := req.down
	uc, err := pl.get()
	if err == errRetired {
		pl.proxy.retry(req, m, pl.ep, true)
		return
	}
	if err != nil {
		d.localReply(req.replyMsg(), codecs.ErrInternal, "breeze: codec: "+err.Error(), true)
		return
	}
	uc.mu.Lock()
	if uc.state >= draining {
		// Lost a race with the connection closing: try another.
		uc.mu.Unlock()
		pl.remove(uc)
		pl.proxy.retry(req, m, pl.ep, true)
		return
	}
	id := uc.allocID()
	req.conn, req.id = uc, id
	req.ep.Begin()
	req.start = time.Now()
	m.ID = id
	if uc.state == connecting {
		// Keep the message itself so that a failed connect can re-balance it
		// with a fresh id.
		req.queued = copyMessage(m)
	}
	out, err := d.codec.Encode(m)
	if err != nil {
		uc.mu.Unlock()
		req.ep.End()
		d.localReply(req.replyMsg(), codecs.ErrBadRequest, "breeze: cannot encode request: "+err.Error(), true)
		return
	}
	if !req.oneway {
		uc.pending[id] = req
		req.timer = time.AfterFunc(req.timeout, req.onTimeout)
	}
	if uc.state == connecting {
		req.queuedBytes = append([]byte(nil), out...)
		uc.queue = append(uc.queue, req)
	} else {
		uc.cb.Write(out, false)
		uc.lastActive.Store(req.start.UnixNano())
		if req.oneway {
			req.ep.End()
		}
	}
	uc.mu.Unlock()
}

// retry re-balances a request that never reached its upstream, or answers
// it with an error once attempts are exhausted. lockedDown says whether the
// caller holds the downstream mutex.
func (p *Proxy) retry(req *pending, m *codecs.Message, failed *cluster.Endpoint, lockedDown bool) {
	req.attempt++
	if req.attempt >= maxAttempts || m == nil {
		req.down.localReply(req.replyMsg(), codecs.ErrNoHealthyUpstream,
			fmt.Sprintf("breeze: no upstream of cluster %q reachable (last tried %s)", req.target.Cluster, failed.Addr), lockedDown)
		return
	}
	if !lockedDown {
		req.down.mu.Lock()
		defer req.down.mu.Unlock()
	}
	p.dispatch(req, m, failed)
}

func (uc *upConn) allocID() uint64 {
	// Ids stay within 31 bits so that every codec (Thrift's seqid is an
	// i32) can carry them, and skip ids still awaiting an answer.
	for {
		uc.nextID++
		if uc.nextID >= 1<<31 {
			uc.nextID = 1
		}
		if _, busy := uc.pending[uc.nextID]; !busy {
			return uc.nextID
		}
	}
}

// OnPoolReady: the connection is open; flush what waited for it.
func (uc *upConn) OnPoolReady(cb api.ConnectionCallback) {
	defer uc.recover("OnPoolReady")
	uc.pool.cluster.metrics.connect.Inc()
	uc.pool.ep.Succeeded()
	uc.mu.Lock()
	defer uc.mu.Unlock()
	uc.cb = cb
	if uc.state == connecting {
		uc.state = ready
	}
	for _, req := range uc.queue {
		if !req.oneway && uc.pending[req.id] != req {
			continue // timed out while waiting
		}
		cb.Write(req.queuedBytes, false)
		req.queuedBytes, req.queued = nil, nil
		if req.oneway {
			req.ep.End()
		}
	}
	uc.queue = nil
	uc.lastActive.Store(time.Now().UnixNano())
	if _, ok := uc.codec.(codecs.Pinger); ok && upstreamKeepalive.Load() > 0 {
		uc.keepalive = time.AfterFunc(uc.pool.keepaliveEvery(), uc.ping)
	}
	// Closed while connecting: at once when we shut it down, once its
	// requests are answered when its endpoint was retired (xds.go).
	if uc.state >= draining && (uc.byUs || len(uc.pending) == 0) {
		cb.Close(api.FlushWrite)
	}
}

// OnPoolFailure: the connection never opened. Nothing was sent, so every
// waiting request is safely re-balanced to another endpoint.
func (uc *upConn) OnPoolFailure(reason api.PoolFailureReason, transportFailure string) {
	defer uc.recover("OnPoolFailure")
	pl := uc.pool
	pl.cluster.metrics.connectFail.Inc()
	if reason != api.Overflow {
		pl.ep.Failed()
	}
	pl.proxy.log.Warn("upstream connect failed", "cluster", pl.cluster.Name, "endpoint", pl.ep.Addr, "reason", reason, "detail", transportFailure)
	uc.mu.Lock()
	uc.state = closed
	queue := uc.queue
	uc.queue = nil
	for _, req := range queue {
		delete(uc.pending, req.id)
	}
	uc.mu.Unlock()
	pl.remove(uc)
	for _, req := range queue {
		if req.timer != nil && !req.timer.Stop() {
			continue // already answered with a timeout
		}
		req.ep.End()
		m := req.queued
		req.queued, req.queuedBytes = nil, nil
		pl.proxy.retry(req, m, pl.ep, false)
	}
}

func (uc *upConn) OnData(data []byte, endOfStream bool) {
	defer uc.recover("upstream OnData")
	uc.lastActive.Store(time.Now().UnixNano())
	if len(uc.buf) == 0 {
		uc.buf = data
	} else {
		uc.buf = append(uc.buf, data...)
	}
	for len(uc.buf) > 0 {
		uc.msg.Reset()
		n, err := uc.codec.Decode(uc.buf, &uc.msg)
		if err != nil {
			var pe *codecs.ProtocolError
			reason := "unknown"
			if errors.As(err, &pe) {
				reason = pe.Reason
			}
			protocolErrors.WithLabelValues(uc.pool.proxy.name, "upstream", reason).Inc()
			uc.pool.proxy.log.Warn("closing upstream connection: bad frame", "endpoint", uc.pool.ep.Addr, "err", err)
			uc.buf = nil
			uc.closeAfterError()
			return
		}
		if n == 0 {
			break
		}
		uc.handle(&uc.msg)
		uc.buf = uc.buf[n:]
	}
	if len(uc.buf) == 0 {
		uc.buf = nil
	}
}

func (uc *upConn) handle(m *codecs.Message) {
	pl := uc.pool
	switch m.Type {
	case codecs.Response:
		uc.mu.Lock()
		req := uc.pending[m.ID]
		delete(uc.pending, m.ID)
		drained := uc.state == draining && len(uc.pending) == 0
		uc.mu.Unlock()
		if drained {
			uc.closeByUs()
		}
		if req == nil {
			dropped.WithLabelValues(pl.proxy.name, "late_response").Inc()
			return
		}
		req.timer.Stop()
		req.ep.End()
		cm := req.cluster.metrics
		switch m.Status {
		case codecs.StatusOK:
			cm.ok.Inc()
		case codecs.StatusAppError:
			cm.appError.Inc()
		default:
			cm.errStatus.Inc()
		}
		cm.latency.Observe(time.Since(req.start).Seconds())
		m.ID = req.clientID
		out, err := uc.codec.Encode(m)
		if err != nil {
			req.down.localReply(req.replyMsg(), codecs.ErrInternal, "breeze: cannot encode response: "+err.Error(), false)
			return
		}
		req.down.write(out)
	case codecs.Heartbeat:
		heartbeats.WithLabelValues(pl.proxy.name, "upstream").Inc()
		uc.write(uc.codec.HeartbeatReply(m))
	case codecs.HeartbeatReply:
	case codecs.GoAway:
		pl.cluster.metrics.goaway.Inc()
		pl.proxy.log.Info("upstream is shutting down; draining its connection", "endpoint", pl.ep.Addr)
		// Stop balancing new requests to the endpoint as well: a provider
		// that says it is going away will refuse new connections soon.
		pl.ep.Draining(goAwayEjection)
		uc.mu.Lock()
		if uc.state == ready {
			uc.state = draining
		}
		empty := len(uc.pending) == 0
		uc.mu.Unlock()
		pl.remove(uc)
		if empty {
			uc.closeByUs()
		}
	default:
		dropped.WithLabelValues(pl.proxy.name, "unexpected_upstream_"+m.Type.String()).Inc()
	}
}

func (uc *upConn) write(b []byte) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.state == ready || uc.state == draining {
		uc.cb.Write(b, false)
	}
}

func (uc *upConn) closeByUs() {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	uc.byUs = true
	if uc.cb != nil && uc.state != closed {
		uc.state = draining
		uc.cb.Close(api.FlushWrite)
	} else if uc.state == connecting {
		uc.state = draining // closed as soon as it opens
	}
}

func (uc *upConn) closeAfterError() {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.cb != nil && uc.state != closed {
		uc.cb.Close(api.NoFlush)
	}
}

// OnEvent: on close, every request still waiting gets an error reply now,
// rather than at its timeout: the client learns at once and the proxy holds
// nothing for a connection that is gone.
func (uc *upConn) OnEvent(event api.ConnectionEvent) {
	defer uc.recover("upstream OnEvent")
	if event != api.RemoteClose && event != api.LocalClose {
		return
	}
	pl := uc.pool
	uc.mu.Lock()
	byUs := uc.byUs
	uc.state = closed
	uc.cb = nil // must not be used after its close event
	if uc.keepalive != nil {
		uc.keepalive.Stop()
	}
	lost := uc.pending
	uc.pending = map[uint64]*pending{}
	uc.mu.Unlock()
	pl.remove(uc)
	pl.cluster.metrics.close.Inc()
	// An upstream closing an idle connection is routine (its idle timeout):
	// learn the timeout, so later connections are kept alive within it.
	// Losing requests in flight is a failure.
	if idle := time.Since(time.Unix(0, uc.lastActive.Load())); !byUs && len(lost) == 0 && uc.lastActive.Load() != 0 && idle < pl.keepaliveEvery() {
		pl.idleLimit.Store(int64(idle))
		pl.proxy.log.Info("upstream closed an idle connection; heartbeating its connections more often",
			"endpoint", pl.ep.Addr, "idle", idle, "keepalive", pl.keepaliveEvery())
	}
	if !byUs && len(lost) > 0 {
		pl.ep.Failed()
		pl.proxy.log.Warn("upstream connection closed", "endpoint", pl.ep.Addr, "event", event, "in_flight", len(lost))
	}
	for _, req := range lost {
		if req.timer != nil && !req.timer.Stop() {
			continue
		}
		req.ep.End()
		req.down.localReply(req.replyMsg(), codecs.ErrNoHealthyUpstream,
			fmt.Sprintf("breeze: upstream %s of cluster %q closed the connection before answering", pl.ep.Addr, pl.cluster.Name), false)
	}
}

func (uc *upConn) recover(where string) {
	r := recover()
	if r == nil {
		return
	}
	panics.WithLabelValues(where).Inc()
	uc.pool.proxy.log.Error("panic in proxy upstream; closing the connection", "where", where, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	uc.closeAfterError()
}

// upstreamKeepalive is how long an upstream connection may stay silent
// before the proxy sends a heartbeat on it. Dubbo providers close a
// connection after three heartbeat periods without traffic (Java: 3×60 s);
// clients heartbeat to prevent that, and the proxy, being the client of its
// upstream connections, must too.
// Atomic, so that tests can shorten it.
var upstreamKeepalive atomic.Int64

func init() { upstreamKeepalive.Store(int64(30 * time.Second)) }

// ping sends a heartbeat if the connection has been idle for a keep-alive
// period, and re-arms itself while the connection is open.
func (uc *upConn) ping() {
	defer uc.recover("keepalive")
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.state != ready {
		return
	}
	every := uc.pool.keepaliveEvery()
	now := time.Now()
	idle := now.Sub(time.Unix(0, uc.lastActive.Load()))
	if idle >= every {
		uc.cb.Write(uc.codec.(codecs.Pinger).Heartbeat(uc.allocID()), false)
		uc.lastActive.Store(now.UnixNano())
		idle = 0
	}
	uc.keepalive.Reset(every - idle)
}

// onTimeout answers a request its upstream did not answer in time. The
// late response, if it comes, is dropped (counted as late_response).
func (r *pending) onTimeout() {
	defer func() {
		if p := recover(); p != nil {
			panics.WithLabelValues("timeout").Inc()
			r.down.p.log.Error("panic in request timeout", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	uc := r.conn
	uc.mu.Lock()
	if uc.pending[r.id] != r {
		uc.mu.Unlock()
		return
	}
	delete(uc.pending, r.id)
	drained := uc.state == draining && len(uc.pending) == 0
	uc.mu.Unlock()
	if drained {
		uc.closeByUs()
	}
	r.ep.End()
	r.down.localReply(r.replyMsg(), codecs.ErrTimeout,
		fmt.Sprintf("breeze: upstream %s of cluster %q did not answer within %v", r.ep.Addr, r.target.Cluster, r.timeout), false)
}
