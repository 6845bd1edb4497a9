package upstream

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/internal/fault"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// goAwayEjection is how long an endpoint that announced its shutdown gets
// no new requests; a restarted provider is used again after it.
const goAwayEjection = 5 * time.Second

type connState uint8

const (
	connecting connState = iota
	ready
	// draining: the upstream announced shutdown (GoAway) or was retired;
	// requests in flight complete, no new ones are sent.
	draining
	closed
)

// conn is one upstream connection. Envoy calls its callbacks serialized,
// on a goroutine other than any downstream connection's; downstream
// goroutines send on it concurrently, so its state is under mu. Handlers
// are called with mu released.
type conn struct {
	pool *pool

	mu      sync.Mutex
	state   connState
	cb      api.ConnectionCallback
	queue   []waiting // waiting for the connection to open
	pending map[uint64]*Request
	nextID  uint64
	byUs    bool // we closed it (drained, shut down, failed): not the endpoint's fault
	goAway  bool // the upstream announced its shutdown on it
	// deadlines orders pending requests by deadline; one timer per
	// connection fires at the earliest (armedAt), instead of one timer per
	// request.
	deadlines deadlineHeap
	timer     *time.Timer
	armedAt   int64

	// lastActive (unix nanos of the last write or read) decides whether the
	// keep-alive timer sends a heartbeat.
	lastActive atomic.Int64
	// lastWrite (unix nanos, under mu) is when we last wrote: the silence
	// that decides a probe.
	lastWrite int64
	// probeID is the id of the heartbeat probing the connection before
	// the requests in queue are written to it (see probe); 0: none.
	// probeSilence is how long it had been silent then.
	probeID      uint64
	probeSilence time.Duration
	keepalive    *time.Timer
	// failed: a panic was recovered on the connection (fail).
	failed atomic.Bool

	// Used only from Envoy's serialized upstream callbacks.
	seq   uint64 // numbered by the pool's idle learning when it opened
	codec codecs.Codec
	buf   []byte
	msg   codecs.Message
}

func (uc *conn) proxyName() string { return uc.pool.m.opts.Proxy }

// waiting is a request waiting for its connection to open, and the
// circuit breaker that counts its wait (TryPending). Each wait is ended
// once, when the queue is flushed or failed (endWaits): a request that
// timed out or was cancelled meanwhile still holds its place until then,
// and the same Request sent again (re-balanced, or recycled by the proxy
// for a later request of its client) is another wait.
//
// id is the id r had when it queued: a Request that timed out or was
// cancelled here and was then sent again on this same connection is in
// the queue twice, and only the entry of its current id may write it or
// hand it back.
type waiting struct {
	r       *Request
	id      uint64
	breaker *cluster.Breaker
}

// current says whether w is the Request's live wait: its id unchanged
// and, for a two-way request, still pending (not timed out nor
// cancelled). Called with mu held.
func (uc *conn) current(w waiting) bool {
	r := w.r
	return r.id == w.id && (r.Oneway || uc.pending[r.id] == r)
}

// endWaits ends the waits of a queue taken: in runs, since the requests
// of a connection mostly share one breaker.
func endWaits(q []waiting) {
	for i := 0; i < len(q); {
		j := i + 1
		for j < len(q) && q[j].breaker == q[i].breaker {
			j++
		}
		q[i].breaker.EndPending(j - i)
		i = j
	}
}

// Every section under mu unlocks in a defer: a panic recovered on the
// connection (fail) must find mu free, and so must the downstream
// goroutines sending on it.

// send runs with the downstream connection's codec (enc) held.
func (uc *conn) send(r *Request, msg *codecs.Message, enc codecs.Codec, b *cluster.Breaker) (queued bool, err error) {
	queued, open, err := uc.enqueue(r, msg, enc, b)
	if !open {
		// Lost a race with the connection closing: try another.
		uc.pool.remove(uc)
		return false, ErrUnavailable
	}
	return queued, err
}

// enqueue gives r an id on the connection and writes msg, or queues it
// while the connection opens, if b admits one more waiting request
// (ErrOverflow otherwise). open is false when the connection takes no new
// request.
func (uc *conn) enqueue(r *Request, msg *codecs.Message, enc codecs.Codec, b *cluster.Breaker) (queued, open bool, err error) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.state >= draining {
		return false, false, nil
	}
	connecting := uc.state == connecting
	if connecting && !b.TryPending() {
		return false, true, ErrOverflow
	}
	t := time.Now().UnixNano()
	probe := !connecting && uc.probeID == 0 && uc.silentFor(t)
	queued = connecting || probe || uc.probeID != 0
	clientID := msg.ID
	id := uc.allocID()
	msg.ID = id
	// The client's id is restored even if the codec panics: the stream
	// answers its client with it.
	out, err := func() ([]byte, error) {
		defer func() { msg.ID = clientID }()
		return enc.Encode(msg)
	}()
	if err != nil {
		if connecting {
			b.EndPending(1)
		}
		return false, true, err
	}
	r.id = id
	r.conn.Store(uc)
	r.Endpoint = uc.pool.ep
	r.Endpoint.Begin()
	if !r.Oneway {
		uc.pending[id] = r
		uc.arm(r)
	}
	if queued {
		// Keep the message itself so that a failed connect can re-balance
		// it with a fresh id, and the bytes to write once open.
		q := *msg
		q.Frame = append([]byte(nil), msg.Frame...)
		q.Metadata = append(codecs.Metadata(nil), msg.Metadata...)
		q.Mutations = append(codecs.Metadata(nil), msg.Mutations...)
		r.queued = &q
		r.queuedBytes = append([]byte(nil), out...)
		if !connecting {
			b = nil // a probe's wait is not a wait for a connection
		}
		uc.queue = append(uc.queue, waiting{r: r, id: id, breaker: b})
		if probe {
			uc.startProbe(t)
		}
	} else {
		uc.cb.Write(out, false)
		uc.lastActive.Store(t)
		uc.lastWrite = t
		if r.Oneway {
			r.Endpoint.End()
		}
	}
	return queued, true, nil
}

// arm puts r's deadline in the heap and makes sure the timer fires by it.
func (uc *conn) arm(r *Request) {
	r.deadline = now() + int64(r.Timeout)
	uc.deadlines.push(r)
	if uc.timer == nil {
		uc.timer = time.AfterFunc(r.Timeout, uc.expire)
		uc.armedAt = r.deadline
	} else if uc.armedAt == 0 || r.deadline < uc.armedAt {
		uc.timer.Reset(time.Duration(r.deadline - now()))
		uc.armedAt = r.deadline
	}
}

// remove takes r out of pending and the deadline heap (mu held). The
// timer stays armed: firing early costs one look at the heap, cheaper
// than resetting it on every response.
func (uc *conn) remove(r *Request) {
	delete(uc.pending, r.id)
	if r.heapIdx >= 0 {
		uc.deadlines.remove(r.heapIdx)
	}
}

// expire fails the requests whose deadline passed and re-arms the timer
// for the next one.
func (uc *conn) expire() {
	defer uc.recover("timeout")
	late, drained := uc.takeLate()
	if drained {
		uc.closeByUs()
	}
	for _, r := range late {
		r.Endpoint.End()
		uc.notify(r, func(h Handler) { h.OnFailure(r, Timeout) })
	}
}

func (uc *conn) takeLate() (late []*Request, drained bool) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	fault.Point("timeout", uc.pool.ep.Addr)
	t := now()
	for len(uc.deadlines) > 0 && uc.deadlines[0].deadline <= t {
		r := uc.deadlines[0]
		uc.remove(r)
		late = append(late, r)
	}
	uc.armedAt = 0
	if len(uc.deadlines) > 0 {
		uc.armedAt = uc.deadlines[0].deadline
		uc.timer.Reset(time.Duration(uc.armedAt - t))
	}
	return late, uc.state == draining && len(uc.pending) == 0
}

func (uc *conn) allocID() uint64 {
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
func (uc *conn) OnPoolReady(cb api.ConnectionCallback) {
	defer uc.recover("OnPoolReady")
	pl := uc.pool
	pl.metrics.Connect.Inc()
	pl.succeeded()
	uc.seq = pl.idle.open()
	for _, r := range uc.open(cb) {
		uc.notify(r, func(h Handler) { h.OnSent(r) })
	}
}

// open writes the requests that waited and returns the oneways among them.
func (uc *conn) open(cb api.ConnectionCallback) (sent []*Request) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	// First, so that a connection that fails from here on can be closed.
	uc.cb = cb
	fault.Point("OnPoolReady", uc.pool.ep.Addr)
	if uc.state == connecting {
		uc.state = ready
	}
	sent = uc.flushQueue()
	if _, ok := uc.codec.(codecs.Pinger); ok && Keepalive.Load() > 0 {
		uc.keepalive = time.AfterFunc(uc.pool.keepaliveEvery(), uc.ping)
	}
	// Closed while connecting: at once when we shut it down, once its
	// requests are answered when its endpoint was retired.
	if uc.state >= draining && (uc.byUs || len(uc.pending) == 0) {
		cb.Close(api.FlushWrite)
	}
	return sent
}

// OnPoolFailure: the connection never opened. Nothing was sent, so every
// waiting request can safely go to another endpoint.
func (uc *conn) OnPoolFailure(reason api.PoolFailureReason, transportFailure string) {
	defer uc.recover("OnPoolFailure")
	pl := uc.pool
	pl.metrics.ConnectFail.Inc()
	// Each failure is counted; the log has one line per outage (failed),
	// not one per attempt: a dead provider fails every request thrice.
	pl.m.log.Debug("upstream connect failed", "cluster", pl.cluster.Name, "endpoint", pl.ep.Addr,
		"reason", poolFailure(reason), "err", transportFailure)
	if reason == api.Overflow {
		// Envoy's own limit, not the endpoint's fault.
		pl.m.plog.Warn("connect_overflow", "upstream connection not opened: the circuit breaker of Envoy's plainText cluster is open; raise its thresholds (max_connections, max_pending_requests) or lower connections_per_endpoint",
			"cluster", pl.cluster.Name, "endpoint", pl.ep.Addr)
	} else {
		pl.failed(poolFailure(reason), transportFailure)
		pl.idle.forget()
	}
	failed := uc.takeQueue()
	pl.remove(uc)
	uc.notSent(failed)
}

// takeQueue closes a connection that never opened and takes the requests
// that waited for it.
func (uc *conn) takeQueue() (failed []*Request) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	fault.Point("OnPoolFailure", uc.pool.ep.Addr)
	uc.state = closed
	return uc.takeQueued()
}

func (uc *conn) OnData(data []byte, endOfStream bool) {
	defer uc.recover("upstream OnData")
	if uc.failed.Load() {
		return // closing; whatever it carried was failed
	}
	uc.lastActive.Store(time.Now().UnixNano())
	uc.buf = codecs.Append(uc.codec, uc.buf, data)
	for len(uc.buf) > 0 {
		uc.msg.Reset()
		n, err := uc.codec.Decode(uc.buf, &uc.msg)
		if err != nil {
			var pe *codecs.ProtocolError
			reason := "unknown"
			if errors.As(err, &pe) {
				reason = pe.Reason
			}
			metrics.ProtocolErrors.WithLabelValues(uc.proxyName(), "upstream", reason).Inc()
			uc.pool.m.plog.Warn("upstream_bad_frame_"+reason, "closing upstream connection: bad frame",
				"cluster", uc.pool.cluster.Name, "endpoint", uc.pool.ep.Addr, "reason", reason, "err", err)
			uc.buf = nil
			uc.closeAfterError()
			return
		}
		if n == 0 {
			break
		}
		uc.handle(&uc.msg)
		uc.buf = uc.buf[n:]
		if uc.failed.Load() {
			uc.buf = nil // a handler panicked; the rest answers nothing
			return
		}
	}
	if len(uc.buf) == 0 {
		uc.buf = nil
	}
}

func (uc *conn) handle(m *codecs.Message) {
	pl := uc.pool
	switch m.Type {
	case codecs.Response:
		r, drained := uc.take(m.ID)
		if drained {
			uc.closeByUs()
		}
		if r == nil {
			metrics.Dropped.WithLabelValues(uc.proxyName(), "late_response").Inc()
			return
		}
		r.Endpoint.End()
		uc.notify(r, func(h Handler) { h.OnResponse(r, m, uc.codec) })
	case codecs.Heartbeat:
		metrics.Heartbeats.WithLabelValues(uc.proxyName(), "upstream").Inc()
		uc.write(uc.codec.HeartbeatReply(m))
	case codecs.HeartbeatReply:
		if m.ID == 0 {
			return
		}
		for _, r := range uc.probed(m.ID) {
			uc.notify(r, func(h Handler) { h.OnSent(r) })
		}
	case codecs.GoAway:
		pl.metrics.GoAway.Inc()
		pl.m.plog.Info("goaway", "upstream is shutting down; draining its connection",
			"cluster", pl.cluster.Name, "endpoint", pl.ep.Addr, "ejected_for", goAwayEjection)
		// Stop balancing new requests to the endpoint as well: a provider
		// that says it is going away will refuse new connections soon.
		pl.ep.Draining(goAwayEjection)
		pl.idle.forget()
		empty, unsent := uc.drain()
		pl.remove(uc)
		uc.notSent(unsent)
		if empty {
			uc.closeByUs()
		}
	default:
		metrics.Dropped.WithLabelValues(uc.proxyName(), "unexpected_upstream_"+m.Type.String()).Inc()
	}
}

// take takes the request a response answers out of pending, if it is
// still there; drained says the connection may close now.
func (uc *conn) take(id uint64) (r *Request, drained bool) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	fault.Point("upstream OnData", uc.pool.ep.Addr)
	r = uc.pending[id]
	if r != nil {
		uc.remove(r)
	}
	return r, uc.state == draining && len(uc.pending) == 0
}

// retire drains the connection (pool.retire); idle says it may close now.
func (uc *conn) retire() (idle bool) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	switch uc.state {
	case connecting, ready:
		// A connecting one closes once open and answered (OnPoolReady).
		uc.state = draining
		return uc.cb != nil && len(uc.pending) == 0
	}
	return false
}

// cancel takes r out of pending if it is there (Manager.Cancel).
func (uc *conn) cancel(r *Request) (owned, drained bool) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	owned = uc.pending[r.id] == r
	if owned {
		uc.remove(r)
	}
	return owned, uc.state == draining && len(uc.pending) == 0
}

// drain stops new requests after a GoAway; empty says none is in flight.
func (uc *conn) drain() (empty bool, unsent []*Request) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	uc.goAway = true
	if uc.state == ready {
		uc.state = draining
	}
	// Requests waiting for a probe were never written: elsewhere with them.
	if uc.probeID != 0 {
		unsent = uc.takeQueued()
		uc.probeID = 0
	}
	return len(uc.pending) == 0, unsent
}

func (uc *conn) write(b []byte) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if len(b) > 0 && (uc.state == ready || uc.state == draining) {
		uc.cb.Write(b, false)
		uc.lastWrite = time.Now().UnixNano()
	}
}

func (uc *conn) closeByUs() {
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

func (uc *conn) closeAfterError() {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.cb != nil && uc.state != closed {
		uc.cb.Close(api.NoFlush)
	}
}

// OnEvent: on close, every request still waiting fails now rather than at
// its deadline: the client learns at once and the proxy holds nothing for
// a connection that is gone.
func (uc *conn) OnEvent(event api.ConnectionEvent) {
	defer uc.recover("upstream OnEvent")
	if event != api.RemoteClose && event != api.LocalClose {
		return
	}
	pl := uc.pool
	lost, byUs, goAway, learned := uc.closed()
	pl.remove(uc)
	pl.metrics.Close.Inc()
	if learned > 0 {
		pl.m.plog.Info("idle_close", "upstream closes connections idle for its idle timeout; heartbeating its connections more often",
			"cluster", pl.cluster.Name, "endpoint", pl.ep.Addr, "idle_timeout", learned, "keepalive", pl.keepaliveEvery())
	}
	if n := countWritten(lost); !byUs && n > 0 {
		pl.m.log.Debug("upstream connection closed with requests in flight", "cluster", pl.cluster.Name, "endpoint", pl.ep.Addr,
			"event", event, "in_flight", n)
		pl.failed("closed_in_flight", "")
	}
	why := Closed
	if goAway {
		why = GoneAway
	}
	for _, r := range lost {
		if r.queued != nil {
			// Held back by a probe, never written: provably not run.
			uc.notSent([]*Request{r})
			continue
		}
		r.Endpoint.End()
		uc.notify(r, func(h Handler) { h.OnFailure(r, why) })
	}
}

// closed marks the connection closed and takes the requests it carried.
// What the close says about the endpoint is recorded first, before the
// connection is seen closed (send drops it from the pool then), so that
// the connection replacing it is kept alive by what it taught: learned is
// the idle timeout this close confirmed, if any.
func (uc *conn) closed() (lost []*Request, byUs, goAway bool, learned time.Duration) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	fault.Point("upstream OnEvent", uc.pool.ep.Addr)
	pl := uc.pool
	switch {
	case uc.byUs:
	case uc.written() > 0:
		// Losing requests in flight is a failure, not an idle timeout.
		pl.idle.forget()
	case uc.state == ready:
		// An upstream closing an idle connection may be its idle timeout
		// (routine) or its death: idleLearning tells them apart. A
		// draining connection was told the endpoint is going away. Under
		// a probe, the silence is the one before it.
		silence := time.Since(time.Unix(0, uc.lastActive.Load()))
		if uc.probeID != 0 {
			silence = uc.probeSilence
		}
		learned = pl.idle.idleClosed(uc.seq, silence, time.Duration(Keepalive.Load()), time.Duration(MinIdleTimeout.Load()))
	}
	uc.state = closed
	uc.cb = nil // must not be used after its close event
	if uc.keepalive != nil {
		uc.keepalive.Stop()
	}
	if uc.timer != nil {
		uc.timer.Stop()
	}
	return uc.takeAll(), uc.byUs, uc.goAway, learned
}

// written counts the requests awaiting a response that were written
// (not held back by a probe). Called with mu held.
func (uc *conn) written() int {
	n := len(uc.pending)
	for _, w := range uc.queue {
		if !w.r.Oneway && uc.pending[w.r.id] == w.r {
			n--
		}
	}
	return n
}

func countWritten(rs []*Request) (n int) {
	for _, r := range rs {
		if r.queued == nil {
			n++
		}
	}
	return n
}

// takeAll takes every request the connection carries: those awaiting a
// response and the oneways waiting for it to open. Called with mu held.
func (uc *conn) takeAll() []*Request {
	all := make([]*Request, 0, len(uc.pending))
	for _, r := range uc.pending {
		r.heapIdx = -1
		all = append(all, r)
	}
	for _, w := range uc.queue {
		if w.r.Oneway {
			all = append(all, w.r)
		}
	}
	endWaits(uc.queue)
	uc.pending = map[uint64]*Request{}
	uc.deadlines = nil
	uc.queue = nil
	return all
}

// notify hands a request's outcome to its handler. A panic there (the
// handler, the filters it runs, this connection's codec encoding the
// response for the client) is recovered, and treated as the connection's:
// it fails, and so does the request, unless its handler had answered it.
func (uc *conn) notify(r *Request, call func(Handler)) {
	if uc.try(r, call) {
		return
	}
	uc.fail()
	uc.try(r, failInternal(r))
}

func failInternal(r *Request) func(Handler) {
	return func(h Handler) { h.OnFailure(r, Internal) }
}

// try calls a handler of r and reports whether it returned; a panic is
// counted and logged.
func (uc *conn) try(r *Request, call func(Handler)) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			uc.panicked("upstream handler", v)
		}
	}()
	call(r.Handler)
	return true
}

// recover keeps a panic in a callback from reaching Envoy, and fails the
// connection.
func (uc *conn) recover(where string) {
	v := recover()
	if v == nil {
		return
	}
	uc.panicked(where, v)
	uc.fail()
}

func (uc *conn) panicked(where string, v any) {
	metrics.Panics.WithLabelValues(where).Inc()
	// Sampled: what made it panic (a provider's frame, say) may come
	// again and again; breeze_panics_total counts every one.
	uc.pool.m.plog.Error("panic_"+where, "panic in proxy upstream; failing the connection", "where", where,
		"cluster", uc.pool.cluster.Name, "endpoint", uc.pool.ep.Addr,
		"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}

// fail is what a recovered panic does to the connection: its state (its
// codec above all) can no longer be trusted, so it takes no new request
// and closes, and every request it carries fails Internal now, each
// answered to its own client, rather than at its deadline. The panic is
// not the endpoint's fault: it is not ejected.
func (uc *conn) fail() {
	defer func() {
		if v := recover(); v != nil {
			uc.panicked("upstream fail", v)
		}
	}()
	for _, r := range uc.takeFailed() {
		r.Endpoint.End()
		uc.try(r, failInternal(r))
	}
	uc.pool.remove(uc)
}

func (uc *conn) takeFailed() []*Request {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	uc.failed.Store(true)
	uc.byUs = true
	if uc.cb != nil && uc.state != closed {
		uc.cb.Close(api.NoFlush)
	}
	// One still opening is closed by OnPoolReady (byUs).
	uc.state = closed
	if uc.timer != nil {
		uc.timer.Stop()
	}
	return uc.takeAll()
}

// ping sends a heartbeat if the connection has been idle for a keep-alive
// period, and re-arms itself while the connection is open.
func (uc *conn) ping() {
	defer uc.recover("keepalive")
	uc.mu.Lock()
	defer uc.mu.Unlock()
	fault.Point("keepalive", uc.pool.ep.Addr)
	if uc.state != ready {
		return
	}
	every := uc.pool.keepaliveEvery()
	t := time.Now()
	idle := t.Sub(time.Unix(0, uc.lastActive.Load()))
	if idle >= every {
		uc.cb.Write(uc.codec.(codecs.Pinger).Heartbeat(uc.allocID()), false)
		uc.lastActive.Store(t.UnixNano())
		uc.lastWrite = t.UnixNano()
		idle = 0
	}
	uc.keepalive.Reset(every - idle)
}

// deadlineHeap is a min-heap of pending requests by deadline; each
// request knows its index so that a response removes it in O(log n).
// Written out rather than through container/heap: it sits on every
// request's path, and interface calls per comparison cost.
type deadlineHeap []*Request

func (h *deadlineHeap) push(r *Request) {
	r.heapIdx = len(*h)
	*h = append(*h, r)
	h.up(r.heapIdx)
}

// remove takes out the request at index i.
func (h *deadlineHeap) remove(i int) {
	old := *h
	last := len(old) - 1
	removed := old[i]
	if i != last {
		old[i] = old[last]
		old[i].heapIdx = i
	}
	old[last] = nil
	*h = old[:last]
	removed.heapIdx = -1
	if i != last {
		if !h.down(i) {
			h.up(i)
		}
	}
}

func (h deadlineHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if h[parent].deadline <= h[i].deadline {
			return
		}
		h.swap(i, parent)
		i = parent
	}
}

// down sifts i down and reports whether it moved.
func (h deadlineHeap) down(i int) bool {
	start := i
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		min := l
		if r := l + 1; r < len(h) && h[r].deadline < h[l].deadline {
			min = r
		}
		if h[i].deadline <= h[min].deadline {
			break
		}
		h.swap(i, min)
		i = min
	}
	return i > start
}

func (h deadlineHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}

// ProbeAfter is how long a connection may have been silent (nothing
// written to it) before a request on it waits for a heartbeat's answer
// first, on codecs that have one (codecs.Pinger). It closes the race of a
// request written just as the upstream closes the connection for being
// idle: Envoy's Go API does not tell whether such bytes reached the
// socket, so the request may have run and is not re-sent without a retry
// policy. Under a probe nothing is written until the upstream answered on
// the connection, which restarts its idle timer; if the connection closes
// instead, the requests held back were never written and go to another
// endpoint at once. Idle timeouts below it are not covered (they are
// shorter than MinIdleTimeout, which is the default). Atomic, so that
// tests can change it; 0 disables probing.
var ProbeAfter atomic.Int64

func init() { ProbeAfter.Store(int64(time.Second)) }

// silentFor reports whether the connection has been silent long enough at
// t (unix nanos) to probe it. Called with mu held.
func (uc *conn) silentFor(t int64) bool {
	after := ProbeAfter.Load()
	if after <= 0 || uc.state != ready || t-uc.lastWrite < after {
		return false
	}
	_, ok := uc.codec.(codecs.Pinger)
	return ok
}

// startProbe writes the heartbeat that probes the connection (mu held).
func (uc *conn) startProbe(t int64) {
	uc.probeID = uc.allocID()
	uc.probeSilence = time.Duration(t - uc.lastActive.Load())
	uc.cb.Write(uc.codec.(codecs.Pinger).Heartbeat(uc.probeID), false)
	uc.lastActive.Store(t)
	uc.lastWrite = t
	metrics.UpstreamProbes.WithLabelValues(uc.proxyName()).Inc()
}

// probed writes the requests a probe held back once it is answered, and
// returns the oneways among them, now sent.
func (uc *conn) probed(id uint64) (sent []*Request) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if id != uc.probeID || uc.state != ready {
		return nil
	}
	uc.probeID = 0
	return uc.flushQueue()
}

// flushQueue writes the requests that waited (for the connection to open,
// or for a probe's answer) and returns the oneways among them, now sent.
// Called with mu held and cb set.
func (uc *conn) flushQueue() (sent []*Request) {
	for _, w := range uc.queue {
		r := w.r
		if !uc.current(w) {
			continue // timed out or cancelled while waiting
		}
		uc.cb.Write(r.queuedBytes, false)
		r.queuedBytes, r.queued = nil, nil
		if r.Oneway {
			r.Endpoint.End()
			sent = append(sent, r)
		}
	}
	endWaits(uc.queue)
	uc.queue = nil
	t := time.Now().UnixNano()
	uc.lastActive.Store(t)
	uc.lastWrite = t
	return sent
}

// takeQueued takes the requests still waiting in the queue (for the
// connection to open, or for a probe's answer): never written (mu held).
func (uc *conn) takeQueued() (unsent []*Request) {
	for _, w := range uc.queue {
		r := w.r
		if !uc.current(w) {
			continue // timed out or cancelled while waiting
		}
		if !r.Oneway {
			uc.remove(r)
		}
		unsent = append(unsent, r)
	}
	endWaits(uc.queue)
	uc.queue = nil
	return unsent
}

// notSent fails requests that were never written (their connection never
// opened, or a probe held them back) as NotSent: their handlers send them
// elsewhere.
func (uc *conn) notSent(rs []*Request) {
	for _, r := range rs {
		r.Endpoint.End()
		r.queuedBytes = nil
		uc.notify(r, func(h Handler) { h.OnFailure(r, NotSent) })
	}
}
