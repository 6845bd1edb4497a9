package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// A client may have max_requests_in_flight requests waiting for their
// answers on one connection; the next one closes the connection, counted,
// without being sent upstream. Answered requests no longer count. This bound
// is the plugin's own, so it holds inside Envoy as well as in the host.
func TestMaxRequestsInFlightClosesConnection(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, cfg(`  - route: {cluster: c}`, "- name: c\n  endpoints:\n"+ep(b, ""), "max_requests_in_flight: 4"))
	closes := metrics.DownstreamClosed.WithLabelValues("t", "max_requests_in_flight")
	before := testutil.ToFloat64(closes)

	// Answered one after another: never more than one in flight.
	c := dial(t, addr)
	for range 10 {
		if _, err := c.call(0, "x"); err != nil {
			t.Fatal(err)
		}
	}
	// Four waiting (the backend holds them) is the most allowed...
	received := b.received.Load()
	for id := uint64(101); id <= 104; id++ {
		c.send(codecs.Request, id, "x", "hang", "1")
	}
	eventually(t, "four requests at the backend", func() bool { return b.received.Load() == received+4 })
	// ...a fifth closes the connection.
	c.send(codecs.Request, 105, "x")
	select {
	case <-c.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("a fifth request in flight did not close the connection")
	}
	if got := testutil.ToFloat64(closes) - before; got != 1 {
		t.Errorf("breeze_downstream_closes_total{reason=max_requests_in_flight} rose by %v, want 1", got)
	}
	if got := b.received.Load(); got != received+4 {
		t.Errorf("backend received %d requests after the four, want none: the fifth must not be sent", got-received-4)
	}
}
