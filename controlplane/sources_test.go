package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// Two directories served as one: the first snapshot once both were read,
// then one for every change of either, each with the objects of both.
func TestSourcesMerge(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	se := func(name string) string {
		return "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: " + name + "}\nspec: {hosts: [" + name + ".example], ports: [{number: 20880, name: tcp-dubbo}]}\n"
	}
	write := func(dir, name string) {
		if err := os.WriteFile(filepath.Join(dir, name+".yaml"), []byte(se(name)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(a, "one")
	write(b, "two")
	snaps := make(chan Snapshot, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Sources(&DirSource{Dir: a, Debounce: time.Millisecond}, &DirSource{Dir: b, Debounce: time.Millisecond}).Run(ctx, func(s Snapshot) { snaps <- s })
	}()
	names := func(s Snapshot) []string {
		var out []string
		for _, o := range s.Objects {
			out = append(out, o.Name)
		}
		slices.Sort(out)
		return out
	}
	next := func() []string {
		t.Helper()
		select {
		case s := <-snaps:
			return names(s)
		case err := <-done:
			t.Fatalf("Run returned %v before a snapshot", err)
		case <-time.After(30 * time.Second):
			t.Fatal("no snapshot in 30s")
		}
		return nil
	}
	if got := fmt.Sprint(next()); got != "[one two]" {
		t.Fatalf("first snapshot holds %s, want [one two] (both sources)", got)
	}
	write(b, "three")
	for got := ""; got != "[one three two]"; {
		got = fmt.Sprint(next())
		if got != "[one two]" && got != "[one three two]" {
			t.Fatalf("after a change to the second source, a snapshot holds %s, want [one three two]", got)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v, want nil", err)
	}
}

// A source that fails ends the whole, with its error.
func TestSourcesOneFails(t *testing.T) {
	err := Sources(&DirSource{Dir: t.TempDir()}, &DirSource{Dir: filepath.Join(t.TempDir(), "missing")}).Run(context.Background(), func(Snapshot) {})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Run with a missing directory returned %v, want its not-exist error", err)
	}
}
