package host

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// writeBufs recycles the buffers copyIn makes for writes once the writer
// goroutine has put them on the socket. Envoy frees its Buffer::OwnedImpl
// slices then too: a Go heap allocation per write is garbage-collector
// work that Envoy does not have, and that would count against the
// plugin's cost in every measurement made on the host.
var writeBufs bufPool

const (
	minBufShift = 8  // 256 B: the smallest class
	maxBufShift = 20 // 1 MiB: larger buffers are not pooled
	// maxClassBytes bounds what one size class keeps (but two buffers of
	// the largest classes), and maxPoolBytes what the whole pool keeps: a
	// burst of large messages does not leave the process holding them.
	maxClassBytes = 1 << 20
	maxPoolBytes  = 4 << 20
)

type bufPool struct {
	classes [maxBufShift - minBufShift + 1]bufClass
	// kept is the bytes of the free buffers of all classes.
	kept atomic.Int64
}

type bufClass struct {
	mu   sync.Mutex
	free [][]byte
}

// classOf is the size class of a buffer of n bytes; false: not pooled.
func classOf(n int) (int, bool) {
	if n > 1<<maxBufShift {
		return 0, false
	}
	return max(bits.Len(uint(n-1))-minBufShift, 0), true
}

// get returns a buffer of length n, from the pool when one is free.
func (p *bufPool) get(n int) []byte {
	c, ok := classOf(n)
	if !ok {
		return make([]byte, n)
	}
	cl := &p.classes[c]
	cl.mu.Lock()
	if k := len(cl.free); k > 0 {
		b := cl.free[k-1]
		cl.free[k-1] = nil
		cl.free = cl.free[:k-1]
		cl.mu.Unlock()
		p.kept.Add(-int64(cap(b)))
		return b[:n]
	}
	cl.mu.Unlock()
	return make([]byte, n, 1<<(c+minBufShift))
}

// put takes back a buffer get made, which nothing refers to any more;
// others (not of a class's exact capacity) are left to the collector.
func (p *bufPool) put(b []byte) {
	if cap(b) == 0 {
		return // nil: a read result that carried only an error
	}
	c, ok := classOf(cap(b))
	if !ok || cap(b) != 1<<(c+minBufShift) {
		return
	}
	if p.kept.Load()+int64(cap(b)) > maxPoolBytes {
		return
	}
	cl := &p.classes[c]
	cl.mu.Lock()
	if (len(cl.free)+1)*cap(b) <= max(maxClassBytes, 2*cap(b)) {
		cl.free = append(cl.free, b[:0])
		p.kept.Add(int64(cap(b)))
	}
	cl.mu.Unlock()
}
