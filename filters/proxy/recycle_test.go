package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// A connection reuses the state of its finished requests (downstream.go,
// recycle). Requests that time out have their late answers arrive while
// later requests of the same connection run in recycled streams, some of
// them timing out too, some retried: every request gets exactly one
// answer, its own (its id, its body, its outcome), and every late answer
// is dropped. Run under -race, a callback that touched a stream after it
// was handed to another request is also a reported race.
func TestRecycledStreamsKeepTheirOwnRequests(t *testing.T) {
	b, stuck := newBackend(t, "b"), newBackend(t, "stuck")
	stuck.hangAll.Store(true)
	addr := startProxy(t, strings.Replace(cfg(`
  - {match: {metadata: [{key: kind, exact: retried}]}, route: {cluster: two}, timeout: 60s, retry_policy: {retry_on: timeout, idempotent: true, num_retries: 3, per_try_timeout: 0.25s}}
  - {match: {metadata: [{key: kind, exact: slow}]}, route: {cluster: c}, timeout: 0.1s}
  - {route: {cluster: c}, timeout: 60s}`,
		"- name: c\n  endpoints:\n"+ep(b, "")+
			"\n- name: two\n  lb_policy: ROUND_ROBIN\n  endpoints:\n"+ep(b, "")+"\n"+ep(stuck, "")), "stat_prefix: t", "stat_prefix: recycle", 1))
	c := dial(t, addr)
	late := testutil.ToFloat64(metrics.Dropped.WithLabelValues("recycle", "late_response"))
	const rounds = 12
	kinds := []string{"fast", "slow", "fast", "retried", "slow", "fast"}
	slow := 0
	for round := range rounds {
		chans := make([]chan tmsg, len(kinds))
		for i, kind := range kinds {
			md := []string{"kind", kind}
			if kind == "slow" {
				md = append(md, "sleep", "300") // answered after its 0.1s timeout
				slow++
			}
			chans[i] = c.send(codecs.Request, uint64(round*100+i+1), fmt.Sprintf("body-%d-%d", round, i), md...)
		}
		for i, kind := range kinds {
			id := uint64(round*100 + i + 1)
			var m tmsg
			select {
			case m = <-chans[i]:
			case <-c.closed:
				t.Fatalf("round %d request %d (%s): the proxy closed the connection", round, i, kind)
			case <-time.After(20 * time.Second):
				t.Fatalf("round %d request %d (%s): no answer within 20s: the proxy lost it", round, i, kind)
			}
			switch {
			case m.id != id:
				t.Fatalf("round %d request %d (%s): answer has id %d, want %d", round, i, kind, m.id, id)
			case kind == "slow":
				if md(m, "error") != "timeout" {
					t.Fatalf("round %d request %d (slow): got %+v, want a timeout reply", round, i, m)
				}
			case m.status != codecs.StatusOK || m.body != fmt.Sprintf("body-%d-%d", round, i) || md(m, "server") != "b":
				t.Fatalf("round %d request %d (%s): got %+v (body %q), want b's answer with body-%d-%d", round, i, kind, m, m.body, round, i)
			}
		}
	}
	eventually(t, fmt.Sprintf("%d late answers dropped", slow), func() bool {
		return testutil.ToFloat64(metrics.Dropped.WithLabelValues("recycle", "late_response"))-late >= float64(slow)
	})
	select {
	case x := <-c.extra:
		t.Fatalf("a frame that answers no request: %+v", x)
	default:
	}
	t.Logf("%d requests over %d rounds, %d timed out and answered late, %d retried past a stuck endpoint: each answered once, its own",
		rounds*len(kinds), rounds, slow, rounds)
}
