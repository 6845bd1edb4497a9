package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/breeze-mesh/breeze/filters/istiostats"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// freshMetricsServer gives the test a process metrics server of its own
// (the process's may have been started by another test), closed after it.
func freshMetricsServer(t *testing.T) *metricsServer {
	t.Helper()
	old := procMetrics
	procMetrics = &metricsServer{}
	m := procMetrics
	t.Cleanup(func() { m.close(); procMetrics = old })
	return m
}

// withLog sends the default logger's lines to a buffer while f runs (the
// config parser logs there).
func withLog(f func()) *logBuffer {
	buf := &logBuffer{}
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	defer slog.SetDefault(old)
	f()
	return buf
}

// meshProxy is a proxy config with the istio_stats filter and a metrics
// address: one cluster whose endpoint carries Istio-style labels.
func meshProxy(name, metricsAddr string, port uint32, reporter string) string {
	metricsLine := ""
	if metricsAddr != "" {
		metricsLine = fmt.Sprintf("metrics: {address: %q}\n", metricsAddr)
	}
	return fmt.Sprintf(`
stat_prefix: %s
codec: tframe
%sfilters:
- name: istio_stats
  typed_config:
    "@type": type.googleapis.com/breeze.filters.istiostats.v1.IstioStats
    reporter: %s
    connection_security_policy: none
route_config: {routes: [{route: {cluster: "outbound|20880||greeter.demo.svc.cluster.local"}}]}
clusters:
- name: "outbound|20880||greeter.demo.svc.cluster.local"
  endpoints:
  - address: 127.0.0.1
    port: %d
    labels: {app: greeter, version: v2, "breeze.io/workload": greeter-v2, "breeze.io/namespace": demo}
`, name, metricsLine, reporter, port)
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scraping %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %s\n%s", addr, resp.Status, b)
	}
	return string(b)
}

// linesWith are the lines of a scrape that contain every part.
func linesWith(body string, parts ...string) []string {
	var out []string
next:
	for _, l := range strings.Split(body, "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// Many proxy configs (listeners, versions) naming one address: one server
// for the process, serving breeze_* and istio_* series; a config naming
// another address is served all the same, the conflict logged once and
// counted; a new config version keeps the server.
func TestMetricsServerOnePerProcess(t *testing.T) {
	m := freshMetricsServer(t)
	b := newBackend(t, "greeter-v2")

	var addrs []string
	logs := withLog(func() {
		for i := range 3 {
			addrs = append(addrs, startProxy(t, meshProxy(fmt.Sprintf("mesh-%d", i), "127.0.0.1:0", b.port(), "SOURCE")))
		}
	})
	served := m.addr()
	if m.starts != 1 || served == "" {
		t.Fatalf("%d servers started for 3 configs (listening on %q); want 1", m.starts, served)
	}
	if l := logs.lines("serving metrics"); len(l) != 1 {
		t.Errorf("log lines about serving metrics: %q; want one", l)
	}
	for _, a := range addrs {
		if r, err := dial(t, a).call(0, "hi", "method", "sayHello"); err != nil || md(r, "server") != "greeter-v2" {
			t.Fatalf("call through %s: %v, served by %q", a, err, md(r, "server"))
		}
	}

	// Configs naming another address: served, the conflict logged once.
	conflicts := testutil.ToFloat64(metrics.MetricsAddressConflicts)
	var other []string
	logs = withLog(func() {
		for i := range 3 {
			other = append(other, startProxy(t, meshProxy(fmt.Sprintf("elsewhere-%d", i), "127.0.0.1:1", b.port(), "SOURCE")))
		}
	})
	if l := logs.lines("metrics.address differs", "127.0.0.1:1"); len(l) != 1 {
		t.Errorf("conflict log lines %q; want exactly one", l)
	}
	if n := testutil.ToFloat64(metrics.MetricsAddressConflicts) - conflicts; n != 3 {
		t.Errorf("breeze_metrics_address_conflicts_total rose by %v for 3 conflicting configs", n)
	}
	if r, err := dial(t, other[0]).call(0, "hi", "method", "sayHello"); err != nil || md(r, "server") != "greeter-v2" {
		t.Fatalf("a proxy whose metrics address conflicts refused traffic: %v", err)
	}

	// A new version of the first config (another route table) naming the
	// same address: the same server.
	v2 := strings.Replace(meshProxy("mesh-0", "127.0.0.1:0", b.port(), "SOURCE"), "routes: [{route:", "routes: [{name: v2, route:", 1)
	startProxy(t, v2)
	if m.starts != 1 || m.addr() != served {
		t.Errorf("after a config update: %d servers started, listening on %q; want 1 on %q", m.starts, m.addr(), served)
	}

	body := scrape(t, served)
	if l := linesWith(body, "breeze_requests_total{", `proxy="mesh-0"`); len(l) == 0 {
		t.Errorf("scrape has no breeze_requests_total of proxy mesh-0:\n%s", body)
	}
	istio := linesWith(body, "istio_requests_total{", `reporter="source"`, `destination_workload="greeter-v2"`,
		`destination_app="greeter"`, `destination_version="v2"`, `destination_workload_namespace="demo"`,
		`destination_service="greeter.demo.svc.cluster.local"`, `destination_service_name="greeter"`, `destination_service_namespace="demo"`,
		`request_protocol="tframe"`, `response_flags="-"`, `connection_security_policy="none"`)
	if len(istio) != 1 || !strings.HasSuffix(istio[0], " 4") {
		t.Errorf("want one istio_requests_total series with 4 requests (3 listeners and one conflicting); got %q in:\n%s",
			istio, strings.Join(linesWith(body, "istio_requests_total{"), "\n"))
	}
	for _, h := range []string{"istio_request_duration_milliseconds_bucket{", "istio_request_bytes_sum{", "istio_response_bytes_count{"} {
		if len(linesWith(body, h, `destination_workload="greeter-v2"`)) == 0 {
			t.Errorf("scrape has no %s series", h)
		}
	}
}

// An address the process cannot listen on (taken by the app) is logged
// and counted; traffic goes on.
func TestMetricsServerCannotListen(t *testing.T) {
	m := freshMetricsServer(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	b := newBackend(t, "greeter-v2")
	errs := testutil.ToFloat64(metrics.MetricsServerErrors)
	var addr string
	logs := withLog(func() { addr = startProxy(t, meshProxy("taken", taken.Addr().String(), b.port(), "SOURCE")) })
	if l := logs.lines("cannot serve metrics"); len(l) != 1 || m.addr() != "" {
		t.Errorf("log lines %q, serving on %q; want one line and no server", l, m.addr())
	}
	if n := testutil.ToFloat64(metrics.MetricsServerErrors) - errs; n != 1 {
		t.Errorf("breeze_metrics_server_errors_total rose by %v, want 1", n)
	}
	if _, err := dial(t, addr).call(0, "hi"); err != nil {
		t.Errorf("traffic refused when the metrics address was taken: %v", err)
	}
}

// Peer metadata through real proxies: the outbound proxy adds its
// identity to each request; the inbound proxy records the caller from it
// and removes it before the request reaches the app.
func TestPeerMetadataThroughProxies(t *testing.T) {
	app := newBackend(t, "app")
	in := startProxy(t, `
stat_prefix: inbound-peer
codec: tframe
filters:
- name: istio_stats
  typed_config:
    "@type": type.googleapis.com/breeze.filters.istiostats.v1.IstioStats
    reporter: DESTINATION
    destination_service: greeter.demo.svc.cluster.local
route_config: {routes: [{route: {cluster: local-app}}]}
clusters: [{name: local-app, endpoints: [{address: 127.0.0.1, port: `+fmt.Sprint(app.port())+`}]}]
`)
	_, inPort, _ := net.SplitHostPort(in)
	port := 0
	fmt.Sscan(inPort, &port)
	// The outbound proxy's endpoint is the inbound proxy.
	out := startProxy(t, meshProxy("outbound-peer", "", uint32(port), "SOURCE"))

	before := istioCount(t, map[string]string{"reporter": "destination", "destination_service": "greeter.demo.svc.cluster.local"})
	r, err := dial(t, out).call(0, "hi", "method", "sayHello")
	if err != nil {
		t.Fatal(err)
	}
	if seen := md(r, "seen"); strings.Contains(seen, istiostats.PeerKey) || !strings.Contains(seen, "method=sayHello") {
		t.Errorf("the app saw %q: want the request without %s", seen, istiostats.PeerKey)
	}
	// Recorded in OnDone, after the reply is written: the client may read it first.
	var n float64
	eventually(t, "the inbound request recorded", func() bool {
		n = istioCount(t, map[string]string{"reporter": "destination", "destination_service": "greeter.demo.svc.cluster.local"}) - before
		return n >= 1
	})
	if n != 1 {
		t.Errorf("inbound recorded %v requests, want 1", n)
	}

	// A caller that names itself as an outbound Breeze would.
	want := map[string]string{"reporter": "destination", "source_workload": "orders-v1", "source_workload_namespace": "shop",
		"source_canonical_service": "orders", "source_canonical_revision": "v1", "source_cluster": "east", "source_app": "orders", "source_version": "v1",
		"destination_service": "greeter.demo.svc.cluster.local", "request_protocol": "tframe", "response_code": "0", "response_flags": "-"}
	wantBefore := istioCount(t, want)
	peer := "1;orders-v1;shop;orders;v1;east;orders;v1"
	r, err = dial(t, in).call(0, "hi", "method", "sayHello", istiostats.PeerKey, peer)
	if err != nil {
		t.Fatal(err)
	}
	if seen := md(r, "seen"); strings.Contains(seen, istiostats.PeerKey) {
		t.Errorf("the app saw %q: the peer metadata was not removed", seen)
	}
	eventually(t, "the named caller's request recorded", func() bool { n = istioCount(t, want) - wantBefore; return n >= 1 })
	if n != 1 {
		t.Errorf("inbound: %v requests recorded with %v; want 1", n, want)
	}
}

// istioCount is istio_requests_total summed over the series with every
// label of want.
func istioCount(t *testing.T, want map[string]string) float64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "istio_requests_total" {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if l[k] != v {
					continue next
				}
			}
			n += m.GetCounter().GetValue()
		}
	}
	return n
}
