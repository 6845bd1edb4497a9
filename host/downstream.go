package host

import (
	"net"
	"reflect"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
)

// serveDownstream starts the life of an accepted connection.
func (h *Host) serveDownstream(l *listener, nc net.Conn) {
	// A worker picked round-robin, as Envoy's listener hands an accepted
	// socket to one of its workers; a connection that is no raw socket
	// (TLS) gets goroutines of its own.
	w := h.pickWorker()
	fd := -1
	if w != nil {
		if fd = takeFD(nc); fd < 0 {
			w = nil
		}
	}
	e := newEndpoint(h, false, w)
	// Envoy captures both addresses when the filter is created (Filter::
	// initializeReadFilterCallbacks) and serves Info from those strings.
	e.localAddr = nc.LocalAddr().String()
	e.remoteAddr = nc.RemoteAddr().String()
	if w != nil {
		_ = nc.Close() // the worker's duplicate keeps the socket open
		e.fd = fd
	} else {
		e.nc = nc
	}
	// What earlier filters of the chain put in the filter state.
	if fs := h.opts.FilterState; fs != nil {
		for k, v := range fs(e.remoteAddr) {
			if e.state == nil {
				e.state = make(map[string]stateEntry)
			}
			e.state[k] = stateEntry{value: v}
		}
	}
	if !h.addEndpoint(e) {
		if w != nil {
			closeFD(fd)
		} else {
			_ = nc.Close()
		}
		e.retire()
		return
	}
	h.st.downAccepted.Add(1)
	h.st.downOpen.Add(1)
	if w != nil {
		e.listener = l
		w.adopt(e)
		return
	}
	go e.runDownstream(l)
}

func (e *endpoint) runDownstream(l *listener) {
	h := e.h
	defer h.untrack()
	defer h.st.downOpen.Add(-1)
	defer e.teardown()
	e.loopGoroutine.Store(goroutineID())
	if !e.openDownstream(l) {
		return
	}
	e.start()
	e.run()
}

// openDownstream makes the connection's first callback, on the goroutine
// that will make all of them. false: the connection is closed already.
func (e *endpoint) openDownstream(l *listener) bool {
	h := e.h
	// Envoy: FilterManagerImpl::initializeReadFilters -> Filter::onNewConnection,
	// before the first read. Its status only decides whether later read filters
	// see onNewConnection; the Go filter is terminal and last, so nothing follows
	// it and onData is delivered whatever it returns. The host ignores it too.
	ok := e.invoke("OnNewConnection", func() {
		_ = onDownstreamConnection(e.wrapper, l.name.ptr(), l.name.len(), l.configID)
	})
	e.hasFilter = network.DownstreamFilters.GetFilter(e.key) != nil
	if !e.hasFilter {
		if ok {
			// The shim returns StopIteration without a filter for an unknown
			// config id; Envoy would then call OnData, which dereferences the nil
			// filter and aborts.
			h.st.wouldAbort.Add(1)
			h.log.Error("host: the shim created no filter for a connection; Envoy would abort on its first data",
				"plugin", l.pluginName, "config_id", l.configID)
		}
		e.closeSocket(api.LocalClose)
		return false
	}
	if f := network.DownstreamFilters.GetFilter(e.key); f != nil {
		if t := reflect.TypeOf(f); t.Kind() == reflect.Pointer && t.Elem().Size() == 0 {
			// Every pointer to a zero-size value is the runtime's zerobase, on
			// which SetFinalizer silently does nothing: DownstreamFinalize never
			// comes and Envoy leaks the connection's FilterWrapper.
			e.unfinalizable = true
			if l.warnedZeroSize.CompareAndSwap(false, true) {
				h.log.Warn("host: the plugin's filter is a pointer to a zero-size type; the shim's finalizer never runs on it and Envoy leaks a wrapper per connection. Give the filter a field.",
					"plugin", l.pluginName, "type", t.String())
			}
		}
	}
	if !ok {
		e.closeSocket(api.LocalClose)
		return false
	}
	// The TLS handshake completes now: after onNewConnection, before any
	// data (see Options.HandshakeFilterState).
	if fs := h.opts.HandshakeFilterState; fs != nil {
		for k, v := range fs(e.remoteAddr) {
			e.setFilterState(k, v, api.StateTypeMutable)
		}
	}
	return true
}
