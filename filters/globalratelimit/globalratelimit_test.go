package globalratelimit

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
	globalratelimitv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/global_ratelimit/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// wait bounds every wait on a condition: far longer than anything here
// takes, so reaching it means the condition never came.
const wait = 10 * time.Second

// fakeRLS is a rate-limit service in the test process: each call is
// handed to the test on calls, and answered with what the test sends back
// on the call's answer channel (so a call is held as long as the test
// likes), or at once with code when auto is set.
type fakeRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	addr  string
	calls chan *heldCall
	auto  *rlsv3.RateLimitResponse_Code
}

type heldCall struct {
	req    *rlsv3.RateLimitRequest
	answer chan error // nil: OK; errOverLimit: OVER_LIMIT; else that error
}

var errOverLimit = fmt.Errorf("over limit")

func (f *fakeRLS) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if f.auto != nil {
		return &rlsv3.RateLimitResponse{OverallCode: *f.auto}, nil
	}
	c := &heldCall{req: req, answer: make(chan error, 1)}
	f.calls <- c
	select {
	case err := <-c.answer:
		switch err {
		case nil:
			return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
		case errOverLimit:
			return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT}, nil
		default:
			return nil, err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func startRLS(t *testing.T) *fakeRLS { return startAutoRLS(t, nil) }

// startAutoRLS starts a service that answers every call with code at once
// (nil: holds each call for the test).
func startAutoRLS(t *testing.T, code *rlsv3.RateLimitResponse_Code) *fakeRLS {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRLS{addr: l.Addr().String(), calls: make(chan *heldCall, 100), auto: code}
	srv := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(srv, f)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	awaitConnected(t, f.addr)
	return f
}

// awaitConnected waits until the process's connection to addr is ready.
// The port of a server stopped by an earlier test may come back here: its
// connection, kept for the process, would fail calls until its reconnect
// backoff ran out (up to 2s) — a service restarted on its address does the
// same to real requests, which deny_on_fail then decides.
func awaitConnected(t *testing.T, addr string) {
	t.Helper()
	svc, err := serviceAt(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for {
		st := svc.conn.GetState()
		switch st {
		case connectivity.Ready:
			return
		case connectivity.TransientFailure:
			svc.conn.ResetConnectBackoff()
		case connectivity.Idle:
			svc.conn.Connect()
		}
		if !svc.conn.WaitForStateChange(ctx, st) {
			t.Fatalf("the connection to %s is still %s after %s", addr, st, wait)
		}
	}
}

func (f *fakeRLS) next(t *testing.T) *heldCall {
	t.Helper()
	select {
	case c := <-f.calls:
		return c
	case <-time.After(wait):
		t.Fatalf("the rate-limit service got no call within %s", wait)
		return nil
	}
}

// matched is a matched route with (or without) this filter's config.
type matched struct{ cfg any }

func (r matched) RouteName() string { return "r" }
func (r matched) FilterConfig(name string) any {
	if name == Name {
		return r.cfg
	}
	return nil
}

// conn is the proxy's side of a stream, as far as a filter can tell:
// Resume walks the rest of the chain on another goroutine, as the proxy
// does; LocalReply records the reply.
type conn struct {
	mu      sync.Mutex
	replies []codecs.ErrorKind
	done    chan struct{}
}

func (c *conn) LocalReply(_ *filter.Stream, k codecs.ErrorKind, _ string, _ bool) {
	c.mu.Lock()
	c.replies = append(c.replies, k)
	c.mu.Unlock()
}
func (c *conn) Resume(s *filter.Stream)                      { go s.Continue() }
func (c *conn) Write([]byte)                                 {}
func (c *conn) Done(*filter.Stream)                          { close(c.done) }
func (c *conn) Panicked(*filter.Stream, string, any, []byte) {}

// terminal stands for the router: it sends every request it gets.
type terminal struct{ filter.Base }

func (terminal) OnRequest(s *filter.Stream) filter.Status {
	s.Finish(filter.Outcome{Sent: true})
	return filter.Stop
}

// request is one request walked through [global_ratelimit, terminal].
type request struct {
	s *filter.Stream
	c *conn
}

// send walks a request with metadata md through f on a route whose config
// is routeCfg (nil: none; noRoute: no route matched) and returns once Run
// returned: at once, or with the stream paused.
func send(f filter.Filter, routeCfg any, md ...string) *request {
	chain := &filter.Chain{Filters: []filter.Filter{f, terminal{}}, Names: []string{Name, filter.RouterName}}
	msg := &codecs.Message{Type: codecs.Request, ID: 1}
	for i := 0; i+1 < len(md); i += 2 {
		msg.Metadata = append(msg.Metadata, codecs.KV{Key: md[i], Value: md[i+1]})
	}
	r := &request{s: &filter.Stream{}, c: &conn{done: make(chan struct{})}}
	r.s.Init(chain, r.c, msg, time.Now())
	if routeCfg != noRoute {
		r.s.Route = matched{cfg: routeCfg}
	}
	r.s.Run()
	return r
}

var noRoute = &struct{}{}

// finished reports whether the request ended.
func (r *request) finished() bool {
	select {
	case <-r.c.done:
		return true
	default:
		return false
	}
}

// end waits for the request to end and says how: "passed", or the reply.
func (r *request) end(t *testing.T) string {
	t.Helper()
	select {
	case <-r.c.done:
	case <-time.After(wait):
		return fmt.Sprintf("not ended within %s", wait)
	}
	o := r.s.Outcome
	switch {
	case o.Sent:
		return "passed"
	case o.LocalReply != 0:
		return fmt.Sprintf("%s reply, flags %s", o.LocalReply, o.Flags)
	}
	return fmt.Sprintf("outcome %+v", o)
}

// newFilter builds the filter of proxy name with cfg.
func newFilter(t *testing.T, name string, cfg *globalratelimitv1.GlobalRateLimit) filter.Filter {
	t.Helper()
	factory, _ := filter.Lookup(Name)
	if err := factory.Validate(cfg); err != nil {
		t.Fatalf("config: %v", err)
	}
	f, err := factory.Build(cfg, filter.BuildContext{ProxyName: name})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func routeConfig(t *testing.T, cfg *globalratelimitv1.GlobalRateLimit) any {
	t.Helper()
	factory, _ := filter.Lookup(Name)
	if err := factory.ValidateRoute(cfg); err != nil {
		t.Fatalf("route config: %v", err)
	}
	rc, err := factory.ParseRoute(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// limit is a config for addr: domain "d", descriptors [tenant from
// metadata, kind=fixed] and [method from metadata].
func limit(addr string) *globalratelimitv1.GlobalRateLimit {
	return &globalratelimitv1.GlobalRateLimit{
		Domain:           "d",
		RateLimitService: addr,
		RequestTimeout:   durationpb.New(wait),
		Descriptors: []*globalratelimitv1.Descriptor{
			{Entries: []*globalratelimitv1.Entry{
				{Key: "tenant", ValueFrom: &globalratelimitv1.Entry_MetadataKey{MetadataKey: "tenant"}},
				{Key: "kind", ValueFrom: &globalratelimitv1.Entry_Value{Value: "fixed"}},
			}},
			{Entries: []*globalratelimitv1.Entry{
				{Key: "m", ValueFrom: &globalratelimitv1.Entry_MetadataKey{MetadataKey: "method"}},
			}},
		},
	}
}

// counter reads breeze_global_ratelimit_total of proxy by result, counted
// since it was made (the counters are the process's, and -count=N runs a
// test again in the same process).
func counter(proxy string) func(result string) float64 {
	read := func(result string) float64 {
		return testutil.ToFloat64(metrics.GlobalRateLimit.WithLabelValues(proxy, result))
	}
	base := map[string]float64{}
	for _, r := range []string{"ok", "over_limit", "error_allowed", "error_denied"} {
		base[r] = read(r)
	}
	return func(result string) float64 { return read(result) - base[result] }
}

// describe prints a call's descriptors as domain: key=value,key=value | ...
func describe(req *rlsv3.RateLimitRequest) string {
	var ds []string
	for _, d := range req.GetDescriptors() {
		var es []string
		for _, e := range d.GetEntries() {
			es = append(es, e.GetKey()+"="+e.GetValue())
		}
		ds = append(ds, strings.Join(es, ","))
	}
	return req.GetDomain() + ": " + strings.Join(ds, " | ")
}

// The request waits, paused, while the service holds its call, and goes on
// when the service answers OK; the call carries the configured
// descriptors, with the empty value for a metadata key the request lacks.
func TestPausedUntilTheServiceAnswers(t *testing.T) {
	rls := startRLS(t)
	f := newFilter(t, t.Name(), limit(rls.addr))
	count := counter(t.Name())

	r := send(f, nil, "tenant", "gold")
	call := rls.next(t)
	if got, want := describe(call.req), "d: tenant=gold,kind=fixed | m="; got != want {
		t.Errorf("call: %q, want %q", got, want)
	}
	if r.finished() {
		t.Fatalf("the request ended (%s) while the service still held its call", r.end(t))
	}
	call.answer <- nil
	if got := r.end(t); got != "passed" {
		t.Errorf("after OK: %s, want passed", got)
	}
	if n := count("ok"); n != 1 {
		t.Errorf("ok counted %v times, want 1", n)
	}
}

// OVER_LIMIT refuses the request with the protocol's overload reply, RL.
func TestOverLimitRefuses(t *testing.T) {
	rls := startRLS(t)
	f := newFilter(t, t.Name(), limit(rls.addr))
	count := counter(t.Name())
	r := send(f, nil, "tenant", "gold", "method", "Greet")
	call := rls.next(t)
	if got, want := describe(call.req), "d: tenant=gold,kind=fixed | m=Greet"; got != want {
		t.Errorf("call: %q, want %q", got, want)
	}
	call.answer <- errOverLimit
	if got, want := r.end(t), "overloaded reply, flags RL"; got != want {
		t.Errorf("after OVER_LIMIT: %s, want %s", got, want)
	}
	if n := count("over_limit"); n != 1 {
		t.Errorf("over_limit counted %v times, want 1", n)
	}
}

// A failed call (an error, the deadline, a service nobody listens on) lets
// the request through, or refuses it with deny_on_fail.
func TestFailedCalls(t *testing.T) {
	dead := func(t *testing.T) string { // a port nobody listens on
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		return l.Addr().String()
	}
	for _, tc := range []struct {
		name string
		// setup points cfg at a service whose call will fail, and
		// returns what makes it fail once the request is sent.
		setup func(t *testing.T, cfg *globalratelimitv1.GlobalRateLimit) func(t *testing.T)
	}{
		{"error", func(t *testing.T, cfg *globalratelimitv1.GlobalRateLimit) func(t *testing.T) {
			rls := startRLS(t)
			cfg.RateLimitService = rls.addr
			return func(t *testing.T) { rls.next(t).answer <- status.Error(codes.Unavailable, "redis down") }
		}},
		{"deadline", func(t *testing.T, cfg *globalratelimitv1.GlobalRateLimit) func(t *testing.T) {
			rls := startRLS(t)
			cfg.RateLimitService = rls.addr
			cfg.RequestTimeout = durationpb.New(50 * time.Millisecond)
			return func(*testing.T) {} // held until its deadline
		}},
		{"nobody listening", func(t *testing.T, cfg *globalratelimitv1.GlobalRateLimit) func(t *testing.T) {
			cfg.RateLimitService = dead(t)
			return func(*testing.T) {}
		}},
	} {
		for _, deny := range []bool{false, true} {
			name := fmt.Sprintf("%s/deny_on_fail=%v", tc.name, deny)
			t.Run(name, func(t *testing.T) {
				cfg := limit("")
				cfg.DenyOnFail = deny
				fail := tc.setup(t, cfg)
				f := newFilter(t, t.Name(), cfg)
				count := counter(t.Name())
				r := send(f, nil, "tenant", "gold")
				fail(t)
				want, result := "passed", "error_allowed"
				if deny {
					want, result = "overloaded reply, flags RL", "error_denied"
				}
				if got := r.end(t); got != want {
					t.Errorf("%s, want %s", got, want)
				}
				if n := count(result); n != 1 {
					t.Errorf("%s counted %v times, want 1", result, n)
				}
			})
		}
	}
}

// Requests no config selects go on at once, without a call: a route
// without this filter's config (when the proxy has none), a route whose
// config disables it, a request the match does not select, a request that
// matched no route. Meanwhile a selected request stays paused: they do not
// wait for it.
func TestUnselectedRequestsDoNotWait(t *testing.T) {
	rls := startRLS(t)
	cfg := limit(rls.addr)
	cfg.Match = []*breezev1.MetadataMatcher{{Key: "method", Match: &breezev1.MetadataMatcher_Prefix{Prefix: "Get"}}}
	proxyWide := newFilter(t, t.Name()+"/proxy", cfg)
	perRoute := newFilter(t, t.Name()+"/route", &globalratelimitv1.GlobalRateLimit{})

	held := send(proxyWide, nil, "method", "GetUser")
	call := rls.next(t)

	for _, tc := range []struct {
		name     string
		f        filter.Filter
		routeCfg any
		md       []string
	}{
		{"route without config, no proxy-wide config", perRoute, nil, []string{"method", "GetUser"}},
		{"route config disables it", proxyWide, routeConfig(t, &globalratelimitv1.GlobalRateLimit{Disabled: true}), []string{"method", "GetUser"}},
		{"match does not hold", proxyWide, nil, []string{"method", "PutUser"}},
		{"no route", proxyWide, noRoute, []string{"method", "GetUser"}},
	} {
		r := send(tc.f, tc.routeCfg, tc.md...)
		if !r.finished() {
			t.Errorf("%s: still waiting after Run returned", tc.name)
			continue
		}
		if got := r.end(t); got != "passed" {
			t.Errorf("%s: %s, want passed", tc.name, got)
		}
	}
	select {
	case c := <-rls.calls:
		t.Errorf("a request no config selects was checked: %s", describe(c.req))
	default:
	}
	if held.finished() {
		t.Fatalf("the selected request ended (%s) while the service held its call", held.end(t))
	}
	call.answer <- nil
	if got := held.end(t); got != "passed" {
		t.Errorf("the selected request: %s, want passed", got)
	}
}

// A route's config replaces the proxy-wide one for its requests: its
// domain, service and descriptors are used.
func TestRouteConfigReplacesProxyWide(t *testing.T) {
	proxyRLS, routeRLS := startRLS(t), startRLS(t)
	f := newFilter(t, t.Name(), limit(proxyRLS.addr))
	rc := limit(routeRLS.addr)
	rc.Domain = "route-domain"
	rc.Descriptors = rc.Descriptors[1:]
	r := send(f, routeConfig(t, rc), "method", "Greet")
	call := routeRLS.next(t)
	if got, want := describe(call.req), "route-domain: m=Greet"; got != want {
		t.Errorf("call: %q, want %q", got, want)
	}
	call.answer <- nil
	if got := r.end(t); got != "passed" {
		t.Errorf("%s, want passed", got)
	}
	select {
	case c := <-proxyRLS.calls:
		t.Errorf("the proxy-wide service was called too: %s", describe(c.req))
	default:
	}
}

// Past max_calls_in_flight calls to a service, a request is not checked
// but treated as a failed call, at once; a slot freed is used again.
func TestMaxCallsInFlight(t *testing.T) {
	rls := startRLS(t)
	cfg := limit(rls.addr)
	cfg.MaxCallsInFlight = 2
	cfg.DenyOnFail = true
	f := newFilter(t, t.Name(), cfg)
	count := counter(t.Name())

	a, b := send(f, nil), send(f, nil)
	first, second := rls.next(t), rls.next(t) // in either order
	over := send(f, nil)
	if !over.finished() {
		t.Fatal("the third request waits: it should have been refused at once")
	}
	if got, want := over.end(t), "overloaded reply, flags RL"; got != want {
		t.Errorf("third request: %s, want %s", got, want)
	}
	if n := count("error_denied"); n != 1 {
		t.Errorf("error_denied counted %v times, want 1", n)
	}
	// One answer frees one slot, once its request has gone on.
	first.answer <- nil
	var freed, waiting *request
	select {
	case <-a.c.done:
		freed, waiting = a, b
	case <-b.c.done:
		freed, waiting = b, a
	case <-time.After(wait):
		t.Fatalf("neither held request ended within %s of an answer", wait)
	}
	if got := freed.end(t); got != "passed" {
		t.Errorf("the answered request: %s, want passed", got)
	}
	again := send(f, nil)
	rls.next(t).answer <- nil
	second.answer <- nil
	for name, r := range map[string]*request{"the other held": waiting, "the fourth": again} {
		if got := r.end(t); got != "passed" {
			t.Errorf("%s request: %s, want passed", name, got)
		}
	}
}

// One connection per service address serves every config of the process,
// and outlives them: a new route table or proxy config gets the same one.
func TestOneConnectionPerAddress(t *testing.T) {
	rls := startRLS(t)
	a, err := compile(limit(rls.addr))
	if err != nil {
		t.Fatal(err)
	}
	b, err := compile(limit(rls.addr))
	if err != nil {
		t.Fatal(err)
	}
	other, err := compile(limit("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if a.svc != b.svc {
		t.Error("two configs naming one address got two connections")
	}
	if a.svc == other.svc {
		t.Error("two addresses share a connection")
	}
}

// Many requests at once through one filter, half over the limit, all
// answered from the service's goroutines: each ends once, as answered.
func TestConcurrentCalls(t *testing.T) {
	over := rlsv3.RateLimitResponse_OVER_LIMIT
	rls := startAutoRLS(t, &over)
	f := newFilter(t, t.Name(), limit(rls.addr))
	count := counter(t.Name())
	off := routeConfig(t, &globalratelimitv1.GlobalRateLimit{Disabled: true})
	const n = 200
	var wg sync.WaitGroup
	got := make([]string, n)
	for i := range n {
		wg.Go(func() {
			if i%2 == 0 {
				got[i] = send(f, nil, "tenant", "a").end(t)
				return
			}
			got[i] = send(f, off).end(t)
		})
	}
	wg.Wait()
	for i, g := range got {
		want := "overloaded reply, flags RL"
		if i%2 == 1 {
			want = "passed"
		}
		if g != want {
			t.Errorf("request %d: %s, want %s", i, g, want)
		}
	}
	if n := count("over_limit"); n != 100 {
		t.Errorf("over_limit counted %v times, want 100", n)
	}
}

func TestValidate(t *testing.T) {
	factory, _ := filter.Lookup(Name)
	for _, tc := range []struct {
		name string
		cfg  *globalratelimitv1.GlobalRateLimit
		want []string
	}{
		{"empty: routes only", &globalratelimitv1.GlobalRateLimit{}, nil},
		{"disabled", &globalratelimitv1.GlobalRateLimit{Disabled: true, Domain: "ignored"}, nil},
		{"complete", limit("rls.example:8081"), nil},
		{"nothing but a domain", &globalratelimitv1.GlobalRateLimit{Domain: "d"}, []string{
			`rate_limit_service: "": required`,
			`descriptors: []: at least one descriptor is required`,
		}},
		{"bad fields", &globalratelimitv1.GlobalRateLimit{
			RateLimitService: "rls.example",
			RequestTimeout:   durationpb.New(-time.Second),
			Match: []*breezev1.MetadataMatcher{
				{Key: "method"},
				{Match: &breezev1.MetadataMatcher_Regex{Regex: "("}},
			},
			Descriptors: []*globalratelimitv1.Descriptor{
				{},
				{Entries: []*globalratelimitv1.Entry{{ValueFrom: &globalratelimitv1.Entry_MetadataKey{}}, {Key: "k"}}},
			},
		}, []string{
			`domain: "": required`,
			`rate_limit_service: "rls.example": want host:port: address rls.example: missing port in address`,
			`request_timeout: -1s: must be positive`,
			`match[0]: key "method": needs one of exact, prefix, regex, present`,
			`match[1].key: "": required`,
			"match[1].regex: \"(\": error parsing regexp: missing closing ): `(`",
			`descriptors[0].entries: []: at least one entry is required`,
			`descriptors[1].entries[0].key: "": required`,
			`descriptors[1].entries[0].metadata_key: "": must not be empty`,
			`descriptors[1].entries[1]: key "k": needs metadata_key or value`,
		}},
		{"port out of range", &globalratelimitv1.GlobalRateLimit{Domain: "d", RateLimitService: "10.0.0.1:70000",
			Descriptors: limit("").Descriptors}, []string{`rate_limit_service: "10.0.0.1:70000": port "70000": must be 1–65535`}},
	} {
		err := factory.Validate(tc.cfg)
		var got []string
		if err != nil {
			got = strings.Split(err.Error(), "\n")
		}
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("%s: got\n  %s\nwant\n  %s", tc.name, strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
		}
	}
}

// The cost of the filter on a request no config selects, which is what
// every request pays where the filter sits in the chain unconfigured:
//
//	go test -run '^$' -bench Unselected ./filters/globalratelimit/
func BenchmarkUnselected(b *testing.B) {
	factory, _ := filter.Lookup(Name)
	f, err := factory.Build(&globalratelimitv1.GlobalRateLimit{}, filter.BuildContext{ProxyName: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	s := &filter.Stream{}
	s.Init(&filter.Chain{Filters: []filter.Filter{f}, Names: []string{Name}}, &conn{done: make(chan struct{})},
		&codecs.Message{Type: codecs.Request, Metadata: codecs.Metadata{{Key: "method", Value: "Greet"}}}, time.Now())
	s.Route = matched{}
	b.ReportAllocs()
	for b.Loop() {
		if f.OnRequest(s) != filter.Continue {
			b.Fatal("a request no config selects was not let through")
		}
	}
}
