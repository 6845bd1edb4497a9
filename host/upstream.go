package host

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
)

// upstreamConnect is envoyGoFilterUpstreamConnect: create the connection object,
// return its wrapper at once, and connect asynchronously (Envoy posts connect() to
// a worker picked round-robin, so every upstream callback runs on another thread
// than the caller's). Each upstream connection here gets its own goroutine, never
// a downstream connection's.
func upstreamConnect(libraryID, addr string, connID uint64) unsafe.Pointer {
	h := hostFor(libraryID)
	if h == nil {
		h = orphans()
		h.log.Error("host: UpstreamConnect for a library ID no Host serves", "library_id", libraryID, "addr", addr)
	}
	// The worker is picked now, as Envoy picks it before connecting: what
	// the plugin writes before the connection is ready is posted to it.
	e := newEndpoint(h, true, h.upstreamWorker())
	e.connID = connID
	e.addr = addr
	// UpstreamConn::getLocalAddrStr returns addr_, the address dialled, not the
	// socket's local address: UpstreamLocalAddress() reports the target.
	e.localAddr = addr
	h.st.upConnects.Add(1)
	if !h.addEndpoint(e) {
		// A closed Host: fail, still asynchronously, like a cluster that is gone.
		go e.fail(api.LocalConnectionFailure, "")
		return e.wrapper
	}
	go e.connect()
	return e.wrapper
}

func (e *endpoint) connect() {
	h := e.h
	// adopted: a worker drives the connection from now on, and does what
	// the defers below would do when it ends (worker.finish).
	adopted := false
	defer func() {
		if !adopted {
			h.untrack()
		}
	}()

	// Envoy parses the address in the UpstreamConn constructor, synchronously, and
	// throws on a malformed one; the exception crosses the cgo boundary and Envoy
	// aborts. No DNS happens anywhere.
	if _, err := netip.ParseAddrPort(e.addr); err != nil {
		h.st.upRejected.Add(1)
		h.st.wouldAbort.Add(1)
		h.log.Error("host: CreateUpstreamConn with an address that is not a literal ip:port; ENVOY WOULD ABORT THE PROCESS. Failing the connection with LocalConnectionFailure.",
			"addr", e.addr, "err", err)
		h.removeEndpoint(e)
		e.fail(api.LocalConnectionFailure, "")
		return
	}
	if !h.acquireUpstream() {
		// Debug, as Envoy does: the overflow is counted (Stats) and reported
		// to the plugin as a pool failure; under load a line per connection
		// would flood the log.
		h.log.Debug("host: upstream circuit breaker open (plainText cluster max connections)",
			"addr", e.addr, "max", h.opts.MaxUpstreamConnections)
		h.removeEndpoint(e)
		e.fail(api.Overflow, "")
		return
	}
	h.st.upOpen.Add(1)
	defer func() {
		if !adopted {
			h.st.upOpen.Add(-1)
			h.releaseUpstream()
		}
	}()

	var nc net.Conn
	var err error
	if h.opts.DialUpstream != nil {
		ctx, cancel := context.WithTimeout(h.ctx, h.opts.ConnectTimeout)
		nc, err = h.opts.DialUpstream(ctx, e.addr)
		if err != nil && errors.Is(err, context.DeadlineExceeded) && h.ctx.Err() == nil {
			err = &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
		}
		cancel()
	} else {
		d := net.Dialer{Timeout: h.opts.ConnectTimeout}
		nc, err = d.DialContext(h.ctx, "tcp", e.addr)
	}
	if err == nil && h.ctx.Err() != nil {
		_ = nc.Close()
		err = h.ctx.Err()
	}
	if err != nil {
		reason := api.RemoteConnectionFailure
		var ne net.Error
		switch {
		case h.ctx.Err() != nil && errors.Is(err, context.Canceled):
			reason = api.LocalConnectionFailure // Host.Close
		case errors.As(err, &ne) && ne.Timeout():
			reason = api.Timeout
		}
		h.log.Debug("host: upstream connect failed", "addr", e.addr, "reason", reason.String(), "err", err)
		h.removeEndpoint(e)
		e.fail(reason, transportFailure(err))
		return
	}

	e.mu.Lock()
	e.remoteAddr = nc.RemoteAddr().String()
	w := e.w // only this goroutine changes it (toGoroutines)
	e.mu.Unlock()
	h.st.upReady.Add(1)
	if w != nil {
		if fd := takeFD(nc); fd >= 0 {
			_ = nc.Close() // the worker's duplicate keeps the socket open
			e.fd = fd
			adopted = true
			w.adopt(e)
			return
		}
		e.toGoroutines()
	}
	e.nc = nc
	defer e.teardown()
	if !e.openUpstream() {
		return
	}
	e.start()
	e.run()
}

// openUpstream makes the connection's first callback, on the goroutine that
// will make all of them. false: the connection is closed already.
func (e *endpoint) openUpstream() bool {
	ok := e.invoke("OnPoolReady", func() { onUpstreamConnectionReady(e.wrapper, e.connID) })
	// The shim moves the filter from its conn-id map to its wrapper map before
	// calling OnPoolReady, so it is there even if OnPoolReady panicked.
	e.hasFilter = network.UpstreamFilters.GetFilterByWrapper(e.key) != nil
	if !ok {
		e.closeSocket(api.LocalClose)
		return false
	}
	return true
}

// fail delivers OnPoolFailure with transportFailure, what the dial said.
// Envoy's shim (envoyGoFilterOnUpstreamConnectionFailure, v1.36.2) passes
// "" there (its C ABI, the same in v1.39, has no place for it), and the
// reason Envoy's C++ has goes to Envoy's own log. The standalone runner
// has no such log: the host does what the shim does and hands the plugin
// the reason. As the shim, it takes the filter out of its conn-id map
// first, so a panic in the plugin leaves nothing behind.
func (e *endpoint) fail(reason api.PoolFailureReason, transportFailure string) {
	e.mu.Lock()
	e.gone = true
	e.mu.Unlock()
	e.h.st.upFailures.Add(1)
	if reason == api.Overflow {
		e.h.st.upOverflows.Add(1)
	}
	e.invoke("OnPoolFailure", func() {
		f := network.UpstreamFilters.GetFilterByConnID(e.connID)
		network.UpstreamFilters.DeleteFilterByConnID(e.connID)
		f.OnPoolFailure(reason, transportFailure)
	})
}

// transportFailure is the OS's word for a failed dial ("connection
// refused", "no route to host", "i/o timeout"): the address is the
// plugin's own, and Go's "dial tcp ...: connect:" adds nothing to it.
func transportFailure(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		var sys *os.SyscallError
		if errors.As(op.Err, &sys) {
			return sys.Err.Error()
		}
		return op.Err.Error()
	}
	return err.Error()
}
