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
)

// downConn is the filter instance of one downstream connection. Envoy
// calls OnData/OnEvent serialized on the connection's worker thread;
// responses, timeouts and retries arrive on other goroutines and take mu
// to use the codec.
type downConn struct {
	p     *Proxy
	cb    api.ConnectionCallback
	codec codecs.Codec

	mu  sync.Mutex // guards codec, buf, msg
	buf []byte
	msg codecs.Message

	closed     atomic.Bool
	lastActive atomic.Int64
	idleTimer  *time.Timer
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
	if d.p.err != nil {
		configErrors.Inc()
		d.p.log.Error("refusing connection: proxy configuration was rejected", "err", d.p.err)
		d.closed.Store(true)
		d.cb.Close(api.NoFlush)
		return api.NetworkFilterStopIteration
	}
	downstreamConnections.WithLabelValues(d.p.name).Inc()
	downstreamActive.WithLabelValues(d.p.name).Inc()
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
	protocolErrors.WithLabelValues(d.p.name, "downstream", reason).Inc()
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
		heartbeats.WithLabelValues(d.p.name, "downstream").Inc()
		d.write(d.codec.HeartbeatReply(m))
	case codecs.Request, codecs.Oneway:
		d.p.route(d, m)
	default:
		dropped.WithLabelValues(d.p.name, "unexpected_"+m.Type.String()).Inc()
	}
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
	downstreamClosed.WithLabelValues(d.p.name, reason).Inc()
	d.cb.Close(api.FlushWrite)
}

// localReply answers a request the proxy could not relay. It may run on any
// goroutine: callers not already holding d.mu pass locked=false.
func (d *downConn) localReply(req *codecs.Message, kind codecs.ErrorKind, detail string, locked bool) {
	localReplies.WithLabelValues(d.p.name, kind.String()).Inc()
	d.p.log.Debug("local reply", "reason", kind.String(), "detail", detail, "id", req.ID)
	if req.Type == codecs.Oneway {
		dropped.WithLabelValues(d.p.name, "oneway_"+kind.String()).Inc()
		return
	}
	if !locked {
		d.mu.Lock()
		defer d.mu.Unlock()
	}
	d.write(d.codec.LocalReply(req, kind, detail))
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
		downstreamActive.WithLabelValues(d.p.name).Dec()
	}
	if wasOpen && event == api.RemoteClose {
		d.p.log.Debug("downstream closed by peer")
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
	panics.WithLabelValues(where).Inc()
	d.p.log.Error("panic in proxy; closing the connection", "where", where, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	if !d.closed.Swap(true) {
		d.cb.Close(api.NoFlush)
	}
}
