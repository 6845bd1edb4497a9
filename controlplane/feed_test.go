package controlplane

import (
	"context"
	"testing"
)

// TestFeedDeliversTheNewest: snapshots pushed while none is taken are
// coalesced: Run delivers the newest, since each is whole.
func TestFeedDeliversTheNewest(t *testing.T) {
	f := NewFeed()
	for _, name := range []string{"a", "b", "c"} {
		f.Push(Snapshot{Objects: []Object{{Name: name}}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- f.Run(ctx, func(s Snapshot) {
			got <- s.Objects[0].Name
			if s.Objects[0].Name == "d" {
				cancel()
			}
		})
	}()
	if first := <-got; first != "c" {
		t.Errorf("first snapshot delivered: %q, want the newest pushed, %q", first, "c")
	}
	f.Push(Snapshot{Objects: []Object{{Name: "d"}}})
	if next := <-got; next != "d" {
		t.Errorf("next snapshot delivered: %q, want %q", next, "d")
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if len(got) != 0 {
		t.Errorf("%d more snapshots delivered, want none", len(got))
	}
}

// TestNewObjectNamesFields: a spec is decoded as strictly as from a file,
// its problems naming the field.
func TestNewObjectNamesFields(t *testing.T) {
	_, problems := NewObject("metaprotocol.aeraki.io", "MetaRouter", "demo", "greeter", "kubernetes", "7",
		[]byte(`{"hosts":["a"],"routes":[{"requestMutations":[]}]}`))
	if len(problems) != 1 || problems[0].Field != "spec.routes[0].requestMutations" {
		t.Fatalf("problems %v, want one naming spec.routes[0].requestMutations", problems)
	}
	if got := problems[0].Object; got != "kubernetes: MetaRouter demo/greeter" {
		t.Errorf("problem's object %q, want %q", got, "kubernetes: MetaRouter demo/greeter")
	}
	o, problems := NewObject("networking.istio.io", "DestinationRule", "demo", "greeter", "kubernetes", "8", []byte(`{"host":"a"}`))
	if len(problems) != 0 || o.Spec == nil || o.Version != "8" {
		t.Errorf("a good DestinationRule: problems %v, spec %v, version %q", problems, o.Spec, o.Version)
	}
}
