package controller

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// thriftService is a Service whose port names Breeze's Thrift codec, as
// Aeraki names it, with one EndpointSlice whose pod is p.
func thriftService(name string, p podAddr) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  ports: [{name: tcp-metaprotocol-thrift-greeter, port: 9090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[1]s-1
  namespace: %[2]s
  labels: {kubernetes.io/service-name: %[1]s, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
addressType: IPv4
ports: [{name: tcp-metaprotocol-thrift-greeter, port: %[3]d, protocol: TCP}]
endpoints:
- addresses: [%[4]s]
  conditions: {ready: true}
`, name, ns, p.port, p.ip)
}

// thriftRouter is a MetaRouter for thrift-a's host sending every call to
// the Service dest.
func thriftRouter(dest string) string {
	return fmt.Sprintf(`apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: thrift-a, namespace: %[1]s}
spec:
  hosts: [thrift-a.%[1]s.svc.cluster.local]
  routes:
  - {name: all, route: [{destination: {host: %[2]s.%[1]s.svc.cluster.local}}]}
`, ns, dest)
}

const thriftRunnerConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: thrift
  address: "{{.Listen}}"
  proxy:
    stat_prefix: ctl_thrift
    codec: thrift
    request_timeout: 3s
    xds:
      address: "{{index .Extra "xds"}}"
      node_id: e2e-thrift
      route_config_name: "{{index .Extra "route"}}"
      initial_fetch_timeout: 20s
`

// thriftSummary is cmd/thriftpeer's SUMMARY line (the fields used here).
type thriftSummary struct {
	Requests int            `json:"requests"`
	OK       int            `json:"ok"`
	Results  map[string]int `json:"results"`
	Messages []string       `json:"messages"`
}

// thriftCalls runs n Whoami calls through addr with the Apache Thrift Go
// client (framed, binary) and returns its summary.
func thriftCalls(t *testing.T, addr string, n int) thriftSummary {
	t.Helper()
	p := harness.Start(t, "thrift client", harness.ThriftPeerBin(t), "call", "-impl", "apache", "-transport", "framed",
		"-addr", addr, "-method", "whoami", "-n", strconv.Itoa(n))
	<-p.Done()
	out := p.Output()
	i := strings.LastIndex(out, "SUMMARY ")
	if i < 0 {
		t.Fatalf("thrift client printed no SUMMARY:\n%s", out)
	}
	line, _, _ := strings.Cut(out[i+len("SUMMARY "):], "\n")
	var s thriftSummary
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		t.Fatalf("SUMMARY %q: %v", line, err)
	}
	return s
}

// Apache Thrift Go servers behind Services with a tcp-metaprotocol-thrift
// port: calls through `breeze run`, fed by the controller from the API
// server, reach the Service the MetaRouter names, and follow it each time the
// MetaRouter changes (to b, back to a, to b again).
func TestControllerThrift(t *testing.T) {
	harness.BuildAll(t)
	c, kubeconfig := apiServer(t)
	a := applier{t: t, c: c}
	a.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + "}\n")

	ip := hostIP(t)
	pods := map[string]podAddr{}
	for _, name := range []string{"a", "b"} {
		port := harness.FreePort(t)
		srv := harness.Start(t, "thrift server "+name, harness.ThriftPeerBin(t), "serve", "-name", name,
			"-port", strconv.Itoa(port), "-impl", "apache", "-transport", "framed")
		if _, err := srv.WaitReady(30 * time.Second); err != nil {
			t.Fatalf("thrift server %s: %v\n%s", name, err, srv.Output())
		}
		pods[name] = relay(t, ip, &harness.Provider{Name: name, Addr: harness.Addr(port)})
		for _, doc := range strings.Split(thriftService("thrift-"+name, pods[name]), "---\n") {
			a.apply(doc)
		}
	}
	a.apply(thriftRouter("thrift-a"))

	xds := harness.Addr(harness.FreePort(t))
	ctl := harness.Start(t, "breeze controller", harness.BreezeBin(t), "controller", "-kubeconfig", kubeconfig,
		"-xds-listen", xds, "-xds-address", xds, "-health", "0", "-metrics", "0")
	if _, err := ctl.WaitOutput("LISTENING xds", 60*time.Second); err != nil {
		t.Fatalf("breeze controller: %v:\n%s", err, ctl.Output())
	}
	proxy := harness.StartProxyVars(t, thriftRunnerConfig,
		map[string]interface{}{"xds": xds, "route": "thrift-a." + ns + ".svc.cluster.local_9090"}, nil)

	s := thriftCalls(t, proxy.Addr, 20)
	if s.OK != 20 || s.Results["a"] != 20 {
		t.Fatalf("MetaRouter to thrift-a: 20 Whoami calls answered %+v, want all by a", s)
	}
	t.Logf("MetaRouter to thrift-a: %+v", s)

	for _, to := range []string{"b", "a", "b"} {
		a.apply(thriftRouter("thrift-" + to))
		// Until the change has reached the proxy a batch may still go to
		// the previous Service; then every call goes to the new one.
		deadline := time.Now().Add(60 * time.Second)
		for {
			s = thriftCalls(t, proxy.Addr, 20)
			if s.OK != 20 {
				t.Fatalf("during the MetaRouter change to thrift-%s: %+v, want every call answered", to, s)
			}
			if s.Results[to] == 20 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("MetaRouter to thrift-%s applied 60s ago; calls still answered %+v", to, s)
			}
		}
		t.Logf("MetaRouter to thrift-%s: %+v", to, s)
	}
}
