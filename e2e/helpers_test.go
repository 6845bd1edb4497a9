package e2e

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// perCall bounds every single call a test makes: dubbo-go's own timeout
// (3s) plus a margin. A call that has not ended by then is a hang.
const perCall = 5 * time.Second

// ports names the providers' ports for a runner config template.
func ports(ps ...*harness.Provider) map[string]int {
	m := make(map[string]int, len(ps))
	for _, p := range ps {
		m[p.Name] = p.Port
	}
	return m
}

// callSpec is one call of a batch.
type callSpec struct {
	Method      string
	Arg         string
	Attachments map[string]string
}

// callResult is one call's outcome.
type callResult struct {
	Spec  callSpec
	Reply greeter.Reply
	Err   error
}

// runCalls makes n calls through c, conc at a time, each bounded by perCall.
func runCalls(ctx context.Context, c *harness.Client, n, conc int, spec func(i int) callSpec) []callResult {
	out := make([]callResult, n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				s := spec(i)
				cctx, cancel := context.WithTimeout(ctx, perCall)
				r, err := c.Call(cctx, s.Method, s.Arg, s.Attachments)
				cancel()
				if err == nil && s.Method != "Whoami" && r.Arg != s.Arg {
					err = fmt.Errorf("%s(%q) got the answer to %q", s.Method, s.Arg, r.Arg)
				}
				out[i] = callResult{Spec: s, Reply: r, Err: err}
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

// mustSucceed fails t unless every call succeeded, and counts the calls
// each provider served.
func mustSucceed(t *testing.T, results []callResult) map[string]int {
	t.Helper()
	count := map[string]int{}
	var errs []string
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err.Error())
			continue
		}
		count[r.Reply.Provider]++
	}
	if len(errs) > 0 {
		t.Fatalf("%d of %d calls failed; first: %s", len(errs), len(results), strings.Join(errs[:min(3, len(errs))], "; "))
	}
	return count
}

// greets makes a spec of Greet calls with unique arguments.
func greets(prefix string, attachments func(i int) map[string]string) func(int) callSpec {
	return func(i int) callSpec {
		s := callSpec{Method: "Greet", Arg: fmt.Sprintf("%s-%d", prefix, i)}
		if attachments != nil {
			s.Attachments = attachments(i)
		}
		return s
	}
}

// onlyFrom fails t if any provider outside allowed served a call.
func onlyFrom(t *testing.T, what string, count map[string]int, allowed ...string) {
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

// withinSigmas reports whether k successes of n lie within z standard
// deviations of a binomial(n, p) mean, and the bounds.
func withinSigmas(k, n int, p, z float64) (bool, float64, float64) {
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	lo, hi := mean-z*sd, mean+z*sd
	return float64(k) >= lo && float64(k) <= hi, lo, hi
}
