package tracing

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func seeded(seed uint64) func() uint64 {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)).Uint64
}

// TestRandomSampling draws 25% of 100,000 requests with a seeded source:
// the count must be within 5σ of 25,000.
func TestRandomSampling(t *testing.T) {
	for _, pct := range []float64{0.5, 1, 25, 99} {
		s := newSampler(pct, true, 0, nil, seeded(7))
		const n = 100000
		got := 0
		for range n {
			if s.sample(false) {
				got++
			}
		}
		p := pct / 100
		mean, sigma := n*p, math.Sqrt(n*p*(1-p))
		if math.Abs(float64(got)-mean) > 5*sigma {
			t.Errorf("%v%%: sampled %d of %d, want %.0f ± %.0f (5σ)", pct, got, n, mean, 5*sigma)
		}
	}
}

func TestSamplingEdges(t *testing.T) {
	never := newSampler(0, false, 0, nil, seeded(1))
	always := newSampler(100, false, 0, nil, seeded(1))
	for i := range 1000 {
		if never.sample(false) || never.sample(true) {
			t.Fatalf("0%% with the client's flag ignored sampled request %d", i)
		}
		if !always.sample(false) {
			t.Fatalf("100%% did not sample request %d", i)
		}
	}
}

func TestClientSampledFlag(t *testing.T) {
	follow := newSampler(0, true, 0, nil, seeded(1))
	ignore := newSampler(0, false, 0, nil, seeded(1))
	if !follow.sample(true) {
		t.Errorf("a client-sampled request at 0%% was not sampled with the client's flag followed")
	}
	if follow.sample(false) {
		t.Errorf("a request the client did not sample was sampled at 0%%")
	}
	if ignore.sample(true) {
		t.Errorf("a client-sampled request was sampled at 0%% with ignore_client_sampled")
	}
}

// TestCap: max_spans_per_second caps requests the client sampled and
// random draws alike, refilling with the (injected) clock.
func TestCap(t *testing.T) {
	now := time.Unix(1000, 0)
	s := newSampler(100, true, 10, func() time.Time { return now }, seeded(1))
	count := func(n int, clientSampled bool) int {
		got := 0
		for range n {
			if s.sample(clientSampled) {
				got++
			}
		}
		return got
	}
	if got := count(50, true); got != 10 {
		t.Errorf("first second: %d of 50 client-sampled requests traced, want the burst of 10", got)
	}
	now = now.Add(300 * time.Millisecond)
	if got := count(50, false); got != 3 {
		t.Errorf("after 300ms: %d of 50 traced, want 3 (10/s)", got)
	}
	now = now.Add(time.Hour)
	if got := count(50, false); got != 10 {
		t.Errorf("after an hour idle: %d of 50 traced, want the burst of 10, not more", got)
	}
}
