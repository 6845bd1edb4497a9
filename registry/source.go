package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"

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
		// The registry logs why it is stale; this says what is served.
		if u.Stale != stale {
			stale = u.Stale
			if stale {
				log.Warn("registry stale: serving its last known providers until it answers again", "registry", name, "instances", len(u.Instances))
			} else {
				log.Info("registry fresh again", "registry", name, "instances", len(u.Instances))
			}
		}
		update(Snapshot(name, ServiceEntries(u.Instances, ns)))
	})
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
