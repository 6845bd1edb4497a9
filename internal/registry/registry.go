// Package registry is the name → factory table that codecs and L7 filters
// register themselves in from init, and that configs look names up in.
package registry

import (
	"maps"
	"slices"
	"sync"
)

// Registry maps names to values; safe for concurrent use.
type Registry[T any] struct {
	mu sync.RWMutex
	m  map[string]T
}

// Add registers v under name; false if the name is taken (the caller
// panics with its own words: registering twice is a programming error).
func (r *Registry[T]) Add(name string, v T) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[name]; dup {
		return false
	}
	if r.m == nil {
		r.m = map[string]T{}
	}
	r.m[name] = v
	return true
}

// Lookup returns the value registered under name.
func (r *Registry[T]) Lookup(name string) (T, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.m[name]
	return v, ok
}

// Names lists the registered names, sorted.
func (r *Registry[T]) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Sorted(maps.Keys(r.m))
}
