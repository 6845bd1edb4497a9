package host

import "testing"

// A buffer comes back in the class of its size and is handed out again
// for any length of that class; buffers the pool did not make, and those
// past a class's byte bound, are left to the collector.
func TestBufPool(t *testing.T) {
	var p bufPool
	b := p.get(300)
	if len(b) != 300 || cap(b) != 512 {
		t.Fatalf("get(300): len %d cap %d, want 300 and 512", len(b), cap(b))
	}
	p.put(b)
	if c := p.get(257); &c[:1][0] != &b[:1][0] {
		t.Errorf("get(257) after put of a 512-byte buffer: a new buffer, want the one put back")
	}
	if c := p.get(1); cap(c) != 256 {
		t.Errorf("get(1): cap %d, want the smallest class, 256", cap(c))
	}
	if c := p.get(1<<20 + 1); cap(c) != 1<<20+1 {
		t.Errorf("get(1 MiB + 1): cap %d, want an unpooled buffer of exactly that size", cap(c))
	}
	p.put(make([]byte, 0, 600)) // not one of the pool's
	if n := len(p.classes[2].free); n != 0 {
		t.Errorf("a 600-byte buffer was kept (%d free in the 1 KiB class), want it left alone", n)
	}
	for range maxClassBytes/(1<<16) + 5 {
		p.put(make([]byte, 0, 1<<16))
	}
	if n := len(p.classes[16-minBufShift].free); n*(1<<16) > maxClassBytes {
		t.Errorf("the 64 KiB class keeps %d buffers (%d bytes), over its bound of %d", n, n*(1<<16), maxClassBytes)
	}
	// The largest class keeps two buffers, over maxClassBytes.
	for range 5 {
		p.put(make([]byte, 0, 1<<20))
	}
	if n := len(p.classes[len(p.classes)-1].free); n != 2 {
		t.Errorf("the 1 MiB class keeps %d buffers, want 2", n)
	}
}

// The pool as a whole keeps at most maxPoolBytes, whatever the classes.
func TestBufPoolTotalBound(t *testing.T) {
	var p bufPool
	for shift := minBufShift; shift <= maxBufShift; shift++ {
		for range 8 {
			p.put(make([]byte, 0, 1<<shift))
		}
	}
	var kept int
	for i := range p.classes {
		for _, b := range p.classes[i].free {
			kept += cap(b)
		}
	}
	if kept > maxPoolBytes || int64(kept) != p.kept.Load() {
		t.Errorf("the pool keeps %d bytes (its count says %d), want at most %d and the count exact", kept, p.kept.Load(), maxPoolBytes)
	}
	// A get of a kept buffer takes it off the count.
	b := p.get(1 << minBufShift)
	if want := int64(kept - cap(b)); p.kept.Load() != want {
		t.Errorf("after a get the count says %d, want %d", p.kept.Load(), want)
	}
}
