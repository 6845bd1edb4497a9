package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/controlplane"
)

// Source is a Registry as a control plane source: each Update becomes a
// snapshot of ServiceEntries (ServiceEntries), served next to the YAML
// directory's objects (controlplane.Sources).
type Source struct {
	Registry Registry
	// Namespace of the ServiceEntries; "default" when empty.
	Namespace string
	Log       *slog.Logger
	// Metrics, if set, records each update (NewMetrics).
	Metrics *Metrics

	// byHost: the last object of each host and the IDs it came from, so
	// that an update translates (and digests) only the interfaces that
	// changed: with 1,000 interfaces, one provider more is one ServiceEntry.
	byHost map[string]cachedObject
}

type cachedObject struct {
	ids []string // sorted; nil: an instance had no ID, never reused
	obj controlplane.Object
}

// Run implements controlplane.Source.
func (s *Source) Run(ctx context.Context, update func(controlplane.Snapshot)) error {
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	ns := s.Namespace
	if ns == "" {
		ns = "default"
	}
	name := s.Registry.Name()
	stale := false
	return s.Registry.Run(ctx, func(u Update) {
		s.Metrics.Observe(name, u)
		// The registry logs why it is stale; this says what is served.
		if u.Stale != stale {
			stale = u.Stale
			if stale {
				log.Warn("registry stale: serving its last known providers until it answers again", "registry", name, "instances", len(u.Instances))
			} else {
				log.Info("registry fresh again", "registry", name, "instances", len(u.Instances))
			}
		}
		update(s.snapshot(name, ns, u.Instances))
	})
}

// snapshot is Snapshot(origin, ServiceEntries(instances, ns)), reusing
// the objects of interfaces whose instances' IDs did not change.
func (s *Source) snapshot(origin, ns string, instances []Instance) controlplane.Snapshot {
	byHost := map[string][]Instance{}
	var lastInterface, lastHost string
	for _, in := range instances {
		// Registries list an interface's instances together.
		if in.Interface != lastInterface || lastHost == "" {
			lastInterface, lastHost = in.Interface, Host(in.Interface)
		}
		byHost[lastHost] = append(byHost[lastHost], in)
	}
	next := make(map[string]cachedObject, len(byHost))
	snap := controlplane.Snapshot{Objects: make([]controlplane.Object, 0, len(byHost))}
	for _, h := range slices.Sorted(maps.Keys(byHost)) {
		group := byHost[h]
		ids := sortedIDs(group)
		if c, ok := s.byHost[h]; ok && ids != nil && slices.Equal(c.ids, ids) {
			next[h] = c
			snap.Objects = append(snap.Objects, c.obj)
			continue
		}
		for _, o := range Snapshot(origin, ServiceEntries(group, ns)).Objects {
			next[h] = cachedObject{ids: ids, obj: o}
			snap.Objects = append(snap.Objects, o)
		}
	}
	s.byHost = next
	return snap
}

// sortedIDs is the sorted IDs of instances, nil if one has none.
func sortedIDs(instances []Instance) []string {
	ids := make([]string, len(instances))
	for i, in := range instances {
		if in.ID == "" {
			return nil
		}
		ids[i] = in.ID
	}
	slices.Sort(ids)
	return ids
}

// Snapshot wraps entries as control plane objects from origin.
func Snapshot(origin string, entries []Entry) controlplane.Snapshot {
	snap := controlplane.Snapshot{Objects: make([]controlplane.Object, 0, len(entries))}
	for _, e := range entries {
		snap.Objects = append(snap.Objects, controlplane.Object{
			Kind: "ServiceEntry", Namespace: e.Namespace, Name: e.Name,
			Origin: origin, File: origin, Spec: e.Spec, Version: version(e.Spec),
		})
	}
	return snap
}

// version digests a spec: it changes whenever the spec does.
func version(m proto.Message) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
