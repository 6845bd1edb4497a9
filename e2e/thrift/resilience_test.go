package thrift

import (
	"strconv"
	"testing"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// internalError is TApplicationException's type INTERNAL_ERROR: what an
// Apache Thrift server answers when a handler returns an undeclared error.
const internalError = 6

// TestAppExceptionServer: a server started with -app-exception T answers
// every two-way call with a TApplicationException of type T, which the
// Apache client reports with that type, on a connection that stays usable.
func TestAppExceptionServer(t *testing.T) {
	t.Parallel()
	for _, typ := range []int{1, internalError, 7} {
		port := server(t, "failing-"+strconv.Itoa(typ), "-impl", "apache", "-transport", "framed", "-app-exception", strconv.Itoa(typ))
		s := call(t, "-impl", "apache", "-transport", "framed", "-addr", harness.Addr(port), "-method", "whoami", "-n", "5")
		if s.Requests != 5 || s.AppErrors != 5 || s.AppTypes[int32(typ)] != 5 {
			t.Errorf("-app-exception %d: %+v, want 5 application exceptions of type %d", typ, s, typ)
		}
		t.Logf("-app-exception %d: %v, %q", typ, s.AppTypes, s.Messages[:1])
	}
}

// TestRetriableStatusCodes: server a answers every call with a
// TApplicationException of type INTERNAL_ERROR, b answers normally; both
// are one round-robin cluster. Whoami's route retries on that type: every
// call succeeds, answered by b. Slow's route retries only on type 1
// (UNKNOWN_METHOD): the calls balanced to a fail with a's exception,
// passed through with its type.
func TestRetriableStatusCodes(t *testing.T) {
	t.Parallel()
	a := server(t, "a", "-impl", "apache", "-transport", "framed", "-app-exception", strconv.Itoa(internalError))
	b := server(t, "b", "-impl", "apache", "-transport", "framed")
	p := proxy(t, header+`
    route_config:
      routes:
      - name: whoami-retried
        match: {metadata: [{key: method, exact: Whoami}]}
        route: {cluster: ab}
        retry_policy: {retry_on: retriable-status-codes, retriable_status_codes: [6], num_retries: 1}
      - name: slow-retried-on-another-type
        match: {metadata: [{key: method, exact: Slow}]}
        route: {cluster: ab}
        retry_policy: {retry_on: retriable-status-codes, retriable_status_codes: [1], num_retries: 1}
    clusters:
    - name: ab
      lb_policy: ROUND_ROBIN
      endpoints:
      - {address: 127.0.0.1, port: {{port "a"}}}
      - {address: 127.0.0.1, port: {{port "b"}}}
`, map[string]int{"a": a, "b": b})
	const n = 100
	whoami := call(t, "-impl", "apache", "-transport", "framed", "-addr", p.Addr, "-method", "whoami", "-n", strconv.Itoa(n/2), "-conns", "2")
	retried := p.Metric(t, "breeze_retries_total", `result="attempted"`)
	t.Logf("Whoami, retried on type 6: %+v; retries attempted %v", whoami, retried)
	if whoami.Requests != n || whoami.OK != n || whoami.Results["b"] != n {
		t.Errorf("Whoami: %+v; want all %d calls answered by b", whoami, n)
	}
	// Round robin sends about half the first attempts to a; each of them
	// is retried once, on b.
	if retried < 1 || retried > n {
		t.Errorf("%v retries attempted for %d calls with num_retries 1; want some, at most one per call", retried, n)
	}

	slow := call(t, "-impl", "apache", "-transport", "framed", "-addr", p.Addr, "-method", "slow", "-arg", "0", "-n", strconv.Itoa(n/2), "-conns", "2")
	retriedAfter := p.Metric(t, "breeze_retries_total", `result="attempted"`)
	t.Logf("Slow, retried on type 1 only: %+v; retries attempted %v", slow, retriedAfter-retried)
	if slow.Requests != n || slow.Errors != 0 || slow.AppErrors == 0 || slow.AppTypes[internalError] != slow.AppErrors ||
		slow.OK+slow.AppErrors != n || slow.Results["b"] != slow.OK {
		t.Errorf("Slow: %+v; want the calls balanced to a to fail with its type-%d exception, the others answered by b", slow, internalError)
	}
	if retriedAfter != retried {
		t.Errorf("Slow's calls were retried %v times; its route does not retry type %d", retriedAfter-retried, internalError)
	}
}
