package testport

import (
	"net"
	"strconv"
	"testing"
)

// Ports come from below the ephemeral range, free, with their offsets
// free too, and never twice.
func TestSetBelowEphemeralRangeAndNeverTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p := Set(t, 1000, 2000)
		for _, q := range []int{p, p + 1000, p + 2000} {
			if q < lowest || q >= ephemeralLow() {
				t.Fatalf("port %d outside [%d, %d)", q, lowest, ephemeralLow())
			}
			if seen[q] {
				t.Fatalf("port %d handed out twice", q)
			}
			seen[q] = true
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(q))
			if err != nil {
				t.Fatalf("port %d handed out but not free: %v", q, err)
			}
			l.Close()
		}
	}
}

// A port taken by a listener is never handed out.
func TestTakenPortSkipped(t *testing.T) {
	p := Free(t)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	mu.Lock()
	delete(given, p) // as if another process had chosen it
	ok := free([]int{p})
	mu.Unlock()
	if ok {
		t.Fatalf("port %d, listened on, was reported free", p)
	}
}
