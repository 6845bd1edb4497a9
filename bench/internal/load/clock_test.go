package load

import (
	"sync"
	"time"
)

// fakeClock moves only when the test calls advance. Every Reset of one of
// its timers is reported on armed, so that a test knows when the code under
// test waits for it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	armed  chan armed
}

// armed is one timer set to fire at (time since the clock's start).
type armed struct {
	timer *fakeTimer
	d     time.Duration // as given to Reset
	at    time.Duration
}

var fakeEpoch = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

func newFakeClock() *fakeClock {
	return &fakeClock{now: fakeEpoch, armed: make(chan armed, 1024)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTimer() timer {
	t := &fakeTimer{clk: f, c: make(chan time.Time, 1)}
	f.mu.Lock()
	f.timers = append(f.timers, t)
	f.mu.Unlock()
	return t
}

// advance moves the clock by d and fires the timers due.
func (f *fakeClock) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	for _, t := range f.timers {
		if t.on && !t.at.After(f.now) {
			t.on = false
			t.c <- f.now // cap 1, drained by Reset and Stop: never blocks
		}
	}
}

type fakeTimer struct {
	clk *fakeClock
	c   chan time.Time
	at  time.Time
	on  bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Reset(d time.Duration) {
	f := t.clk
	f.mu.Lock()
	t.drain()
	t.at, t.on = f.now.Add(d), true
	a := armed{timer: t, d: d, at: t.at.Sub(fakeEpoch)}
	f.mu.Unlock()
	f.armed <- a
}

func (t *fakeTimer) Stop() {
	t.clk.mu.Lock()
	t.on = false
	t.drain()
	t.clk.mu.Unlock()
}

func (t *fakeTimer) drain() {
	select {
	case <-t.c:
	default:
	}
}
