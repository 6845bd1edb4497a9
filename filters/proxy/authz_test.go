package proxy

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/filters/authz"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// The callers of the authz tests, by the loopback address they connect
// from, and the URI SAN the handshake gave each (what set_filter_state
// stores under io.istio.peer_principal; the host seeds it).
const (
	cartIP    = "127.0.0.12" // spiffe://cluster.local/ns/shop/sa/cart
	billingIP = "127.0.0.13" // spiffe://cluster.local/ns/pay/sa/billing
	anonIP    = "127.0.0.14" // plaintext: no identity
	evilIP    = "127.0.0.15" // spiffe://cluster.local/ns/evil/sa/mallory
	twoSANsIP = "127.0.0.16" // two URI SANs: no identity
	// unhookedIP comes through a chain that hands Breeze no certificate:
	// its identity is unknown.
	unhookedIP = "127.0.0.17"
)

func init() {
	for ip, uri := range map[string]string{
		cartIP:    "spiffe://cluster.local/ns/shop/sa/cart",
		billingIP: "spiffe://cluster.local/ns/pay/sa/billing",
		evilIP:    "spiffe://cluster.local/ns/evil/sa/mallory",
		twoSANsIP: "spiffe://cluster.local/ns/pay/sa/billing,spiffe://cluster.local/ns/evil/sa/mallory",
	} {
		testPeerState.Store(ip, uri)
	}
	testPeerState.Store(anonIP, "")
}

var authzRuns atomic.Int32

const authzPolicies = `
    policies:
    - name: deny-delete
      action: DENY
      rules: [{to: [{operation: {methods: ["Delete*"]}}]}]
    - name: shop-reads
      rules: [{from: [{source: {namespaces: [shop]}}], to: [{operation: {services: ["*.Catalog"], methods: ["Get*"]}}]}]
    - name: billing
      rules: [{from: [{source: {principals: [cluster.local/ns/pay/sa/billing]}}]}]
    - name: local-health
      rules: [{from: [{source: {ip_blocks: [127.0.0.14/32]}}], to: [{operation: {methods: [Health]}}]}]`

// Through the host and Envoy's Go shim, with the caller's identity where
// Envoy's set_filter_state would have put it: each case's request is
// allowed (the backend answers) or denied with the codec's error reply,
// flag UAEX, counted by policy. Identity comes from the connection alone:
// attachments claiming another one change nothing.
func TestAuthzThroughHost(t *testing.T) {
	rec.reset()
	b := newBackend(t, "b")
	addr := startProxy(t, fmt.Sprintf(`stat_prefix: authz1
codec: tframe
filters:
- name: authz
  typed_config:
    "@type": type.googleapis.com/breeze.filters.authz.v1.Authz%s
- {name: test.record}
route_config: {routes: [{route: {cluster: b}}]}
clusters:
- name: b
  endpoints:
%s
`, authzPolicies, ep(b, "")))
	// The recorder keeps outcomes by case for the whole process: cases of
	// this run are its own under -count=N.
	run := authzRuns.Add(1)
	abortsBefore := testHost.Stats().EnvoyWouldAbort
	clients := map[string]*client{}
	for _, ip := range []string{cartIP, billingIP, anonIP, evilIP, twoSANsIP, unhookedIP} {
		clients[ip] = dialFrom(t, addr, ip)
	}
	const noAllow = "RBAC: access denied: no ALLOW policy matched"
	// Attachments a caller might send to pass for billing.
	spoof := []string{
		"x-breeze-peer", "spiffe://cluster.local/ns/pay/sa/billing",
		"io.istio.peer_principal", "spiffe://cluster.local/ns/pay/sa/billing",
		"principal", "cluster.local/ns/pay/sa/billing",
		"source.namespace", "shop",
	}
	counter := func(result, policy string) float64 {
		return testutil.ToFloat64(metrics.Authz.WithLabelValues("authz1", result, policy))
	}
	before := map[string]float64{}
	for _, rp := range [][2]string{{"denied", "deny-delete"}, {"denied", "none"}, {"allowed", "shop-reads"}, {"allowed", "billing"}, {"allowed", "local-health"}} {
		before[rp[0]+"/"+rp[1]] = counter(rp[0], rp[1])
	}
	for _, c := range []struct {
		name, from, service, method string
		extra                       []string
		denied                      string // "" allowed
	}{
		{"namespace rule allows", cartIP, "com.shop.Catalog", "GetItem", nil, ""},
		{"namespace rule, other method", cartIP, "com.shop.Catalog", "PutItem", nil, noAllow},
		{"namespace rule, other service", cartIP, "com.shop.Orders", "GetOrder", nil, noAllow},
		{"principal rule allows", billingIP, "com.pay.Ledger", "Post", nil, ""},
		{"deny overrides allow", billingIP, "com.pay.Ledger", "DeleteAll", nil, `RBAC: access denied: DENY policy "deny-delete" matched`},
		{"ip block allows", anonIP, "any", "Health", nil, ""},
		{"ip block, other address", evilIP, "any", "Health", nil, noAllow},
		{"no identity: namespace rule does not match", anonIP, "com.shop.Catalog", "GetItem", nil, noAllow},
		{"no identity: principal rule does not match", anonIP, "com.pay.Ledger", "Post", nil, noAllow},
		{"spoofing attachments, other identity", evilIP, "com.pay.Ledger", "Post", spoof, noAllow},
		{"spoofing attachments, other namespace", evilIP, "com.shop.Catalog", "GetItem", spoof, noAllow},
		{"spoofing attachments, no identity", anonIP, "com.pay.Ledger", "Post", spoof, noAllow},
		{"two URI SANs are no identity", twoSANsIP, "com.pay.Ledger", "Post", nil, noAllow},
		{"identity unknown: an ALLOW on callers admits none", unhookedIP, "com.pay.Ledger", "Post", spoof, noAllow},
		{"identity unknown: DENY on operations still decides", unhookedIP, "com.pay.Ledger", "DeleteAll", nil, `RBAC: access denied: DENY policy "deny-delete" matched`},
	} {
		caseKey := fmt.Sprintf("authz %d: %s", run, c.name)
		reqMD := append([]string{"case", caseKey, "interface", c.service, "method", c.method}, c.extra...)
		servedBefore := b.received.Load()
		m, err := clients[c.from].call(0, "x", reqMD...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		// OnDone runs after the reply is written: the client may read it first.
		eventually(t, "OnDone of "+caseKey, func() bool { return len(rec.outcomes(caseKey)) > 0 })
		outcomes := rec.outcomes(caseKey)
		if len(outcomes) != 1 {
			t.Fatalf("%s: OnDone ran %d times, want once", c.name, len(outcomes))
		}
		o := outcomes[0]
		if c.denied == "" {
			if m.status != codecs.StatusOK || md(m, "server") != "b" || !o.Responded {
				t.Errorf("%s: want the backend's answer, got status %v, metadata %v, body %q, outcome %+v", c.name, m.status, m.md, m.body, o)
			}
			continue
		}
		if m.status != codecs.StatusError || md(m, "error") != "bad_request" || m.body != c.denied {
			t.Errorf("%s: want the error reply bad_request %q, got status %v, metadata %v, body %q", c.name, c.denied, m.status, m.md, m.body)
		}
		if o.LocalReply != codecs.ErrBadRequest || o.Flags != filter.UnauthorizedExternalService {
			t.Errorf("%s: outcome %+v, want a bad_request local reply with flags UAEX", c.name, o)
		}
		if got := b.received.Load() - servedBefore; got != 0 {
			t.Errorf("%s: denied, yet the backend received %d requests", c.name, got)
		}
	}
	for rp, want := range map[string]float64{"denied/deny-delete": 2, "denied/none": 10, "allowed/shop-reads": 1, "allowed/billing": 1, "allowed/local-health": 1} {
		result, policy, _ := strings.Cut(rp, "/")
		if got := counter(result, policy) - before[rp]; got != want {
			t.Errorf(`breeze_authz_total{proxy="authz1",result=%q,policy=%q} rose by %v, want %v`, result, policy, got, want)
		}
	}
	// The identity was read as Envoy allows: on its own callback, with the
	// connection's callback object.
	if n := testHost.Stats().EnvoyWouldAbort - abortsBefore; n != 0 {
		t.Errorf("the host counted %d calls a real Envoy would not survive", n)
	}
}

// With no policy at all every request goes through, identity or not: the
// filter allows by default, as Istio does without an AuthorizationPolicy.
func TestAuthzWithoutPoliciesAllowsAll(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, fmt.Sprintf(`stat_prefix: authz2
codec: tframe
filters: [{name: authz}]
route_config: {routes: [{route: {cluster: b}}]}
clusters:
- name: b
  endpoints:
%s
`, ep(b, "")))
	before := testutil.ToFloat64(metrics.Authz.WithLabelValues("authz2", "allowed", "none"))
	for _, ip := range []string{cartIP, anonIP} {
		m, err := dialFrom(t, addr, ip).call(0, "x", "interface", "com.pay.Ledger", "method", "DeleteAll")
		if err != nil || m.status != codecs.StatusOK || md(m, "server") != "b" {
			t.Errorf("from %s: want the backend's answer, got %v, status %v, metadata %v, body %q", ip, err, m.status, m.md, m.body)
		}
	}
	if got := testutil.ToFloat64(metrics.Authz.WithLabelValues("authz2", "allowed", "none")) - before; got != 2 {
		t.Errorf(`breeze_authz_total{proxy="authz2",result="allowed",policy="none"} rose by %v, want 2`, got)
	}
}

// The route table as the control plane serves it for Aeraki's
// DubboAuthorizationPolicy samples (controlplane/authz.go: the policies
// as the authz config of each route of the host's table), with the
// identities of this file's callers. The proxy lists no authz filter: it
// joins implicitly, and a route's policies decide its requests; a route
// without any lets everything through.
func TestAuthzRoutePoliciesThroughHost(t *testing.T) {
	rec.reset()
	b := newBackend(t, "b")
	addr := startProxy(t, fmt.Sprintf(`stat_prefix: authz3
codec: tframe
filters: [{name: test.record}]
route_config:
  routes:
  - name: demo
    match: {metadata: [{key: interface, exact: org.apache.dubbo.samples.basic.api.DemoService}]}
    route: {cluster: b}
    typed_per_filter_config:
      authz:
        "@type": type.googleapis.com/breeze.filters.authz.v1.Authz
        policies:
        - name: istio-system/demo
          rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/cart]}}],
                   to: [{operation: {services: [org.apache.dubbo.samples.basic.api.DemoService], methods: [sayHello]}}]}]
        - name: dubbo/demo
          action: DENY
          rules: [{from: [{source: {namespaces: [evil]}}], to: [{operation: {services: ["*"], methods: ["*"]}}]}]
  - name: open
    route: {cluster: b}
clusters:
- name: b
  endpoints:
%s
`, ep(b, "")))
	const demo = "org.apache.dubbo.samples.basic.api.DemoService"
	run := authzRuns.Add(1)
	clients := map[string]*client{}
	for _, ip := range []string{cartIP, billingIP, anonIP, evilIP} {
		clients[ip] = dialFrom(t, addr, ip)
	}
	const noAllow = "RBAC: access denied: no ALLOW policy matched"
	deniedBefore := testutil.ToFloat64(metrics.Authz.WithLabelValues("authz3", "denied", "dubbo/demo"))
	for _, c := range []struct {
		name, from, service, method string
		denied                      string // "" allowed
	}{
		{"allowed principal and method", cartIP, demo, "sayHello", ""},
		{"allowed principal, other method", cartIP, demo, "sayGoodbye", noAllow},
		{"other principal", billingIP, demo, "sayHello", noAllow},
		{"no identity", anonIP, demo, "sayHello", noAllow},
		{"denied namespace", evilIP, demo, "sayHello", `RBAC: access denied: DENY policy "dubbo/demo" matched`},
		{"route without policies", anonIP, "com.other.Service", "anything", ""},
		{"route without policies, denied namespace", evilIP, "com.other.Service", "sayHello", ""},
	} {
		caseKey := fmt.Sprintf("authz %d: %s", run, c.name)
		servedBefore := b.received.Load()
		m, err := clients[c.from].call(0, "x", "case", caseKey, "interface", c.service, "method", c.method)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.denied == "" {
			if m.status != codecs.StatusOK || md(m, "server") != "b" {
				t.Errorf("%s: want the backend's answer, got status %v, metadata %v, body %q", c.name, m.status, m.md, m.body)
			}
			continue
		}
		if m.status != codecs.StatusError || md(m, "error") != "bad_request" || m.body != c.denied {
			t.Errorf("%s: want the error reply bad_request %q, got status %v, metadata %v, body %q", c.name, c.denied, m.status, m.md, m.body)
		}
		if o := rec.outcomes(caseKey); len(o) != 1 || o[0].Flags != filter.UnauthorizedExternalService {
			t.Errorf("%s: outcomes %+v, want one with flags UAEX", c.name, o)
		}
		if got := b.received.Load() - servedBefore; got != 0 {
			t.Errorf("%s: denied, yet the backend received %d requests", c.name, got)
		}
	}
	if got := testutil.ToFloat64(metrics.Authz.WithLabelValues("authz3", "denied", "dubbo/demo")) - deniedBefore; got != 1 {
		t.Errorf(`breeze_authz_total{proxy="authz3",result="denied",policy="dubbo/demo"} rose by %v, want 1 (the route's policy counted)`, got)
	}
}
