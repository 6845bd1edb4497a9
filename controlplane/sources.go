package controlplane

import (
	"context"
	"errors"
	"sync"
)

// Sources merges several sources into one: the YAML directory and any
// number of service registries (package registry) side by side. Its
// snapshot holds every source's objects and problems, in the order of
// srcs; the first goes out once every source delivered its first (a
// control plane that served a partial set would tell proxies that the
// clusters of the missing sources were removed), then one after every
// update of any source. A source that returns ends the whole: the control
// plane must not go on serving without it.
func Sources(srcs ...Source) Source {
	if len(srcs) == 1 {
		return srcs[0]
	}
	return &merged{srcs: srcs}
}

type merged struct{ srcs []Source }

func (m *merged) Run(parent context.Context, update func(Snapshot)) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var (
		mu     sync.Mutex // serialises update, as Source promises
		latest = make([]*Snapshot, len(m.srcs))
	)
	deliver := func(i int, snap Snapshot) {
		mu.Lock()
		defer mu.Unlock()
		latest[i] = &snap
		var all Snapshot
		for _, s := range latest {
			if s == nil {
				return // not every source was read yet
			}
			all.Objects = append(all.Objects, s.Objects...)
			all.Problems = append(all.Problems, s.Problems...)
		}
		update(all)
	}
	errs := make(chan error, len(m.srcs))
	for i, src := range m.srcs {
		go func() {
			errs <- src.Run(ctx, func(s Snapshot) { deliver(i, s) })
		}()
	}
	// The first source to return stops the others.
	first := <-errs
	cancel()
	for range len(m.srcs) - 1 {
		<-errs
	}
	if first == nil && parent.Err() == nil {
		return errors.New("a source stopped")
	}
	return first
}
