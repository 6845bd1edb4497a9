package host

/*
#include <stdlib.h>
*/
import "C"

import (
	"runtime"
	"unsafe"
	_ "unsafe" // for go:linkname

	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
)

// The shim's entry points are unexported //export functions that Envoy's C++ calls
// through the .so's symbol table. A Go caller reaches them with a pull-only
// go:linkname, which Go 1.23+ still allows for non-standard-library symbols.
// Their signatures must match shim.go of envoy v1.36.2 exactly: a mismatch is not
// diagnosed by the compiler and corrupts the stack.

//go:linkname onNetworkFilterConfig github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network.envoyGoFilterOnNetworkFilterConfig
func onNetworkFilterConfig(libraryIDPtr uint64, libraryIDLen uint64, configPtr uint64, configLen uint64) uint64

//go:linkname onDownstreamConnection github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network.envoyGoFilterOnDownstreamConnection
func onDownstreamConnection(wrapper unsafe.Pointer, pluginNamePtr uint64, pluginNameLen uint64, configID uint64) uint64

//go:linkname onDownstreamData github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network.envoyGoFilterOnDownstreamData
func onDownstreamData(wrapper unsafe.Pointer, dataSize uint64, dataPtr uint64, sliceNum int, endOfStream int) uint64

//go:linkname onDownstreamWrite github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network.envoyGoFilterOnDownstreamWrite
func onDownstreamWrite(wrapper unsafe.Pointer, dataSize uint64, dataPtr uint64, sliceNum int, endOfStream int) uint64

//go:linkname onDownstreamEvent github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network.envoyGoFilterOnDownstreamEvent
func onDownstreamEvent(wrapper unsafe.Pointer, event int)

//go:linkname onUpstreamConnectionReady github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network.envoyGoFilterOnUpstreamConnectionReady
func onUpstreamConnectionReady(wrapper unsafe.Pointer, connID uint64)

// envoyGoFilterOnUpstreamConnectionFailure is not called: it passes ""
// as the transport failure, and the host passes the dial's error (fail,
// upstream.go).

//go:linkname onUpstreamData github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network.envoyGoFilterOnUpstreamData
func onUpstreamData(wrapper unsafe.Pointer, dataSize uint64, dataPtr uint64, sliceNum int, endOfStream int)

//go:linkname onUpstreamEvent github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network.envoyGoFilterOnUpstreamEvent
func onUpstreamEvent(wrapper unsafe.Pointer, event int)

// sliceSize is the size of one {ptr,len} descriptor: two C unsigned long longs,
// exactly what the shim strides over (network.CULLSize).
var sliceSize = 2 * network.CULLSize

// sliceTable is a reusable array of {ptr,len} descriptors in C memory, owned by one
// connection's event loop (never used concurrently).
//
// Why C memory: the shim walks the table with
// (*uint64)(unsafe.Pointer(uintptr(dataPtr + i*16))). Under -race (which turns on
// checkptr for every non-std package) that conversion throws an unrecoverable
// "checkptr: pointer arithmetic result points to invalid allocation" when the
// address lies in the Go heap, because no original pointer accompanies it. A table
// outside the Go heap passes the check, as Envoy's new[]'d table does.
//
// The data the descriptors point at stays in Go memory: the shim turns each
// descriptor into a slice by writing a SliceHeader, which checkptr does not
// instrument, and copies the bytes at once. Those Go buffers must be heap-allocated
// (a moving goroutine stack would invalidate an address hidden in a uint64) and kept
// alive until the call returns (runtime.KeepAlive in call).
type sliceTable struct {
	p   unsafe.Pointer
	cap int
}

// call fills the table with chunks and calls fn(dataSize, dataPtr, sliceNum).
func (t *sliceTable) call(chunks [][]byte, fn func(dataSize, dataPtr uint64, sliceNum int)) {
	n := 0
	var total uint64
	for _, c := range chunks {
		if len(c) > 0 {
			n++
			total += uint64(len(c))
		}
	}
	if n > t.cap {
		t.free()
		c := n
		if c < 4 {
			c = 4
		}
		t.p = C.malloc(C.size_t(uintptr(c) * sliceSize))
		if t.p == nil {
			panic("host: C.malloc failed")
		}
		t.cap = c
	}
	var ptr uint64
	if n > 0 {
		// The table is C memory of t.cap*16 bytes; index it as a uint64 array.
		tab := unsafe.Slice((*uint64)(t.p), 2*t.cap)
		i := 0
		for _, c := range chunks {
			if len(c) == 0 {
				continue
			}
			tab[2*i] = uint64(uintptr(unsafe.Pointer(&c[0])))
			tab[2*i+1] = uint64(len(c))
			i++
		}
		ptr = uint64(uintptr(t.p))
	}
	fn(total, ptr, n)
	// The descriptors hide the chunks' addresses from the GC: keep the chunks
	// reachable until the shim has copied them.
	runtime.KeepAlive(chunks)
}

func (t *sliceTable) free() {
	if t.p != nil {
		C.free(t.p)
		t.p = nil
		t.cap = 0
	}
}

// cString is an immutable byte string in C memory, for the (ptr,len) string
// arguments of the config and connection entry points. Putting them in C memory
// removes any question of stack-allocated or moving Go memory behind a uint64.
type cString struct {
	p unsafe.Pointer
	n int
}

func newCString(s string) cString {
	if len(s) == 0 {
		return cString{}
	}
	return cString{p: C.CBytes([]byte(s)), n: len(s)}
}

func (s cString) ptr() uint64 { return uint64(uintptr(s.p)) }
func (s cString) len() uint64 { return uint64(s.n) }

func (s *cString) free() {
	if s.p != nil {
		C.free(s.p)
		s.p = nil
		s.n = 0
	}
}
