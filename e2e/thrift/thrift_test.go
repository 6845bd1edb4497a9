// Package thrift holds the end-to-end tests of Breeze's Thrift codec with
// real peers: Apache Thrift Go (framed+binary, buffered+compact, THeader)
// and Kitex v0.13.1 (TTHeader, framed) servers and clients, run as
// processes (cmd/thriftpeer), talking through `breeze run`.
//
// Run from e2e/: go test -race ./thrift/
package thrift

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// peerBin is the built cmd/thriftpeer.
func peerBin(t testing.TB) string { return harness.ThriftPeerBin(t) }

// server starts a thriftpeer server and returns its port.
func server(t testing.TB, name string, args ...string) int {
	t.Helper()
	port := harness.FreePort(t)
	p := harness.Start(t, "server "+name, peerBin(t),
		append([]string{"serve", "-name", name, "-port", strconv.Itoa(port)}, args...)...)
	line, err := p.WaitReady(30 * time.Second)
	if err != nil {
		t.Fatalf("server %s: %v\n%s", name, err, p.Output())
	}
	if line != "READY "+strconv.Itoa(port) {
		t.Fatalf("server %s: READY line %q, want port %d", name, line, port)
	}
	return port
}

// startServer is server returning the process too (to kill it).
func startServer(t testing.TB, name string, args ...string) (int, *harness.Proc) {
	t.Helper()
	port := harness.FreePort(t)
	p := harness.Start(t, "server "+name, peerBin(t),
		append([]string{"serve", "-name", name, "-port", strconv.Itoa(port)}, args...)...)
	if _, err := p.WaitReady(30 * time.Second); err != nil {
		t.Fatalf("server %s: %v\n%s", name, err, p.Output())
	}
	return port, p
}

// summary is cmd/thriftpeer's SUMMARY line.
type summary struct {
	Requests  int            `json:"requests"`
	OK        int            `json:"ok"`
	AppErrors int            `json:"app_errors"`
	AppTypes  map[int32]int  `json:"app_types"`
	Errors    int            `json:"errors"`
	Results   map[string]int `json:"results"`
	Messages  []string       `json:"messages"`
	MaxMS     int64          `json:"max_ms"`
}

// mentions reports whether one of the error texts contains text.
func (s summary) mentions(text string) bool {
	return strings.Contains(strings.Join(s.Messages, "|"), text)
}

// call runs a thriftpeer client to completion and returns its summary.
func call(t testing.TB, args ...string) summary {
	t.Helper()
	p := harness.Start(t, "client", peerBin(t), append([]string{"call"}, args...)...)
	return wait(t, p)
}

func wait(t testing.TB, p *harness.Proc) summary {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(90 * time.Second):
		p.Kill()
		t.Fatalf("client %v still running after 90s:\n%s", p.Name, p.Output())
	}
	out := p.Output()
	i := strings.LastIndex(out, "SUMMARY ")
	if i < 0 {
		t.Fatalf("client printed no SUMMARY:\n%s", out)
	}
	line, _, _ := strings.Cut(out[i+len("SUMMARY "):], "\n")
	var s summary
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		t.Fatalf("SUMMARY %q: %v", line, err)
	}
	return s
}

// proxy starts `breeze run` with the runner YAML tmpl (see
// harness.RenderConfig).
func proxy(t testing.TB, tmpl string, ports map[string]int) *harness.Proxy {
	t.Helper()
	return harness.StartProxy(t, tmpl, ports)
}

func wantAll(t testing.TB, s summary, result string, n int) {
	t.Helper()
	if s.Requests != n || s.OK != n || s.Results[result] != n {
		t.Errorf("want %d calls answered %q; got %+v", n, result, s)
	}
}

const header = `
admin_address: {{.Admin}}
listeners:
- name: thrift
  address: {{.Listen}}
  proxy:
    stat_prefix: thrift_e2e
    codec: thrift
    request_timeout: 3s
`

func TestMethodRouting(t *testing.T) {
	t.Parallel()
	a := server(t, "a", "-impl", "apache", "-transport", "framed")
	b := server(t, "b", "-impl", "apache", "-transport", "framed")
	p := proxy(t, header+`
    route_config:
      routes:
      - name: whoami-to-a
        match: {metadata: [{key: method, exact: Whoami}]}
        route: {cluster: a}
      - name: slow-with-short-timeout
        match: {metadata: [{key: method, exact: Slow}]}
        route: {cluster: a}
        timeout: 0.3s
      - name: greet-to-b
        match: {metadata: [{key: method, prefix: Gre}]}
        route: {cluster: b}
    clusters:
    - name: a
      endpoints: [{address: 127.0.0.1, port: {{port "a"}}}]
    - name: b
      endpoints: [{address: 127.0.0.1, port: {{port "b"}}}]
`, map[string]int{"a": a, "b": b})

	for _, client := range [][]string{
		{"-impl", "apache", "-transport", "framed", "-protocol", "binary"},
		{"-impl", "kitex", "-transport", "framed"},
	} {
		t.Run(client[1], func(t *testing.T) {
			wantAll(t, call(t, append(client, "-addr", p.Addr, "-method", "whoami", "-n", "20")...), "a", 20)
			wantAll(t, call(t, append(client, "-addr", p.Addr, "-method", "greet", "-arg", "ann", "-n", "20")...), "hello ann from b", 20)

			// No route: a TApplicationException naming the method, and the
			// connection stays usable.
			s := call(t, append(client, "-addr", p.Addr, "-method", "getuser", "-arg", "x", "-n", "3")...)
			if s.AppErrors != 3 || s.Errors != 0 || !s.mentions("no route for GetUser") {
				t.Errorf("GetUser without a route: %+v, want 3 application exceptions saying no route", s)
			}

			// A timeout answers each call with its own exception: the late
			// answers are dropped, never taken for the next call's.
			s = call(t, append(client, "-addr", p.Addr, "-method", "slow", "-arg", "1000", "-n", "2")...)
			if s.AppErrors != 2 || s.Errors != 0 || !s.mentions("upstream timeout") {
				t.Errorf("Slow(1000) with a 0.3s route timeout: %+v, want 2 timeout exceptions", s)
			}
		})
	}
}

func TestHeaderRouting(t *testing.T) {
	t.Parallel()
	v1 := server(t, "v1", "-impl", "apache", "-transport", "header", "-echo-header", "x-breeze")
	v2 := server(t, "v2", "-impl", "apache", "-transport", "header", "-echo-header", "x-breeze")
	p := proxy(t, header+`
    route_config:
      routes:
      - name: gold
        match: {metadata: [{key: tenant, exact: gold}]}
        route: {cluster: v2}
        request_mutation: [{key: x-breeze, value: routed-gold}]
      - name: rest
        route: {cluster: v1}
    clusters:
    - name: v1
      endpoints: [{address: 127.0.0.1, port: {{port "v1"}}}]
    - name: v2
      endpoints: [{address: 127.0.0.1, port: {{port "v2"}}}]
`, map[string]int{"v1": v1, "v2": v2})
	for _, proto := range []string{"binary", "compact", "zlib"} {
		t.Run(proto, func(t *testing.T) {
			c := []string{"-impl", "apache", "-transport", "header", "-protocol", proto, "-addr", p.Addr, "-method", "greet", "-arg", "ann", "-n", "10"}
			if proto == "zlib" {
				// Compressed requests and answers: the proxy inflates them
				// to route and rewrite seqids, and sends them on inflated.
				c[5] = "binary"
				c = append(c, "-zlib")
			}
			wantAll(t, call(t, append(c, "-headers", "tenant=gold,env=prod")...), "hello ann from v2 [routed-gold]", 10)
			wantAll(t, call(t, append(c, "-headers", "tenant=silver")...), "hello ann from v1", 10)
			wantAll(t, call(t, c...), "hello ann from v1", 10)
		})
	}
}

func TestKitexVersionSubset(t *testing.T) {
	t.Parallel()
	v1 := server(t, "kitex-v1", "-impl", "kitex", "-echo-header", "x-breeze")
	v2 := server(t, "kitex-v2", "-impl", "kitex", "-echo-header", "x-breeze")
	p := proxy(t, header+`
    route_config:
      routes:
      - name: v2
        match: {metadata: [{key: RPC_TRANSIT_version, exact: v2}, {key: to_method, exact: Greet}]}
        route: {cluster: greeter, subset: {version: v2}}
        request_mutation: [{key: RPC_TRANSIT_x-breeze, value: kitex-routed}]
      - name: v2-other-methods
        match: {metadata: [{key: RPC_TRANSIT_version, exact: v2}]}
        route: {cluster: greeter, subset: {version: v2}}
      - name: slow
        match: {metadata: [{key: method, exact: Slow}]}
        route: {cluster: greeter, subset: {version: v1}}
        timeout: 0.3s
      - name: default-but-fired
        match: {metadata: [{key: method, exact: Fired, invert: true}]}
        route: {cluster: greeter, subset: {version: v1}}
    clusters:
    - name: greeter
      endpoints:
      - {address: 127.0.0.1, port: {{port "v1"}}, labels: {version: v1}}
      - {address: 127.0.0.1, port: {{port "v2"}}, labels: {version: v2}}
`, map[string]int{"v1": v1, "v2": v2})
	c := []string{"-impl", "kitex", "-transport", "ttheader", "-addr", p.Addr, "-n", "20"}
	wantAll(t, call(t, append(c, "-method", "whoami", "-headers", "version=v2")...), "kitex-v2", 20)
	wantAll(t, call(t, append(c, "-method", "whoami")...), "kitex-v1", 20)
	wantAll(t, call(t, append(c, "-method", "greet", "-arg", "kit", "-headers", "version=v2")...), "hello kit from kitex-v2 [kitex-routed]", 20)
	// Kitex over framed carries no headers: the default route.
	wantAll(t, call(t, "-impl", "kitex", "-transport", "framed", "-addr", p.Addr, "-n", "20", "-method", "whoami", "-headers", "version=v2"), "kitex-v1", 20)
	// Local replies reach a Kitex client over TTHeader as exceptions.
	s := call(t, append(c, "-method", "fired", "-n", "3")...)
	if s.AppErrors != 3 || !s.mentions("no route for Fired") {
		t.Errorf("Fired without a route: %+v, want 3 exceptions saying no route", s)
	}
	s = call(t, append(c, "-method", "slow", "-arg", "1000", "-n", "2")...)
	if s.AppErrors != 2 || !s.mentions("upstream timeout") {
		t.Errorf("Slow(1000) with a 0.3s timeout: %+v, want 2 timeout exceptions", s)
	}
	// A declared exception passes through as the application's.
	s = call(t, append(c, "-method", "getuser", "-arg", "missing", "-n", "3")...)
	if s.OK != 0 || s.Requests != 3 || s.Errors+s.AppErrors != 3 || !s.mentions("no user missing") {
		t.Errorf("GetUser(missing): %+v, want 3 NotFound exceptions", s)
	}
}

func TestWeightedSplit(t *testing.T) {
	t.Parallel()
	heavy := server(t, "heavy", "-impl", "apache", "-transport", "unframed", "-protocol", "compact")
	light := server(t, "light", "-impl", "apache", "-transport", "unframed", "-protocol", "compact")
	p := proxy(t, header+`
    route_config:
      routes:
      - name: split
        route:
          weighted_clusters:
            clusters:
            - {name: heavy, weight: 80}
            - {name: light, weight: 20}
    clusters:
    - name: heavy
      endpoints: [{address: 127.0.0.1, port: {{port "heavy"}}}]
    - name: light
      endpoints: [{address: 127.0.0.1, port: {{port "light"}}}]
`, map[string]int{"heavy": heavy, "light": light})
	const n = 1000
	s := call(t, "-impl", "apache", "-transport", "unframed", "-protocol", "compact", "-addr", p.Addr,
		"-method", "whoami", "-n", strconv.Itoa(n/2), "-conns", "2")
	if s.OK != n {
		t.Fatalf("%+v: want %d answers", s, n)
	}
	// Binomial(n, 0.2): mean 200, sd 12.6; 5 sd either way fails by chance
	// once in 1.7 million runs.
	if ok, lo, hi := harness.WithinSigmas(s.Results["light"], n, 0.2, 5); !ok {
		t.Errorf("light got %d of %d calls, want %.0f..%.0f (%+v)", s.Results["light"], n, lo, hi, s.Results)
	}
}

func TestOneConnectionBalancedAcrossThree(t *testing.T) {
	t.Parallel()
	ports := map[string]int{}
	for _, name := range []string{"s1", "s2", "s3"} {
		ports[name] = server(t, name, "-impl", "apache", "-transport", "framed")
	}
	p := proxy(t, header+`
    route_config:
      routes: [{name: all, route: {cluster: three}}]
    clusters:
    - name: three
      lb_policy: ROUND_ROBIN
      endpoints:
      - {address: 127.0.0.1, port: {{port "s1"}}}
      - {address: 127.0.0.1, port: {{port "s2"}}}
      - {address: 127.0.0.1, port: {{port "s3"}}}
`, ports)
	s := call(t, "-impl", "apache", "-transport", "framed", "-addr", p.Addr, "-method", "whoami", "-n", "300", "-conns", "1")
	if s.OK != 300 {
		t.Fatalf("%+v: want 300 answers", s)
	}
	for name := range ports {
		if got := s.Results[name]; got < 90 || got > 110 {
			t.Errorf("%s answered %d of 300 calls of one connection, want about 100 (%v)", name, got, s.Results)
		}
	}
}

func TestOneway(t *testing.T) {
	t.Parallel()
	apache := server(t, "apache", "-impl", "apache", "-transport", "framed")
	kitex := server(t, "kitex", "-impl", "kitex")
	// Apache Thrift Go writes oneway calls as CALL messages: the codec
	// learns which methods are oneway from its params.
	p := proxy(t, `
admin_address: {{.Admin}}
listeners:
- name: thrift
  address: {{.Listen}}
  proxy:
    stat_prefix: thrift_e2e
    codec: thrift
    codec_params: {oneway_methods: Fire}
    request_timeout: 3s
    route_config:
      routes:
      - {name: kitex, match: {metadata: [{key: transport, exact: ttheader}]}, route: {cluster: kitex}}
      - {name: apache, route: {cluster: apache}}
    clusters:
    - name: apache
      endpoints: [{address: 127.0.0.1, port: {{port "apache"}}}]
    - name: kitex
      endpoints: [{address: 127.0.0.1, port: {{port "kitex"}}}]
`, map[string]int{"apache": apache, "kitex": kitex})
	// n oneway calls, then a two-way call on the same connection that
	// answers how many arrived: none lost, and no reply stole its slot.
	wantAll(t, call(t, "-impl", "apache", "-transport", "framed", "-addr", p.Addr, "-method", "firethenfired", "-n", "50"), "50", 1)
	wantAll(t, call(t, "-impl", "kitex", "-transport", "ttheader", "-addr", p.Addr, "-method", "firethenfired", "-n", "50"), "50", 1)
}

func TestServerKilledUnderLoad(t *testing.T) {
	t.Parallel()
	ports := map[string]int{}
	procs := map[string]*harness.Proc{}
	for _, name := range []string{"k1", "k2", "k3"} {
		ports[name], procs[name] = startServer(t, name, "-impl", "apache", "-transport", "framed")
	}
	p := proxy(t, `
admin_address: {{.Admin}}
listeners:
- name: thrift
  address: {{.Listen}}
  proxy:
    stat_prefix: thrift_e2e
    codec: thrift
    request_timeout: 2s
    route_config:
      routes: [{name: all, route: {cluster: three}}]
    clusters:
    - name: three
      lb_policy: ROUND_ROBIN
      endpoints:
      - {address: 127.0.0.1, port: {{port "k1"}}}
      - {address: 127.0.0.1, port: {{port "k2"}}}
      - {address: 127.0.0.1, port: {{port "k3"}}}
`, ports)
	progress := make(chan struct{})
	var once sync.Once
	const conns, perConn = 6, 150
	client := harness.StartWith(t, harness.ProcOptions{OnLine: func(line string) bool {
		if strings.HasPrefix(line, "PROGRESS") {
			once.Do(func() { close(progress) })
		}
		return true
	}}, "client", peerBin(t), "call", "-impl", "apache", "-transport", "framed", "-addr", p.Addr,
		"-method", "slow", "-arg", "5", "-n", strconv.Itoa(perConn), "-conns", strconv.Itoa(conns),
		"-timeout", "5s", "-progress", "150")
	select {
	case <-progress:
	case <-client.Done():
		t.Fatalf("client ended before 150 calls succeeded:\n%s", client.Output())
	case <-time.After(60 * time.Second):
		t.Fatalf("no progress:\n%s", client.Output())
	}
	procs["k2"].KillAndWait(t)
	s := wait(t, client)
	t.Logf("after killing k2 under load: %+v", s)
	if s.Requests != conns*perConn || s.Errors != 0 {
		t.Errorf("every call must end in an answer or a Thrift exception: %+v", s)
	}
	if s.MaxMS >= 5000 {
		t.Errorf("a call took %d ms: it hung until the client's timeout", s.MaxMS)
	}
	if s.Results["k1"] == 0 || s.Results["k3"] == 0 {
		t.Errorf("the surviving servers answered %v", s.Results)
	}
}

// TestMixedFlavorsShareUpstream: clients of two transports and two
// protocols call one Apache THeader server (which detects the flavor of
// every frame) through the proxy, which shares upstream connections among
// the clients of each flavor (one pool per endpoint and flavor; the
// unframed case is TestUnframedSharesUpstreamWithFramed, see
// codecs/thrift/README.md).
func TestMixedFlavorsShareUpstream(t *testing.T) {
	t.Parallel()
	srv := server(t, "multi", "-impl", "apache", "-transport", "header")
	p := proxy(t, header+`
    route_config:
      routes: [{name: all, route: {cluster: multi}}]
    clusters:
    - name: multi
      endpoints: [{address: 127.0.0.1, port: {{port "multi"}}}]
`, map[string]int{"multi": srv})
	var procs []*harness.Proc
	for _, c := range [][]string{
		{"-transport", "framed", "-protocol", "binary"},
		{"-transport", "framed", "-protocol", "compact"},
		{"-transport", "header", "-protocol", "compact"},
		{"-transport", "header", "-protocol", "binary"},
	} {
		procs = append(procs, harness.Start(t, "client "+strings.Join(c, " "), peerBin(t),
			append([]string{"call", "-impl", "apache", "-addr", p.Addr, "-method", "greet", "-arg", "mix", "-n", "100", "-conns", "2"}, c...)...))
	}
	for _, pr := range procs {
		wantAll(t, wait(t, pr), "hello mix from multi", 200)
	}
}

// TestUnframedSharesUpstreamWithFramed checks that the proxy keeps one
// upstream pool per codec flavor (codecs.Flavored): an unframed client and a framed one calling the
// same Apache THeader server must not share an upstream connection (after
// one unframed message, Apache Go's THeaderTransport reads the rest of the
// connection as unframed, and every framed request on it then hangs until
// its timeout). See codecs/thrift/README.md, "Shared upstream connections".
func TestUnframedSharesUpstreamWithFramed(t *testing.T) {
	t.Parallel()
	srv := server(t, "multi", "-impl", "apache", "-transport", "header")
	p := proxy(t, header+`
    route_config:
      routes: [{name: all, route: {cluster: multi}}]
    clusters:
    - name: multi
      endpoints: [{address: 127.0.0.1, port: {{port "multi"}}}]
`, map[string]int{"multi": srv})
	var procs []*harness.Proc
	for _, tr := range []string{"unframed", "framed"} {
		procs = append(procs, harness.Start(t, "client "+tr, peerBin(t), "call", "-impl", "apache", "-transport", tr,
			"-addr", p.Addr, "-method", "greet", "-arg", "mix", "-n", "50"))
	}
	for _, pr := range procs {
		wantAll(t, wait(t, pr), "hello mix from multi", 50)
	}
}
