// Package testwait is the tests' one way to wait for a condition that
// another process or goroutine brings about: poll it until it holds, and
// fail, saying what it last saw, if it has not within a guard. The guard
// is not a timing assertion: it only keeps a broken test from hanging.
package testwait

import (
	"testing"
	"time"
)

// For polls cond every 20 ms until it holds; after within it fails the
// test with what and what cond last said.
func For(t testing.TB, what string, within time.Duration, cond func() (ok bool, said string)) {
	t.Helper()
	var said string
	if !Poll(within, func() (ok bool) { ok, said = cond(); return ok }) {
		t.Fatalf("timed out waiting for %s; last seen: %s", what, said)
	}
}

// Poll polls cond every 20 ms until it holds (true) or within has
// passed (false), for a caller that reports what it saw itself.
func Poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}

// interval is how often a condition is polled: often enough not to slow
// a test down, seldom enough not to load the machine.
const interval = 20 * time.Millisecond
