package host

import (
	"bytes"
	"reflect"
	"runtime"
	"strconv"
	"unsafe"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"

	"github.com/breeze-mesh/breeze/internal/release"
)

// The connection's filter state, as Envoy's Filter::getFilterState and
// setFilterState (contrib/golang/filters/network/source/golang.cc) keep it:
// strings by key, read and written on the connection's worker thread.

// stateEntry is one key of a connection's filter state.
type stateEntry struct {
	value    string
	readOnly bool
}

// readOnlyFilterState: the linked shim's Envoy distinguishes read-only
// filter state, and setting a read-only key twice is an ENVOY_BUG (debug
// builds abort, release builds log and keep the old value). Envoy 1.37
// dropped state types: from 1.39's shim on, a second set replaces the
// value (its Filter::setFilterState ignores state_type).
var readOnlyFilterState = ShimRelease().Envoy == "1.36"

// ShimRelease is the build target whose Envoy Go shim this binary links
// (the default target if it cannot tell).
func ShimRelease() release.Release {
	if r, ok := release.ForFunc(release.EnvoyModule, network.SetCgoAPI); ok {
		return r
	}
	if r, ok := release.Built(); ok {
		return r
	}
	return release.Default()
}

// shimObject is what the shim passed to a filter-state function.
type shimObject uint8

const (
	shimUnknown        shimObject = iota
	shimCallback                  // the *connectionCallback: what the C API expects
	shimFilterStateObj            // the *filterState: FilterState().GetString's bug
)

// classify tells the shim's callback object from its filter-state object,
// by comparing f with the two pointers the shim stored for this
// connection (network.DownstreamFilters' wrapper: cb, and cb.state, read
// by field name). shimUnknown before the shim has stored them, i.e. from
// inside CreateFilter.
func (e *endpoint) classify(f unsafe.Pointer) shimObject {
	fw := network.DownstreamFilters.GetFilterWrapper(e.key)
	if fw == nil {
		return shimUnknown
	}
	cb := reflect.ValueOf(fw).Elem().FieldByName("cb")
	if !cb.IsValid() || cb.Kind() != reflect.Pointer || cb.IsNil() {
		e.h.log.Error("host: the shim's downstream filter wrapper has no cb field any more: update host/filterstate.go for this Envoy")
		return shimUnknown
	}
	if f == cb.UnsafePointer() {
		return shimCallback
	}
	if st := cb.Elem().FieldByName("state"); st.IsValid() && st.Kind() == reflect.Pointer && f == st.UnsafePointer() {
		return shimFilterStateObj
	}
	return shimUnknown
}

// getFilterState is Filter::getFilterState for a caller that passed the
// connection callback. Envoy answers at once on the connection's worker
// thread; the host's stand-in for that thread is the goroutine that makes
// the connection's callbacks (its worker, or its loop goroutine), the
// only one that runs the plugin's callbacks of the connection. From any
// other goroutine Envoy posts the read (CAPIYield) and writes the answer
// into Go memory later, maybe after the connection is gone: counted as
// fatal, answered "".
func (e *endpoint) getFilterState(key string) string {
	if goroutineID() != e.loopGoroutine.Load() {
		e.h.st.wouldAbort.Add(1)
		e.h.log.Error("host: filter state read outside the connection's callbacks; Envoy would post it to the worker thread and write the answer into Go memory later",
			"key", key)
		return ""
	}
	if e.closed {
		return "" // closed_ is set before OnEvent: CAPIFilterIsDestroy
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state[key].value
}

// setFilterState stores key. Envoy stores a Router::StringAccessor in the
// connection's filter state; Envoy 1.36 refuses to replace a read-only one.
func (e *endpoint) setFilterState(key, value string, t api.StateType) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gone {
		return // CAPIFilterIsDestroy
	}
	if readOnlyFilterState && e.state[key].readOnly {
		e.h.st.wouldAbort.Add(1)
		e.h.log.Error("host: read-only filter state set twice; an ENVOY_BUG: Envoy debug builds abort, release builds keep the old value", "key", key)
		return
	}
	if e.state == nil {
		e.state = make(map[string]stateEntry)
	}
	e.state[key] = stateEntry{value: value, readOnly: readOnlyFilterState && t == api.StateTypeReadOnly}
}

// goroutineID is the calling goroutine's id, from the first line of its
// stack trace ("goroutine 123 [running]:"). Only the filter-state calls
// and the start of a downstream connection need it.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b, _ = bytes.CutPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		panic("host: cannot read the goroutine id from " + strconv.Quote(string(buf[:])))
	}
	return id
}
