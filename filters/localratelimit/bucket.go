package localratelimit

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
)

// clock returns monotonic nanoseconds. Buckets refill lazily, from the
// time a request reads here, so tests make the arithmetic exact by
// replacing it (setClock).
var clock = func() int64 { return int64(time.Since(processStart)) }

var processStart = time.Now()

// spec is a token bucket's settings.
type spec struct {
	max, perFill uint32
	interval     int64 // nanoseconds, > 0
}

// bucket is one token bucket. Its state packs the tokens left (high 32
// bits) and the fill interval last accounted (low 32 bits, counted from
// its group's epoch), so that a request takes a token with one
// compare-and-swap, and refilling needs no timer: the fills of the
// intervals that passed are added when the bucket is next used. 32 bits of
// intervals of at least 50ms last six years; only the difference of two
// is used, so wrapping around is harmless.
type bucket struct{ state atomic.Uint64 }

func pack(tokens, tick uint32) uint64 { return uint64(tokens)<<32 | uint64(tick) }

// fill makes b a full bucket as of interval tick: a new bucket is full.
func (b *bucket) fill(sp *spec, tick uint32) { b.state.Store(pack(sp.max, tick)) }

// refill returns the tokens of state old at interval tick, and the
// interval they are accounted to (never earlier than old's: a goroutine
// that read the clock before another and stores after it must not count
// the fills in between twice).
func refill(sp *spec, old uint64, tick uint32) (tokens, at uint32) {
	tokens, last := uint32(old>>32), uint32(old)
	n := tick - last
	if int32(n) <= 0 {
		return tokens, last
	}
	t := uint64(tokens) + uint64(n)*uint64(sp.perFill)
	return uint32(min(t, uint64(sp.max))), tick
}

// take takes a token at interval tick, if there is one.
func (b *bucket) take(sp *spec, tick uint32) bool {
	for {
		old := b.state.Load()
		tokens, at := refill(sp, old, tick)
		if tokens == 0 {
			return false // nothing to store: the fills still count from old's interval
		}
		if b.state.CompareAndSwap(old, pack(tokens-1, at)) {
			return true
		}
	}
}

// full reports whether b holds max tokens at interval tick: it is then
// indistinguishable from a new bucket, and may be dropped.
func (b *bucket) full(sp *spec, tick uint32) bool {
	tokens, _ := refill(sp, b.state.Load(), tick)
	return tokens >= sp.max
}

// defaultMaxBuckets bounds a descriptor's buckets when max_buckets is 0.
const defaultMaxBuckets = 1024

// group is the buckets of one condition (or default bucket) of one scope
// of one proxy: a single bucket, or one per descriptor value. Groups live
// in the registry, not in a config, so that route table and proxy config
// updates with the same settings keep them.
type group struct {
	sp    spec
	epoch int64 // clock reading the intervals count from
	// descriptorKeys: nil for a single bucket.
	descriptorKeys []string
	maxBuckets     int

	single bucket

	mu      sync.RWMutex
	buckets map[string]*bucket
	// overflow is shared by the values that came when buckets was at
	// maxBuckets and no bucket could be dropped.
	overflow  bucket
	lastSweep uint32

	// holders counts the bindings (configs in use) that reach the group;
	// the registry drops a group nobody holds once it is full again.
	holders atomic.Int32
}

func newGroup(sp spec, keys []string, maxBuckets int, now int64) *group {
	g := &group{sp: sp, epoch: now, descriptorKeys: keys, maxBuckets: maxBuckets}
	if g.maxBuckets <= 0 {
		g.maxBuckets = defaultMaxBuckets
	}
	g.single.fill(&g.sp, 0)
	g.overflow.fill(&g.sp, 0)
	if keys != nil {
		g.buckets = map[string]*bucket{}
	}
	return g
}

// tick is the fill interval now falls in.
func (g *group) tick(now int64) uint32 { return uint32((now - g.epoch) / g.sp.interval) }

// take takes a token for a request with metadata md at time now. overflow
// says the request counted into the overflow bucket.
func (g *group) take(md codecs.Metadata, now int64) (ok, overflow bool) {
	tick := g.tick(now)
	if g.descriptorKeys == nil {
		return g.single.take(&g.sp, tick), false
	}
	// Values of up to 128 bytes make their key on the stack; the map
	// lookup with string(key) does not copy it.
	var buf [128]byte
	key := descriptor(buf[:0], md, g.descriptorKeys)
	g.mu.RLock()
	// The token is taken under the read lock: a sweep (write lock) never
	// drops a bucket between its lookup and its use.
	if b := g.buckets[string(key)]; b != nil {
		ok = b.take(&g.sp, tick)
		g.mu.RUnlock()
		return ok, false
	}
	g.mu.RUnlock()
	return g.takeNew(key, tick)
}

// takeNew is take for a value that had no bucket.
func (g *group) takeNew(key []byte, tick uint32) (ok, overflow bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b := g.buckets[string(key)]; b != nil {
		return b.take(&g.sp, tick), false
	}
	if len(g.buckets) >= g.maxBuckets && tick != g.lastSweep {
		// At most once an interval: a client sending a new value with
		// every request must not make each one scan the map.
		g.lastSweep = tick
		for k, b := range g.buckets {
			if b.full(&g.sp, tick) {
				delete(g.buckets, k)
			}
		}
	}
	if len(g.buckets) >= g.maxBuckets {
		return g.overflow.take(&g.sp, tick), true
	}
	b := &bucket{}
	b.fill(&g.sp, tick)
	g.buckets[string(key)] = b
	return b.take(&g.sp, tick), false
}

// full reports whether every bucket of g is full at time now.
func (g *group) full(now int64) bool {
	tick := g.tick(now)
	if !g.single.full(&g.sp, tick) || !g.overflow.full(&g.sp, tick) {
		return false
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	for _, b := range g.buckets {
		if !b.full(&g.sp, tick) {
			return false
		}
	}
	return true
}

// descriptor appends the values of keys in md to dst, each as 1, its
// length and its bytes, or as 0 when absent: distinct combinations make
// distinct keys, whatever bytes the values hold.
func descriptor(dst []byte, md codecs.Metadata, keys []string) []byte {
	for _, k := range keys {
		v, ok := md.Get(k)
		if !ok {
			dst = append(dst, 0)
			continue
		}
		dst = append(dst, 1)
		dst = binary.AppendUvarint(dst, uint64(len(v)))
		dst = append(dst, v...)
	}
	return dst
}
