package thrift

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// Breeze's protocol-neutral AuthorizationPolicy (security.breeze.io) over
// xDS, end to end with Apache Thrift Go peers: `breeze xds` reads the
// policy from its directory and puts it on the host's route table,
// `breeze run` (codec thrift) fetches it, multiplexed THeader clients
// call a server through it. A denied call gets a TApplicationException
// PROTOCOL_ERROR (7) whose message says which policy denied it
// (filters/authz/README.md, "Denial").
//
// `breeze run` terminates no TLS: the caller's identity is unknown here,
// so this test decides on operations and headers only. Allowing and
// denying on a real certificate's identity is proven in the host, with
// Envoy's handshake order reproduced (filters/proxy/authz_test.go).
func TestAuthorizationPolicyOverXDS(t *testing.T) {
	const (
		host      = "greeter.thrift"
		routeName = host + "_9090"
	)
	srv := server(t, "authz", "-impl", "apache", "-transport", "header", "-mux")
	cp := harness.StartControlPlane(t, t.TempDir(), "")
	cp.Write("se.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter, namespace: shop}
spec:
  hosts: [%s]
  ports: [{number: 9090, name: tcp-thrift, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-thrift: %d}}]
`, host, srv))
	// The first policy, before the proxy starts: its first table has it.
	cp.Write("policy.yaml", denyPolicy)
	p := harness.StartProxyVars(t, `
admin_address: {{.Admin}}
listeners:
- name: thrift
  address: {{.Listen}}
  proxy:
    stat_prefix: thrift_authz
    codec: thrift
    request_timeout: 3s
    xds:
      address: "{{index .Extra "xds"}}"
      node_id: e2e-thrift
      route_config_name: `+routeName+`
      initial_fetch_timeout: 20s
`, map[string]interface{}{"xds": cp.Addr}, nil)
	// Each thriftpeer call is a process with its own connection. A proxy
	// with no connection left sleeps and unsubscribes from xDS, and the
	// next connection is served by its last table while it subscribes
	// again (filters/proxy/life.go): one idle connection keeps it awake,
	// so that a policy change is applied before the calls that check it.
	keepAwake, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer keepAwake.Close()
	client := []string{"-impl", "apache", "-transport", "header", "-mux", "-addr", p.Addr, "-n", "5"}
	denied := func(t *testing.T, s summary, what, text string) {
		t.Helper()
		if s.Requests != 5 || s.AppErrors != 5 || s.AppTypes[7] != 5 || !s.mentions(text) {
			t.Errorf("%s: %+v, want 5 TApplicationExceptions of type 7 (PROTOCOL_ERROR) saying %q", what, s, text)
		}
	}
	counted := func(result, policy string) float64 {
		return p.Metric(t, "breeze_authz_total", `proxy="thrift_authz"`, `result="`+result+`"`, `policy="`+policy+`"`)
	}

	t.Run("DENY on a method, a service's method and a header", func(t *testing.T) {
		const text = `RBAC: access denied: DENY policy "shop/deny" matched`
		// Wait for the first table: the proxy may serve before it arrives.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.WaitMetric(ctx, "the first route table", "breeze_xds_updates_total", func(v float64) bool { return v > 0 }, `type="routes"`, `result="accepted"`); err != nil {
			t.Fatalf("%v\nbreeze xds:\n%s", err, cp.Proc.Output())
		}
		wantAll(t, call(t, append(client, "-method", "whoami")...), "authz", 5)
		wantAll(t, call(t, append(client, "-method", "greet", "-arg", "ann", "-headers", "tenant=gold")...), "hello ann from authz", 5)
		s := call(t, append(client, "-method", "getuser", "-arg", "u1")...)
		denied(t, s, "GetUser", text)
		t.Logf("GetUser: %v", s.Messages[0])
		denied(t, call(t, append(client, "-method", "slow", "-arg", "1")...), "Greeter:Slow", text)
		s = call(t, append(client, "-method", "whoami", "-headers", "tenant=blocked")...)
		denied(t, s, "Whoami with tenant=blocked", text)
		t.Logf("Whoami with tenant=blocked: %v", s.Messages[0])
		if n := counted("denied", "shop/deny"); n != 15 {
			t.Errorf(`breeze_authz_total{result="denied",policy="shop/deny"} = %v, want 15`, n)
		}
	})

	t.Run("policy changed to ALLOW on a header", func(t *testing.T) {
		policyApplied(t, cp, p, "policy.yaml", allowPolicy)
		const text = "RBAC: access denied: no ALLOW policy matched"
		wantAll(t, call(t, append(client, "-method", "whoami", "-headers", "tenant=gold")...), "authz", 5)
		denied(t, call(t, append(client, "-method", "whoami")...), "Whoami without tenant", text)
		denied(t, call(t, append(client, "-method", "whoami", "-headers", "tenant=silver")...), "Whoami with tenant=silver", text)
		if n := counted("allowed", "shop/gold-only"); n != 5 {
			t.Errorf(`breeze_authz_total{result="allowed",policy="shop/gold-only"} = %v, want 5`, n)
		}
		if n := counted("denied", "none"); n != 10 {
			t.Errorf(`breeze_authz_total{result="denied",policy="none"} = %v, want 10`, n)
		}
	})
}

// denyPolicy denies GetUser to every caller, Slow of the Greeter service
// (multiplexed calls name it), and every call whose THeader header tenant
// is "blocked".
const denyPolicy = `apiVersion: security.breeze.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: shop}
spec:
  hosts: [greeter.thrift]
  action: DENY
  rules:
  - to: [{operation: {methods: [GetUser]}}]
  - to: [{operation: {services: [Greeter], methods: [Slow]}}]
  - when: [{key: tenant, values: [blocked]}]
`

// allowPolicy admits only calls whose header tenant is gold; it scopes the
// namespace's hosts (no hosts field).
const allowPolicy = `apiVersion: security.breeze.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: gold-only, namespace: shop}
spec:
  rules: [{when: [{key: tenant, values: [gold]}]}]
`

// policyApplied writes a policy file and waits until the proxy has
// accepted a route table version after it.
func policyApplied(t *testing.T, cp *harness.ControlPlane, p *harness.Proxy, name, content string) {
	t.Helper()
	accepted := func() float64 {
		return p.Metric(t, "breeze_xds_updates_total", `type="routes"`, `result="accepted"`)
	}
	n := accepted()
	cp.Write(name, content)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitMetric(ctx, "a route table with "+name, "breeze_xds_updates_total", func(v float64) bool { return v > n }, `type="routes"`, `result="accepted"`); err != nil {
		t.Fatalf("%v\nbreeze xds:\n%s", err, cp.Proc.Output())
	}
}
