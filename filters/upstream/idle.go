package upstream

import (
	"sync"
	"sync/atomic"
	"time"
)

// MinIdleTimeout is the shortest silence after which an endpoint closing a
// connection may be its idle timeout. Providers time out idle connections
// after seconds to minutes (Dubbo: three heartbeat periods); a close
// sooner after the last frame is a crash, a restart, a connection limit or
// a provider that closes each connection once it replied, and must not
// make the proxy heartbeat faster. A learned keep-alive period is never
// below half of it. Atomic, so that tests can shorten it.
var MinIdleTimeout atomic.Int64

func init() { MinIdleTimeout.Store(int64(time.Second)) }

// idleLearning infers an endpoint's idle timeout from how it closes our
// silent connections, so that later ones get heartbeats within it. One
// close proves nothing: a provider that crashes or restarts also closes
// silent connections. A silence is learned when two idle closes agree:
//   - each came after at least MinIdleTimeout and less than the keep-alive
//     period (after longer, heartbeats could not have helped);
//   - the second on a connection opened after the first close, so that
//     connections a crash closes together count once;
//   - after about the same silence (see similar): a timeout repeats, a
//     crash does not.
//
// Any other close in between starts over. The learned limit is forgotten
// when the endpoint shows it went away or changed: it announced its
// shutdown (GoAway), a connection to it failed to open or closed with
// requests in flight, or it closed a connection that was heartbeated
// within the limit (a provider back with another configuration, or one
// that does not count heartbeats: learning again costs two closes).
//
// The methods take the silences as arguments: no clock inside.
type idleLearning struct {
	mu     sync.Mutex
	opened uint64 // connections opened so far: numbers them
	// seen is the silence of the last idle close, waiting for a second
	// one on a connection numbered after seenAt; 0: none.
	seen   time.Duration
	seenAt uint64
	// limitAt: connections numbered up to it were opened before the limit
	// was learned, and may still be closed by it once.
	limitAt uint64
	// limit (nanos) is the learned idle timeout, 0: none. Atomic: every
	// keep-alive tick reads it.
	limit atomic.Int64
}

// open numbers a connection that just opened.
func (l *idleLearning) open() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opened++
	return l.opened
}

// idleClosed records that the endpoint closed connection n (numbered by
// open) with nothing in flight, after it had been silent for silence;
// keepalive is the configured period and floor MinIdleTimeout. It returns
// the idle timeout it learned, if this close confirmed one.
func (l *idleLearning) idleClosed(n uint64, silence, keepalive, floor time.Duration) (learned time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if limit := time.Duration(l.limit.Load()); limit > 0 {
		if n <= l.limitAt && similar(silence, limit) {
			return 0 // opened before we knew: the same timeout once more
		}
		l.limit.Store(0)
	}
	if silence < floor || silence >= keepalive {
		l.seen = 0
		return 0
	}
	if l.seen > 0 && n > l.seenAt && similar(silence, l.seen) {
		learned = min(silence, l.seen)
		l.limit.Store(int64(learned))
		l.limitAt = l.opened
		l.seen = 0
		return learned
	}
	l.seen, l.seenAt = silence, l.opened
	return 0
}

// forget drops what was learned or seen: the endpoint went away, and what
// comes back may be configured otherwise.
func (l *idleLearning) forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = 0
	l.limit.Store(0)
}

// similar: two silences are the same timeout seen twice when they differ
// by at most a quarter of the longer (providers check idleness on a timer
// tick, and the close takes a moment to reach us).
func similar(a, b time.Duration) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d <= max(a, b)/4
}
