package host

import (
	"fmt"
	"sync"
	"syscall"
	"unsafe"
)

// Wrapper pointers.
//
// Envoy hands the shim a C++ object address per connection (FilterWrapper,
// UpstreamConnWrapper) and gets it back in every call into C; the shim also uses
// it, as uint64(uintptr(wrapper)), as the key of its global filter maps. The shim
// never dereferences it. So the host needs addresses that are
//   - stable: the GC must never move them (the shim stores them in Go structs and in
//     finalizer closures as unsafe.Pointer, and converts them back from uintptr);
//   - outside the Go heap: an unsafe.Pointer to a Go object that the host does not
//     otherwise keep alive could be freed and reused by the GC, and checkptr (on
//     under -race) rejects uintptr->pointer conversions that land in the heap
//     without an original pointer;
//   - unique per connection, process-wide, because the shim's maps are global and
//     shared by every Host.
//
// Addresses come from an anonymous PROT_NONE reservation: it costs no memory,
// nothing can read or write through it (a stray dereference faults loudly instead of
// reading garbage), and the GC ignores it. Addresses are never handed out twice.
// Envoy frees the wrapper in DownstreamFinalize/UpstreamFinalize and malloc may
// reuse the address; never reusing them here means a call that arrives with a
// finalized wrapper (a use-after-free in Envoy) is recognised and counted instead of
// being routed to whichever connection got the recycled address.

const (
	arenaSize   = 1 << 30 // address space per reservation; refilled when exhausted
	wrapperSize = 16      // stride, like a small malloc chunk
)

var arena struct {
	mu   sync.Mutex
	base uintptr // start of the current reservation's unused part
	end  uintptr
	keep [][]byte // the reservations, referenced so that nothing unmaps them
}

// newWrapper returns a fresh, never before returned, non-Go address.
func newWrapper() unsafe.Pointer {
	arena.mu.Lock()
	defer arena.mu.Unlock()
	if arena.base == arena.end {
		b, err := syscall.Mmap(-1, 0, arenaSize, syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		if err != nil {
			panic(fmt.Sprintf("host: reserving wrapper address space: %v", err))
		}
		arena.keep = append(arena.keep, b)
		arena.base = uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		arena.end = arena.base + arenaSize
	}
	// Take the address of an element of the reservation rather than converting a
	// uintptr, so that the pointer is derived from a real allocation. The mapping is
	// PROT_NONE: the byte is never read.
	b := arena.keep[len(arena.keep)-1]
	off := arena.base - uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	p := unsafe.Pointer(&b[off])
	arena.base += wrapperSize
	return p
}
