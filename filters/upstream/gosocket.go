package upstream

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"

	"github.com/breeze-mesh/breeze/filters/logs"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// Connect is how a Manager opens its upstream connections
// (ProxyConfig.upstream_connect).
type Connect uint8

const (
	// ConnectEnvoy: network.CreateUpstreamConn, Envoy's socket through its
	// one plainText cluster (whose TLS, connect timeout and circuit
	// breaker apply).
	ConnectEnvoy Connect = iota
	// ConnectGoLoopback: the Go runtime's own socket inside the Envoy
	// process, to loopback addresses only. An inbound proxy dials its
	// pod's app at 127.0.0.1 this way in plain text while the pod's
	// plainText cluster carries Istio mTLS for its outbound proxies.
	ConnectGoLoopback
)

const (
	// goConnectTimeout bounds a Go-socket dial as the plainText cluster's
	// connect_timeout bounds Envoy's (deploy renders 10s): a loopback dial
	// normally fails or succeeds at once.
	goConnectTimeout = 10 * time.Second
	// goReadSize is the read buffer of a Go-socket connection, reused
	// across reads: Envoy's buffer slice size.
	goReadSize = 16 << 10
	// goWriteQueueMin is the least a Go-socket connection may hold of
	// bytes written but not yet taken by the app: Envoy gives the Go filter
	// no backpressure, so past this the app is not reading and the
	// connection is closed instead of growing without end. At least two
	// frames of the codec's largest size (Dubbo's default: 8 MiB).
	goWriteQueueMin = 16 << 20
)

// goDialer opens ConnectGoLoopback connections for one Manager.
type goDialer struct {
	proxy      string
	plog       *logs.Logger
	timeout    time.Duration
	writeLimit int
	readSize   int
}

// dial is CreateUpstreamConn's twin: it returns at once, and f hears
// OnPoolReady or OnPoolFailure from another goroutine, then OnData and
// OnEvent, serialized on that goroutine, as Envoy calls them on the
// connection's worker thread.
func (d *goDialer) dial(addr string, f api.UpstreamFilter) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		// The security rule of GO_LOOPBACK: this socket carries no mesh
		// mTLS, so it must never leave the pod. Config validation refuses
		// such endpoints; this catches what came another way (DNS, a bug).
		metrics.GoSocketFailures.WithLabelValues(d.proxy, "not_loopback").Inc()
		d.plog.Warn("go_socket_not_loopback", "upstream connection refused: upstream_connect GO_LOOPBACK dials loopback addresses only (127.0.0.0/8, ::1); any other address would bypass the mesh's mTLS",
			"endpoint", addr, "reason", "not_loopback")
		go func() {
			defer recoverGoSocket("go socket dial", nil)
			f.OnPoolFailure(api.LocalConnectionFailure, "not a loopback address")
		}()
		return
	}
	s := &goSocket{d: d, f: f, addr: addr, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
}

// goSocket is one ConnectGoLoopback connection, and the
// api.ConnectionCallback its filter writes and closes it through.
type goSocket struct {
	d    *goDialer
	f    api.UpstreamFilter
	addr string
	nc   net.Conn

	mu sync.Mutex
	// out holds what Write copied and the writer has not taken yet; the
	// writer swaps it with its own buffer, so that steady traffic
	// allocates nothing.
	out []byte
	// closing: Close was called (or the queue overflowed): Write drops
	// what comes; the writer closes the socket once out is flushed.
	closing bool
	// byUs: the proxy closed it; the event is LocalClose.
	byUs bool

	wake     chan struct{} // the writer has something to do (capacity 1)
	done     chan struct{} // closed with the socket: the writer stops
	shutOnce sync.Once
}

var _ api.ConnectionCallback = (*goSocket)(nil)

// run dials, then reads until the socket closes, delivering every
// callback: one goroutine per connection, as one Envoy worker owns it.
func (s *goSocket) run() {
	// phase says which callback a recovered panic still owes the filter.
	phase := 0 // 0: dialing, 1: ready (OnEvent owed), 2: OnEvent delivered
	defer func() {
		if v := recover(); v != nil {
			panicked("go socket reader", s.addr, v, s.d.plog)
			s.closeWith(true)
			switch phase {
			case 0:
				defer recoverGoSocket("go socket reader", s.d.plog)
				s.f.OnPoolFailure(api.LocalConnectionFailure, fmt.Sprint("panic: ", v))
			case 1:
				defer recoverGoSocket("go socket reader", s.d.plog)
				s.f.OnEvent(api.LocalClose)
			}
		}
	}()
	dl := net.Dialer{Timeout: s.d.timeout}
	nc, err := dl.Dial("tcp", s.addr)
	if err != nil {
		reason := api.RemoteConnectionFailure
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			reason = api.Timeout
		}
		phase = 2
		s.f.OnPoolFailure(reason, osError(err))
		return
	}
	s.nc = nc
	go s.writeLoop()
	phase = 1
	s.f.OnPoolReady(s)
	buf := make([]byte, s.d.readSize)
	for {
		n, err := nc.Read(buf)
		if n > 0 {
			// The filter may keep what OnData gives it (the upstream conn
			// keeps a partial frame), as Envoy's shim gives a fresh Go
			// copy: one copy per read, as there.
			s.f.OnData(append([]byte(nil), buf[:n]...), false)
		}
		if err != nil {
			break
		}
	}
	// The app closed (EOF), or we did (the socket is closed under the
	// read): Envoy without half-close closes at the peer's FIN too.
	byUs := s.closeWith(false)
	event := api.RemoteClose
	if byUs {
		event = api.LocalClose
	}
	phase = 2
	s.f.OnEvent(event)
}

// writeLoop writes what Write queued, in order, from its own goroutine:
// Write never blocks the proxy on a slow app.
func (s *goSocket) writeLoop() {
	defer func() {
		if v := recover(); v != nil {
			panicked("go socket writer", s.addr, v, s.d.plog)
			s.closeWith(true) // the reader delivers LocalClose
		}
	}()
	var buf []byte
	for {
		select {
		case <-s.wake:
		case <-s.done:
			return
		}
		for {
			s.mu.Lock()
			if len(s.out) == 0 {
				closing := s.closing
				s.mu.Unlock()
				if closing {
					s.closeWith(true) // flushed
					return
				}
				break
			}
			buf, s.out = s.out, buf[:0]
			s.mu.Unlock()
			if _, err := s.nc.Write(buf); err != nil {
				s.closeWith(false)
				return
			}
		}
	}
}

// closeWith closes the socket once; byUs marks the close as ours. It
// reports whether the connection was closed by us.
func (s *goSocket) closeWith(byUs bool) bool {
	s.mu.Lock()
	if byUs {
		s.byUs, s.closing = true, true
	}
	ours := s.byUs
	s.mu.Unlock()
	s.shutOnce.Do(func() {
		if s.nc != nil {
			_ = s.nc.Close()
		}
		close(s.done)
	})
	return ours
}

func (s *goSocket) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Write copies b into the connection's queue for the writer, as Envoy
// copies it into its buffer: the caller may reuse b at once. Past the
// queue's bound the app is not reading: the connection closes.
func (s *goSocket) Write(b []byte, endStream bool) {
	s.mu.Lock()
	if s.closing || len(b) == 0 {
		s.mu.Unlock()
		return
	}
	if len(s.out)+len(b) > s.d.writeLimit {
		queued := len(s.out)
		s.byUs, s.closing = true, true
		s.out = nil
		s.mu.Unlock()
		metrics.GoSocketFailures.WithLabelValues(s.d.proxy, "write_queue_full").Inc()
		s.d.plog.Warn("go_socket_write_queue_full", "closing upstream connection: the app is not reading what the proxy writes to it",
			"endpoint", s.addr, "reason", "write_queue_full", "queued", queued)
		s.closeWith(true)
		return
	}
	s.out = append(s.out, b...)
	if endStream {
		// Without half-close (Breeze never enables it), Envoy closes
		// once what was written is flushed.
		s.closing, s.byUs = true, true
	}
	s.mu.Unlock()
	s.signal()
}

// Close closes the connection: FlushWrite once what was written is
// written (within the connect timeout: an app that stopped reading does
// not hold it open), NoFlush at once. The filter then gets LocalClose.
func (s *goSocket) Close(ct api.ConnectionCloseType) {
	s.mu.Lock()
	s.closing, s.byUs = true, true
	s.mu.Unlock()
	if ct == api.NoFlush {
		s.closeWith(true)
		return
	}
	_ = s.nc.SetWriteDeadline(time.Now().Add(s.d.timeout))
	s.signal()
}

// EnableHalfClose: Breeze never half-closes its upstream connections.
func (s *goSocket) EnableHalfClose(bool) {}

// StreamInfo: none; Breeze reads none on upstream connections.
func (s *goSocket) StreamInfo() api.StreamInfo { return nil }

// panicked counts and logs a panic recovered on a Go-socket goroutine.
func panicked(where, addr string, v any, plog *logs.Logger) {
	metrics.Panics.WithLabelValues(where).Inc()
	if plog != nil {
		plog.Error("panic_"+where, "panic in a Go-socket upstream connection; closing it", "where", where,
			"endpoint", addr, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	}
}

// recoverGoSocket keeps a panic in a last callback from killing the
// process: there is nothing left to fail.
func recoverGoSocket(where string, plog *logs.Logger) {
	if v := recover(); v != nil {
		panicked(where, "", v, plog)
	}
}

// osError is the OS's word for a failed dial ("connection refused"), as
// the host and Envoy report it.
func osError(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var sys *os.SyscallError
	if errors.As(err, &sys) {
		return sys.Err.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

// dialer is how a Manager opens connections: Envoy's, or the Go socket's.
func dialer(opts Options, plog *logs.Logger) func(addr string, f api.UpstreamFilter) {
	if opts.Connect != ConnectGoLoopback {
		return network.CreateUpstreamConn
	}
	limit := max(goWriteQueueMin, 2*opts.CodecOpts.MaxFrameSize)
	if opts.goWriteLimit > 0 {
		limit = opts.goWriteLimit
	}
	d := &goDialer{proxy: opts.Proxy, plog: plog, timeout: goConnectTimeout, writeLimit: limit, readSize: goReadSize}
	return d.dial
}
