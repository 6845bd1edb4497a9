// Package filterstate reads strings from the filter state of the downstream
// connection a Go network filter runs on: what an earlier filter of the
// chain stored there, such as the caller's identity that Envoy's
// set_filter_state filter keeps (factory_key envoy.string).
//
// The shim's own FilterState().GetString cannot be used: in Envoy's
// contrib/golang network filter (v1.36.2 and v1.39.0 alike) filterState.
// GetString passes the filter-state object (*filterState, 24 bytes) to
// cgoApiImpl.GetFilterState, which takes it for the connection callback
// (*connectionCallback, 96 bytes): it locks a mutex and adds to a WaitGroup
// past the end of the object, corrupting whatever Go object lies there.
// Get makes the same call with the pointer the shim's C API expects: the
// connection callback itself. Everything else is the shim's own code: its
// lock, its wait for Envoy, its C call with the callback's wrapper.
package filterstate

import (
	"errors"
	"reflect"
	_ "unsafe" // go:linkname

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	// The shim whose C API Get calls: linked in by any plugin anyway.
	_ "github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
)

// shimCAPI is the shim's C API (network.cgoAPI): the real one inside
// Envoy, the host's (host.dispatcher) in tests and the standalone runner.
// A pull linkname, like the host's to the shim's entry points; if a later
// shim renames it, linking fails rather than anything going wrong at run
// time.
//
//go:linkname shimCAPI github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network.cgoAPI
var shimCAPI api.NetworkCAPI

const shimPackage = "github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"

// ErrNotDownstream: the callback is not the shim's callback of a downstream
// connection. Upstream connections have no filter state in Envoy's Go
// network filter, and a callback of any other type (a test's fake) is not
// backed by Envoy at all.
var ErrNotDownstream = errors.New("filterstate: not the callback of a downstream connection of Envoy's Go network filter: only those have a filter state")

// Get returns the string Envoy keeps under key in the filter state of cb's
// downstream connection (a Router::StringAccessor: what set_filter_state
// stores with factory_key envoy.string, or what FilterState().SetString
// set); "" if there is none, or once the connection has closed.
//
// Call it only from a callback Envoy makes on that connection
// (CreateFilter's OnNewConnection, OnData, OnWrite, OnEvent), on the
// goroutine Envoy called: there Envoy answers at once, on the connection's
// worker thread. From any other goroutine Envoy posts the read to that
// thread and writes the answer into Go memory later, after the connection
// may be gone; the host (package host) counts such a call as one Envoy
// would not survive, and answers "".
func Get(cb api.ConnectionCallback, key string) (string, error) {
	if !isShimCallback(cb) {
		return "", ErrNotDownstream
	}
	if fs := cb.StreamInfo().FilterState(); fs == nil || reflect.ValueOf(fs).IsNil() {
		return "", ErrNotDownstream // upstream: the shim gives it no filter state
	}
	// The shim's cgoApiImpl.GetFilterState takes the *connectionCallback,
	// locks its mutex, and calls envoyGoFilterGetFilterState with its
	// wrapper: exactly what filterState.GetString should have passed.
	return shimCAPI.GetFilterState(reflect.ValueOf(cb).UnsafePointer(), key), nil
}

// isShimCallback: cb is the shim's *connectionCallback.
func isShimCallback(cb api.ConnectionCallback) bool {
	if cb == nil {
		return false
	}
	t := reflect.TypeOf(cb)
	return t.Kind() == reflect.Pointer && t.Elem().Name() == "connectionCallback" && t.Elem().PkgPath() == shimPackage &&
		!reflect.ValueOf(cb).IsNil()
}
