package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/breeze-mesh/breeze/config"
)

// Feed is a Source whose snapshots its owner pushes: a Kubernetes watch
// (the controller package) builds a whole Snapshot from its caches after
// each change and pushes it. Run delivers the newest snapshot pushed:
// snapshots pushed while the previous one is being translated are
// coalesced, since each one is whole.
type Feed struct {
	mu      sync.Mutex
	pending *Snapshot
	// notify holds one token while a snapshot is pending.
	notify chan struct{}
}

// NewFeed returns a feed with nothing pushed: Run delivers nothing (and
// the Server answers nobody) until the first Push.
func NewFeed() *Feed { return &Feed{notify: make(chan struct{}, 1)} }

// Push replaces the pending snapshot. It never blocks.
func (f *Feed) Push(s Snapshot) {
	f.mu.Lock()
	f.pending = &s
	f.mu.Unlock()
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

// Run calls update with each snapshot pushed, the newest first, until ctx
// ends.
func (f *Feed) Run(ctx context.Context, update func(Snapshot)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-f.notify:
		}
		f.mu.Lock()
		s := f.pending
		f.pending = nil
		f.mu.Unlock()
		if s != nil {
			update(*s)
		}
	}
}

// NewObject decodes the spec (JSON) of a MetaRouter, DestinationRule or
// ServiceEntry as the directory source does (istiod's strictness: every
// unknown field an error; durations in Go's form too). apiGroup is the
// object's API group (metaprotocol.aeraki.io, networking.istio.io).
// origin names where it came from in messages; version changes whenever
// the object does (a resourceVersion). On errors the object is not
// usable: its problems name the fields.
func NewObject(apiGroup, kind, namespace, name, origin, version string, spec []byte) (Object, []Problem) {
	o := Object{Kind: kind, Namespace: namespace, Name: name, Origin: origin, Version: version}
	newSpec := kinds[apiGroup+"/"+kind]
	if newSpec == nil {
		return o, []Problem{{Object: o.Ref(), Version: version, Err: fmt.Errorf("%s/%s: not a kind the control plane reads", apiGroup, kind)}}
	}
	o.Spec = newSpec()
	if len(strings.TrimSpace(string(spec))) == 0 || string(spec) == "null" {
		spec = []byte("{}")
	}
	err := decodeSpec(spec, o.Spec)
	if err == nil {
		return o, nil
	}
	var problems []Problem
	for _, e := range unjoin(err) {
		p := Problem{Object: o.Ref(), Version: version, Err: e}
		var fe *config.FieldError
		if errors.As(e, &fe) {
			p.Field = fe.Path
			p.Err = errors.New(strings.TrimPrefix(fe.Error(), fe.Path+": "))
		}
		problems = append(problems, p)
	}
	return o, problems
}
