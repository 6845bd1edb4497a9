// Package fault lets tests inject a panic at the places where Breeze
// recovers panics (connection callbacks, timers, handlers, xDS and DNS
// work), to check that whatever was in flight there still ends properly:
// every request answered, no lock left held, nothing reaching Envoy.
//
// Production code calls Point at each place; without a hook set by a
// test it costs one atomic load.
package fault

import "sync/atomic"

var hook atomic.Pointer[func(where, key string)]

// Point calls the test hook, if one is set. where names the place as
// breeze_panics_total's label does ("upstream OnData", "timeout"...); key
// says whose it is (a proxy's stat_prefix, an endpoint's address), so that
// a test hits only its own connections.
func Point(where, key string) {
	if h := hook.Load(); h != nil {
		(*h)(where, key)
	}
}

// Set installs f as the hook (nil removes it) and returns a function
// that removes it. For tests.
func Set(f func(where, key string)) (reset func()) {
	if f == nil {
		hook.Store(nil)
	} else {
		hook.Store(&f)
	}
	return func() { hook.Store(nil) }
}
