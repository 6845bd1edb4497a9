package localratelimit

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/route"
	localratelimitv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/local_ratelimit/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// fakeClock replaces the package's clock for a test: time moves only when
// the test says.
type fakeClock struct{ ns atomic.Int64 }

func useClock(t testing.TB) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(int64(1000 * time.Hour)) // any origin: buckets count from their creation
	old := clock
	clock = c.ns.Load
	t.Cleanup(func() { clock = old })
	return c
}

func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// conn is a client connection as the proxy implements filter.Conn, which
// records how its requests ended.
type conn struct {
	mu       sync.Mutex
	outcomes []filter.Outcome
}

func (c *conn) LocalReply(*filter.Stream, codecs.ErrorKind, string, bool) {}
func (c *conn) Write([]byte)                                              {}
func (c *conn) Resume(s *filter.Stream)                                   { go s.Continue() }
func (c *conn) Done(s *filter.Stream) {
	c.mu.Lock()
	c.outcomes = append(c.outcomes, s.Outcome)
	c.mu.Unlock()
}
func (c *conn) Panicked(_ *filter.Stream, where string, v any, _ []byte) {
	panic(where) // surfaces in the test
}

// allowed counts the requests that reached the upstream, and checks that
// every other one was refused as a rate limit refuses.
func (c *conn) allowed(t testing.TB) int {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, o := range c.outcomes {
		switch {
		case o.Responded:
			n++
		case o.LocalReply != codecs.ErrOverloaded || o.Flags != filter.RateLimited:
			t.Fatalf("a request ended with %+v, want a response or an overloaded reply with flag RL", o)
		}
	}
	return n
}

// upstream is the terminal filter: every request it gets is answered.
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

// parse reads a LocalRateLimit from JSON, as a config file would give it.
func parse(t testing.TB, js string) *localratelimitv1.LocalRateLimit {
	t.Helper()
	c := &localratelimitv1.LocalRateLimit{}
	if err := protojson.Unmarshal([]byte(js), c); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return c
}

// newChain builds the filter for proxy from a JSON config, as the proxy
// does (unpack, validate, build), followed by the upstream.
func newChain(t testing.TB, proxy, js string) *filter.Chain {
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
		t.Fatal(err)
	}
	inst, err := f.Build(msg, filter.BuildContext{ProxyName: proxy, Codec: "dubbo"})
	if err != nil {
		t.Fatal(err)
	}
	return &filter.Chain{Filters: []filter.Filter{inst, upstream{}}, Names: []string{Name, filter.RouterName}}
}

// table compiles a route table whose routes carry the given per-route
// configs (JSON; "" for none), named r0, r1...; each route matches its
// "route" metadata value.
func table(t testing.TB, configs ...string) *route.Table {
	t.Helper()
	rc := &breezev1.RouteConfiguration{Name: "table"}
	for i, js := range configs {
		name := "r" + string(rune('0'+i))
		r := &breezev1.Route{
			Name:  name,
			Match: &breezev1.RouteMatch{Metadata: []*breezev1.MetadataMatcher{{Key: "route", Match: &breezev1.MetadataMatcher_Exact{Exact: name}}}},
			Route: &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "c"}},
		}
		if js != "" {
			a, err := anypb.New(parse(t, js))
			if err != nil {
				t.Fatal(err)
			}
			r.TypedPerFilterConfig = map[string]*anypb.Any{Name: a}
		}
		rc.Routes = append(rc.Routes, r)
	}
	tb, err := route.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// send walks one request with metadata md through chain on c, matched
// against routes when given; it has ended when send returns (nothing in
// the chain pauses).
func send(c *conn, chain *filter.Chain, routes *route.Table, md codecs.Metadata) {
	s := &filter.Stream{}
	s.Init(chain, c, &codecs.Message{Type: codecs.Request, ID: 1, Metadata: md}, time.Now())
	if r := routes.Match(md); r != nil {
		s.Route = r
	}
	s.Run()
}

// md builds metadata from key, value pairs.
func md(kv ...string) codecs.Metadata {
	var m codecs.Metadata
	for i := 0; i+1 < len(kv); i += 2 {
		m = append(m, codecs.KV{Key: kv[i], Value: kv[i+1]})
	}
	return m
}

func TestMain(m *testing.M) {
	// Refused requests are logged (sampled); the tests refuse thousands.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

var runs atomic.Int32

// proxyName is a stat_prefix of the test's own: buckets live in the
// process-wide registry, and -count=N runs a test N times in one process.
func proxyName(t testing.TB) string {
	return fmt.Sprintf("%s#%d", t.Name(), runs.Add(1))
}
