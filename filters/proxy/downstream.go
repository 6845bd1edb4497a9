package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/internal/fault"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/router"
	"github.com/breeze-mesh/breeze/internal/filterstate"
)

// downConn is the filter instance of one downstream connection. Envoy
// calls OnData/OnEvent serialized on the connection's worker thread;
// responses, timeouts, resumed filters and retries arrive on other
// goroutines and take mu to use the codec.
type downConn struct {
	p     *Proxy
	cb    api.ConnectionCallback
	codec codecs.Codec

	mu  sync.Mutex // guards codec, buf, msg
	buf []byte
	msg codecs.Message

	// active lists the requests in flight, so that a closing connection
	// finishes them (DC) instead of leaving them to their timeouts.
	actMu     sync.Mutex
	active    *stream
	inFlightN int // streams in active
	// free holds finished streams for this connection's next requests
	// (linked by next, at most maxFreeStreams; see recycle for when a
	// stream may come back).
	free  *stream
	freeN int

	// peer is the caller, read once, before the first request (readPeer);
	// peerRead says it was (guarded by mu, as OnData is).
	// and only read after: every stream points to it.
	peer     filter.Peer
	peerRead bool

	closed atomic.Bool
	ended  atomic.Bool // the close event came: the connection is gone
	// failed: a panic was recovered on the connection (fail); it takes
	// no new request and closes once those in flight are answered.
	failed     atomic.Bool
	counted    atomic.Bool // in the proxy's connection count (life.go)
	lastActive atomic.Int64
	idleTimer  *time.Timer
}

// stream is one request: the filter API's Stream, the router's state and
// the connection, in one allocation, recycled by its connection (recycle).
// It is the stream's filter.Conn.
type stream struct {
	filter.Stream
	call       router.Call
	d          *downConn
	prev, next *stream
}

// CreateFilter is called by Envoy's shim for every new connection.
func (p *Proxy) CreateFilter(cb api.ConnectionCallback) api.DownstreamFilter {
	d := &downConn{p: p, cb: cb}
	if p.err == nil {
		c, err := p.codec(p.codecOpts)
		if err != nil {
			// New checked the options already; this is a codec bug.
			p.err = err
		}
		d.codec = c
	}
	return d
}

func (d *downConn) OnNewConnection() (status api.FilterStatus) {
	defer d.recover("OnNewConnection")
	fault.Point("OnNewConnection", d.p.name)
	if d.p.err != nil {
		metrics.ConfigErrors.Inc()
		d.p.plog.Error("config_rejected", "refusing connection: proxy configuration was rejected", "err", d.p.err)
		d.closed.Store(true)
		d.cb.Close(api.NoFlush)
		return api.NetworkFilterStopIteration
	}
	metrics.DownstreamConnections.WithLabelValues(d.p.name).Inc()
	metrics.DownstreamActive.WithLabelValues(d.p.name).Inc()
	d.counted.Store(true)
	d.p.connOpened()
	d.touch()
	if d.p.idleTimeout > 0 {
		// The timer must not hold d strongly: d -> timer -> d would be a
		// cycle through the object Envoy's shim set a finalizer on, and Go
		// never finalizes such cycles, leaking Envoy's connection state.
		wd := weak.Make(d)
		d.idleTimer = time.AfterFunc(d.p.idleTimeout, func() {
			if d := wd.Value(); d != nil {
				d.checkIdle()
			}
		})
	}
	return api.NetworkFilterContinue
}

// readPeer reads who the caller is, from what Envoy established of the
// connection alone: its remote address, and the URI SAN of its client
// certificate that a set_filter_state filter before Breeze stored in the
// connection's filter state (filterstate.Get: on Envoy's callback, as
// here). Nothing a request carries can change it. The identity counts as
// known (a missing SAN then means a caller without one) only where the
// same filter also marked the connection (filter.IdentityHookKey): else
// nothing hands Breeze the caller's certificate, and a missing SAN says
// nothing about the caller.
func (d *downConn) readPeer() {
	// remote, not DownstreamRemoteAddress, which the shim leaves
	// unimplemented (it panics).
	if ap, err := netip.ParseAddrPort(d.remote()); err == nil {
		d.peer.IP = ap.Addr().Unmap()
		d.peer.Addr = netip.AddrPortFrom(d.peer.IP, ap.Port())
	}
	if d.p.peerKey == "" {
		return // only the address was asked for
	}
	hook, err := filterstate.Get(d.cb, filter.IdentityHookKey)
	if err != nil {
		d.p.log.Debug("no filter state to read the caller's identity from", "err", err)
		return
	}
	d.peer.IdentityKnown = hook != ""
	uri, err := filterstate.Get(d.cb, d.p.peerKey)
	if err != nil || uri == "" {
		return // a plaintext connection, or no set_filter_state before Breeze
	}
	principal, ns, ok := filter.ParsePeerURI(uri)
	if !ok {
		d.p.plog.Warn("peer_identity_invalid", "caller's identity is not one SPIFFE URI: the connection has none",
			"filter_state_key", d.p.peerKey, "identity", uri)
		return
	}
	d.peer.Principal, d.peer.Namespace = principal, ns
}

func (d *downConn) touch() { d.lastActive.Store(time.Now().UnixNano()) }

func (d *downConn) checkIdle() {
	defer d.recover("idle timer")
	fault.Point("idle timer", d.p.name)
	if d.ended.Load() {
		return
	}
	idle := time.Duration(time.Now().UnixNano() - d.lastActive.Load())
	if idle >= d.p.idleTimeout {
		if d.closed.Load() {
			// Our own flushing close (bad frame, panic) that the client has
			// not let finish in idle_timeout: it does not read. Stop waiting.
			d.cb.Close(api.NoFlush)
			return
		}
		d.p.log.Debug("closing idle downstream connection", "idle", idle)
		// Without flushing: whatever is still buffered has waited for the
		// client all this time, and a flushing close would wait for a
		// client that does not read forever, holding the buffer.
		d.closeWith("idle_timeout", api.NoFlush)
		return
	}
	d.idleTimer.Reset(d.p.idleTimeout - idle)
}

func (d *downConn) OnData(data []byte, endOfStream bool) (status api.FilterStatus) {
	defer d.recover("OnData")
	if d.closed.Load() || d.failed.Load() {
		return api.NetworkFilterStopIteration
	}
	d.touch()
	d.mu.Lock()
	defer d.mu.Unlock()
	// Envoy hands us a Go copy we may keep: use it directly when nothing is
	// buffered, which is the common case of whole frames per read.
	if !d.peerRead && (d.p.peerKey != "" || d.p.readAddr) {
		// Not in OnNewConnection: on a TLS connection set_filter_state's
		// on_downstream_tls_handshake stores the caller's URI SAN at the
		// Connected event, after every onNewConnection and before the
		// first data (envoy/source/extensions/filters/network/
		// set_filter_state/config.cc, onEvent).
		d.peerRead = true
		d.readPeer()
	}
	d.buf = codecs.Append(d.codec, d.buf, data)
	for len(d.buf) > 0 {
		d.msg.Reset()
		n, err := d.codec.Decode(d.buf, &d.msg)
		if err != nil {
			d.protocolError(err)
			return api.NetworkFilterStopIteration
		}
		if n == 0 {
			break
		}
		d.handle(&d.msg)
		d.buf = d.buf[n:]
		if d.closed.Load() || d.failed.Load() {
			// Closed (over the in-flight cap), or a filter panicked: the
			// frames after it are not decoded.
			d.buf = nil
			return api.NetworkFilterStopIteration
		}
	}
	if len(d.buf) == 0 {
		d.buf = nil
	}
	return api.NetworkFilterContinue
}

func (d *downConn) protocolError(err error) {
	var pe *codecs.ProtocolError
	reason := "unknown"
	if errors.As(err, &pe) {
		reason = pe.Reason
	}
	metrics.ProtocolErrors.WithLabelValues(d.p.name, "downstream", reason).Inc()
	d.p.plog.Warn("bad_frame_"+reason, "closing downstream connection: bad frame", "reason", reason, "err", err, "remote", d.remote())
	d.buf = nil
	d.close("protocol_error")
}

func (d *downConn) remote() string {
	addr, _ := d.cb.StreamInfo().UpstreamRemoteAddress()
	return addr
}

// handle runs with d.mu held.
func (d *downConn) handle(m *codecs.Message) {
	switch m.Type {
	case codecs.Heartbeat:
		metrics.Heartbeats.WithLabelValues(d.p.name, "downstream").Inc()
		d.write(d.codec.HeartbeatReply(m))
	case codecs.Request, codecs.Oneway:
		if d.inFlightCount() >= d.p.maxInFlight {
			// The client sends faster than it is answered, or does not read:
			// Envoy gives no means to slow it down, so it goes. Nothing is
			// flushed: a client that does not read would hold the close forever.
			d.p.plog.Warn("max_requests_in_flight", "closing downstream connection: too many requests in flight",
				"max_requests_in_flight", d.p.maxInFlight, "remote", d.remote())
			d.closeWith("max_requests_in_flight", api.NoFlush)
			return
		}
		st := d.newStream()
		st.Init(d.p.chain, st, m, time.Now())
		st.Peer = &d.peer
		st.call.Init(&st.Stream, d.codec, &d.mu)
		d.link(st)
		fault.Point("OnData", d.p.name)
		d.p.router.Match(&st.Stream)
		st.Run()
	default:
		metrics.Dropped.WithLabelValues(d.p.name, "unexpected_"+m.Type.String()).Inc()
	}
}

// maxFreeStreams bounds the finished streams a connection keeps for its
// next requests: a connection that once had many requests in flight does
// not hold that many streams (1.5 KiB each) for the rest of its life.
const maxFreeStreams = 8

// newStream takes a finished stream of this connection, or a new one. It
// runs in handle, with d.mu held, which is what makes recycling safe: see
// recycle.
func (d *downConn) newStream() *stream {
	d.actMu.Lock()
	st := d.free
	if st != nil {
		d.free, st.next = st.next, nil
		d.freeN--
	}
	d.actMu.Unlock()
	if st == nil {
		return &stream{d: d}
	}
	// Zeroed here rather than in recycle: the walk of its previous
	// request may still have been looking at its state then (see recycle).
	*st = stream{d: d}
	return st
}

// recycle keeps a finished stream for the connection's next request, as
// the last thing Done does. Nobody may touch a stream once it is reused,
// and that holds because:
//
//   - Only the stream's holder finishes it while the connection is healthy
//     (the walk, the upstream response or timeout, a retry timer, a
//     filter's Resume): every other holder it had before is done with it
//     (the upstream layer took it out of pending, a retry's timer fired).
//     A late callback for it (a response after its timeout) finds nothing
//     to call: the upstream layer forgot it, and a recycled upstream
//     Request queued twice is told apart by its id (upstream.waiting).
//   - Streams finished by the connection itself (closed: abortActive; a
//     recovered panic: fail), whose holders may still call them, are
//     never recycled: closed and failed are set before those look at the
//     streams in flight, and checked here after unlink, under actMu.
//   - Reuse happens only in handle, with d.mu held, on this connection:
//     the code that walks the chain of a stream (handle, a Resume
//     goroutine, a retry, fail) holds d.mu to its end, so it has let go of
//     the stream before it can be taken again, even when an upstream
//     goroutine finished it in the middle of the walk (a mirror's shadow
//     is encoded from the request's metadata after the primary was sent).
//     newStream zeroes it then, under d.mu.
//
// A kept stream would pin its last request (the read buffer its frame
// points into, its metadata) until reused: recycle drops those at once
// when d.mu is free, which proves no walk is reading them; when it is
// not, they wait for newStream. The free list is dropped when the
// connection closes (dropFree): its streams point back to d, and Go never
// finalizes a cycle through the object the shim set a finalizer on.
func (d *downConn) recycle(st *stream) {
	if d.closed.Load() || d.failed.Load() {
		return
	}
	if d.mu.TryLock() {
		st.Stream.Release()
		d.mu.Unlock()
	}
	d.actMu.Lock()
	defer d.actMu.Unlock()
	if d.freeN >= maxFreeStreams || d.closed.Load() || d.failed.Load() {
		return
	}
	st.next = d.free
	d.free = st
	d.freeN++
}

// dropFree lets the connection's kept streams go, once it closed.
func (d *downConn) dropFree() {
	d.actMu.Lock()
	d.free, d.freeN = nil, 0
	d.actMu.Unlock()
}

func (d *downConn) link(st *stream) {
	d.actMu.Lock()
	st.next = d.active
	if d.active != nil {
		d.active.prev = st
	}
	d.active = st
	d.inFlightN++
	d.actMu.Unlock()
}

func (d *downConn) inFlightCount() int {
	d.actMu.Lock()
	defer d.actMu.Unlock()
	return d.inFlightN
}

func (d *downConn) unlink(st *stream) {
	d.actMu.Lock()
	if st.prev == nil && d.active != st {
		d.actMu.Unlock()
		return // not linked (any more)
	}
	if st.prev != nil {
		st.prev.next = st.next
	} else {
		d.active = st.next
	}
	if st.next != nil {
		st.next.prev = st.prev
	}
	st.prev, st.next = nil, nil
	d.inFlightN--
	d.actMu.Unlock()
}

func (d *downConn) write(b []byte) {
	if len(b) == 0 || d.closed.Load() {
		return
	}
	d.touch()
	d.cb.Write(b, false)
}

func (d *downConn) close(reason string) { d.closeWith(reason, api.FlushWrite) }

func (d *downConn) closeWith(reason string, how api.ConnectionCloseType) {
	if d.closed.Swap(true) {
		return
	}
	metrics.DownstreamClosed.WithLabelValues(d.p.name, reason).Inc()
	d.cb.Close(how)
}

// LocalReply implements filter.Conn: the codec's own error reply.
func (st *stream) LocalReply(s *filter.Stream, kind codecs.ErrorKind, detail string, locked bool) {
	d := st.d
	if !locked {
		d.mu.Lock()
		defer d.mu.Unlock()
	}
	b := d.localReply(&s.Request, kind, detail)
	s.BytesOut = len(b)
	d.unlink(st) // answered: see Write
	d.write(b)
}

// localReply builds the codec's error reply to req, with d.mu held. A
// codec that panics doing so is presumed broken: the connection fails,
// and this reply and the next come from a fresh instance of the codec.
func (d *downConn) localReply(req *codecs.Message, kind codecs.ErrorKind, detail string) []byte {
	b, v := tryLocalReply(d.codec, req, kind, detail)
	if v == nil {
		return b
	}
	d.panicked("LocalReply", v)
	d.failed.Store(true)
	go d.fail() // it needs d.mu
	if !d.freshCodec() {
		return nil
	}
	if b, v = tryLocalReply(d.codec, req, kind, detail); v != nil {
		d.panicked("LocalReply", v) // nothing to answer with; the connection closes
		return nil
	}
	return b
}

func tryLocalReply(c codecs.Codec, req *codecs.Message, kind codecs.ErrorKind, detail string) (b []byte, panicked any) {
	defer func() { panicked = recover() }()
	return c.LocalReply(req, kind, detail), nil
}

// freshCodec replaces the connection's codec by a new instance, with d.mu
// held. A codec's LocalReply needs nothing but the request it answers
// (codecs.Codec), so the new one answers requests the old one decoded.
func (d *downConn) freshCodec() bool {
	if d.p.err != nil {
		return false
	}
	c, err := d.p.codec(d.p.codecOpts)
	if err != nil {
		d.p.log.Error("cannot make a codec to answer the requests of a failed connection", "err", err)
		return false
	}
	d.codec = c
	return true
}

// Write implements filter.Conn: it writes the stream's answer. The
// request stops counting as in flight first: the client may see the
// answer and send its next request before Done, which runs after the
// OnDone filters on whichever goroutine answered, and a client with no
// unanswered request must not be closed for max_requests_in_flight.
// (Streams already answered are skipped by abortActive and fail anyway.)
func (st *stream) Write(b []byte) {
	st.d.unlink(st)
	st.d.write(b)
}

// Resume implements filter.Conn: the rest of the chain runs on its own
// goroutine, so that Resume never blocks its caller nor waits for a lock
// the caller may hold.
func (st *stream) Resume(s *filter.Stream) {
	go func() {
		d := st.d
		defer d.recover("resume")
		d.mu.Lock()
		defer d.mu.Unlock()
		fault.Point("resume", d.p.name)
		switch {
		case d.closed.Load():
			s.Finish(filter.ClientGone)
		case d.failed.Load():
			s.Fail(failedDetail) // unless fail answered it already
		default:
			s.Continue()
		}
	}()
}

// Done implements filter.Conn: count how the request ended, then recycle
// the stream (last: nothing here may touch it after).
func (st *stream) Done(s *filter.Stream) {
	d := st.d
	d.unlink(st)
	defer d.recycle(st)
	if kind := s.Outcome.LocalReply; kind != 0 {
		// A oneway gets no reply (ReplyAndFinish writes none): it is
		// counted once, as dropped, and never as a local reply.
		if s.Request.Type == codecs.Oneway {
			metrics.Dropped.WithLabelValues(d.p.name, "oneway_"+kind.String()).Inc()
			d.p.plog.Warn("oneway_dropped_"+kind.String(), "oneway dropped", d.replyLogArgs(s)...)
			return
		}
		metrics.LocalReplies.WithLabelValues(d.p.name, kind.String()).Inc()
		d.p.plog.Warn("local_reply_"+kind.String(), "local reply", d.replyLogArgs(s)...)
	}
	d.closeIfFailed()
}

// serviceMethod names the service and method of a request with metadata md,
// as codecs.Describe does, without a codec instance: the connection's may
// be being replaced (fail), and Done runs without its lock.
func (p *Proxy) serviceMethod(md codecs.Metadata) (service, method string) {
	if p.serviceKey != "" {
		service, _ = md.Get(p.serviceKey)
	}
	if p.methodKey != "" {
		method, _ = md.Get(p.methodKey)
	}
	return service, method
}

// replyLogArgs are what the log says of a request the proxy answered itself
// (or dropped): why, where it was going, what it asked for. Parts it
// never got to (no route matched, no endpoint picked) are left out.
func (d *downConn) replyLogArgs(s *filter.Stream) []any {
	args := make([]any, 0, 18)
	args = append(args, "reason", s.Outcome.LocalReply.String(), "flags", s.Outcome.Flags.String())
	if s.Route != nil && s.Route.RouteName() != "" {
		args = append(args, "route", s.Route.RouteName())
	}
	if s.Cluster != "" {
		args = append(args, "cluster", s.Cluster)
	}
	if s.Upstream != "" {
		args = append(args, "endpoint", s.Upstream)
	}
	if svc, method := d.p.serviceMethod(s.Request.Metadata); svc != "" || method != "" {
		args = append(args, "service", svc, "method", method)
	}
	return append(args, "detail", s.Outcome.Detail, "id", s.Request.ID)
}

// Panicked implements filter.Conn: a filter panicked; the connection
// fails, as for a panic anywhere else in it.
func (st *stream) Panicked(s *filter.Stream, where string, v any, stack []byte) {
	d := st.d
	metrics.Panics.WithLabelValues(where).Inc()
	// Sampled: a request that makes a filter panic may come again and
	// again; breeze_panics_total counts every one.
	d.p.plog.Error("panic_"+where, "panic in L7 filter; failing the connection", "where", where, "panic", fmt.Sprint(v), "stack", string(stack))
	// The caller may hold the codec, which fail takes.
	d.failed.Store(true)
	go d.fail()
}

func (d *downConn) OnEvent(event api.ConnectionEvent) {
	if event != api.RemoteClose && event != api.LocalClose {
		return
	}
	// Once the requests in flight have ended, even if a panic interrupted
	// their ending below (recover ends them first).
	defer d.uncount()
	defer d.recover("OnEvent")
	wasOpen := !d.closed.Swap(true)
	d.ended.Store(true)
	if d.idleTimer != nil {
		d.idleTimer.Stop()
	}
	if d.p.err == nil {
		metrics.DownstreamActive.WithLabelValues(d.p.name).Dec()
	}
	if wasOpen && event == api.RemoteClose {
		d.p.log.Debug("downstream closed by peer")
	}
	d.dropFree()
	fault.Point("OnEvent", d.p.name)
	d.abortActive()
}

// uncount takes a closed connection out of the proxy's count; the last
// one puts the proxy to sleep, closing its upstream connections.
func (d *downConn) uncount() {
	defer d.recover("OnEvent")
	if d.counted.Swap(false) {
		d.p.connClosed()
	}
}

// abortActive finishes the requests still in flight of a closed
// connection: paused ones and those waiting for their upstream (which is
// told to forget them). The others are in someone's hands right now and
// finish there.
func (d *downConn) abortActive() {
	for _, st := range d.inFlight() {
		if !st.Abort() {
			d.p.router.Abort(&st.Stream)
		}
	}
}

func (d *downConn) inFlight() []*stream {
	d.actMu.Lock()
	defer d.actMu.Unlock()
	var streams []*stream
	for st := d.active; st != nil; st = st.next {
		streams = append(streams, st)
	}
	return streams
}

// OnWrite sees the bytes Envoy writes to the client; Breeze writes them itself.
func (d *downConn) OnWrite(buffer []byte, endOfStream bool) api.FilterStatus {
	return api.NetworkFilterContinue
}

// recover keeps a panic in a callback from reaching Envoy, where it would
// abort the process and every connection in it: log it, count it, fail
// this connection only. The callbacks release d.mu in defers, before this
// runs.
func (d *downConn) recover(where string) {
	v := recover()
	if v == nil {
		return
	}
	d.panicked(where, v)
	d.fail()
}

func (d *downConn) panicked(where string, v any) {
	metrics.Panics.WithLabelValues(where).Inc()
	// Sampled: what made it panic (a client's frame, say) may come again
	// and again; breeze_panics_total counts every one.
	d.p.plog.Error("panic_"+where, "panic in proxy; failing the connection", "where", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}

// failedDetail is the detail of the replies of a failed connection.
const failedDetail = "breeze: internal error; the connection is closing"

// fail is what a recovered panic does to the connection (in a callback,
// a filter, its codec): its state, the codec above all, can no longer be
// trusted. It takes no new request; every request in flight ends now
// with the protocol's internal-error reply, whoever holds it (paused,
// waiting upstream, resumed, or abandoned half-way by the panic), so that
// no client waits for an answer that will not come; then the connection
// closes, once the last answer is written (one may be being relayed on
// an upstream goroutine right now).
//
// The replies come from a fresh instance of the codec: each stream has
// its own copy of its request (id, metadata, the codec's Private words),
// which is all LocalReply needs (codecs.Codec), while the old instance
// may have stopped half-way through a frame.
func (d *downConn) fail() {
	defer func() {
		if v := recover(); v != nil {
			d.panicked("fail", v)
			if !d.closed.Swap(true) {
				d.cb.Close(api.NoFlush)
			}
		}
	}()
	d.failed.Store(true)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.freshCodec()
	for _, st := range d.inFlight() {
		if !st.Stream.Done() {
			d.p.router.Withdraw(&st.Stream)
			st.Fail(failedDetail)
		}
	}
	d.closeIfFailed()
}

// closeIfFailed closes a failed connection once no request is in flight.
func (d *downConn) closeIfFailed() {
	if !d.failed.Load() {
		return
	}
	d.actMu.Lock()
	idle := d.active == nil
	d.actMu.Unlock()
	if idle {
		d.close("panic")
	}
}
