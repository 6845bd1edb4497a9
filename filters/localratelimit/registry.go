package localratelimit

import (
	"runtime"
	"sync"
)

// registry holds every group of the process by key (proxy stat_prefix,
// scope, settings), so that all connections of a proxy share its buckets
// and a new route table or proxy config with the same settings finds them
// again instead of starting full. Route tables are dropped without notice,
// so holders are counted through cleanups of the bindings that hold the
// groups; a group nobody holds is dropped once it is full again, when it
// is indistinguishable from the new group a later config would make.
var registry = struct {
	sync.Mutex
	groups map[string]*group
}{groups: map[string]*group{}}

// acquire returns the groups of keys (made by mk when missing) for b, and
// has them counted as held until b is garbage.
func acquire(b *binding, keys []string, mk func(i int, now int64) *group) []*group {
	now := clock()
	registry.Lock()
	defer registry.Unlock()
	sweep(now)
	gs := make([]*group, len(keys))
	for i, k := range keys {
		g := registry.groups[k]
		if g == nil {
			g = mk(i, now)
			registry.groups[k] = g
		}
		g.holders.Add(1)
		gs[i] = g
	}
	// The cleanup's argument must not reach b: a fresh slice of the groups.
	held := append([]*group(nil), gs...)
	runtime.AddCleanup(b, release, held)
	return gs
}

func release(gs []*group) {
	for _, g := range gs {
		g.holders.Add(-1)
	}
}

// sweep drops the groups nobody holds that are full. Called with the
// registry locked, whenever a config binds (route table and config
// updates), so that old settings do not pile up.
func sweep(now int64) {
	for k, g := range registry.groups {
		if g.holders.Load() <= 0 && g.full(now) {
			delete(registry.groups, k)
		}
	}
}

// registered is how many groups the registry holds, for tests.
func registered() int {
	registry.Lock()
	defer registry.Unlock()
	return len(registry.groups)
}
