package proxy

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/router"
)

// mirrored reads breeze_mirror_total of a proxy's mirror cluster.
func mirrored(proxy, cluster, result string) int {
	return int(testutil.ToFloat64(metrics.Mirrors.WithLabelValues(proxy, cluster, result)))
}

var statPrefixes atomic.Int64

// statPrefix is a stat_prefix of its own for each run of a test, so that
// its counters start at 0 under -count.
func statPrefix(test string) string {
	return fmt.Sprintf("%s_%d", test, statPrefixes.Add(1))
}

// withinSigmas reports whether k successes of n lie within z standard
// deviations of a binomial(n, p) mean, and the bounds.
func withinSigmas(k, n int, p, z float64) (bool, float64, float64) {
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	lo, hi := mean-z*sd, mean+z*sd
	return float64(k) >= lo && float64(k) <= hi, lo, hi
}

// mirrorOutcomes are the results a shadow ends with, once sent.
var mirrorOutcomes = []string{"answered", "timeout", "reset", "connect_failure", "internal"}

// mirrorCounts formats every result of a mirror cluster, for failure
// messages and logs.
func mirrorCounts(proxy, cluster string) string {
	var parts []string
	for _, r := range append([]string{"sent", "dropped_overflow", "no_healthy_upstream", "encode_error"}, mirrorOutcomes...) {
		if n := mirrored(proxy, cluster, r); n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", r, n))
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// mirrorEnded is how many shadows sent to a mirror cluster have their
// outcome.
func mirrorEnded(proxy, cluster string) int {
	n := 0
	for _, r := range mirrorOutcomes {
		n += mirrored(proxy, cluster, r)
	}
	return n
}

// callsAnsweredBy makes n sequential calls and fails t unless each is
// answered by the backend named server, with its own body, and without
// the shadow mark.
func callsAnsweredBy(t *testing.T, c *client, n int, server string, kv ...string) {
	t.Helper()
	for i := range n {
		body := fmt.Sprintf("call-%d", i)
		m, err := c.call(0, body, kv...)
		if err != nil || m.status != codecs.StatusOK || md(m, "server") != server || m.body != body {
			t.Fatalf("call %d: %+v %v; want %s's answer echoing %q", i, m, err, server, body)
		}
		if strings.Contains(md(m, "seen"), router.ShadowKey) {
			t.Fatalf("call %d: the primary carried the shadow mark: seen %q", i, md(m, "seen"))
		}
	}
}

// A route mirroring 30% of its requests: the mirror receives its share
// within 5σ of the binomial mean, each shadow marked; the primary answers
// every call itself, unmarked, and counts only its own requests.
func TestMirrorShareWhilePrimaryUnchanged(t *testing.T) {
	px := statPrefix("TestMirrorShareWhilePrimaryUnchanged")
	primary, mirror := newBackend(t, "primary"), newBackend(t, "mirror")
	addr := startProxy(t, strings.Replace(cfg(`  - {route: {cluster: c, request_mirror_policies: [{cluster: shadow, percentage: 30}]}}`,
		"- name: c\n  endpoints:\n"+ep(primary, "")+"\n- name: shadow\n  endpoints:\n"+ep(mirror, "")),
		"stat_prefix: t", "stat_prefix: "+px, 1))
	c := dial(t, addr)
	const n = 400
	callsAnsweredBy(t, c, n, "primary")
	eventually(t, "every shadow sent answered", func() bool {
		sent := mirrored(px, "shadow", "sent")
		return mirrored(px, "shadow", "answered") == sent && int(mirror.received.Load()) == sent
	})
	got := int(mirror.received.Load())
	ok, lo, hi := withinSigmas(got, n, 0.30, 5)
	t.Logf("%d calls, all answered by primary; mirror received %d (5σ bounds %.0f–%.0f), %d of them marked %s; counts %s",
		n, got, lo, hi, mirror.receivedWith(router.ShadowKey), router.ShadowKey, mirrorCounts(px, "shadow"))
	if !ok {
		t.Fatalf("mirror received %d of %d; want 30%% within 5σ (%.0f–%.0f)", got, n, lo, hi)
	}
	if primary.received.Load() != n || primary.receivedWith(router.ShadowKey) != 0 {
		t.Fatalf("primary received %d (%d marked); want %d, none marked", primary.received.Load(), primary.receivedWith(router.ShadowKey), n)
	}
	if m := mirror.receivedWith(router.ShadowKey); m != got {
		t.Fatalf("%d of the mirror's %d requests carried %s; want all", m, got, router.ShadowKey)
	}
	req := func(cluster string) float64 {
		return testutil.ToFloat64(metrics.Requests.WithLabelValues(px, cluster, "request"))
	}
	if req("c") != n || req("shadow") != 0 {
		t.Fatalf("breeze_requests_total: c %v, shadow %v; want %d and 0 (shadows are not requests)", req("c"), req("shadow"), n)
	}
}

// A dead mirror: one that closes the connection on each shadow, then one
// killed outright (connections refused). The primary answers every call;
// each shadow is sent once, never retried though the route retries
// resets, and counted with its failure.
func TestMirrorDeadMirrorFailsNoPrimary(t *testing.T) {
	px := statPrefix("TestMirrorDeadMirrorFailsNoPrimary")
	primary, mirror := newBackend(t, "primary"), newBackend(t, "mirror")
	mirror.dropAll.Store(true)
	addr := startProxy(t, strings.Replace(cfg(`  - {route: {cluster: c, request_mirror_policies: [{cluster: shadow}]}, retry_policy: {retry_on: "reset,connect-failure", num_retries: 3}}`,
		"- name: c\n  endpoints:\n"+ep(primary, "")+"\n- name: shadow\n  endpoints:\n"+ep(mirror, "")),
		"stat_prefix: t", "stat_prefix: "+px, 1))
	c := dial(t, addr)
	const n = 50
	callsAnsweredBy(t, c, n, "primary")
	eventually(t, "every shadow's reset counted", func() bool { return mirrored(px, "shadow", "reset") == n })
	// The mirror reads one shadow per connection before closing it: the
	// others written on it are lost with it, and counted reset too.
	t.Logf("mirror resetting: %d calls answered by primary; mirror read %d shadows before closing; counts %s; retries %v",
		n, mirror.received.Load(), mirrorCounts(px, "shadow"), retries(px, "shadow", "reset", "attempted"))
	if sent := mirrored(px, "shadow", "sent"); sent != n || mirror.received.Load() > n || retries(px, "shadow", "reset", "attempted") != 0 {
		t.Fatalf("sent %d shadows, mirror received %d, %v retried; want %d sent, at most that many received, none retried",
			sent, mirror.received.Load(), retries(px, "shadow", "reset", "attempted"), n)
	}

	mirror.kill()
	callsAnsweredBy(t, c, n, "primary")
	notSent := func() int {
		return mirrored(px, "shadow", "no_healthy_upstream") + mirrored(px, "shadow", "dropped_overflow")
	}
	eventually(t, "every shadow of the killed mirror accounted for", func() bool {
		return mirrored(px, "shadow", "sent")+notSent() == 2*n && mirrorEnded(px, "shadow") == mirrored(px, "shadow", "sent")
	})
	t.Logf("mirror killed: %d more calls answered by primary; counts %s", n, mirrorCounts(px, "shadow"))
	if got := mirrored(px, "shadow", "connect_failure"); got == 0 {
		t.Fatalf("no shadow counted connect_failure after the mirror was killed: %s", mirrorCounts(px, "shadow"))
	}
	if primary.received.Load() != 2*n {
		t.Fatalf("primary received %d, want %d", primary.received.Load(), 2*n)
	}
}

// A mirror that holds every shadow: every primary answer arrives while
// the mirror still holds all the shadows sent before it (counted, not
// timed); with a short route timeout the held shadows are counted as
// timeouts.
func TestMirrorHangingMirrorNeverDelaysPrimary(t *testing.T) {
	px := statPrefix("TestMirrorHangingMirrorNeverDelaysPrimary")
	primary, mirror := newBackend(t, "primary"), newBackend(t, "mirror")
	mirror.hangAll.Store(true)
	addr := startProxy(t, strings.Replace(cfg(`  - {match: {metadata: [{key: method, exact: Short}]}, route: {cluster: c, request_mirror_policies: [{cluster: shadow}]}, timeout: 1s}
  - {route: {cluster: c, request_mirror_policies: [{cluster: shadow}]}, timeout: 3600s}`,
		"- name: c\n  endpoints:\n"+ep(primary, "")+"\n- name: shadow\n  endpoints:\n"+ep(mirror, "")),
		"stat_prefix: t", "stat_prefix: "+px, 1))
	c := dial(t, addr)
	const n = 100
	for i := range n {
		body := fmt.Sprintf("call-%d", i)
		m, err := c.call(0, body)
		if err != nil || md(m, "server") != "primary" || m.body != body {
			t.Fatalf("call %d: %+v %v; want primary's answer", i, m, err)
		}
		// Shadows travel apart from primaries: the mirror may not have
		// read this call's own yet, never an earlier one's answer.
		if ended := mirrorEnded(px, "shadow"); ended != 0 {
			t.Fatalf("call %d answered after %d shadows ended; want all held", i, ended)
		}
	}
	eventually(t, "the mirror holding every shadow", func() bool { return mirror.received.Load() == n })
	t.Logf("%d calls answered by primary while the mirror held %d shadows; counts %s", n, mirror.received.Load(), mirrorCounts(px, "shadow"))
	if e := mirrorEnded(px, "shadow"); e != 0 {
		t.Fatalf("%d shadows ended while the mirror held them all: %s", e, mirrorCounts(px, "shadow"))
	}

	const short = 20
	callsAnsweredBy(t, c, short, "primary", "method", "Short")
	eventually(t, "the short route's shadows timed out", func() bool { return mirrored(px, "shadow", "timeout") == short })
	t.Logf("short route: %d calls answered by primary; %d shadows timed out on the mirror", short, mirrored(px, "shadow", "timeout"))
}

// Oneway requests are mirrored as oneways: the mirror gets each as a
// oneway, and nothing waits for a reply.
func TestMirrorOneway(t *testing.T) {
	px := statPrefix("TestMirrorOneway")
	primary, mirror := newBackend(t, "primary"), newBackend(t, "mirror")
	addr := startProxy(t, strings.Replace(cfg(`  - {route: {cluster: c, request_mirror_policies: [{cluster: shadow}]}}`,
		"- name: c\n  endpoints:\n"+ep(primary, "")+"\n- name: shadow\n  endpoints:\n"+ep(mirror, "")),
		"stat_prefix: t", "stat_prefix: "+px, 1))
	c := dial(t, addr)
	const n = 30
	for i := range n {
		c.send(codecs.Oneway, 0, fmt.Sprintf("oneway-%d", i))
	}
	eventually(t, "every oneway at both", func() bool { return primary.onewaysReceived() == n && mirror.onewaysReceived() == n })
	t.Logf("%d oneways: primary got %d, mirror %d as oneways (%d as requests); counts %s",
		n, primary.onewaysReceived(), mirror.onewaysReceived(), mirror.received.Load(), mirrorCounts(px, "shadow"))
	if mirror.received.Load() != 0 || mirror.receivedWith(router.ShadowKey) != n {
		t.Fatalf("mirror received %d two-way requests and %d marked frames; want 0 and %d", mirror.received.Load(), mirror.receivedWith(router.ShadowKey), n)
	}
	if got := mirrored(px, "shadow", "sent"); got != n || mirrorEnded(px, "shadow") != 0 {
		t.Fatalf("counts %s; want sent=%d and no outcome (oneways have none)", mirrorCounts(px, "shadow"), n)
	}
}

// Shadows count against the mirror cluster's own circuit breaker (beyond
// max_requests they are dropped and counted), never against the
// primary's: mirrored to another subset of the primary's own cluster
// (Aeraki's samples), a hanging subset never makes the primary overflow.
func TestMirrorBreakers(t *testing.T) {
	px := statPrefix("TestMirrorBreakers")
	primary, mirror := newBackend(t, "primary"), newBackend(t, "mirror")
	mirror.hangAll.Store(true)
	addr := startProxy(t, strings.Replace(cfg(`  - {route: {cluster: c, request_mirror_policies: [{cluster: shadow}]}, timeout: 3600s}`,
		"- name: c\n  endpoints:\n"+ep(primary, "")+"\n- name: shadow\n  circuit_breakers: {max_requests: 3}\n  endpoints:\n"+ep(mirror, "")),
		"stat_prefix: t", "stat_prefix: "+px, 1))
	c := dial(t, addr)
	const n = 10
	callsAnsweredBy(t, c, n, "primary")
	eventually(t, "the mirror holding 3 shadows", func() bool { return mirror.received.Load() == 3 })
	t.Logf("own cluster at max_requests 3: %d calls answered by primary; counts %s", n, mirrorCounts(px, "shadow"))
	if got := mirrored(px, "shadow", "dropped_overflow"); got != n-3 {
		t.Fatalf("dropped_overflow %d, want %d: %s", got, n-3, mirrorCounts(px, "shadow"))
	}

	v1, v2 := newBackend(t, "v1"), newBackend(t, "v2")
	px2 := statPrefix("TestMirrorBreakersSubset")
	v2.hangAll.Store(true)
	addr = startProxy(t, strings.Replace(cfg(`  - {route: {cluster: c, subset: {version: v1}, request_mirror_policies: [{cluster: c, subset: {version: v2}}]}, timeout: 3600s}`,
		"- name: c\n  circuit_breakers: {max_requests: 2}\n  endpoints:\n"+ep(v1, "version: v1")+"\n"+ep(v2, "version: v2")),
		"stat_prefix: t", "stat_prefix: "+px2, 1))
	c = dial(t, addr)
	callsAnsweredBy(t, c, n, "v1")
	eventually(t, "v2 holding every shadow", func() bool { return v2.received.Load() == n })
	t.Logf("subset v2 of the primary's cluster at max_requests 2: %d calls answered by v1 while v2 holds %d shadows; counts %s",
		n, v2.received.Load(), mirrorCounts(px2, "c"))
}

// Several clients at once under a 100% mirror: each client's answers are
// its own, and the mirror receives exactly one shadow per call.
func TestMirrorConcurrentClients(t *testing.T) {
	px := statPrefix("TestMirrorConcurrentClients")
	primary, mirror := newBackend(t, "primary"), newBackend(t, "mirror")
	addr := startProxy(t, strings.Replace(cfg(`  - {route: {cluster: c, request_mirror_policies: [{cluster: shadow, percentage: 100}]}}`,
		"- name: c\n  endpoints:\n"+ep(primary, "")+"\n- name: shadow\n  endpoints:\n"+ep(mirror, "")),
		"stat_prefix: t", "stat_prefix: "+px, 1))
	const clients, per = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for k := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(t, addr)
			for i := range per {
				body := fmt.Sprintf("c%d-%d", k, i)
				m, err := c.call(0, body)
				if err != nil || md(m, "server") != "primary" || m.body != body {
					errs <- fmt.Errorf("client %d call %d: %+v %v", k, i, m, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	eventually(t, "one shadow per call answered", func() bool { return mirrored(px, "shadow", "answered") == clients*per })
	t.Logf("%d clients × %d calls answered by primary; mirror received %d; counts %s", clients, per, mirror.received.Load(), mirrorCounts(px, "shadow"))
	if mirror.received.Load() != clients*per {
		t.Fatalf("mirror received %d, want %d", mirror.received.Load(), clients*per)
	}
}
