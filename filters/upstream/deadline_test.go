package upstream

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The deadline heap hands out requests in deadline order whatever was
// removed from the middle (responses arrive in any order).
func TestDeadlineHeap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h deadlineHeap
	live := map[*Request]bool{}
	for range 5000 {
		switch {
		case len(h) == 0 || rng.IntN(3) > 0:
			r := &Request{deadline: rng.Int64N(1000)}
			h.push(r)
			live[r] = true
		default:
			r := h[rng.IntN(len(h))]
			h.remove(r.heapIdx)
			if r.heapIdx != -1 {
				t.Fatal("removed request keeps its index")
			}
			delete(live, r)
		}
		for i, r := range h {
			if r.heapIdx != i {
				t.Fatalf("request at %d thinks it is at %d", i, r.heapIdx)
			}
			if i > 0 && h[(i-1)/2].deadline > r.deadline {
				t.Fatalf("heap order broken at %d", i)
			}
		}
	}
	var got []int64
	for len(h) > 0 {
		got = append(got, h[0].deadline)
		h.remove(0)
	}
	if !slices.IsSorted(got) || len(got) != len(live) {
		t.Fatalf("drained %d requests (want %d), sorted %v", len(got), len(live), slices.IsSorted(got))
	}
}
