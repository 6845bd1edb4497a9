package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// A DNS refresh that drops an address retires that endpoint's pool: its
// connection closes once idle, instead of staying open (and heartbeating)
// forever, and no request fails on the way.
func TestDNSRefreshRetiresRemovedEndpoints(t *testing.T) {
	a := newBackend(t, "a")
	port := a.port()
	b := newBackendAt(t, "b", fmt.Sprintf("127.0.0.2:%d", port))

	var mu sync.Mutex
	answer := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}
	old := dnsLookup
	dnsLookup = func(_ context.Context, _, host string) ([]netip.Addr, error) {
		if host != "providers.test" {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		mu.Lock()
		defer mu.Unlock()
		return answer, nil
	}
	t.Cleanup(func() { dnsLookup = old })

	yml := cfg("  - route: {cluster: c}",
		fmt.Sprintf("- name: c\n  type: STRICT_DNS\n  dns_refresh_rate: 0.01s\n  endpoints: [{address: providers.test, port: %d}]", port))
	addr := startProxy(t, yml)
	p := proxyFor(t, yml)
	c := dial(t, addr)
	served := map[string]int{}
	call := func() {
		t.Helper()
		m, err := c.call(0, "x")
		if err != nil || m.status != 0 {
			t.Fatalf("request failed: %+v %v", m, err)
		}
		served[md(m, "server")]++
	}
	for served["a"] == 0 || served["b"] == 0 {
		call()
	}
	if n := a.open.Load() + b.open.Load(); n != 2 {
		t.Fatalf("%d connections open to a and b, want 2", n)
	}

	mu.Lock()
	answer = []netip.Addr{netip.MustParseAddr("127.0.0.2")}
	mu.Unlock()
	eventually(t, "a's connection closed after a left DNS", func() bool {
		call()
		return a.open.Load() == 0
	})
	if n := p.up.Pools(); n != 1 {
		t.Fatalf("%d upstream pools, want 1 (b's)", n)
	}
	before := a.received.Load()
	for range 20 {
		call()
	}
	if a.received.Load() != before {
		t.Fatal("the removed endpoint still gets requests")
	}
}
