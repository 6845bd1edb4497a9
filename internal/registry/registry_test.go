package registry

import (
	"slices"
	"testing"
)

func TestRegistry(t *testing.T) {
	var r Registry[int]
	if _, ok := r.Lookup("a"); ok || len(r.Names()) != 0 {
		t.Fatal("an empty registry holds something")
	}
	if !r.Add("b", 2) || !r.Add("a", 1) {
		t.Fatal("Add refused a new name")
	}
	if r.Add("a", 3) {
		t.Fatal("Add took a name twice")
	}
	if v, ok := r.Lookup("a"); !ok || v != 1 {
		t.Fatalf("Lookup(a) = %d, %v; want the first value, 1", v, ok)
	}
	if got := r.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Names() = %v, want sorted [a b]", got)
	}
}
