package istiostats

import (
	"sync"
	"sync/atomic"
)

// table interns values by key for the request path: a lookup is a plain
// map read of an immutable snapshot (no lock, no allocation, no shared
// write between cores); a miss takes a lock and publishes a copy with the
// new entry. Entries are never removed, and a full table adds no more:
// the values a table holds are what label values are made of, and Istio's
// series must stay bounded whatever peers send.
type table[K comparable, V any] struct {
	snap atomic.Pointer[map[K]V]
	mu   sync.Mutex
	max  int
}

func newTable[K comparable, V any](max int) *table[K, V] {
	t := &table[K, V]{max: max}
	m := map[K]V{}
	t.snap.Store(&m)
	return t
}

func (t *table[K, V]) get(k K) (V, bool) {
	v, ok := (*t.snap.Load())[k]
	return v, ok
}

// getOrAdd returns the value of k, making it with mk if k is new. It
// reports false when k is new and the table is full.
func (t *table[K, V]) getOrAdd(k K, mk func() V) (V, bool) {
	if v, ok := t.get(k); ok {
		return v, true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.snap.Load()
	if v, ok := old[k]; ok {
		return v, true
	}
	if len(old) >= t.max {
		var zero V
		return zero, false
	}
	v := mk()
	next := make(map[K]V, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[k] = v
	t.snap.Store(&next)
	return v, true
}

func (t *table[K, V]) len() int { return len(*t.snap.Load()) }

// full reports whether the table takes no new key.
func (t *table[K, V]) full() bool { return t.len() >= t.max }
