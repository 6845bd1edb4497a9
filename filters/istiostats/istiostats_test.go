package istiostats

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/codecs/dubbo"
	_ "github.com/breeze-mesh/breeze/codecs/thrift"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
	istiostatsv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/istiostats/v1"
)

// conn is what a Stream needs to run outside the proxy: a local reply
// is "written" with a size, as the proxy's.
type conn struct{}

func (conn) LocalReply(s *filter.Stream, _ codecs.ErrorKind, _ string, _ bool) { s.BytesOut = 40 }
func (conn) Write([]byte)                                                      {}
func (conn) Resume(*filter.Stream)                                             {}
func (conn) Done(*filter.Stream)                                               {}
func (conn) Panicked(*filter.Stream, string, any, []byte)                      {}

// router plays the terminal filter: it names the cluster and endpoint the
// request went to, then relays a response with the given code, or
// answers with a local reply, or (oneway) reports it sent.
type router struct {
	filter.Base
	cluster, upstream string
	labels            map[string]string
	// one of:
	code      uint32 // a response with this code (status error unless 20/0)
	localKind codecs.ErrorKind
	flags     filter.Flag
	delay     time.Duration
	// seen is the request as it would be encoded (mutations, removals).
	seen codecs.Message
}

func (r *router) OnRequest(s *filter.Stream) filter.Status {
	r.seen = s.Request
	s.Start = s.Start.Add(-r.delay)
	if r.localKind != 0 {
		s.ReplyAndFinish(r.localKind, "test", r.flags, true)
		return filter.Stop
	}
	s.Cluster, s.Upstream, s.UpstreamLabels = r.cluster, r.upstream, r.labels
	if s.Request.Type == codecs.Oneway {
		s.Finish(filter.Outcome{Sent: true})
		return filter.Stop
	}
	st := codecs.StatusOK
	if r.code != 20 && r.code != 0 {
		st = codecs.StatusError
	}
	s.Respond(&codecs.Message{Type: codecs.Response, Status: st, Code: r.code, Frame: make([]byte, 100)}, echo{})
	return filter.Stop
}

type echo struct{}

func (echo) Decode([]byte, *codecs.Message) (int, error)                 { return 0, nil }
func (echo) Encode(m *codecs.Message) ([]byte, error)                    { return m.Frame, nil }
func (echo) LocalReply(*codecs.Message, codecs.ErrorKind, string) []byte { return nil }
func (echo) HeartbeatReply(*codecs.Message) []byte                       { return nil }

func newFilter(t testing.TB, cfg *istiostatsv1.IstioStats, codec string, local Identity) *Filter {
	t.Helper()
	if err := validate(cfg); err != nil {
		t.Fatal(err)
	}
	f, err := build(cfg, filter.BuildContext{ProxyName: "p", Codec: codec}, local)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// run walks one request with metadata md through [f, r].
func run(f *Filter, r *router, req *codecs.Message) *filter.Stream {
	chain := &filter.Chain{Filters: []filter.Filter{f, r}, Names: []string{Name, filter.RouterName}}
	s := &filter.Stream{}
	s.Init(chain, conn{}, req, time.Now())
	s.Run()
	return s
}

func request(md ...string) *codecs.Message {
	m := &codecs.Message{Type: codecs.Request, ID: 1, Frame: make([]byte, 60)}
	for i := 0; i+1 < len(md); i += 2 {
		m.Metadata = append(m.Metadata, codecs.KV{Key: md[i], Value: md[i+1]})
	}
	return m
}

// family is one metric family as gathered from Breeze's registry.
func family(t testing.TB, name string) *dto.MetricFamily {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	return nil
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// gathered returns the label sets of name's series that have every label
// of want, and a listing of all its series for failure messages.
func gathered(t testing.TB, name string, want map[string]string) ([]*dto.Metric, string) {
	t.Helper()
	var out []*dto.Metric
	var all []string
	for _, m := range family(t, name).GetMetric() {
		l := labelsOf(m)
		all = append(all, fmt.Sprint(l))
		ok := true
		for k, v := range want {
			if l[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, m)
		}
	}
	sort.Strings(all)
	return out, strings.Join(all, "\n")
}

// count is istio_requests_total summed over the series matching want.
func count(t testing.TB, want map[string]string) float64 {
	t.Helper()
	ms, _ := gathered(t, "istio_requests_total", want)
	var n float64
	for _, m := range ms {
		n += m.GetCounter().GetValue()
	}
	return n
}

var client = Identity{Workload: "orders-v1", Namespace: "shop", App: "orders", Version: "v1",
	CanonicalService: "orders", CanonicalRevision: "v1", Cluster: "east"}

// Outbound (reporter source): source labels are the local identity,
// destination labels the endpoint's; destination_service the cluster's
// host; response code, flags and protocol as the request ended.
func TestOutboundLabels(t *testing.T) {
	f := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_SOURCE, ConnectionSecurityPolicy: "unknown"}, "dubbo", client)
	r := &router{cluster: "outbound|20880||greeter.demo.svc.cluster.local", upstream: "10.0.0.5:20880", code: 20,
		labels: map[string]string{"app": "greeter", "version": "v2", LabelWorkload: "greeter-v2", LabelNamespace: "demo", LabelCluster: "west"},
		delay:  30 * time.Millisecond}
	for range 3 {
		run(f, r, request("interface", "org.example.Greeter", "method", "sayHello"))
	}
	want := map[string]string{
		"reporter": "source", "source_workload": "orders-v1", "source_workload_namespace": "shop", "source_principal": "unknown",
		"source_app": "orders", "source_version": "v1", "source_canonical_service": "orders", "source_canonical_revision": "v1", "source_cluster": "east",
		"destination_workload": "greeter-v2", "destination_workload_namespace": "demo", "destination_principal": "unknown",
		"destination_app": "greeter", "destination_version": "v2", "destination_service": "greeter.demo.svc.cluster.local",
		"destination_service_name": "greeter", "destination_service_namespace": "demo",
		"destination_canonical_service": "greeter", "destination_canonical_revision": "v2", "destination_cluster": "west",
		"request_protocol": "dubbo", "response_code": "20", "response_flags": "-", "connection_security_policy": "unknown",
	}
	ms, all := gathered(t, "istio_requests_total", want)
	if len(ms) != 1 || ms[0].GetCounter().GetValue() != 3 {
		t.Fatalf("want one series with 3 requests of labels %v; series:\n%s", want, all)
	}
	if len(labelsOf(ms[0])) != len(metrics.IstioLabels) {
		t.Errorf("series has labels %v, want exactly Istio's %v", labelsOf(ms[0]), metrics.IstioLabels)
	}
	d, _ := gathered(t, "istio_request_duration_milliseconds", want)
	if len(d) != 1 || d[0].GetHistogram().GetSampleCount() != 3 || d[0].GetHistogram().GetSampleSum() < 90 {
		t.Errorf("duration histogram %v; want 3 samples of at least 30 ms", d)
	}
	b, _ := gathered(t, "istio_request_bytes", want)
	rb, _ := gathered(t, "istio_response_bytes", want)
	if len(b) != 1 || b[0].GetHistogram().GetSampleSum() != 180 || len(rb) != 1 || rb[0].GetHistogram().GetSampleSum() != 300 {
		t.Errorf("request bytes %v, response bytes %v; want sums 3×60 and 3×100", b, rb)
	}
	// The buckets are Envoy's, which Istio records with.
	if got := d[0].GetHistogram().GetBucket(); len(got) != len(metrics.EnvoyBuckets) || got[0].GetUpperBound() != 0.5 || got[len(got)-1].GetUpperBound() != 3600000 {
		t.Errorf("duration buckets %v", got)
	}
}

// Every way a request ends has its response code and flags; the method
// is never a label.
func TestOutcomes(t *testing.T) {
	local := client
	local.Workload = "outcomes"
	f := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_SOURCE}, "dubbo", local)
	for _, tc := range []struct {
		name        string
		r           *router
		oneway      bool
		code, flags string
	}{
		{"success", &router{cluster: "c", code: 20}, false, "20", "-"},
		{"provider timeout status", &router{cluster: "c", code: 31}, false, "31", "-"},
		{"thread pool exhausted", &router{cluster: "c", code: 100}, false, "100", "-"},
		{"no route", &router{localKind: codecs.ErrNoRoute, flags: filter.NoRoute}, false, "60", "NR"},
		{"no healthy upstream", &router{localKind: codecs.ErrNoHealthyUpstream, flags: filter.NoHealthyUpstream}, false, "80", "UH"},
		{"timeout", &router{localKind: codecs.ErrTimeout, flags: filter.UpstreamRequestTimeout}, false, "31", "UT"},
		{"overflow", &router{localKind: codecs.ErrOverloaded, flags: filter.UpstreamOverflow}, false, "100", "UO"},
		{"connect failure, retries exhausted", &router{localKind: codecs.ErrNoHealthyUpstream, flags: filter.UpstreamConnectionFailure | filter.UpstreamRetryLimitExceeded}, false, "80", "UF,URX"},
		{"oneway sent", &router{cluster: "c"}, true, "0", "-"},
		{"oneway dropped", &router{localKind: codecs.ErrNoRoute, flags: filter.NoRoute}, true, "0", "NR"},
	} {
		before := count(t, map[string]string{"source_workload": "outcomes", "response_code": tc.code, "response_flags": tc.flags})
		req := request("method", "m-"+tc.name)
		if tc.oneway {
			req.Type = codecs.Oneway
		}
		run(f, tc.r, req)
		if got := count(t, map[string]string{"source_workload": "outcomes", "response_code": tc.code, "response_flags": tc.flags}); got != before+1 {
			_, all := gathered(t, "istio_requests_total", map[string]string{"source_workload": "outcomes"})
			t.Errorf("%s: %v more requests with response_code %s, response_flags %s; series:\n%s", tc.name, got-before, tc.code, tc.flags, all)
		}
	}
	// A hostile status beyond the protocol's becomes "other".
	run(f, &router{cluster: "c", code: 123456}, request())
	if got := count(t, map[string]string{"source_workload": "outcomes", "response_code": "other"}); got != 1 {
		t.Errorf("code 123456 recorded %v times as other", got)
	}
	_, all := gathered(t, "istio_requests_total", map[string]string{"source_workload": "outcomes"})
	if strings.Contains(all, "m-") {
		t.Errorf("a method name became a label value:\n%s", all)
	}
}

// response_codes HTTP: every outcome as the HTTP status Envoy reports for
// it, so that Istio's 5xx-based success rates see Dubbo's failures.
func TestHTTPResponseCodes(t *testing.T) {
	local := client
	local.Workload = "http-codes"
	f := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_SOURCE, ResponseCodes: istiostatsv1.IstioStats_HTTP}, "dubbo", local)
	for _, tc := range []struct {
		name        string
		r           *router
		oneway      bool
		code, flags string
	}{
		{"success", &router{cluster: "c", code: 20}, false, "200", "-"},
		{"provider timeout status (gateway)", &router{cluster: "c", code: 31}, false, "503", "-"},
		{"thread pool exhausted (gateway)", &router{cluster: "c", code: 100}, false, "503", "-"},
		{"service error", &router{cluster: "c", code: 70}, false, "500", "-"},
		{"no route", &router{localKind: codecs.ErrNoRoute, flags: filter.NoRoute}, false, "404", "NR"},
		{"no healthy upstream", &router{localKind: codecs.ErrNoHealthyUpstream, flags: filter.NoHealthyUpstream}, false, "503", "UH"},
		{"timeout", &router{localKind: codecs.ErrTimeout, flags: filter.UpstreamRequestTimeout}, false, "504", "UT"},
		{"overflow", &router{localKind: codecs.ErrOverloaded, flags: filter.UpstreamOverflow}, false, "503", "UO"},
		{"rate limited", &router{localKind: codecs.ErrOverloaded, flags: filter.RateLimited}, false, "429", "RL"},
		{"internal", &router{localKind: codecs.ErrInternal, flags: filter.InternalError}, false, "500", "IE"},
		{"oneway sent", &router{cluster: "c"}, true, "0", "-"},
	} {
		want := map[string]string{"source_workload": "http-codes", "response_code": tc.code, "response_flags": tc.flags}
		before := count(t, want)
		req := request("method", "m")
		if tc.oneway {
			req.Type = codecs.Oneway
		}
		run(f, tc.r, req)
		if got := count(t, want); got != before+1 {
			_, all := gathered(t, "istio_requests_total", map[string]string{"source_workload": "http-codes"})
			t.Errorf("%s: %v more requests with response_code %s, response_flags %s; series:\n%s", tc.name, got-before, tc.code, tc.flags, all)
		}
	}
}

// Inbound (reporter destination): the caller's identity comes from the
// peer metadata its outbound proxy added, which is removed before the
// request goes on; local labels are the destination's, destination_service
// the configured one.
func TestInboundPeerMetadata(t *testing.T) {
	server := Identity{Workload: "greeter-v1", Namespace: "demo", App: "greeter", Version: "v1", Cluster: "east",
		CanonicalService: "greeter", CanonicalRevision: "v1"}
	out := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_SOURCE}, "dubbo", client)
	in := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_DESTINATION, ConnectionSecurityPolicy: MutualTLS,
		DestinationService: "greeter.demo.svc.cluster.local"}, "dubbo", server)

	// The outbound side adds the local identity...
	r := &router{cluster: "c", code: 20}
	run(out, r, request("method", "sayHello"))
	v, ok := r.seen.Mutations.Get(PeerKey)
	if !ok || v != encodePeer(client) {
		t.Fatalf("outbound request mutations %v; want %s = %q", r.seen.Mutations, PeerKey, encodePeer(client))
	}
	// ...the inbound side reads it and removes it.
	r = &router{cluster: "local-app", code: 20}
	run(in, r, request("method", "sayHello", PeerKey, v))
	if len(r.seen.Removals) != 1 || r.seen.Removals[0] != PeerKey {
		t.Errorf("inbound removals %v; want [%s]", r.seen.Removals, PeerKey)
	}
	want := map[string]string{
		"reporter": "destination", "source_workload": "orders-v1", "source_workload_namespace": "shop", "source_app": "orders",
		"source_version": "v1", "source_canonical_service": "orders", "source_canonical_revision": "v1", "source_cluster": "east",
		"source_principal": "unknown", "destination_principal": "unknown",
		"destination_workload": "greeter-v1", "destination_workload_namespace": "demo", "destination_app": "greeter", "destination_version": "v1",
		"destination_canonical_service": "greeter", "destination_canonical_revision": "v1", "destination_cluster": "east",
		"destination_service": "greeter.demo.svc.cluster.local", "destination_service_name": "greeter", "destination_service_namespace": "demo",
		"connection_security_policy": "mutual_tls", "response_code": "20",
	}
	if n := count(t, want); n != 1 {
		_, all := gathered(t, "istio_requests_total", map[string]string{"reporter": "destination"})
		t.Fatalf("want 1 request with %v; series:\n%s", want, all)
	}

	// Without it (a caller that is not Breeze), the source is unknown and
	// nothing is removed.
	r = &router{cluster: "local-app", code: 20}
	run(in, r, request("method", "sayHello"))
	if len(r.seen.Removals) != 0 {
		t.Errorf("removals %v for a request without peer metadata", r.seen.Removals)
	}
	if n := count(t, map[string]string{"reporter": "destination", "destination_workload": "greeter-v1", "source_workload": "unknown", "source_app": "unknown"}); n != 1 {
		t.Errorf("%v requests from an unknown source, want 1", n)
	}
}

// Outbound over a transport without headers (framed Thrift), the peer
// metadata is not added: it would be dropped and counted as an ignored
// mutation, or refused under headerless_mutations: reject. THeader
// carries it.
func TestPeerMetadataOnlyWhereItTravels(t *testing.T) {
	f := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_SOURCE}, "thrift", client)
	for file, want := range map[string]bool{
		"apache_framed_binary_request.bin": false,
		"apache_header_binary_request.bin": true,
	} {
		req := thriftRequest(t, file)
		r := &router{cluster: "c", code: 0}
		run(f, r, req)
		if _, got := r.seen.Mutations.Get(PeerKey); got != want {
			t.Errorf("%s: peer metadata added %v, want %v", file, got, want)
		}
	}
	if n := count(t, map[string]string{"source_workload": "orders-v1", "request_protocol": "thrift", "response_code": "0"}); n != 2 {
		t.Errorf("%v thrift replies recorded with response_code 0, want 2", n)
	}
}

func thriftRequest(t *testing.T, file string) *codecs.Message {
	t.Helper()
	b, err := os.ReadFile("../../codecs/thrift/testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	factory, _ := codecs.Lookup("thrift")
	c, _ := factory(codecs.Options{})
	m := &codecs.Message{}
	if _, err := c.Decode(b, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Without a local identity (no sidecar environment) there is nothing to
// send.
func TestNoPeerMetadataOutsideAMesh(t *testing.T) {
	out := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_SOURCE}, "dubbo", Identity{})
	r := &router{cluster: "c", code: 20}
	run(out, r, request())
	if len(r.seen.Mutations) != 0 {
		t.Errorf("outbound mutations %v without a local identity", r.seen.Mutations)
	}
}

func TestDisablePeerMetadata(t *testing.T) {
	out := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_SOURCE, DisablePeerMetadata: true}, "dubbo", client)
	r := &router{cluster: "c", code: 20}
	run(out, r, request())
	if len(r.seen.Mutations) != 0 {
		t.Errorf("outbound mutations %v with the exchange off", r.seen.Mutations)
	}
	local := client
	local.Workload = "no-exchange"
	in := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_DESTINATION, DisablePeerMetadata: true}, "dubbo", local)
	r = &router{code: 20}
	run(in, r, request(PeerKey, encodePeer(client)))
	if len(r.seen.Removals) != 0 || count(t, map[string]string{"destination_workload": "no-exchange", "source_workload": "unknown"}) != 1 {
		t.Errorf("removals %v; the source must be unknown with the exchange off", r.seen.Removals)
	}
}

func TestLocalFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	noFile := func(string) ([]byte, error) { return nil, errors.New("no such file") }
	for _, tc := range []struct {
		name string
		env  map[string]string
		file string
		want Identity
	}{
		{"Istio's injector: env and the pod labels file", map[string]string{
			EnvWorkload: "reviews-v2", EnvNamespace: "bookinfo", EnvCluster: "Kubernetes"},
			"app=\"reviews\"\nversion=\"v2\"\nservice.istio.io/canonical-name=\"reviews\"\nservice.istio.io/canonical-revision=\"v2\"\npod-template-hash=\"7f\"\n",
			Identity{Workload: "reviews-v2", Namespace: "bookinfo", Cluster: "Kubernetes", App: "reviews", Version: "v2", CanonicalService: "reviews", CanonicalRevision: "v2"}},
		{"labels as JSON win over the file", map[string]string{
			EnvWorkload: "vm-1", EnvLabels: `{"app":"legacy","version":"v9"}`},
			"app=\"other\"\n",
			Identity{Workload: "vm-1", App: "legacy", Version: "v9", CanonicalService: "legacy", CanonicalRevision: "v9"}},
		{"canonical names from the Kubernetes recommended labels", map[string]string{EnvWorkload: "w"},
			"app.kubernetes.io/name=\"shop\"\napp.kubernetes.io/version=\"1.2\"\n",
			Identity{Workload: "w", CanonicalService: "shop", CanonicalRevision: "1.2"}},
		{"nothing but the workload", map[string]string{EnvWorkload: "w"}, "",
			Identity{Workload: "w", CanonicalService: "w", CanonicalRevision: "latest"}},
		{"nothing at all", map[string]string{}, "", Identity{}},
	} {
		read := noFile
		if tc.file != "" {
			read = func(p string) ([]byte, error) {
				if p != PodLabelsFile {
					return nil, errors.New("read " + p)
				}
				return []byte(tc.file), nil
			}
		}
		if got := LocalFromEnv(env(tc.env), read); got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

func TestPeerEncoding(t *testing.T) {
	id := Identity{Workload: "a;b", Namespace: "ns", App: "app", Version: "v1", CanonicalService: "cs", CanonicalRevision: "cr", Cluster: "c"}
	got, ok := decodePeer(encodePeer(id))
	want := id
	want.Workload = "a_b"
	if !ok || got != want {
		t.Errorf("round trip of %+v: %+v, %v; want %+v", id, got, ok, want)
	}
	// A later version's extra fields are ignored.
	if got, ok := decodePeer(encodePeer(id) + ";more;fields"); !ok || got != want {
		t.Errorf("with extra fields: %+v %v", got, ok)
	}
	for _, bad := range []string{"", "1;a;b", "2;a;b;c;d;e;f;g", strings.Repeat("x", 2000), "1;" + strings.Repeat("x;", 600)} {
		if got, ok := decodePeer(bad); ok {
			t.Errorf("decodePeer(%.40q) = %+v, want refused", bad, got)
		}
	}
}

func TestServiceLabels(t *testing.T) {
	for cluster, want := range map[string]service{
		"outbound|20880||greeter.demo.svc.cluster.local":   {"greeter.demo.svc.cluster.local", "greeter", "demo"},
		"outbound|20880|v1|greeter.demo.svc.cluster.local": {"greeter.demo.svc.cluster.local", "greeter", "demo"},
		"outbound|20880||org.example.Greeter":              {"org.example.Greeter", "org.example.Greeter", "unknown"},
		"greeter":                                          {"greeter", "greeter", "unknown"},
	} {
		if got := serviceOf(hostOfCluster(cluster), "", ""); got != want {
			t.Errorf("%s: %+v, want %+v", cluster, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  *istiostatsv1.IstioStats
		want string
	}{
		{&istiostatsv1.IstioStats{}, "reporter: REPORTER_UNSPECIFIED: want SOURCE (an outbound proxy, the client's) or DESTINATION (an inbound proxy, the server's)"},
		{&istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_SOURCE, ConnectionSecurityPolicy: "mtls"}, `connection_security_policy: "mtls": want mutual_tls, none or unknown`},
	} {
		if err := validate(tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("validate(%v) = %v, want %s", tc.cfg, err, tc.want)
		}
	}
}

// Callers name themselves: past maxPeers distinct identities, new ones
// are recorded as unknown and counted, so that no caller can grow the
// series without bound.
func TestPeersBounded(t *testing.T) {
	local := client
	local.Workload = "bounded"
	in := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_DESTINATION}, "dubbo", local)
	overflow := func() float64 {
		return family(t, "breeze_istio_stats_overflow_total").GetMetric()[0].GetCounter().GetValue() // "peers" sorts first
	}
	// Small tables of its own, so that other tests keep theirs.
	const max = 20
	oldSides, oldValues := sides, peerValues
	sides, peerValues = newTable[side, *side](max), newTable[string, *side](max)
	t.Cleanup(func() { sides, peerValues = oldSides, oldValues })
	before := overflow()
	n := max + 50
	for i := range n {
		run(in, &router{code: 20}, request(PeerKey, encodePeer(Identity{Workload: fmt.Sprint("caller-", i)})))
	}
	ms, _ := gathered(t, "istio_requests_total", map[string]string{"destination_workload": "bounded"})
	if len(ms) > max+1 || overflow()-before < 50 {
		t.Errorf("%d series for %d distinct callers, %v overflows; want at most %d series, at least 50 overflows", len(ms), n, overflow()-before, max+1)
	}
	if count(t, map[string]string{"destination_workload": "bounded"}) != float64(n) {
		t.Errorf("not every request was recorded")
	}
	// Recording the overflowing ones allocates nothing either.
	s := doneStream(in, "", nil, codecs.Metadata{{Key: PeerKey, Value: encodePeer(Identity{Workload: "one-more"})}})
	in.OnDone(s)
	if a := testing.AllocsPerRun(100, func() { in.OnDone(s) }); a != 0 {
		t.Errorf("%v allocations per request past the bound", a)
	}
	o := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_SOURCE}, "dubbo", local)
	s = doneStream(o, "c", map[string]string{LabelWorkload: "endpoint-past-the-bound"}, nil)
	o.OnDone(s)
	if a := testing.AllocsPerRun(100, func() { o.OnDone(s) }); a != 0 {
		t.Errorf("%v allocations per outbound request past the bound", a)
	}
}

// Recording allocates nothing once a label set has been seen.
func TestRecordingAllocatesNothing(t *testing.T) {
	out := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_SOURCE}, "dubbo", client)
	in := newFilter(t, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_DESTINATION, DestinationService: "greeter.demo.svc.cluster.local"}, "dubbo", client)
	labels := map[string]string{"app": "greeter", "version": "v1", LabelWorkload: "greeter-v1"}
	so := doneStream(out, "outbound|20880||greeter.demo.svc.cluster.local", labels, nil)
	si := doneStream(in, "local-app", nil, codecs.Metadata{{Key: PeerKey, Value: encodePeer(client)}})
	for name, rec := range map[string]func(){
		"outbound": func() { out.OnDone(so) },
		"inbound":  func() { in.OnDone(si) },
	} {
		rec() // the first time resolves the label set
		if a := testing.AllocsPerRun(1000, rec); a != 0 {
			t.Errorf("%s: %v allocations per request recorded", name, a)
		}
	}
}

// doneStream is a finished request as OnDone sees it.
func doneStream(f *Filter, cluster string, labels map[string]string, md codecs.Metadata) *filter.Stream {
	s := &filter.Stream{}
	s.Init(&filter.Chain{}, conn{}, &codecs.Message{Type: codecs.Request, Metadata: md, Frame: make([]byte, 80)}, time.Now())
	s.Cluster, s.Upstream, s.UpstreamLabels = cluster, "10.0.0.1:20880", labels
	s.End = s.Start.Add(3 * time.Millisecond)
	s.BytesOut = 120
	s.Outcome = filter.Outcome{Responded: true, Code: 20}
	return s
}

func BenchmarkRecord(b *testing.B) {
	out := newFilter(b, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_SOURCE}, "dubbo", client)
	in := newFilter(b, &istiostatsv1.IstioStats{Reporter: istiostatsv1.IstioStats_DESTINATION, DestinationService: "greeter.demo.svc.cluster.local"}, "dubbo", client)
	labels := map[string]string{"app": "greeter", "version": "v1", LabelWorkload: "greeter-v1", LabelNamespace: "demo", "istio-locality": "r/z"}
	so := doneStream(out, "outbound|20880||greeter.demo.svc.cluster.local", labels, nil)
	si := doneStream(in, "local-app", nil, codecs.Metadata{{Key: PeerKey, Value: encodePeer(client)}})
	b.Run("outbound", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				out.OnDone(so)
			}
		})
	})
	b.Run("inbound", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				in.OnDone(si)
			}
		})
	})
}
