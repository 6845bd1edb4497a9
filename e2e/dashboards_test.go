package e2e

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/grafana"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// The dashboards the test runs: Istio's, verbatim (testdata/dashboards/
// README.md says from where), and Breeze's own, as shipped.
var (
	istioServiceDashboard  = filepath.Join("testdata", "dashboards", "istio-service-dashboard.json")
	istioWorkloadDashboard = filepath.Join("testdata", "dashboards", "istio-workload-dashboard.json")
	breezeDashboard        = filepath.Join("..", "envoy-config", "grafana", "breeze-dashboard.json")
)

// istioLabels are the labels of Istio's standard request series.
var istioLabels = []string{
	"reporter", "source_workload", "source_workload_namespace", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_principal", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_app", "destination_version",
	"destination_canonical_service", "destination_canonical_revision", "destination_principal",
	"destination_service", "destination_service_name", "destination_service_namespace", "destination_cluster",
	"request_protocol", "response_code", "response_flags", "connection_security_policy",
}

// Envoy's default histogram buckets, which Istio's stats filter records
// every one of its histograms with, durations in milliseconds and sizes in
// bytes alike (filters/istiostats/README.md).
var istioBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// checkIstioSeries: istio_requests_total summed by outcome and destination
// equals what the test caused, on both sides, with every Istio label and the
// local and remote workloads' values; the histograms count every request
// with Istio's buckets.
func (m *mesh) checkIstioSeries(ctx context.Context, t *testing.T, w window) {
	out, in := m.outMetrics, m.inMetrics
	atOut, atIn := w.to[out], w.to[in]
	by := []string{"reporter", "request_protocol", "response_code", "response_flags", "destination_workload", "destination_service"}
	sum := "sum by (" + strings.Join(by, ", ") + ") (istio_requests_total{instance=%q})"

	wantOut := want{}
	wantIn := want{}
	for _, p := range []struct {
		c       codes
		o       outcomes
		service string
	}{{dubboCodes, m.dubbo, dubboService}, {thriftCodes, m.thrift, thriftService}} {
		row := func(reporter, code, flags, workload string) string {
			return key(map[string]string{"reporter": reporter, "request_protocol": p.c.protocol, "response_code": code,
				"response_flags": flags, "destination_workload": workload, "destination_service": p.service}, by...)
		}
		wantOut[row("source", p.c.ok, "-", greeterSidecar.Workload)] = float64(p.o.ok)
		wantOut[row("source", p.c.timeout, "UT", greeterSidecar.Workload)] = float64(p.o.timeout)
		// No route: no cluster, so no destination workload.
		wantOut[row("source", p.c.noRoute, "NR", "unknown")] = float64(p.o.noRoute)
		// The inbound proxy answered the calls that timed out at the
		// outbound one too, once the provider let them run.
		wantIn[row("destination", p.c.ok, "-", greeterSidecar.Workload)] = float64(p.o.ok + p.o.timeout)
	}
	sameSamples(t, "outbound istio_requests_total by outcome", m.query(ctx, t, fmt.Sprintf(sum, out), atOut), wantOut, 0, by...)
	sameSamples(t, "inbound istio_requests_total by outcome", m.query(ctx, t, fmt.Sprintf(sum, in), atIn), wantIn, 0, by...)

	// Every series has every label; the workloads' own come from their
	// sidecar environment, the peer's from the endpoint (outbound) or the
	// peer metadata the outbound proxy sent (inbound).
	self := func(prefix string, s sidecar) map[string]string {
		return map[string]string{
			prefix + "workload": s.Workload, prefix + "workload_namespace": s.Namespace, prefix + "app": s.App,
			prefix + "version": s.Version, prefix + "canonical_service": s.App, prefix + "canonical_revision": s.Version,
			prefix + "cluster": s.Cluster, prefix + "principal": "unknown",
		}
	}
	for _, side := range []struct {
		addr string
		at   time.Time
		want map[string]string
	}{
		{out, atOut, merge(self("source_", consumerSidecar), map[string]string{"reporter": "source", "connection_security_policy": "none"})},
		{in, atIn, merge(self("source_", consumerSidecar), self("destination_", greeterSidecar), map[string]string{"reporter": "destination", "connection_security_policy": "none"})},
	} {
		v := m.query(ctx, t, fmt.Sprintf("istio_requests_total{instance=%q}", side.addr), side.at)
		for _, s := range v {
			var bad []string
			for _, l := range istioLabels {
				if _, ok := s.Labels[l]; !ok {
					bad = append(bad, l+" missing")
				}
			}
			for l, x := range side.want {
				if s.Labels[l] != x {
					bad = append(bad, fmt.Sprintf("%s=%q, want %q", l, s.Labels[l], x))
				}
			}
			// The outbound side's destination labels come from the
			// endpoint, when a route chose one.
			if side.addr == out && s.Labels["response_flags"] != "NR" {
				for l, x := range self("destination_", greeterSidecar) {
					if l != "destination_principal" && s.Labels[l] != x {
						bad = append(bad, fmt.Sprintf("%s=%q, want %q (the endpoint's)", l, s.Labels[l], x))
					}
				}
			}
			if len(bad) > 0 {
				t.Errorf("%s: %s", s, strings.Join(bad, "; "))
			}
		}
		t.Logf("%d istio_requests_total series on %s, e.g. %s", len(v), side.addr, first(v))
	}

	// The histograms count every request, with Istio's buckets.
	for _, h := range []struct {
		name    string
		buckets []float64
	}{
		{"istio_request_duration_milliseconds", istioBuckets},
		{"istio_request_bytes", istioBuckets},
		{"istio_response_bytes", istioBuckets},
	} {
		for _, side := range []struct {
			addr string
			at   time.Time
			reqs string
		}{{out, atOut, fmt.Sprintf("istio_requests_total{instance=%q}", out)}, {in, atIn, fmt.Sprintf("istio_requests_total{instance=%q}", in)}} {
			counts := m.query(ctx, t, fmt.Sprintf("sum by (request_protocol) (%s_count{instance=%q})", h.name, side.addr), side.at)
			reqs := m.query(ctx, t, "sum by (request_protocol) ("+side.reqs+")", side.at)
			wantCounts := want{}
			for _, s := range reqs {
				wantCounts[key(s.Labels, "request_protocol")] = s.Value
			}
			sameSamples(t, h.name+"_count on "+side.addr+" (= requests)", counts, wantCounts, 0, "request_protocol")
			les := m.query(ctx, t, fmt.Sprintf("count by (le) (%s_bucket{instance=%q})", h.name, side.addr), side.at)
			checkBuckets(t, h.name, les, h.buckets)
		}
	}
	// A request that timed out lasted at least the route's 200 ms: none is
	// in a bucket of 100 ms or less.
	fast := m.query(ctx, t, fmt.Sprintf(`sum(istio_request_duration_milliseconds_bucket{instance=%q, response_flags="UT", le="100"})`, out), atOut)
	if len(fast) != 1 || fast[0].Value != 0 {
		t.Errorf("timed-out requests within 100 ms: %s; want one sample, 0", fast)
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func first(v harness.Vector) string {
	if len(v) == 0 {
		return "(none)"
	}
	return v[0].String()
}

// checkBuckets wants the le values of a histogram to be exactly buckets
// and +Inf.
func checkBuckets(t *testing.T, name string, les harness.Vector, buckets []float64) {
	t.Helper()
	var got []float64
	for _, s := range les {
		v, err := strconv.ParseFloat(s.Labels["le"], 64)
		if err != nil {
			t.Errorf("%s: le %q: %v", name, s.Labels["le"], err)
			continue
		}
		got = append(got, v)
	}
	wantLE := append(append([]float64(nil), buckets...), math.Inf(1))
	sort.Float64s(got)
	if fmt.Sprint(got) != fmt.Sprint(wantLE) {
		t.Errorf("%s buckets: %v, want Istio's %v", name, got, wantLE)
	}
}

// dashboardVars are the variables every dashboard query gets: Grafana's own
// for a panel whose interval is the scrape interval.
func (m *mesh) dashboardVars(vars map[string]string) map[string]string {
	out := map[string]string{
		"__interval":      grafana.Duration(m.prom.Interval),
		"__rate_interval": grafana.Duration(grafana.RateInterval(m.prom.Interval, m.prom.Interval)),
	}
	for k, v := range vars {
		out[k] = v
	}
	return out
}

// panelQuery is a dashboard panel's query refID with vars filled in.
func (m *mesh) panelQuery(t *testing.T, d *grafana.Dashboard, title, refID string, vars map[string]string) string {
	t.Helper()
	q, err := d.Query(title, refID, m.dashboardVars(vars))
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func loadDashboard(t *testing.T, file string) *grafana.Dashboard {
	t.Helper()
	d, err := grafana.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// promRound is PromQL's round(v, 0.001), which Istio's volume panels apply.
func promRound(v float64) float64 { return math.Floor(v*1000+0.5) / 1000 }

// nonFiveShare is Istio's dashboards' success rate of what the test
// caused: the share of responses whose code does not match "5.*".
func nonFiveShare(c codes, o outcomes) float64 {
	five := regexp.MustCompile(`^5.*$`)
	ok := 0
	for _, x := range []struct {
		code string
		n    int
	}{{c.ok, o.ok}, {c.noRoute, o.noRoute}, {c.timeout, o.timeout}} {
		if !five.MatchString(x.code) {
			ok += x.n
		}
	}
	return float64(ok) / float64(o.total())
}

// checkQuantiles wants P50 <= P90 <= P99, each one finite sample (per group
// of names), and P99 at least p99Min.
func checkQuantiles(t *testing.T, what string, p50, p90, p99 harness.Vector, p99Min float64, names ...string) {
	t.Helper()
	groups := func(v harness.Vector) map[string]float64 {
		g := map[string]float64{}
		for _, s := range v {
			g[key(s.Labels, names...)] = s.Value
		}
		return g
	}
	a, b, c := groups(p50), groups(p90), groups(p99)
	if len(c) == 0 {
		t.Errorf("%s: no P99 series; want one per %v", what, names)
	}
	for k, v99 := range c {
		v50, ok50 := a[k]
		v90, ok90 := b[k]
		switch {
		case !ok50 || !ok90:
			t.Errorf("%s {%s}: P99 %v but P50 present %v, P90 present %v", what, k, v99, ok50, ok90)
		case math.IsNaN(v50) || math.IsInf(v99, 0) || !(v50 <= v90 && v90 <= v99):
			t.Errorf("%s {%s}: P50 %v, P90 %v, P99 %v: want finite and ordered", what, k, v50, v90, v99)
		case v99 < p99Min:
			t.Errorf("%s {%s}: P99 %v s, want at least %v s", what, k, v99, p99Min)
		default:
			t.Logf("%s {%s}: P50 %.4g s, P90 %.4g s, P99 %.4g s", what, k, v50, v90, v99)
		}
	}
}

// checkIstioDashboards runs the request volume, success rate and duration
// panels of Istio's Service and Workload dashboards, per destination
// service and reporter, at the end of the measured window, where their
// irate()s cover exactly the measured round.
func (m *mesh) checkIstioDashboards(ctx context.Context, t *testing.T, w window, measured outcomes) {
	svc, wl := loadDashboard(t, istioServiceDashboard), loadDashboard(t, istioWorkloadDashboard)
	out, in := m.outMetrics, m.inMetrics
	secsOut, secsIn := w.to[out].Sub(w.from[out]).Seconds(), w.to[in].Sub(w.from[in]).Seconds()
	// The timed-out calls (8% of each protocol's measured calls) lasted
	// at least 200 ms: the P99 of the outbound side is in the bucket
	// above 100 ms.
	const p99Min = 0.1
	one := func(title string, v harness.Vector, wantV, tol float64) {
		t.Helper()
		if len(v) != 1 || math.Abs(v[0].Value-wantV) > tol || math.IsNaN(v[0].Value) {
			t.Errorf("%s: %s; want one sample %v", title, v, wantV)
			return
		}
		t.Logf("%s: %v (want %v)", title, v[0].Value, wantV)
	}

	// Istio's success rate is the share of response codes not matching
	// "5.*": HTTP's server errors. Dubbo's statuses never match it (31
	// timeout, 60 no route), so with response_codes PROTOCOL the panels
	// read 1 whatever failed; Thrift's listeners report HTTP codes (504 for
	// a timeout, 404 for no route, a client error as in Envoy), and the
	// panels read the timeouts as failures: shown here next to the share
	// of calls that succeeded.
	t.Logf("calls that succeeded: %d of %d (%.3g); Istio's non-5xx success rate of them: dubbo %.3g, thrift %.3g",
		measured.ok, measured.total(), float64(measured.ok)/float64(measured.total()),
		nonFiveShare(dubboCodes, measured), nonFiveShare(thriftCodes, measured))
	for _, p := range []struct {
		service string
		c       codes
	}{{dubboService, dubboCodes}, {thriftService, thriftCodes}} {
		// Service dashboard: the client side (reporter source: the
		// outbound proxy) and the server side (reporter destination).
		client := map[string]string{"service": p.service, "qrep": "source"}
		q := func(title, ref string, vars map[string]string, at time.Time) harness.Vector {
			return m.query(ctx, t, m.panelQuery(t, svc, title, ref, vars), at)
		}
		one(p.service+": Client Request Volume", q("Client Request Volume", "A", client, w.to[out]),
			promRound(float64(measured.total())/secsOut), 1e-9)
		one(p.service+": Client Success Rate", q("Client Success Rate (non-5xx responses)", "A", client, w.to[out]),
			nonFiveShare(p.c, measured), 1e-9)
		checkQuantiles(t, p.service+": Client Request Duration",
			q("Client Request Duration", "A", client, w.to[out]), q("Client Request Duration", "B", client, w.to[out]),
			q("Client Request Duration", "C", client, w.to[out]), p99Min)

		server := map[string]string{"service": p.service, "qrep": "destination"}
		served := outcomes{ok: measured.ok + measured.timeout}
		one(p.service+": Server Request Volume", q("Server Request Volume", "A", server, w.to[in]),
			promRound(float64(served.total())/secsIn), 1e-9)
		one(p.service+": Server Success Rate", q("Server Success Rate (non-5xx responses)", "A", server, w.to[in]),
			nonFiveShare(p.c, served), 1e-9)
		checkQuantiles(t, p.service+": Server Request Duration",
			q("Server Request Duration", "A", server, w.to[in]), q("Server Request Duration", "B", server, w.to[in]),
			q("Server Request Duration", "C", server, w.to[in]), 0)
	}

	// Workload dashboard, the greeter's: what reaches it, as its inbound
	// proxy reports it and as the consumer's outbound proxy does (the
	// calls that had a route: the others have no destination workload).
	routed := 2 * (measured.ok + measured.timeout)
	for _, side := range []struct {
		qrep string
		at   time.Time
		secs float64
	}{{"destination", w.to[in], secsIn}, {"source", w.to[out], secsOut}} {
		vars := map[string]string{"namespace": greeterSidecar.Namespace, "workload": greeterSidecar.Workload, "qrep": side.qrep}
		q := func(title, ref string) harness.Vector {
			return m.query(ctx, t, m.panelQuery(t, wl, title, ref, vars), side.at)
		}
		one("greeter workload, reporter "+side.qrep+": Incoming Request Volume", q("Incoming Request Volume", "A"),
			promRound(float64(routed)/side.secs), 1e-9)
		// The consumer's proxy saw the Thrift timeouts as 504s (response
		// codes HTTP); Dubbo's (PROTOCOL: 31) do not match "5.*". The
		// greeter's inbound proxy answered every call.
		wantRate := 1.0
		if side.qrep == "source" {
			wantRate = 1 - float64(measured.timeout)/float64(routed)
		}
		one("greeter workload, reporter "+side.qrep+": Incoming Success Rate", q("Incoming Success Rate (non-5xx responses)", "A"), wantRate, 1e-9)
		min := 0.0
		if side.qrep == "source" {
			min = p99Min
		}
		checkQuantiles(t, "greeter workload, reporter "+side.qrep+": Request Duration",
			q("Request Duration", "A"), q("Request Duration", "B"), q("Request Duration", "C"), min)
	}

	// Workload dashboard, the consumer's: its outbound services, by
	// destination service and response code (without mTLS: queries B, E,
	// F, H).
	vars := map[string]string{"namespace": consumerSidecar.Namespace, "workload": consumerSidecar.Workload, "qrep": "source",
		"dstsvc": grafana.MultiValue(dubboService, thriftService)}
	q := func(title, ref string) harness.Vector {
		return m.query(ctx, t, m.panelQuery(t, wl, title, ref, vars), w.to[out])
	}
	byCode, rate := want{}, want{}
	for _, p := range []struct {
		service string
		c       codes
	}{{dubboService, dubboCodes}, {thriftService, thriftCodes}} {
		for code, n := range map[string]int{p.c.ok: measured.ok, p.c.noRoute: measured.noRoute, p.c.timeout: measured.timeout} {
			byCode[key(map[string]string{"destination_service": p.service, "response_code": code}, "destination_service", "response_code")] = promRound(float64(n) / secsOut)
		}
		rate[key(map[string]string{"destination_service": p.service}, "destination_service")] = nonFiveShare(p.c, measured)
	}
	sameSamples(t, "consumer workload: Outgoing Requests By Destination And Response Code", q("Outgoing Requests By Destination And Response Code", "B"),
		byCode, 1e-9, "destination_service", "response_code")
	sameSamples(t, "consumer workload: Outgoing Success Rate By Destination", q("Outgoing Success Rate (non-5xx responses) By Destination", "B"),
		rate, 1e-9, "destination_service")
	checkQuantiles(t, "consumer workload: Outgoing Request Duration By Destination",
		q("Outgoing Request Duration By Destination", "E"), q("Outgoing Request Duration By Destination", "F"),
		q("Outgoing Request Duration By Destination", "H"), p99Min, "destination_service")
}

// checkBreezeDashboard runs every query of Breeze's own dashboard at the
// end of the measured window, per side.
func (m *mesh) checkBreezeDashboard(ctx context.Context, t *testing.T, w window, measured outcomes) {
	d := loadDashboard(t, breezeDashboard)
	out, in := m.outMetrics, m.inMetrics
	secsOut, secsIn := w.to[out].Sub(w.from[out]).Seconds(), w.to[in].Sub(w.from[in]).Seconds()
	outVars := map[string]string{"proxy": "outbound_dubbo|outbound_thrift", "cluster": ".*"}
	inVars := map[string]string{"proxy": "inbound_dubbo|inbound_thrift", "cluster": ".*"}
	q := func(title, ref string, vars map[string]string, at time.Time) harness.Vector {
		return m.query(ctx, t, m.panelQuery(t, d, title, ref, vars), at)
	}
	row := func(names []string, values ...string) string {
		l := map[string]string{}
		for i, n := range names {
			l[n] = values[i]
		}
		return key(l, names...)
	}
	pc := []string{"proxy", "cluster"}
	routed := float64(measured.ok+measured.timeout) / secsOut

	sameSamples(t, "Request rate by cluster (outbound)", q("Request rate by cluster", "A", outVars, w.to[out]), want{
		row(pc, "outbound_dubbo", "greeter"): routed, row(pc, "outbound_thrift", "echo"): routed,
	}, 1e-9, pc...)
	sameSamples(t, "Request rate by cluster (inbound)", q("Request rate by cluster", "A", inVars, w.to[in]), want{
		row(pc, "inbound_dubbo", "local-greeter"):    float64(measured.ok+measured.timeout) / secsIn,
		row(pc, "inbound_thrift", "local-echo"):      float64(measured.ok) / secsIn,
		row(pc, "inbound_thrift", "local-echo-slow"): float64(measured.timeout) / secsIn,
	}, 1e-9, pc...)
	sameSamples(t, "Request rate by cluster, oneway", q("Request rate by cluster", "B", outVars, w.to[out]), want{
		row(pc, "outbound_dubbo", "greeter"): 0, row(pc, "outbound_thrift", "echo"): 0,
	}, 0, pc...)

	pcs := []string{"proxy", "cluster", "status"}
	okOut := float64(measured.ok) / secsOut
	sameSamples(t, "Responses by status (outbound)", q("Responses by status", "A", outVars, w.to[out]), want{
		row(pcs, "outbound_dubbo", "greeter", "ok"): okOut, row(pcs, "outbound_dubbo", "greeter", "app_error"): 0, row(pcs, "outbound_dubbo", "greeter", "error"): 0,
		row(pcs, "outbound_thrift", "echo", "ok"): okOut, row(pcs, "outbound_thrift", "echo", "app_error"): 0, row(pcs, "outbound_thrift", "echo", "error"): 0,
	}, 1e-9, pcs...)

	success := float64(measured.ok) / float64(measured.total())
	sameSamples(t, "Success rate (outbound)", q("Success rate", "A", outVars, w.to[out]), want{
		row([]string{"proxy"}, "outbound_dubbo"): success, row([]string{"proxy"}, "outbound_thrift"): success,
	}, 1e-9, "proxy")
	sameSamples(t, "Success rate (inbound)", q("Success rate", "A", inVars, w.to[in]), want{
		row([]string{"proxy"}, "inbound_dubbo"): 1, row([]string{"proxy"}, "inbound_thrift"): 1,
	}, 1e-9, "proxy")

	pr := []string{"proxy", "reason"}
	noRoute, timeout := float64(measured.noRoute)/secsOut, float64(measured.timeout)/secsOut
	sameSamples(t, "Local replies by reason (outbound)", q("Local replies by reason", "A", outVars, w.to[out]), want{
		row(pr, "outbound_dubbo", "no_route"): noRoute, row(pr, "outbound_dubbo", "timeout"): timeout,
		row(pr, "outbound_thrift", "no_route"): noRoute, row(pr, "outbound_thrift", "timeout"): timeout,
	}, 1e-9, pr...)
	sameSamples(t, "Dropped messages (outbound): the answers to timed-out calls", q("Dropped messages", "A", outVars, w.to[out]), want{
		row(pr, "outbound_dubbo", "late_response"): timeout, row(pr, "outbound_thrift", "late_response"): timeout,
	}, 1e-9, pr...)

	lat := func(vars map[string]string, at time.Time) (a, b, c harness.Vector) {
		return q("Upstream latency", "A", vars, at), q("Upstream latency", "B", vars, at), q("Upstream latency", "C", vars, at)
	}
	a, b, c := lat(outVars, w.to[out])
	checkQuantiles(t, "Upstream latency (outbound)", a, b, c, 0, pc...)
	// The slow Thrift server answers 300 ms after a call reaches it: every
	// observation of its cluster is in the bucket above 0.15 s.
	a, b, c = lat(map[string]string{"proxy": "inbound_thrift", "cluster": "local-echo-slow"}, w.to[in])
	checkQuantiles(t, "Upstream latency (inbound, the slow Thrift server)", a, b, c, 0, pc...)
	if len(a) != 1 || a[0].Value < 0.15 {
		t.Errorf("P50 of the slow Thrift server's latency: %s; want one sample of at least 0.15 s", a)
	}

	// No breaker limit was reached: its series exist from the start (one
	// per cluster and limit), all 0.
	pcl := []string{"proxy", "cluster", "limit"}
	overflows := want{}
	for _, c := range [][2]string{{"outbound_dubbo", "greeter"}, {"outbound_thrift", "echo"}} {
		for _, l := range []string{"max_requests", "max_pending_requests", "max_retries", "retry_budget"} {
			overflows[row(pcl, c[0], c[1], l)] = 0
		}
	}
	sameSamples(t, "Circuit breaker overflows (outbound)", q("Circuit breaker overflows", "A", outVars, w.to[out]), overflows, 0, pcl...)
	// Nothing of these happened: no mirror, retry policy, outlier
	// detection, rate limit, fault, protocol error, panic, full istio_stats
	// table or xDS.
	for _, e := range []struct{ title, ref string }{
		{"Mirrored requests", "A"}, {"Retries", "A"}, {"Outlier ejections", "A"},
		{"Local rate limits", "A"}, {"Local rate limits", "B"}, {"Global rate limit", "A"}, {"Faults injected", "A"},
		{"Metrics not recorded as labelled", "A"},
		{"Protocol errors", "A"}, {"Panics, rejected configs, missing clusters", "A"},
		{"Panics, rejected configs, missing clusters", "C"}, {"xDS updates", "A"},
	} {
		v := q(e.title, e.ref, outVars, w.to[out])
		for _, s := range v {
			if s.Value != 0 {
				t.Errorf("%s %s: %s; want none but zeros", e.title, e.ref, v)
				break
			}
		}
		t.Logf("%s %s: %d series, all 0", e.title, e.ref, len(v))
	}
	for _, e := range []struct{ title, ref string }{
		{"Panics, rejected configs, missing clusters", "B"},
		{"Metrics not recorded as labelled", "B"}, {"Metrics not recorded as labelled", "C"},
	} {
		if v := q(e.title, e.ref, outVars, w.to[out]); len(v) != 1 || v[0].Value != 0 {
			t.Errorf("%s %s: %s; want one sample, 0", e.title, e.ref, v)
		}
	}
	// Every call that reached the inbound proxy carried the consumer's
	// identity: Dubbo attachments and THeader headers both can.
	peers := want{}
	for _, s := range q("Istio peer metadata", "A", inVars, w.to[in]) {
		peers[key(s.Labels, "result")] += s.Value
	}
	readRate := float64(2*(measured.ok+measured.timeout)) / secsIn
	for r, v := range peers {
		if r == `result="read"` && math.Abs(v-readRate) > 1e-9 || r != `result="read"` && v != 0 {
			t.Errorf("Istio peer metadata: %v; want read %v, nothing else", peers, readRate)
			break
		}
	}
	if _, ok := peers[`result="read"`]; !ok {
		t.Errorf("Istio peer metadata: %v; want read %v", peers, readRate)
	}

	pce := []string{"proxy", "cluster", "event"}
	events := want{}
	for _, pcl := range [][2]string{{"outbound_dubbo", "greeter"}, {"outbound_thrift", "echo"}} {
		for _, ev := range []string{"connect", "connect_failure", "close", "goaway"} {
			events[row(pce, pcl[0], pcl[1], ev)] = 0
		}
	}
	sameSamples(t, "Upstream connection events (outbound): none in the window, the connections date from the first round",
		q("Upstream connection events", "A", outVars, w.to[out]), events, 0, pce...)

	open := q("Downstream connections", "A", outVars, w.to[out])
	sameSamples(t, "Downstream connections open (outbound): the dubbo-go client's and the idle Thrift one; the Thrift clients have exited",
		open, want{row([]string{"proxy"}, "outbound_dubbo"): 1, row([]string{"proxy"}, "outbound_thrift"): 1}, 0, "proxy")
	// Each Thrift client process opened its connections in the window:
	// Greet and Whoami one each, Slow one per call.
	sameSamples(t, "Downstream connections accepted (outbound)", q("Downstream connections", "B", outVars, w.to[out]), want{
		row([]string{"proxy"}, "outbound_dubbo"): 0, row([]string{"proxy"}, "outbound_thrift"): float64(2+measured.timeout) / secsOut,
	}, 1e-9, "proxy")
	// How many connections the proxy itself closed depends on when each
	// Thrift client's close arrived: shown, not checked.
	t.Logf("Downstream connections closed by the proxy (outbound):\n%s", q("Downstream connections", "C", outVars, w.to[out]))
	// Heartbeats come when a connection has been idle for a while (the
	// dubbo-go client's period is 1 s): how many fall in the window is
	// timing, so the panel is run and shown, not checked.
	t.Logf("Heartbeats answered (outbound):\n%s", q("Heartbeats answered", "A", outVars, w.to[out]))
}
