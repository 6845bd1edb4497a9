package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// scrapeEvery is the test Prometheus's scrape interval. The dashboards' rates
// are irate()s: the rate between a series' last two samples. The test makes
// its measured traffic fall between two consecutive scrapes of each proxy, so
// that every irate covers exactly that traffic; the two proxies are scraped
// at different offsets, so one interval always leaves a quiet stretch of at
// least half of it for both (see quietWindow).
const scrapeEvery = 3 * time.Second

// sidecar is what Istio's injector tells a proxy container about its
// workload: the environment a test gives a `breeze run` process to get known
// local labels.
type sidecar struct {
	Workload, Namespace, App, Version, Cluster string
}

func (s sidecar) env() []string {
	labels, _ := json.Marshal(map[string]string{
		"app": s.App, "version": s.Version,
		"service.istio.io/canonical-name": s.App, "service.istio.io/canonical-revision": s.Version,
	})
	return []string{
		"ISTIO_META_WORKLOAD_NAME=" + s.Workload,
		"POD_NAME=" + s.Workload + "-7d4b9c-x2x4q",
		"POD_NAMESPACE=" + s.Namespace,
		"ISTIO_META_CLUSTER_ID=" + s.Cluster,
		"ISTIO_METAJSON_LABELS=" + string(labels),
	}
}

// endpointLabels are the labels an endpoint of s carries in a cluster (what
// Istio's EDS tells about a pod; breeze.io/* what pod labels do not carry):
// the outbound proxy's destination labels.
func (s sidecar) endpointLabels() string {
	return fmt.Sprintf(`{app: %s, version: %s, "service.istio.io/canonical-name": %s, "service.istio.io/canonical-revision": %s, "breeze.io/workload": %s, "breeze.io/namespace": %s, "breeze.io/cluster": %s}`,
		s.App, s.Version, s.App, s.Version, s.Workload, s.Namespace, s.Cluster)
}

var (
	consumerSidecar = sidecar{Workload: "consumer-v1", Namespace: "shop", App: "consumer", Version: "v1", Cluster: "east"}
	greeterSidecar  = sidecar{Workload: "greeter-v1", Namespace: "backend", App: "greeter", Version: "v1", Cluster: "east"}
)

// The destination services the outbound proxy names in its series.
const (
	dubboService  = "org.breeze.Greeter"
	thriftService = "echo.backend.svc.cluster.local"
)

// istioStats is the filter list of a listener reporting Istio's standard
// series as reporter ("SOURCE": outbound, "DESTINATION": inbound), with
// response codes as codes says ("PROTOCOL" or "HTTP").
func istioStats(reporter, service, codes string) string {
	return fmt.Sprintf(`filters: [{name: istio_stats, typed_config: {"@type": type.googleapis.com/breeze.filters.istiostats.v1.IstioStats, reporter: %s, connection_security_policy: none, destination_service: %q, response_codes: %s}}]`, reporter, service, codes)
}

// The outbound proxy: the consumer's sidecar. Greet goes to the greeter's
// inbound proxy, Slow too with a short timeout; any other method has no
// route. Thrift likewise, to the echo service's inbound listener.
const meshOutboundConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo-out
  address: "{{.Listen}}"
  proxy:
    stat_prefix: outbound_dubbo
    codec: dubbo
    metrics: {address: "{{index .Extra "metrics"}}"}
    {{index .Extra "dubboFilters"}}
    route_config:
      routes:
      - match: {metadata: [{key: method, exact: Greet}]}
        route: {cluster: greeter}
      - match: {metadata: [{key: method, exact: Slow}]}
        route: {cluster: greeter}
        timeout: 0.2s
    clusters:
    - name: greeter
      endpoints: [{address: 127.0.0.1, port: {{port "in-dubbo"}}, labels: {{index .Extra "labels"}}}]
- name: thrift-out
  address: "{{addr "out-thrift"}}"
  proxy:
    stat_prefix: outbound_thrift
    codec: thrift
    metrics: {address: "{{index .Extra "metrics"}}"}
    request_timeout: 3s
    {{index .Extra "thriftFilters"}}
    route_config:
      routes:
      - match: {metadata: [{key: method, exact: Greet}]}
        route: {cluster: echo}
      - match: {metadata: [{key: method, exact: Slow}]}
        route: {cluster: echo}
        timeout: 0.2s
    clusters:
    - name: echo
      endpoints: [{address: 127.0.0.1, port: {{port "in-thrift"}}, labels: {{index .Extra "labels"}}}]
`

// The inbound proxy: the greeter's sidecar, in front of a dubbo-go provider
// and two Apache Thrift servers (Slow on its own, so that a slow call never
// delays another on the same connection: Apache Thrift serves one call of
// a connection at a time).
const meshInboundConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo-in
  address: "{{.Listen}}"
  proxy:
    stat_prefix: inbound_dubbo
    codec: dubbo
    metrics: {address: "{{index .Extra "metrics"}}"}
    {{index .Extra "dubboFilters"}}
    route_config:
      routes:
      - route: {cluster: local-greeter}
    clusters:
    - name: local-greeter
      endpoints: [{address: 127.0.0.1, port: {{port "provider"}}}]
- name: thrift-in
  address: "{{addr "in-thrift"}}"
  proxy:
    stat_prefix: inbound_thrift
    codec: thrift
    metrics: {address: "{{index .Extra "metrics"}}"}
    request_timeout: 3s
    {{index .Extra "thriftFilters"}}
    route_config:
      routes:
      - match: {metadata: [{key: method, exact: Slow}]}
        route: {cluster: local-echo-slow}
      - route: {cluster: local-echo}
    clusters:
    - name: local-echo
      endpoints: [{address: 127.0.0.1, port: {{port "echo"}}}]
    - name: local-echo-slow
      endpoints: [{address: 127.0.0.1, port: {{port "echo-slow"}}}]
`

// peerMetadataKey is the Dubbo attachment and THeader key that carries the
// caller's identity from the outbound to the inbound proxy
// (filters/istiostats).
const peerMetadataKey = "x-breeze-peer"

// outcomes counts how one protocol's calls ended.
type outcomes struct{ ok, noRoute, timeout int }

func (o outcomes) plus(p outcomes) outcomes {
	return outcomes{o.ok + p.ok, o.noRoute + p.noRoute, o.timeout + p.timeout}
}
func (o outcomes) total() int { return o.ok + o.noRoute + o.timeout }

// codes are a protocol's response_code values for the three outcomes.
// Dubbo's listeners report the protocol's status (response_codes PROTOCOL,
// the default: Dubbo's status byte, with Breeze's local replies as Breeze
// answers them); Thrift's report the HTTP status Envoy gives the same
// outcome (response_codes HTTP), which Istio's 5xx-based success rates read.
type codes struct{ protocol, ok, noRoute, timeout string }

var (
	dubboCodes  = codes{"dubbo", "20", "60", "31"}     // OK, SERVICE_NOT_FOUND, SERVER_TIMEOUT
	thriftCodes = codes{"thrift", "200", "404", "504"} // response, no route, timeout
)

// mesh is the test's world: Prometheus scraping an outbound and an inbound
// `breeze run` between a dubbo-go client and provider and Apache Thrift
// clients and servers; and what the test made happen so far.
type mesh struct {
	t       *testing.T
	prom    *harness.Prometheus
	out, in *harness.Proxy
	// outMetrics and inMetrics are where Prometheus scrapes each proxy:
	// the metrics server of the proxy config (metrics.address), the one
	// the plugin runs inside Envoy; the test reads the admin's /metrics,
	// the same registry, directly.
	outMetrics, inMetrics string
	provider              *harness.Provider
	client                *harness.Client
	// outThrift is the outbound proxy's Thrift listener.
	outThrift string
	// dubbo and thrift are every call's outcome so far, per protocol.
	dubbo, thrift outcomes
}

func startMesh(t *testing.T) *mesh {
	outMetrics, inMetrics := harness.Addr(harness.FreePort(t)), harness.Addr(harness.FreePort(t))
	// First: Prometheus takes up to 5 s to start scraping new targets.
	prom := harness.StartPrometheus(t, scrapeEvery,
		harness.ScrapeTarget{Job: "outbound", Addr: outMetrics},
		harness.ScrapeTarget{Job: "inbound", Addr: inMetrics})
	harness.BuildAll(t)
	m := &mesh{t: t, prom: prom, outMetrics: outMetrics, inMetrics: inMetrics}
	m.provider = harness.StartProvider(t, harness.ProviderSpec{Name: "greeter-v1"})
	ports := map[string]int{
		"provider":   m.provider.Port,
		"echo":       thriftServer(t, "echo"),
		"echo-slow":  thriftServer(t, "echo-slow"),
		"in-thrift":  harness.FreePort(t),
		"out-thrift": harness.FreePort(t),
	}
	m.in = harness.StartProxyWith(t, meshInboundConfig, harness.ProxyOptions{
		Env: greeterSidecar.env(),
		Extra: map[string]interface{}{
			"metrics":       inMetrics,
			"dubboFilters":  istioStats("DESTINATION", dubboService, "PROTOCOL"),
			"thriftFilters": istioStats("DESTINATION", thriftService, "HTTP"),
		},
	}, ports)
	ports["in-dubbo"] = portOf(t, m.in.Addr)
	m.out = harness.StartProxyWith(t, meshOutboundConfig, harness.ProxyOptions{
		Env: consumerSidecar.env(),
		Extra: map[string]interface{}{
			"metrics":       outMetrics,
			"dubboFilters":  istioStats("SOURCE", dubboService, "PROTOCOL"),
			"thriftFilters": istioStats("SOURCE", thriftService, "HTTP"),
			"labels":        greeterSidecar.endpointLabels(),
		},
	}, ports)
	m.outThrift = harness.Addr(ports["out-thrift"])
	for _, a := range []string{m.outThrift, harness.Addr(ports["in-thrift"])} {
		if err := harness.WaitAccepting(a, nil, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// A proxy whose last client connection closes closes its upstream
	// connections (filters/upstream Suspend): the Thrift clients here are
	// processes that exit after their calls, so an idle connection of a
	// client that stays keeps the outbound proxy's connection to the
	// inbound one open, as a long-lived consumer would. Without it the
	// inbound proxy's slow calls would end with their caller gone (DC).
	idle, err := net.Dial("tcp", m.outThrift)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idle.Close() })
	m.client = newClient(t, m.out.Addr, harness.ClientSpec{})
	return m
}

func portOf(t *testing.T, addr string) int {
	_, p, _ := strings.Cut(addr, ":")
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("port of %q: %v", addr, err)
	}
	return n
}

// thriftServer starts an Apache Thrift Go server speaking THeader (the
// transport that carries headers, hence Istio's peer metadata).
func thriftServer(t *testing.T, name string) int {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := harness.FreePort(t)
		// Greet answers with the peer metadata header appended, if it got
		// one: the inbound proxy must have removed it.
		p := harness.Start(t, "thrift server "+name, harness.ThriftPeerBin(t),
			"serve", "-impl", "apache", "-transport", "header", "-name", name, "-port", strconv.Itoa(port),
			"-echo-header", peerMetadataKey)
		_, err := p.WaitReady(30 * time.Second)
		// A port free a moment ago may have become another connection's
		// source port meanwhile: try another.
		if err != nil && attempt < 3 && strings.Contains(p.Output(), "address already in use") {
			continue
		}
		if err != nil {
			t.Fatalf("thrift server %s: %v\n%s", name, err, p.Output())
		}
		return port
	}
}

// thriftSummary is thriftpeer call's SUMMARY line.
type thriftSummary struct {
	Requests  int            `json:"requests"`
	OK        int            `json:"ok"`
	AppErrors int            `json:"app_errors"`
	AppTypes  map[string]int `json:"app_types"`
	Errors    int            `json:"errors"`
	Results   map[string]int `json:"results"`
	Messages  []string       `json:"messages"`
}

func thriftResult(p *harness.Proc) (thriftSummary, error) {
	var s thriftSummary
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		p.Kill()
		return s, fmt.Errorf("%s still running after 30s", p.Name)
	}
	out := p.Output()
	i := strings.LastIndex(out, "SUMMARY ")
	if i < 0 {
		return s, fmt.Errorf("%s printed no SUMMARY:\n%s", p.Name, out)
	}
	line, _, _ := strings.Cut(out[i+len("SUMMARY "):], "\n")
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		return s, fmt.Errorf("%s SUMMARY %q: %w", p.Name, line, err)
	}
	return s, nil
}

// round makes r's calls of each protocol through the outbound proxy, at
// once, checks each ended as meant, and waits until both proxies have
// recorded all of them.
func (m *mesh) round(ctx context.Context, name string, r outcomes) {
	t := m.t
	t.Helper()
	thrift := func(what string, args ...string) *harness.Proc {
		return harness.Start(t, "thrift client "+what, harness.ThriftPeerBin(t),
			append([]string{"call", "-impl", "apache", "-transport", "header", "-addr", m.outThrift}, args...)...)
	}
	// Thrift's slow calls first: they take longest (the server answers
	// after 300 ms, the route's timeout is 200 ms).
	var slow, greet, other *harness.Proc
	if r.timeout > 0 {
		slow = thrift(name+" slow", "-method", "slow", "-arg", "300", "-n", "1", "-conns", strconv.Itoa(r.timeout))
	}
	if r.ok > 0 {
		greet = thrift(name+" greet", "-method", "greet", "-arg", name, "-n", strconv.Itoa(r.ok))
	}
	if r.noRoute > 0 {
		other = thrift(name+" whoami", "-method", "whoami", "-n", strconv.Itoa(r.noRoute))
	}

	// Dubbo: the provider holds Slow until every Slow call has timed out
	// at the outbound proxy.
	m.provider.Gate(t, "Slow")
	for _, o := range runCalls(ctx, m.client, r.ok, 4, greets(name, nil)) {
		if o.Err != nil {
			t.Fatalf("Greet: %v", o.Err)
		}
		// The provider echoes the attachments it got: the outbound proxy
		// added the consumer's identity, the inbound one removed it.
		if v, ok := o.Reply.Attachments[peerMetadataKey]; ok {
			t.Fatalf("the provider received the peer metadata attachment %s=%q: the inbound proxy must remove it", peerMetadataKey, v)
		}
	}
	for _, o := range runCalls(ctx, m.client, r.noRoute, r.noRoute, func(i int) callSpec {
		return callSpec{Method: "Whoami"}
	}) {
		var ce *harness.CallError
		if !errors.As(o.Err, &ce) || !strings.Contains(ce.Msg, "no route") {
			t.Fatalf("Whoami without a route: reply %+v, error %v; want Breeze's no-route error", o.Reply, o.Err)
		}
	}
	for _, o := range runCalls(ctx, m.client, r.timeout, r.timeout, func(i int) callSpec {
		return callSpec{Method: "Slow", Arg: "0"}
	}) {
		var ce *harness.CallError
		if !errors.As(o.Err, &ce) || !strings.Contains(ce.Msg, "upstream timeout") {
			t.Fatalf("Slow held by the provider, 0.2s route timeout: reply %+v, error %v; want Breeze's timeout error", o.Reply, o.Err)
		}
	}
	// Now let them run: the inbound proxy relays their answers (too late
	// for the outbound one, which drops them).
	m.provider.Release(t, "Slow")

	for _, c := range []struct {
		p    *harness.Proc
		want func(thriftSummary) bool
		what string
	}{
		{greet, func(s thriftSummary) bool { return s.OK == r.ok && s.Results["hello "+name+" from echo"] == r.ok }, "every Greet answered by echo"},
		{other, func(s thriftSummary) bool {
			return s.AppErrors == r.noRoute && strings.Contains(strings.Join(s.Messages, "|"), "no route")
		}, "every Whoami a no-route exception"},
		{slow, func(s thriftSummary) bool {
			return s.AppErrors == r.timeout && strings.Contains(strings.Join(s.Messages, "|"), "upstream timeout")
		}, "every Slow(300) a timeout exception"},
	} {
		if c.p == nil {
			continue
		}
		s, err := thriftResult(c.p)
		if err != nil {
			t.Fatal(err)
		}
		if !c.want(s) {
			t.Fatalf("%s: want %s; got %+v", c.p.Name, c.what, s)
		}
	}
	m.dubbo, m.thrift = m.dubbo.plus(r), m.thrift.plus(r)
	m.waitRecorded(ctx)
}

// waitRecorded waits until both proxies' own /metrics show every call so
// far: what Prometheus scrapes after this has all of them.
func (m *mesh) waitRecorded(ctx context.Context) {
	t := m.t
	t.Helper()
	out := float64(m.dubbo.total() + m.thrift.total())
	// The inbound proxy sees what the outbound one routed: the answered
	// calls and those that timed out at the outbound proxy, which it
	// answers later.
	in := float64(m.dubbo.ok + m.dubbo.timeout + m.thrift.ok + m.thrift.timeout)
	late := float64(m.dubbo.timeout + m.thrift.timeout)
	// Recording follows each answer by microseconds: a count still short
	// after seconds is a count that will not come.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, w := range []struct {
		p      *harness.Proxy
		what   string
		metric string
		want   float64
		labels []string
	}{
		{m.out, "the outbound proxy's requests", "istio_requests_total", out, nil},
		{m.in, "the inbound proxy's requests", "istio_requests_total", in, nil},
		{m.out, "the outbound proxy's local replies", "breeze_local_replies_total", float64(m.dubbo.noRoute + m.thrift.noRoute + m.dubbo.timeout + m.thrift.timeout), nil},
		{m.out, "the inbound proxy's late answers dropped", "breeze_dropped_total", late, []string{`reason="late_response"`}},
		{m.in, "the inbound proxy's responses", "breeze_responses_total", in, nil},
	} {
		want := w.want
		if err := w.p.WaitMetric(ctx, fmt.Sprintf("%s: %v", w.what, want), w.metric, func(v float64) bool { return v == want }, w.labels...); err != nil {
			o, _ := m.out.Metrics(context.Background())
			i, _ := m.in.Metrics(context.Background())
			t.Fatalf("%v\noutbound proxy's counters:\n%s\ninbound proxy's counters:\n%s", err, counters(o), counters(i))
		}
	}
}

// window is one quiet stretch between two consecutive scrapes of each
// target: every irate() at the later scrape covers exactly what happened in
// it.
type window struct {
	from, to map[string]time.Time // per target address
}

// quietWindow waits until a stretch of at least need lies before the next
// scrape of every target, each target having been scraped since after, and
// returns the latest scrape of each: the start of a window.
func (m *mesh) quietWindow(ctx context.Context, after time.Time, need time.Duration, targets ...string) map[string]time.Time {
	t := m.t
	t.Helper()
	last := map[string]time.Time{}
	for _, a := range targets {
		at, err := m.prom.WaitScrape(ctx, a, after)
		if err != nil {
			t.Fatal(err)
		}
		last[a] = at
	}
	for {
		for _, a := range targets {
			at, ok, err := m.prom.LastScrape(ctx, a)
			if err != nil || !ok {
				t.Fatalf("last scrape of %s: ok %v, err %v", a, ok, err)
			}
			last[a] = at
		}
		// The target scraped next bounds the stretch.
		first := targets[0]
		for _, a := range targets[1:] {
			if last[a].Before(last[first]) {
				first = a
			}
		}
		if time.Until(last[first].Add(m.prom.Interval)) >= need {
			return last
		}
		if _, err := m.prom.WaitScrape(ctx, first, last[first]); err != nil {
			t.Fatal(err)
		}
	}
}

// measuredRound runs round r inside a quiet window and returns the window;
// when a scrape lands in the middle of the round it runs another (at most
// three), the calls of every try counting in the totals.
func (m *mesh) measuredRound(ctx context.Context, r outcomes) window {
	t := m.t
	t.Helper()
	targets := []string{m.outMetrics, m.inMetrics}
	after := time.Now()
	for try := 1; try <= 3; try++ {
		from := m.quietWindow(ctx, after, m.prom.Interval/3, targets...)
		began := time.Now()
		m.round(ctx, fmt.Sprintf("measured%d", try), r)
		ended := time.Now()
		t.Logf("round %d took %s", try, ended.Sub(began))
		to := map[string]time.Time{}
		clean := true
		for _, a := range targets {
			at, err := m.prom.WaitScrape(ctx, a, from[a])
			if err != nil {
				t.Fatal(err)
			}
			to[a] = at
			// A scrape that began before the round ended may have
			// missed part of it.
			if !at.After(ended) {
				clean = false
			}
		}
		if clean {
			for _, a := range targets {
				t.Logf("measured window of %s: %s to %s (%s)", a, from[a].Format(time.StampMilli), to[a].Format(time.StampMilli), to[a].Sub(from[a]))
			}
			return window{from: from, to: to}
		}
		t.Logf("try %d: a scrape began during the round (round ended %s, scrapes %v); again", try, ended.Format(time.StampMilli), to)
		after = ended
	}
	t.Fatal("three rounds in a row had a scrape in their middle")
	return window{}
}

// TestPrometheusIstioAndBreezeSeries: a real Prometheus (Debian's) scrapes
// two `breeze run` proxies, the outbound sidecar of a consumer and the
// inbound sidecar of a greeter, between a dubbo-go client and provider and
// Apache Thrift THeader clients and servers. The test causes known outcomes
// per protocol (successes, calls no route matches, calls that time out at the
// outbound proxy) and reads them back through PromQL: Istio's standard
// series with their labels, the queries of Istio's Service and Workload
// dashboards, and those of Breeze's own dashboard.
func TestPrometheusIstioAndBreezeSeries(t *testing.T) {
	start := time.Now()
	m := startMesh(t)
	t.Logf("started in %s", time.Since(start))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Every series exists before the measured round (an irate needs two
	// samples of a series): one call of each outcome.
	base := outcomes{ok: 1, noRoute: 1, timeout: 1}
	m.round(ctx, "base", base)
	// The measured round: the one whose calls fall in a quiet window (an
	// earlier try that a scrape cut in two counts in the totals only).
	measured := outcomes{ok: 20, noRoute: 3, timeout: 2}
	w := m.measuredRound(ctx, measured)
	t.Logf("calls per protocol: %+v in all, %+v in the measured window; %s in all", m.dubbo, measured, time.Since(start))

	t.Run("istio series", func(t *testing.T) { m.checkIstioSeries(ctx, t, w) })
	t.Run("istio dashboards", func(t *testing.T) { m.checkIstioDashboards(ctx, t, w, measured) })
	t.Run("breeze dashboard", func(t *testing.T) { m.checkBreezeDashboard(ctx, t, w, measured) })
}

// query runs expr at at, failing t on an error.
func (m *mesh) query(ctx context.Context, t *testing.T, expr string, at time.Time) harness.Vector {
	t.Helper()
	v, err := m.prom.Query(ctx, expr, at)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// want is an expected sample: its labels, written `k="v"` and sorted, and
// value.
type want map[string]float64

// key writes the labels of a sample in names' order.
func key(labels map[string]string, names ...string) string {
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%q", n, labels[n])
	}
	return strings.Join(parts, ", ")
}

// sameSamples fails t unless v holds exactly the samples of w (keys over
// names), each value within tol.
func sameSamples(t *testing.T, what string, v harness.Vector, w want, tol float64, names ...string) {
	t.Helper()
	got := map[string]float64{}
	for _, s := range v {
		got[key(s.Labels, names...)] += s.Value
	}
	var diffs []string
	for k, x := range w {
		g, ok := got[k]
		if !ok || math.Abs(g-x) > tol || math.IsNaN(g) {
			diffs = append(diffs, fmt.Sprintf("  {%s}: got %v (present %v), want %v", k, g, ok, x))
		}
	}
	for k, g := range got {
		if _, ok := w[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("  {%s}: got %v, want no such series", k, g))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Errorf("%s:\n%s\nall samples:\n%s", what, strings.Join(diffs, "\n"), v)
	} else {
		t.Logf("%s: as caused\n%s", what, v)
	}
}

// counters are the samples of Breeze's and Istio's series in a /metrics
// text, histogram buckets left out.
func counters(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if (strings.HasPrefix(l, "breeze_") || strings.HasPrefix(l, "istio_")) && !strings.Contains(l, "_bucket") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
