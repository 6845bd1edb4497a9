package xds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// Aeraki's published DubboAuthorizationPolicy samples, the files the
// control plane's tests read (controlplane/testdata/aeraki-authz).
func aerakiAuthzSample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoDir(), "controlplane", "testdata", "aeraki-authz", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// denyMethod is a DubboAuthorizationPolicy of the greeter's namespace
// denying method to every caller; its name carries version i, and with it
// the text of every denial it makes.
func denyMethod(i int, method string) string {
	return fmt.Sprintf(`apiVersion: dubbo.aeraki.io/v1alpha1
kind: DubboAuthorizationPolicy
metadata: {name: deny-%s-%d, namespace: dubbo}
spec:
  action: DENY
  rules: [{to: [{operation: {interfaces: [%s], methods: [%s]}}]}]
`, strings.ToLower(method), i, host, method)
}

// Aeraki's DubboAuthorizationPolicy over xDS, end to end: `breeze xds`
// reads the policies from its directory and puts them on the greeter's
// route table, `breeze run` fetches it, dubbo-go clients call a dubbo-go
// provider through it on long-lived connections.
//
// `breeze run` terminates no TLS and has no set_filter_state before Breeze,
// so the caller's identity is unknown here: caller fields are taken the
// way that denies more (filters/authz/README.md, "Unknown identity"), and
// these tests prove that mesh policies on callers fail closed. Allowing
// and denying on a real certificate's identity is proven in the host,
// with Envoy's handshake order reproduced (filters/proxy/authz_test.go).
func TestDubboAuthorizationPolicy(t *testing.T) {
	harness.BreezeBin(t)
	prov := harness.StartProvider(t, harness.ProviderSpec{Name: "v1"})
	cp := startControlPlane(t, t.TempDir(), "")
	// The greeter in namespace dubbo: the DENY sample's namespace (the
	// ALLOW sample is the root namespace's and applies to every host).
	cp.Write("greeter-se.yaml", strings.Replace(serviceEntry(prov), "metadata: {name: greeter}", "metadata: {name: greeter, namespace: dubbo}", 1))
	proxy := harness.StartProxyVars(t, runnerConfig, map[string]interface{}{"xds": cp.Addr}, nil)
	var clients []*harness.Client
	for range 2 {
		clients = append(clients, harness.StartClient(t, proxy.Addr, harness.ClientSpec{Heartbeat: time.Second}))
	}
	client := clients[0]
	call := func(method string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := client.Call(ctx, method, "1", nil) // Slow(1): 1ms
		return err
	}
	// waitDenied calls method until the proxy denies it with a text
	// containing want; it returns the dubbo-go error.
	waitDenied := func(t *testing.T, method, want string) *harness.CallError {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second) // a bound, should the policy never arrive
		var last error
		for time.Now().Before(deadline) {
			last = call(method)
			var ce *harness.CallError
			if errors.As(last, &ce) && strings.Contains(ce.Msg, want) {
				return ce
			}
		}
		t.Fatalf("%s was not denied with %q within 20s; last outcome: %v\nbreeze xds:\n%s", method, want, last, cp.Proc.Output())
		return nil
	}
	waitAllowed := func(t *testing.T, method string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		var last error
		for time.Now().Before(deadline) {
			if last = call(method); last == nil {
				return
			}
		}
		t.Fatalf("%s still fails 20s after the policy was removed: %v", method, last)
	}
	for _, c := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := c.Greet(ctx, "first", nil)
		cancel()
		if err != nil {
			t.Fatalf("no policy yet: Greet failed: %v", err)
		}
	}
	// Every client connection is open now; the count must not move (the
	// proxy also counts the harness's readiness probe).
	accepted := proxy.Metric(t, "breeze_downstream_connections_total", `proxy="xds"`)
	denied := func(policy string) float64 {
		return proxy.Metric(t, "breeze_authz_total", `proxy="xds"`, `result="denied"`, `policy="`+policy+`"`)
	}

	t.Run("Aeraki's ALLOW sample on a principal: unknown identity, denied", func(t *testing.T) {
		before := denied("none")
		cp.Write("authz-allow.yaml", aerakiAuthzSample(t, "allow.yaml"))
		ce := waitDenied(t, "Greet", "RBAC: access denied: no ALLOW policy matched")
		t.Logf("dubbo-go error: %s", ce.Msg)
		if !strings.Contains(ce.Msg, "bad request for "+host+".Greet") {
			t.Errorf("denial %q: want the Dubbo BAD_REQUEST reply naming %s.Greet", ce.Msg, host)
		}
		// The sample allows sayHello of another interface, to a principal:
		// with no identity, nothing here is allowed.
		if err := call("Whoami"); err == nil || !strings.Contains(err.Error(), "no ALLOW policy matched") {
			t.Errorf("Whoami under the ALLOW sample: %v, want denied", err)
		}
		if n := denied("none"); n < before+2 {
			t.Errorf(`breeze_authz_total{result="denied",policy="none"} went from %v to %v, want 2 more at least`, before, n)
		}
		cp.Remove("authz-allow.yaml")
		waitAllowed(t, "Greet")
	})

	t.Run("Aeraki's DENY sample on a namespace: unknown identity, denied", func(t *testing.T) {
		cp.Write("authz-deny.yaml", aerakiAuthzSample(t, "deny.yaml"))
		ce := waitDenied(t, "Whoami", `RBAC: access denied: DENY policy "dubbo/demo" matched`)
		t.Logf("dubbo-go error: %s", ce.Msg)
		if n := denied("dubbo/demo"); n < 1 {
			t.Errorf(`breeze_authz_total{result="denied",policy="dubbo/demo"} = %v, want 1 at least`, n)
		}
		cp.Remove("authz-deny.yaml")
		waitAllowed(t, "Whoami")
	})

	t.Run("DENY on a method changed 20 times under load", func(t *testing.T) {
		// Greet and Whoami keep flowing on both clients' connections and
		// must never fail; each version of the policy denies Slow with its
		// own name, which the denied call's error carries.
		l := startLoad(t, clients, 4, nil, func(string, greeter.Reply, int64) {})
		defer l.halt()
		l.barrier()
		var prop []time.Duration
		for i := 1; i <= 20; i++ {
			start := time.Now()
			cp.Write("authz-method.yaml", denyMethod(i, "Slow"))
			waitDenied(t, "Slow", fmt.Sprintf(`RBAC: access denied: DENY policy "dubbo/deny-slow-%d" matched`, i))
			prop = append(prop, time.Since(start))
		}
		l.barrier()
		l.stop() // fails the test if a Greet or Whoami failed
		t.Logf("policy file written → first call denied by it: %s", percentiles(prop))
		if n := denied("dubbo/deny-slow-20"); n < 1 {
			t.Errorf(`breeze_authz_total{result="denied",policy="dubbo/deny-slow-20"} = %v, want 1 at least`, n)
		}
	})

	// No reconnect: the policies took effect on the live connections.
	if n := proxy.Metric(t, "breeze_downstream_connections_total", `proxy="xds"`); n != accepted {
		t.Fatalf("the proxy accepted %v connections, %v before the policies (a client reconnected)", n, accepted)
	}
	if n := proxy.Metric(t, "breeze_downstream_closes_total"); n != 0 {
		t.Fatalf("the proxy closed %v client connections", n)
	}

	// On the wire (a connection of its own, after the count): the reply
	// to a denied call is Dubbo's BAD_REQUEST (40), with the request's id.
	conn, err := net.DialTimeout("tcp", proxy.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	req, err := harness.EncodeRequest(77, harness.Invocation{
		Service: host, Method: "Slow", ParamTypes: "Ljava/lang/String;", Args: []interface{}{"1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	_, raw, err := harness.ReadFrame(conn)
	if err != nil {
		t.Fatalf("no reply to a denied request: %v", err)
	}
	resp, err := harness.DecodeResponse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.ID != 77 || resp.Header.Status != 40 {
		t.Errorf("reply to a denied request: %s: %v; want id 77, status 40 (BAD_REQUEST)", resp.Header, resp.Exception)
	}
	t.Logf("raw reply to a denied request: %s: %v", resp.Header, resp.Exception)
}
