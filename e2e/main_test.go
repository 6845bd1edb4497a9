// Package e2e holds Breeze's end-to-end tests: real dubbo-go providers and
// consumers, run as processes, talking directly and through the Breeze proxy
// (`breeze run -c FILE`).
//
// Run from this directory: go test -race ./...
// Tests that need the proxy build github.com/breeze-mesh/breeze/cmd/breeze
// first and fail if it does not build.
//
// dubbo-go never runs inside the test binary (it races in its own connection
// teardown, which -race reports against whichever test is running): tests
// drive it through cmd/consumer and cmd/provider processes.
package e2e

import (
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// clientHeartbeat is the heartbeat period of the dubbo-go clients the tests
// start: short, so heartbeats interleave with calls in every test.
const clientHeartbeat = time.Second

func TestMain(m *testing.M) { harness.Main(m) }

// newClient starts a dubbo-go client process calling addr.
func newClient(t testing.TB, addr string, spec harness.ClientSpec) *harness.Client {
	t.Helper()
	if spec.Heartbeat == 0 {
		spec.Heartbeat = clientHeartbeat
	}
	return harness.StartClient(t, addr, spec)
}
