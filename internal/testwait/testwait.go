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
	deadline := time.Now().Add(within)
	for {
		ok, said := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last seen: %s", what, said)
		}
		time.Sleep(20 * time.Millisecond) // the polling interval
	}
}
