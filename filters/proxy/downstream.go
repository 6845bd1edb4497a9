package proxy

import (
	"errors"
	"fmt"
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
	actMu  sync.Mutex
	active *stream

	closed     atomic.Bool
	counted    atomic.Bool // in the proxy's connection count (life.go)
	lastActive atomic.Int64
	idleTimer  *time.Timer
}

// stream is one request: the filter API's Stream, the router's state and
// the connection, in one allocation. It is the stream's filter.Conn.
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
		d.p.log.Error("refusing connection: proxy configuration was rejected", "err", d.p.err)
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

func (d *downConn) touch() { d.lastActive.Store(time.Now().UnixNano()) }

func (d *downConn) checkIdle() {
	defer d.recover("idle timer")
	fault.Point("idle timer", d.p.name)
	if d.closed.Load() {
		return
	}
	idle := time.Duration(time.Now().UnixNano() - d.lastActive.Load())
	if idle >= d.p.idleTimeout {
		d.p.log.Debug("closing idle downstream connection", "idle", idle)
		d.close("idle_timeout")
		return
	}
	d.idleTimer.Reset(d.p.idleTimeout - idle)
}

func (d *downConn) OnData(data []byte, endOfStream bool) (status api.FilterStatus) {
	defer d.recover("OnData")
	if d.closed.Load() {
		return api.NetworkFilterStopIteration
	}
	d.touch()
	d.mu.Lock()
	defer d.mu.Unlock()
	// Envoy hands us a Go copy we may keep: use it directly when nothing is
	// buffered, which is the common case of whole frames per read.
	if len(d.buf) == 0 {
		d.buf = data
	} else {
		d.buf = append(d.buf, data...)
	}
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
	d.p.log.Warn("closing downstream connection: bad frame", "reason", reason, "err", err, "remote", d.remote())
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
		st := &stream{d: d}
		st.Init(d.p.chain, st, m, time.Now())
		st.call.Init(&st.Stream, d.codec, &d.mu)
		d.link(st)
		fault.Point("OnData", d.p.name)
		d.p.router.Match(&st.Stream)
		st.Run()
	default:
		metrics.Dropped.WithLabelValues(d.p.name, "unexpected_"+m.Type.String()).Inc()
	}
}

func (d *downConn) link(st *stream) {
	d.actMu.Lock()
	st.next = d.active
	if d.active != nil {
		d.active.prev = st
	}
	d.active = st
	d.actMu.Unlock()
}

func (d *downConn) unlink(st *stream) {
	d.actMu.Lock()
	if st.prev != nil {
		st.prev.next = st.next
	} else if d.active == st {
		d.active = st.next
	}
	if st.next != nil {
		st.next.prev = st.prev
	}
	st.prev, st.next = nil, nil
	d.actMu.Unlock()
}

func (d *downConn) write(b []byte) {
	if len(b) == 0 || d.closed.Load() {
		return
	}
	d.touch()
	d.cb.Write(b, false)
}

func (d *downConn) close(reason string) {
	if d.closed.Swap(true) {
		return
	}
	metrics.DownstreamClosed.WithLabelValues(d.p.name, reason).Inc()
	d.cb.Close(api.FlushWrite)
}

// LocalReply implements filter.Conn: the codec's own error reply.
func (st *stream) LocalReply(s *filter.Stream, kind codecs.ErrorKind, detail string, locked bool) {
	d := st.d
	if !locked {
		d.mu.Lock()
		defer d.mu.Unlock()
	}
	d.write(d.codec.LocalReply(&s.Request, kind, detail))
}

// Write implements filter.Conn.
func (st *stream) Write(b []byte) { st.d.write(b) }

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
		if d.closed.Load() {
			s.Finish(filter.ClientGone)
			return
		}
		s.Continue()
	}()
}

// Done implements filter.Conn: count how the request ended.
func (st *stream) Done(s *filter.Stream) {
	d := st.d
	d.unlink(st)
	if kind := s.Outcome.LocalReply; kind != 0 {
		metrics.LocalReplies.WithLabelValues(d.p.name, kind.String()).Inc()
		d.p.log.Debug("local reply", "reason", kind.String(), "flags", s.Outcome.Flags.String(), "detail", s.Outcome.Detail, "id", s.Request.ID)
		if s.Request.Type == codecs.Oneway {
			metrics.Dropped.WithLabelValues(d.p.name, "oneway_"+kind.String()).Inc()
		}
	}
}

// Panicked implements filter.Conn: a filter panicked; the request was
// answered, the connection is closed, as for a panic anywhere else.
func (st *stream) Panicked(s *filter.Stream, where string, v any, stack []byte) {
	d := st.d
	metrics.Panics.WithLabelValues(where).Inc()
	d.p.log.Error("panic in L7 filter; closing the connection", "where", where, "panic", fmt.Sprint(v), "stack", string(stack))
	d.close("panic")
}

func (d *downConn) OnEvent(event api.ConnectionEvent) {
	defer d.recover("OnEvent")
	if event != api.RemoteClose && event != api.LocalClose {
		return
	}
	wasOpen := !d.closed.Swap(true)
	if d.idleTimer != nil {
		d.idleTimer.Stop()
	}
	if d.p.err == nil {
		metrics.DownstreamActive.WithLabelValues(d.p.name).Dec()
	}
	if wasOpen && event == api.RemoteClose {
		d.p.log.Debug("downstream closed by peer")
	}
	fault.Point("OnEvent", d.p.name)
	d.abortActive()
	if d.counted.Swap(false) {
		d.p.connClosed()
	}
}

// abortActive finishes the requests still in flight of a closed
// connection: paused ones and those waiting for their upstream (which is
// told to forget them). The others are in someone's hands right now and
// finish there.
func (d *downConn) abortActive() {
	d.actMu.Lock()
	var inFlight []*stream
	for st := d.active; st != nil; st = st.next {
		inFlight = append(inFlight, st)
	}
	d.actMu.Unlock()
	for _, st := range inFlight {
		if !st.Abort() {
			d.p.router.Abort(&st.Stream)
		}
	}
}

// OnWrite sees the bytes Envoy writes to the client; Breeze writes them itself.
func (d *downConn) OnWrite(buffer []byte, endOfStream bool) api.FilterStatus {
	return api.NetworkFilterContinue
}

// recover keeps a panic from reaching Envoy, where it would abort the
// process and every connection in it: log it, count it, close this
// connection only.
func (d *downConn) recover(where string) {
	r := recover()
	if r == nil {
		return
	}
	metrics.Panics.WithLabelValues(where).Inc()
	d.p.log.Error("panic in proxy; closing the connection", "where", where, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	if !d.closed.Swap(true) {
		d.cb.Close(api.NoFlush)
	}
}
