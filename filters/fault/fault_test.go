package fault

import (
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/codecs/dubbo"
	_ "github.com/breeze-mesh/breeze/codecs/thrift"
	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/route"
	faultv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/fault/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

// seeded makes the draws of a test reproducible.
func seeded(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed))
	var mu sync.Mutex
	old := randN
	randN = func(n uint32) uint32 {
		mu.Lock()
		defer mu.Unlock()
		return r.Uint32N(n)
	}
	t.Cleanup(func() { randN = old })
}

// manualTimers replaces the delay timers: the test fires them.
type manualTimers struct {
	mu     sync.Mutex
	fns    []func()
	delays []time.Duration
}

func useManualTimers(t *testing.T) *manualTimers {
	m := &manualTimers{}
	old := afterFunc
	afterFunc = func(d time.Duration, f func()) {
		m.mu.Lock()
		m.fns, m.delays = append(m.fns, f), append(m.delays, d)
		m.mu.Unlock()
	}
	t.Cleanup(func() { afterFunc = old })
	return m
}

func (m *manualTimers) fire() int {
	m.mu.Lock()
	fns := m.fns
	m.fns = nil
	m.mu.Unlock()
	for _, f := range fns {
		f()
	}
	return len(fns)
}

// conn is a client connection as the proxy implements filter.Conn.
type conn struct {
	mu       sync.Mutex
	closed   atomic.Bool
	outcomes []filter.Outcome
	replies  []codecs.ErrorKind
	done     chan struct{}
}

func newConn() *conn { return &conn{done: make(chan struct{}, 100000)} }

func (c *conn) LocalReply(_ *filter.Stream, kind codecs.ErrorKind, _ string, _ bool) {
	c.mu.Lock()
	c.replies = append(c.replies, kind)
	c.mu.Unlock()
}
func (c *conn) Write([]byte) {}
func (c *conn) Resume(s *filter.Stream) {
	go func() {
		if c.closed.Load() {
			s.Finish(filter.ClientGone)
			return
		}
		s.Continue()
	}()
}
func (c *conn) Done(s *filter.Stream) {
	c.mu.Lock()
	c.outcomes = append(c.outcomes, s.Outcome)
	c.mu.Unlock()
	c.done <- struct{}{}
}
func (c *conn) Panicked(_ *filter.Stream, where string, v any, _ []byte) { panic(fmt.Sprint(where, v)) }

// wait waits for n more requests to end.
func (c *conn) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for range n {
		select {
		case <-c.done:
		case <-deadline:
			t.Fatalf("requests still in flight after 30s (%d ended)", len(c.outcomes))
		}
	}
}

// tally counts the outcomes by flags.
func (c *conn) tally() map[filter.Flag]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[filter.Flag]int{}
	for _, o := range c.outcomes {
		m[o.Flags]++
	}
	return m
}

type upstream struct{ filter.Base }

func (upstream) OnRequest(s *filter.Stream) filter.Status {
	s.Respond(&codecs.Message{Type: codecs.Response}, echo{})
	return filter.Stop
}

type echo struct{}

func (echo) Decode([]byte, *codecs.Message) (int, error)                 { return 0, nil }
func (echo) Encode(m *codecs.Message) ([]byte, error)                    { return m.Frame, nil }
func (echo) LocalReply(*codecs.Message, codecs.ErrorKind, string) []byte { return nil }
func (echo) HeartbeatReply(*codecs.Message) []byte                       { return nil }

func parse(t testing.TB, js string) *faultv1.Fault {
	t.Helper()
	c := &faultv1.Fault{}
	if err := protojson.Unmarshal([]byte(js), c); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return c
}

var proxies atomic.Int32

// newChain builds the filter as the proxy does, for a proxy of codec.
func newChain(t testing.TB, codec, js string) (*filter.Chain, error) {
	t.Helper()
	f, _ := filter.Lookup(Name)
	var a *anypb.Any
	if js != "" {
		var err error
		if a, err = anypb.New(parse(t, js)); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := config.FilterConfig(f, a)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%s#%d", t.Name(), proxies.Add(1))
	inst, err := f.Build(msg, filter.BuildContext{ProxyName: name, Codec: codec})
	if err != nil {
		return nil, err
	}
	return &filter.Chain{Filters: []filter.Filter{inst, upstream{}}, Names: []string{Name, filter.RouterName}}, nil
}

func mustChain(t testing.TB, codec, js string) *filter.Chain {
	t.Helper()
	c, err := newChain(t, codec, js)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// send starts a request; it has ended when send returns unless delayed.
func send(c *conn, chain *filter.Chain, r filter.RouteEntry, md codecs.Metadata) *filter.Stream {
	s := &filter.Stream{}
	s.Init(chain, c, &codecs.Message{Type: codecs.Request, ID: 1, Metadata: md}, time.Now())
	if r != nil {
		s.Route = r
	}
	s.Run()
	return s
}

// within5Sigma reports whether k of n is within 5σ of the binomial mean.
func within5Sigma(k, n int, p float64) (bool, string) {
	mean := float64(n) * p
	sigma := math.Sqrt(float64(n) * p * (1 - p))
	return math.Abs(float64(k)-mean) <= 5*sigma, fmt.Sprintf("%d of %d (expected %.0f ± 5×%.1f)", k, n, mean, sigma)
}

// Delays and aborts are drawn independently for each request, in the
// configured shares: each count is within 5σ of its binomial mean, and
// so is the count of requests both delayed and aborted.
func TestPercentages(t *testing.T) {
	seeded(t, 15)
	timers := useManualTimers(t)
	chain := mustChain(t, "dubbo", `{"delay": {"fixedDelay": "0.5s", "percentage": {"value": 30}}, "abort": {"errorKind": "timeout", "percentage": {"value": 12.5}}}`)
	c := newConn()
	const n = 20000
	for range n {
		send(c, chain, nil, nil)
	}
	delayed := timers.fire()
	c.wait(t, n)
	got := c.tally()
	for _, w := range []struct {
		what  string
		count int
		p     float64
	}{
		{"delayed", got[filter.DelayInjected] + got[filter.DelayInjected|filter.FaultInjected], 0.30},
		{"aborted", got[filter.FaultInjected] + got[filter.DelayInjected|filter.FaultInjected], 0.125},
		{"both", got[filter.DelayInjected|filter.FaultInjected], 0.30 * 0.125},
		{"neither", got[0], 0.70 * 0.875},
	} {
		ok, says := within5Sigma(w.count, n, w.p)
		if !ok {
			t.Errorf("%s: %s", w.what, says)
		}
		t.Logf("%s: %s", w.what, says)
	}
	if delayed != got[filter.DelayInjected]+got[filter.DelayInjected|filter.FaultInjected] {
		t.Errorf("%d timers started, but %d requests carry DI", delayed, got[filter.DelayInjected]+got[filter.DelayInjected|filter.FaultInjected])
	}
	if d := timers.delays[0]; d != 500*time.Millisecond {
		t.Errorf("delay %v, want 500ms", d)
	}
	for _, k := range c.replies {
		if k != codecs.ErrTimeout {
			t.Fatalf("an abort replied %v, want timeout", k)
		}
	}
	if len(c.replies) != got[filter.FaultInjected]+got[filter.DelayInjected|filter.FaultInjected] {
		t.Errorf("%d replies for %d aborts", len(c.replies), got[filter.FaultInjected]+got[filter.DelayInjected|filter.FaultInjected])
	}
	var counted float64
	for _, f := range []string{"delay", "abort"} {
		counted += testutil.ToFloat64(injected.WithLabelValues(chain.Filters[0].(*Filter).proxy, "", f))
	}
	if want := len(c.replies) + delayed; counted != float64(want) {
		t.Errorf("breeze_faults_injected_total sums to %v, want %d", counted, want)
	}
}

// A delayed request is paused, not blocked: OnRequest returns at once and
// the request goes on when the timer fires, with flag DI. A client gone
// during the delay ends it (DC); the timer firing later changes nothing.
func TestDelayPauses(t *testing.T) {
	timers := useManualTimers(t)
	chain := mustChain(t, "dubbo", `{"delay": {"fixedDelay": "3600s"}}`)
	c := newConn()
	s := send(c, chain, nil, nil)
	if s.Done() {
		t.Fatalf("a delayed request ended before its timer fired: %+v", s.Outcome)
	}
	timers.fire()
	c.wait(t, 1)
	if o := c.outcomes[0]; !o.Responded || o.Flags != filter.DelayInjected {
		t.Fatalf("after the delay: %+v, want a response with flag DI", o)
	}

	gone := newConn()
	s = send(gone, chain, nil, nil)
	gone.closed.Store(true)
	if !s.Abort() {
		t.Fatal("a delayed request was not paused")
	}
	gone.wait(t, 1)
	timers.fire()
	if o := gone.outcomes; len(o) != 1 || o[0].Flags != filter.DelayInjected|filter.DownstreamConnectionTermination {
		t.Fatalf("client gone during the delay: outcomes %+v, want one with DI,DC", o)
	}
}

// Only requests whose metadata match are faulted; a route's config
// replaces the filter's, and an empty one turns faults off on its route.
func TestMatchAndRoutes(t *testing.T) {
	chain := mustChain(t, "dubbo", `{"match": [{"key": "test-fault", "exact": "yes"}], "abort": {"errorKind": "overloaded"}}`)
	c := newConn()
	send(c, chain, nil, codecs.Metadata{{Key: "test-fault", Value: "no"}})
	send(c, chain, nil, nil)
	send(c, chain, nil, codecs.Metadata{{Key: "test-fault", Value: "yes"}})
	if got := c.tally(); got[0] != 2 || got[filter.FaultInjected] != 1 || len(c.replies) != 1 || c.replies[0] != codecs.ErrOverloaded {
		t.Fatalf("outcomes %v, replies %v: want 2 untouched, 1 aborted as overloaded (the one with test-fault: yes)", got, c.replies)
	}

	rc := &breezev1.RouteConfiguration{}
	for i, js := range []string{`{"abort": {"errorKind": "bad_request"}}`, `{}`} {
		a, err := anypb.New(parse(t, js))
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprint("r", i)
		rc.Routes = append(rc.Routes, &breezev1.Route{Name: name,
			Match:                &breezev1.RouteMatch{Metadata: []*breezev1.MetadataMatcher{{Key: "route", Match: &breezev1.MetadataMatcher_Exact{Exact: name}}}},
			Route:                &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "c"}},
			TypedPerFilterConfig: map[string]*anypb.Any{Name: a}})
	}
	tb, err := route.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"r0", "r1"} {
		md := codecs.Metadata{{Key: "route", Value: r}, {Key: "test-fault", Value: "yes"}}
		c := newConn()
		send(c, chain, tb.Match(md), md)
		want := map[string]filter.Flag{"r0": filter.FaultInjected, "r1": 0}[r]
		if o := c.outcomes[0]; o.Flags != want || (r == "r0") != (o.LocalReply == codecs.ErrBadRequest) {
			t.Errorf("route %s: %+v, want flags %v (the route's config, not the filter's)", r, o, want)
		}
	}
}

// An abort by status replies with the kind the codec writes that status
// for: a Dubbo 31 is a timeout, a Thrift 7 a bad request.
func TestAbortByStatus(t *testing.T) {
	for _, c := range []struct {
		codec  string
		status uint32
		want   codecs.ErrorKind
	}{
		{"dubbo", 31, codecs.ErrTimeout},
		{"dubbo", 100, codecs.ErrOverloaded},
		{"dubbo", 80, codecs.ErrInternal},
		{"thrift", 7, codecs.ErrBadRequest},
		{"thrift", 1, codecs.ErrNoRoute},
	} {
		chain := mustChain(t, c.codec, fmt.Sprintf(`{"abort": {"status": %d}}`, c.status))
		conn := newConn()
		send(conn, chain, nil, nil)
		if len(conn.replies) != 1 || conn.replies[0] != c.want {
			t.Errorf("%s status %d: replies %v, want %v", c.codec, c.status, conn.replies, c.want)
		}
	}
	if _, err := newChain(t, "thrift", `{"abort": {"status": 31}}`); err == nil || !strings.Contains(err.Error(), "abort.status: 31: codec thrift replies with none such") {
		t.Errorf("thrift status 31: %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct{ cfg, want string }{
		{`{"delay": {"percentage": {"value": 10}}}`, "delay.fixed_delay: required"},
		{`{"delay": {"fixedDelay": "0s"}}`, "delay.fixed_delay: 0s: must be above 0"},
		{`{"delay": {"fixedDelay": "1s", "percentage": {"value": 101}}}`, "delay.percentage.value: 101: must be 0–100"},
		{`{"abort": {}}`, "abort: needs error_kind or status"},
		{`{"abort": {"errorKind": "Timeout"}}`, `abort.error_kind: "Timeout": not an error kind (no_route, no_healthy_upstream, timeout, overloaded, bad_request, internal)`},
		{`{"abort": {"status": 70}}`, "abort.status: 70: no codec replies with this status (dubbo: 31 (timeout) 40 (bad_request) 60 (no_route) 80 (internal) 100 (overloaded); thrift: 1 (no_route) 6 (internal) 7 (bad_request))"},
		{`{"abort": {"errorKind": "timeout", "percentage": {"value": -1}}}`, "abort.percentage.value: -1: must be 0–100"},
		{`{"match": [{"key": "x"}]}`, `match[0]: key "x": needs one of exact, prefix, regex, present`},
	} {
		if err := Validate(parse(t, c.cfg)); err == nil || err.Error() != c.want {
			t.Errorf("%s: error %v, want %s", c.cfg, err, c.want)
		}
	}
}

// A request no fault applies to costs no allocation.
func TestNoFaultAllocatesNothing(t *testing.T) {
	chain := mustChain(t, "dubbo", `{"match": [{"key": "test-fault", "exact": "yes"}], "abort": {"errorKind": "overloaded", "percentage": {"value": 50}}}`)
	s := &filter.Stream{}
	s.Init(chain, newConn(), &codecs.Message{Type: codecs.Request, Metadata: codecs.Metadata{{Key: "method", Value: "sayHello"}}}, time.Now())
	if n := testing.AllocsPerRun(1000, func() {
		if chain.Filters[0].OnRequest(s) != filter.Continue {
			t.Fatal("faulted")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per request", n)
	}
}
