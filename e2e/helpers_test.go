package e2e

import (
	"context"
	"fmt"
	"time"

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

// callSpec is one call of a batch; callResult its outcome.
type (
	callSpec   = harness.CallSpec
	callResult = harness.Outcome[harness.CallSpec]
)

// runCalls makes n calls through c, conc at a time, each bounded by perCall.
func runCalls(ctx context.Context, c *harness.Client, n, conc int, spec func(i int) callSpec) []callResult {
	return c.RunCalls(ctx, n, conc, perCall, spec)
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
