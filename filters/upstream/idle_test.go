package upstream

import (
	"testing"
	"time"
)

// idleLearning fed silences directly: which sequences of idle closes make
// an idle timeout.
func TestIdleLearning(t *testing.T) {
	const (
		keepalive = 30 * time.Second
		floor     = time.Second
	)
	ms := time.Millisecond
	// close is one idle close; conn says which connection it was on:
	// "new" opens one just before, "old" is one opened before all of
	// them (open alongside the others).
	type close struct {
		conn    string
		silence time.Duration
	}
	for _, tc := range []struct {
		name   string
		closes []close
		want   time.Duration
	}{
		{"one close", []close{{"new", 5000 * ms}}, 0},
		{"a crash 15ms after the last reply, repeatedly", []close{{"new", 15 * ms}, {"new", 15 * ms}, {"new", 15 * ms}}, 0},
		{"a provider closing right after each reply", []close{{"new", 0}, {"new", ms}, {"new", 0}, {"new", ms}}, 0},
		{"the same silence twice", []close{{"new", 5000 * ms}, {"new", 5200 * ms}}, 5000 * ms},
		{"about the same silence twice", []close{{"new", 5000 * ms}, {"new", 4100 * ms}}, 4100 * ms},
		{"different silences", []close{{"new", 5000 * ms}, {"new", 8000 * ms}}, 0},
		{"different silences, then the second again", []close{{"new", 5000 * ms}, {"new", 8000 * ms}, {"new", 8100 * ms}}, 8000 * ms},
		{"a crash between two idle closes starts over", []close{{"new", 5000 * ms}, {"new", 20 * ms}, {"new", 5000 * ms}}, 0},
		{"two connections closed together", []close{{"new", 5000 * ms}, {"old", 5000 * ms}}, 0},
		{"silences below the floor", []close{{"new", 900 * ms}, {"new", 900 * ms}}, 0},
		{"silences the keep-alive would have prevented", []close{{"new", keepalive}, {"new", keepalive}}, 0},
		{"an older connection closed by the learned timeout keeps it", []close{{"new", 5000 * ms}, {"new", 5000 * ms}, {"old", 5000 * ms}}, 5000 * ms},
		{"an older connection that crashed forgets it", []close{{"new", 5000 * ms}, {"new", 5000 * ms}, {"old", 10 * ms}}, 0},
		{"a connection heartbeated within it closed anyway forgets it", []close{{"new", 5000 * ms}, {"new", 5000 * ms}, {"new", 2000 * ms}}, 0},
		{"learned again after being forgotten", []close{{"new", 5000 * ms}, {"new", 5000 * ms}, {"new", 2000 * ms}, {"new", 2000 * ms}}, 2000 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l idleLearning
			old := l.open()
			for _, c := range tc.closes {
				n := old
				if c.conn == "new" {
					n = l.open()
				}
				l.idleClosed(n, c.silence, keepalive, floor)
			}
			if got := time.Duration(l.limit.Load()); got != tc.want {
				t.Fatalf("learned %v, want %v", got, tc.want)
			}
		})
	}
}

// Whatever was learned, the keep-alive period stays within the configured
// one and at least half MinIdleTimeout.
func TestKeepaliveBounds(t *testing.T) {
	pl := testPool()
	def := time.Duration(Keepalive.Load())
	floor := time.Duration(MinIdleTimeout.Load())
	for _, c := range []struct{ limit, want time.Duration }{
		{0, def},
		{time.Nanosecond, floor / 2},
		{floor, floor / 2},
		{10 * time.Second, 5 * time.Second},
		{2 * def, def},
	} {
		pl.idle.limit.Store(int64(c.limit))
		if got := pl.keepaliveEvery(); got != c.want {
			t.Errorf("learned %v: keep-alive %v, want %v", c.limit, got, c.want)
		}
	}
}
