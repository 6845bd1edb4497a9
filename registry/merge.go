package registry

import (
	"context"
	"strings"
	"sync"
)

// Merge follows several registries as one (ZooKeeper and Nacos side by
// side, as during a migration from one to the other): an interface that
// providers announce in both becomes one ServiceEntry with the endpoints of
// both, rather than two objects of the same name from two sources. The
// merged set is published once every registry has published; it is stale
// while any one is (each keeps its own last known set meanwhile).
func Merge(regs ...Registry) Registry {
	if len(regs) == 1 {
		return regs[0]
	}
	return merged(regs)
}

type merged []Registry

func (m merged) Name() string {
	names := make([]string, len(m))
	for i, r := range m {
		names[i] = r.Name()
	}
	return strings.Join(names, " + ")
}

func (m merged) Run(ctx context.Context, publish func(Update)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu   sync.Mutex // serialises publish, as Run promises
		last = make([]*Update, len(m))
		errs = make(chan error, len(m))
	)
	for i, r := range m {
		go func() {
			errs <- r.Run(ctx, func(u Update) {
				mu.Lock()
				defer mu.Unlock()
				last[i] = &u
				var all Update
				for _, l := range last {
					if l == nil {
						return // not every registry read yet
					}
					all.Instances = append(all.Instances, l.Instances...)
					all.Stale = all.Stale || l.Stale
				}
				publish(all)
			})
		}()
	}
	// The first registry to return (an error, or ctx's end) stops the
	// others: a registry that gave up would otherwise be served as fresh.
	err := <-errs
	cancel()
	for range len(m) - 1 {
		<-errs
	}
	return err
}
