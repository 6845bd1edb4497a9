package tracing

import (
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// sampler decides which requests are traced, with Aeraki's three knobs:
// a client's sampled flag (followed unless told not to), a random share
// of the others, and a cap on traced requests per second over both.
type sampler struct {
	// threshold: a request is drawn when a uniform 64-bit number is below
	// it (percentage/100 of 2^64); 0 never, all ones always.
	threshold    uint64
	always       bool
	followClient bool
	// rand draws the numbers; math/rand/v2's global source (safe for
	// concurrent use) in production, a seeded one in tests.
	rand func() uint64
	cap  *bucket
}

func newSampler(percentage float64, followClient bool, perSecond uint32, now func() time.Time, rnd func() uint64) *sampler {
	s := &sampler{followClient: followClient, rand: rnd}
	switch {
	case percentage >= 100:
		s.always = true
	case percentage > 0:
		s.threshold = uint64(percentage / 100 * math.MaxUint64)
	}
	if s.rand == nil {
		s.rand = rand.Uint64
	}
	if perSecond > 0 {
		s.cap = newBucket(perSecond, now)
	}
	return s
}

// sample decides for one request; clientSampled is its parent's sampled
// flag (false without a parent).
func (s *sampler) sample(clientSampled bool) bool {
	drawn := (clientSampled && s.followClient) || s.always || (s.threshold > 0 && s.rand() < s.threshold)
	if !drawn {
		return false
	}
	return s.cap == nil || s.cap.take()
}

// bucket is a token bucket of perSecond tokens a second with a burst of
// one second's worth, on an injectable clock. Only requests a sampler
// drew take from it, so its lock is never on an untraced request's path.
type bucket struct {
	mu        sync.Mutex
	now       func() time.Time
	perSecond float64
	tokens    float64
	last      time.Time
}

func newBucket(perSecond uint32, now func() time.Time) *bucket {
	if now == nil {
		now = time.Now
	}
	return &bucket{now: now, perSecond: float64(perSecond), tokens: float64(perSecond), last: now()}
}

func (b *bucket) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.now()
	if d := t.Sub(b.last); d > 0 {
		b.tokens = min(b.perSecond, b.tokens+d.Seconds()*b.perSecond)
		b.last = t
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
