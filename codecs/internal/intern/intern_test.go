package intern

import (
	"fmt"
	"testing"
	"unsafe"
)

// same reports whether a and b share their bytes: the table gave back the
// string it made before rather than a new copy.
func same(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

func TestHotStringSurvivesChurn(t *testing.T) {
	var tb Table
	hot := tb.String([]byte("org.apache.dubbo.sample.UserProvider"))
	for i := range 10 * Max {
		tb.Frame()
		tb.String(fmt.Appendf(nil, "trace-%d", i))
		if got := tb.String([]byte("org.apache.dubbo.sample.UserProvider")); !same(got, hot) {
			t.Fatalf("after %d unique strings the hot one was copied again", i)
		}
	}
	if len(tb.strs) > Max || len(tb.old) > Max {
		t.Errorf("table grew to %d+%d entries", len(tb.strs), len(tb.old))
	}
}

// A frame whose strings differ from the previous frame's at the same
// positions gets its own strings, never the previous frame's.
func TestPositionMismatch(t *testing.T) {
	var tb Table
	frames := [][]string{
		{"interface", "com.acme.A", "method", "get"},
		{"interface", "com.acme.B", "method", "put"},
		{"interface", "com.acme.A", "version", "get"},
		{"x", "", "method", "getter"},
	}
	for round := range 3 {
		for _, f := range frames {
			tb.Frame()
			for i, want := range f {
				if got := tb.String([]byte(want)); got != want {
					t.Fatalf("round %d, frame %q, string %d: got %q, want %q", round, f, i, got, want)
				}
			}
		}
	}
}

// Strings repeating at the same positions cost no allocation and come back
// as the same strings; long ones are never kept.
func TestSteadyState(t *testing.T) {
	var tb Table
	keys := [][]byte{[]byte("interface"), []byte("com.acme.user.UserService"), []byte("method"), []byte("getUser"), []byte("tenant"), []byte("gold")}
	first := make([]string, len(keys))
	tb.Frame()
	for i, k := range keys {
		first[i] = tb.String(k)
	}
	allocs := testing.AllocsPerRun(100, func() {
		tb.Frame()
		for i, k := range keys {
			if !same(tb.String(k), first[i]) {
				t.Fatalf("string %d copied again", i)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("a repeated frame costs %v allocations", allocs)
	}
	long := make([]byte, MaxLen+1)
	if a, b := tb.String(long), tb.String(long); same(a, b) {
		t.Error("a string over MaxLen was kept")
	}
	if tb.String(nil) != "" {
		t.Error("empty input")
	}
}

// A frame with more strings than the positional memory still interns the
// rest through the map.
func TestBeyondRecent(t *testing.T) {
	var tb Table
	in := make([][]byte, recent+8)
	for i := range in {
		in[i] = fmt.Appendf(nil, "k%d", i)
	}
	tb.Frame()
	first := make([]string, len(in))
	for i, b := range in {
		first[i] = tb.String(b)
	}
	tb.Frame()
	for i, b := range in {
		if got := tb.String(b); !same(got, first[i]) {
			t.Errorf("string %d (%s) copied again", i, b)
		}
	}
}

var sink string

// BenchmarkFrame: a Dubbo-like frame's keys and values, repeating in the
// same order (positional hits), and the same strings in rotating order
// (every lookup through the map): the difference is the hashing saved.
func BenchmarkFrame(b *testing.B) {
	var strs [][]byte
	for i := range 14 {
		strs = append(strs, fmt.Appendf(nil, "attachment-key-%d", i), fmt.Appendf(nil, "value-%d", i))
	}
	b.Run("same-order", func(b *testing.B) {
		var tb Table
		b.ReportAllocs()
		for b.Loop() {
			tb.Frame()
			for _, s := range strs {
				sink = tb.String(s)
			}
		}
	})
	b.Run("rotating", func(b *testing.B) {
		var tb Table
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			tb.Frame()
			n++
			for i := range strs {
				sink = tb.String(strs[(i+n)%len(strs)])
			}
		}
	})
}
