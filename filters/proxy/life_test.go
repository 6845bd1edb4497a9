package proxy

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/filters/upstream"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Envoy parses a new plugin_config on every EnvoyFilter change and never
// frees one. 1,000 distinct configs, each used by a connection that made a
// request (so each had an upstream connection, its timers and the host's
// goroutines for it), then closed: every proxy sleeps, the upstream
// connections close, and goroutines and heap return to within a bound.
func TestConfigVersionsReleaseTheirState(t *testing.T) {
	b := newBackend(t, "b")
	// Start the shared host before the baseline.
	startProxy(t, cfg(`  - route: {cluster: c}`, "- name: c\n  endpoints:\n"+ep(b, "")))

	var before, after runtime.MemStats
	settle := func(m *runtime.MemStats) int {
		for range 3 {
			runtime.GC()
		}
		runtime.ReadMemStats(m)
		return runtime.NumGoroutine()
	}
	goroutinesBefore := settle(&before)

	const n = 1000
	configs := make([]string, n)
	for i := range configs {
		// A new version of the same service's config: one route changed.
		configs[i] = cfg(fmt.Sprintf("  - {match: {metadata: [{key: version, exact: v%d}]}, route: {cluster: c}}\n  - route: {cluster: c}", i),
			"- name: c\n  endpoints:\n"+ep(b, ""))
		addr := startProxy(t, configs[i])
		c := dial(t, addr)
		if m, err := c.call(1, "x"); err != nil || md(m, "server") != "b" {
			t.Fatalf("config %d: %+v %v", i, m, err)
		}
		c.c.Close()
	}
	for i, yml := range configs {
		p := proxyFor(t, yml)
		eventually(t, fmt.Sprintf("proxy %d asleep", i), p.Asleep)
		if n := p.up.Pools(); n != 0 {
			t.Fatalf("proxy %d asleep with %d upstream pools", i, n)
		}
	}
	eventually(t, "every upstream connection closed", func() bool { return b.open.Load() == 0 })
	// The listeners go too (they are Envoy's, not the plugin's).
	closeListeners(t)

	const goroutineSlack = 20
	var goroutinesAfter int
	eventually(t, "goroutines back to the baseline", func() bool {
		goroutinesAfter = settle(&after)
		return goroutinesAfter <= goroutinesBefore+goroutineSlack
	})
	perConfig := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("after %d config versions: goroutines %d -> %d, heap %d -> %d bytes (%d bytes per config kept)",
		n, goroutinesBefore, goroutinesAfter, before.HeapAlloc, after.HeapAlloc, perConfig)
	// What stays per config: the parsed config, its compiled routes and
	// clusters, and the host's record of it (Envoy's, in C++ in Envoy).
	const perConfigBound = 32 << 10
	if perConfig > perConfigBound {
		t.Errorf("%d bytes kept per config version, over the %d bound", perConfig, perConfigBound)
	}
}

// A sleeping proxy wakes with its next connection and serves at once.
func TestSleepingProxyWakes(t *testing.T) {
	old := upstream.Keepalive.Swap(int64(time.Hour))
	defer upstream.Keepalive.Store(old)
	b := newBackend(t, "b")
	yml := cfg(`  - route: {cluster: c}`, "- name: c\n  endpoints:\n"+ep(b, ""))
	addr := startProxy(t, yml)
	p := proxyFor(t, yml)
	for round := range 3 {
		c := dial(t, addr)
		if p.Asleep() {
			// The connection may not have reached the plugin yet.
			eventually(t, "proxy awake", func() bool { return !p.Asleep() })
		}
		if m, err := c.call(uint64(round), "x"); err != nil || md(m, "server") != "b" {
			t.Fatalf("round %d: %+v %v", round, m, err)
		}
		if p.up.Pools() != 1 {
			t.Fatalf("round %d: %d pools, want 1", round, p.up.Pools())
		}
		c.c.Close()
		eventually(t, "proxy asleep", p.Asleep)
		eventually(t, "upstream connection closed", func() bool { return b.open.Load() == 0 })
	}
}

// closeListeners closes the listeners startProxy opened so far, now
// rather than at cleanup.
func closeListeners(t *testing.T) {
	t.Helper()
	testListenersMu.Lock()
	defer testListenersMu.Unlock()
	for _, ln := range testListeners {
		ln.Close()
	}
	testListeners = nil
}

// A proxy asleep has no xDS subscription (the process's stream closes with
// its last proxy); woken, it serves with the routes and clusters it had and
// catches up with what changed meanwhile.
func TestSleepingProxyResubscribes(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	s := startXDSServer(t, "")
	s.set(func(r *resources) {
		r.cluster(edsCluster(t, "c", 0, nil))
		r.endpoints("c", a)
		r.routes(&breezev1.RouteConfiguration{Name: "r", Routes: []*breezev1.Route{{Route: toCluster("c", nil)}}})
	})
	yml := "stat_prefix: sleepy\ncodec: tframe\nxds: {initial_fetch_timeout: 10s, address: " + s.addr + ", route_config_name: r, node_id: sleepy}\n"
	addr, p := startXDSProxy(t, yml)
	c := dial(t, addr)
	if m, err := c.call(1, "x"); err != nil || md(m, "server") != "a" {
		t.Fatalf("%+v %v", m, err)
	}
	c.c.Close()
	eventually(t, "proxy asleep", p.Asleep)
	hasClient := func() bool {
		xdsClients.mu.Lock()
		defer xdsClients.mu.Unlock()
		return xdsClients.m[xdsKey{address: s.addr, node: "sleepy"}] != nil
	}
	if hasClient() {
		t.Fatal("the xDS client of a sleeping proxy's server is still open")
	}

	// Meanwhile the endpoints move to b.
	s.set(func(r *resources) { r.endpoints("c", b) })
	c = dial(t, addr)
	// Served at once with what it had, then with what changed.
	if m, err := c.call(2, "x"); err != nil || (md(m, "server") != "a" && md(m, "server") != "b") {
		t.Fatalf("woken: %+v %v", m, err)
	}
	eventually(t, "the woken proxy caught up", func() bool {
		m, err := c.call(3, "x")
		return err == nil && md(m, "server") == "b"
	})
	if !hasClient() {
		t.Fatal("no xDS client after waking")
	}
}

// A config Envoy parsed but never used sleeps too.
func TestUnusedProxySleeps(t *testing.T) {
	old := unusedSleep
	unusedSleep = time.Millisecond
	defer func() { unusedSleep = old }()
	b := newBackend(t, "b")
	yml := cfg(`  - {match: {metadata: [{key: unused, present: true}]}, route: {cluster: c}}`, "- name: c\n  endpoints:\n"+ep(b, ""))
	p := proxyFor(t, yml)
	eventually(t, "unused proxy asleep", p.Asleep)
}
