package harness

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
)

// A Call is one call of a batch (RunCalls): its method and argument let
// RunCalls check that the reply answers this call and not another.
type Call interface {
	MethodArg() (method, arg string)
}

// CallSpec is a call of the test service through a dubbo-go Client.
type CallSpec struct {
	Method      string
	Arg         string
	Attachments map[string]string
}

func (s CallSpec) MethodArg() (string, string) { return s.Method, s.Arg }

// Outcome is one call's outcome.
type Outcome[C Call] struct {
	Call  C
	Reply greeter.Reply
	Err   error
}

// RunCalls makes n calls, conc at a time, each bounded by perCall: mk builds
// the i-th call and do makes it. A reply to any method but Whoami must echo
// the call's argument; one that does not is an error (it answers another
// call).
func RunCalls[C Call](ctx context.Context, n, conc int, perCall time.Duration, mk func(i int) C, do func(context.Context, C) (greeter.Reply, error)) []Outcome[C] {
	out := make([]Outcome[C], n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				call := mk(i)
				cctx, cancel := context.WithTimeout(ctx, perCall)
				r, err := do(cctx, call)
				cancel()
				if method, arg := call.MethodArg(); err == nil && method != "Whoami" && r.Arg != arg {
					err = fmt.Errorf("%s(%q) got the answer to %q", method, arg, r.Arg)
				}
				out[i] = Outcome[C]{Call: call, Reply: r, Err: err}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return out
}

// RunCalls makes n calls through c, conc at a time, each bounded by perCall
// (see the function RunCalls).
func (c *Client) RunCalls(ctx context.Context, n, conc int, perCall time.Duration, mk func(i int) CallSpec) []Outcome[CallSpec] {
	return RunCalls(ctx, n, conc, perCall, mk, func(ctx context.Context, s CallSpec) (greeter.Reply, error) {
		return c.Call(ctx, s.Method, s.Arg, s.Attachments)
	})
}

// Served fails t unless every call succeeded, and returns the calls each
// provider served.
func Served[C Call](t testing.TB, outs []Outcome[C]) map[string]int {
	t.Helper()
	count := map[string]int{}
	var errs []string
	for _, o := range outs {
		if o.Err != nil {
			errs = append(errs, o.Err.Error())
			continue
		}
		count[o.Reply.Provider]++
	}
	if len(errs) > 0 {
		t.Fatalf("%d of %d calls failed; first: %s", len(errs), len(outs), strings.Join(errs[:min(3, len(errs))], "\n"))
	}
	return count
}

// OnlyFrom fails t if a provider outside allowed served a call.
func OnlyFrom(t testing.TB, what string, count map[string]int, allowed ...string) {
	t.Helper()
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	for p, n := range count {
		if !ok[p] {
			t.Errorf("%s: %d calls served by %s; want only %v (all: %v)", what, n, p, allowed, count)
		}
	}
}

// ExactlyFrom fails t unless exactly the providers in want served calls:
// each of them at least one, no other any.
func ExactlyFrom(t testing.TB, what string, count map[string]int, want ...string) {
	t.Helper()
	for _, w := range want {
		if count[w] == 0 {
			t.Errorf("%s: %s served none of the calls (%v)", what, w, count)
		}
	}
	OnlyFrom(t, what, count, want...)
}

// WithinSigmas reports whether k successes of n lie within z standard
// deviations of a binomial(n, p) mean, and the bounds: the check of a
// weighted split.
func WithinSigmas(k, n int, p, z float64) (bool, float64, float64) {
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	lo, hi := mean-z*sd, mean+z*sd
	return float64(k) >= lo && float64(k) <= hi, lo, hi
}
