package load

import "time"

// clock is where a run reads the time and waits: the real clock, or a test's
// that moves only when the test says, so that pacing, the end of the
// measured duration and the grace after it are tested without sleeping.
// (The Drain deadline is a socket deadline and stays on the real clock.)
type clock interface {
	Now() time.Time
	// NewTimer returns a stopped timer.
	NewTimer() timer
}

// timer is a reusable one-shot timer; Reset and Stop discard a value not
// yet received, as time.Timer does since Go 1.23.
type timer interface {
	C() <-chan time.Time
	Reset(d time.Duration)
	Stop()
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer() timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return realTimer{t}
}

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
func (r realTimer) Stop()                 { r.t.Stop() }
