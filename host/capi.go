package host

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
)

// The shim has exactly one C API per process (a package variable that
// network.SetCgoAPI overwrites without synchronisation). The host installs a single
// dispatcher from init, before any goroutine exists, so the write happens-before
// every read and the race detector stays quiet. The dispatcher routes each call by
// wrapper pointer to the endpoint (and through it the Host) that owns it, which is
// what lets several Hosts live in one test binary.
func init() {
	network.SetCgoAPI(dispatcher{})
}

// registry maps a live wrapper to its *endpoint. An entry is removed when the
// wrapper is finalized (or, for a connection the shim never created a filter for,
// when the connection ends).
var registry sync.Map // unsafe.Pointer -> *endpoint

// staleCalls counts C API calls whose wrapper is not (or no longer) registered:
// in Envoy these read freed memory.
var staleCalls atomic.Uint64

func lookup(f unsafe.Pointer, op string) *endpoint {
	if v, ok := registry.Load(f); ok {
		return v.(*endpoint)
	}
	staleCalls.Add(1)
	slog.Default().Error("host: C API call with a finalized or unknown wrapper; in Envoy this is a use-after-free",
		"op", op, "wrapper", f)
	return nil
}

// dispatcher implements api.NetworkCAPI, the functions the shim would call in C.
type dispatcher struct{}

var _ api.NetworkCAPI = dispatcher{}

// copyIn copies the caller's buffer at once, as Envoy does (Buffer::OwnedImpl from
// the Go pointer) before posting the write: the filter may reuse its slice as soon
// as Write returns. The copy comes from writeBufs, where the writer goroutine
// returns it once written.
func copyIn(p unsafe.Pointer, n int) []byte {
	if n <= 0 || p == nil {
		return nil
	}
	b := writeBufs.get(n)
	copy(b, unsafe.Slice((*byte)(p), n))
	return b
}

func (dispatcher) DownstreamWrite(f unsafe.Pointer, bufferPtr unsafe.Pointer, bufferLen int, endStream int) {
	e := lookup(f, "DownstreamWrite")
	if e == nil {
		return
	}
	e.postWrite(copyIn(bufferPtr, bufferLen), endStream != 0)
}

func (dispatcher) DownstreamClose(f unsafe.Pointer, closeType int) {
	if e := lookup(f, "DownstreamClose"); e != nil {
		e.post(task{kind: taskClose, closeType: api.ConnectionCloseType(closeType)})
	}
}

func (dispatcher) DownstreamFinalize(f unsafe.Pointer, reason int) {
	if e := lookup(f, "DownstreamFinalize"); e != nil {
		e.finalize()
	}
}

func (dispatcher) DownstreamInfo(f unsafe.Pointer, infoType int) string {
	if e := lookup(f, "DownstreamInfo"); e != nil {
		return e.info(infoType)
	}
	return ""
}

// filterStateWrapper reads the wrapper out of the object the shim passes to the
// filter-state functions. The shim passes its *filterState, not the wrapper
// (filterState.SetString calls setFunc(unsafe.Pointer(f), ...)); its C
// implementation then casts that to *connectionCallback and reads .wrapper. That
// works only because both structs start with `wrapper unsafe.Pointer`; the host
// relies on the same layout, on purpose, to behave the same way.
func filterStateWrapper(f unsafe.Pointer) unsafe.Pointer {
	if f == nil {
		return nil
	}
	return *(*unsafe.Pointer)(f)
}

// GetFilterState is cgoApiImpl.GetFilterState, which takes f for the
// *connectionCallback. The shim's own FilterState().GetString passes its
// *filterState instead (v1.36.2 and v1.39.0): cgoApiImpl then locks a mutex
// and a WaitGroup that lie past the end of the 24-byte object, corrupting the
// Go heap. The host tells the two apart (both start with the wrapper) and
// refuses that call loudly, instead of returning a value a test could come to
// rely on; internal/filterstate.Get passes the callback and is answered.
func (dispatcher) GetFilterState(f unsafe.Pointer, key string) string {
	e := lookup(filterStateWrapper(f), "GetFilterState")
	if e == nil {
		return ""
	}
	switch e.classify(f) {
	case shimCallback:
		return e.getFilterState(key)
	case shimFilterStateObj:
		e.h.st.wouldAbort.Add(1)
		e.h.log.Error("host: FilterState().GetString called; in Envoy (v1.36.2, v1.39.0) it corrupts Go memory", "key", key)
		panic("host: FilterState().GetString is unusable with Envoy v1.36.2 and v1.39.0 (it corrupts Go memory); use internal/filterstate.Get")
	default:
		e.h.st.wouldAbort.Add(1)
		e.h.log.Error("host: filter state read before the shim stored the connection's filter (from CreateFilter?): the host cannot tell the callback from FilterState().GetString's object there; read it from OnNewConnection or later", "key", key)
		panic("host: filter state read from CreateFilter; read it from OnNewConnection or later")
	}
}

func (dispatcher) SetFilterState(f unsafe.Pointer, key string, value string, stateType api.StateType, lifeSpan api.LifeSpan, streamSharing api.StreamSharing) {
	if e := lookup(filterStateWrapper(f), "SetFilterState"); e != nil {
		e.setFilterState(key, value, stateType)
	}
}

func (dispatcher) UpstreamConnect(libraryID string, addr string, connID uint64) unsafe.Pointer {
	return upstreamConnect(libraryID, addr, connID)
}

func (dispatcher) UpstreamConnEnableHalfClose(f unsafe.Pointer, enableHalfClose int) {
	if e := lookup(f, "UpstreamConnEnableHalfClose"); e != nil {
		e.enableHalfClose(enableHalfClose != 0)
	}
}

func (dispatcher) UpstreamWrite(f unsafe.Pointer, bufferPtr unsafe.Pointer, bufferLen int, endStream int) {
	e := lookup(f, "UpstreamWrite")
	if e == nil {
		return
	}
	e.postWrite(copyIn(bufferPtr, bufferLen), endStream != 0)
}

func (dispatcher) UpstreamClose(f unsafe.Pointer, closeType int) {
	if e := lookup(f, "UpstreamClose"); e != nil {
		e.post(task{kind: taskClose, closeType: api.ConnectionCloseType(closeType)})
	}
}

func (dispatcher) UpstreamFinalize(f unsafe.Pointer, reason int) {
	if e := lookup(f, "UpstreamFinalize"); e != nil {
		e.finalize()
	}
}

func (dispatcher) UpstreamInfo(f unsafe.Pointer, infoType int) string {
	if e := lookup(f, "UpstreamInfo"); e != nil {
		return e.info(infoType)
	}
	return ""
}
