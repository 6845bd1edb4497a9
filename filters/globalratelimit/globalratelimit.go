// Package globalratelimit is the "global_ratelimit" L7 filter: each request
// a config selects is checked with Envoy's rate-limit service
// (github.com/envoyproxy/ratelimit, gRPC RLS v3), with descriptors built
// from its metadata, and refused with the protocol's overload reply (flag
// RL) when the service says OVER_LIMIT. The limits are the service's, so
// they hold across every proxy and process that asks it.
//
// The call never blocks a connection: OnRequest pauses the stream and a
// goroutine of the call resumes it (or answers it) when the service does.
// Later requests, on the same connection or others, go on meanwhile.
package globalratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"runtime/debug"
	"strconv"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/logs"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/route"
	globalratelimitv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/global_ratelimit/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Name is the filter's registered name.
const Name = "global_ratelimit"

// Defaults of unset fields.
const (
	// DefaultTimeout is Envoy's and Aeraki's: a rate limit check must cost
	// a request little.
	DefaultTimeout = 20 * time.Millisecond
	// DefaultMaxCallsInFlight bounds what a stalled service holds: this
	// many paused requests and call goroutines per service address.
	DefaultMaxCallsInFlight = 1024
)

func init() {
	filter.Register(&filter.Factory{
		Name:          Name,
		Config:        func() proto.Message { return &globalratelimitv1.GlobalRateLimit{} },
		RouteConfig:   func() proto.Message { return &globalratelimitv1.GlobalRateLimit{} },
		Validate:      validate,
		ValidateRoute: validate,
		Build:         build,
		// A route's config is compiled once per route table; its service
		// connection is the process's one for that address.
		ParseRoute: func(cfg proto.Message) (any, error) {
			return compile(cfg.(*globalratelimitv1.GlobalRateLimit))
		},
	})
}

// configured reports whether a config asks for anything: the empty
// message, as the filter's config, leaves the checks to routes' configs.
func configured(c *globalratelimitv1.GlobalRateLimit) bool {
	return !proto.Equal(c, &globalratelimitv1.GlobalRateLimit{})
}

// validate names the field and the value, as every Breeze config error does.
func validate(cfg proto.Message) error {
	c := cfg.(*globalratelimitv1.GlobalRateLimit)
	if !configured(c) || c.GetDisabled() {
		return nil
	}
	var errs []error
	add := func(path, value, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", path, value, fmt.Sprintf(format, args...)))
	}
	if c.GetDomain() == "" {
		add("domain", `""`, "required")
	}
	if err := checkAddress(c.GetRateLimitService()); err != nil {
		add("rate_limit_service", strconv.Quote(c.GetRateLimitService()), "%v", err)
	}
	if t := c.GetRequestTimeout(); t != nil && (t.CheckValid() != nil || t.AsDuration() <= 0) {
		add("request_timeout", t.AsDuration().String(), "must be positive")
	}
	for i, m := range c.GetMatch() {
		path := fmt.Sprintf("match[%d]", i)
		if m.GetKey() == "" {
			add(path+".key", `""`, "required")
		}
		switch v := m.GetMatch().(type) {
		case nil:
			add(path, fmt.Sprintf("key %q", m.GetKey()), "needs one of exact, prefix, regex, present")
		case *breezev1.MetadataMatcher_Regex:
			if _, err := regexp.Compile(v.Regex); err != nil {
				add(path+".regex", strconv.Quote(v.Regex), "%v", err)
			}
		}
	}
	if len(c.GetDescriptors()) == 0 {
		add("descriptors", "[]", "at least one descriptor is required")
	}
	for i, d := range c.GetDescriptors() {
		path := fmt.Sprintf("descriptors[%d]", i)
		if len(d.GetEntries()) == 0 {
			add(path+".entries", "[]", "at least one entry is required")
		}
		for j, e := range d.GetEntries() {
			p := fmt.Sprintf("%s.entries[%d]", path, j)
			if e.GetKey() == "" {
				add(p+".key", `""`, "required")
			}
			switch v := e.GetValueFrom().(type) {
			case *globalratelimitv1.Entry_MetadataKey:
				if v.MetadataKey == "" {
					add(p+".metadata_key", `""`, "must not be empty")
				}
			case nil:
				add(p, fmt.Sprintf("key %q", e.GetKey()), "needs metadata_key or value")
			}
		}
	}
	return errors.Join(errs...)
}

// checkAddress accepts host:port, the host a name or an IP, the port 1–65535.
func checkAddress(addr string) error {
	if addr == "" {
		return errors.New("required")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port: %v", err)
	}
	if host == "" {
		return errors.New("want host:port: no host")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("port %q: must be 1–65535", port)
	}
	return nil
}

// settings is a compiled config.
type settings struct {
	disabled    bool
	domain      string
	match       route.Matcher
	descriptors [][]entry
	timeout     time.Duration
	denyOnFail  bool
	maxInFlight int64
	svc         *service
	// Reply details, built once rather than per refused request.
	overLimit, failed string
}

type entry struct {
	key string
	// metadataKey, when set, names the request metadata giving the value;
	// otherwise value is fixed.
	metadataKey, value string
}

func compile(c *globalratelimitv1.GlobalRateLimit) (*settings, error) {
	if c.GetDisabled() {
		return &settings{disabled: true}, nil
	}
	match, err := route.CompileMatcher(c.GetMatch())
	if err != nil {
		return nil, fmt.Errorf("match%w", err)
	}
	svc, err := serviceAt(c.GetRateLimitService())
	if err != nil {
		return nil, fmt.Errorf("rate_limit_service: %w", err)
	}
	s := &settings{
		domain:      c.GetDomain(),
		match:       match,
		timeout:     DefaultTimeout,
		denyOnFail:  c.GetDenyOnFail(),
		maxInFlight: DefaultMaxCallsInFlight,
		svc:         svc,
		overLimit:   fmt.Sprintf("breeze: over the global rate limit (domain %q)", c.GetDomain()),
		failed:      fmt.Sprintf("breeze: global rate limit: no answer from the rate-limit service %s (deny_on_fail)", c.GetRateLimitService()),
	}
	if t := c.GetRequestTimeout(); t != nil {
		s.timeout = t.AsDuration()
	}
	if n := c.GetMaxCallsInFlight(); n > 0 {
		s.maxInFlight = int64(n)
	}
	for _, d := range c.GetDescriptors() {
		var es []entry
		for _, e := range d.GetEntries() {
			es = append(es, entry{key: e.GetKey(), metadataKey: e.GetMetadataKey(), value: e.GetValue()})
		}
		s.descriptors = append(s.descriptors, es)
	}
	return s, nil
}

// request is the call for a request with metadata md. A metadata key the
// request lacks gives the empty value, as in Aeraki: a client does not
// escape a limit by leaving the key out.
func (c *settings) request(md codecs.Metadata) *rlsv3.RateLimitRequest {
	req := &rlsv3.RateLimitRequest{Domain: c.domain, Descriptors: make([]*ratelimitv3.RateLimitDescriptor, len(c.descriptors))}
	for i, d := range c.descriptors {
		entries := make([]*ratelimitv3.RateLimitDescriptor_Entry, len(d))
		for j, e := range d {
			v := e.value
			if e.metadataKey != "" {
				v, _ = md.Get(e.metadataKey)
			}
			entries[j] = &ratelimitv3.RateLimitDescriptor_Entry{Key: e.key, Value: v}
		}
		req.Descriptors[i] = &ratelimitv3.RateLimitDescriptor{Entries: entries}
	}
	return req
}

func build(cfg proto.Message, ctx filter.BuildContext) (filter.Filter, error) {
	f := &Filter{
		ok:           metrics.GlobalRateLimit.WithLabelValues(ctx.ProxyName, "ok"),
		overLimit:    metrics.GlobalRateLimit.WithLabelValues(ctx.ProxyName, "over_limit"),
		errorAllowed: metrics.GlobalRateLimit.WithLabelValues(ctx.ProxyName, "error_allowed"),
		errorDenied:  metrics.GlobalRateLimit.WithLabelValues(ctx.ProxyName, "error_denied"),
		log:          logs.New(slog.Default().With("proxy", ctx.ProxyName, "filter", Name), logs.Options{}),
	}
	if c := cfg.(*globalratelimitv1.GlobalRateLimit); configured(c) {
		s, err := compile(c)
		if err != nil {
			return nil, err
		}
		if !s.disabled {
			f.global = s
		}
	}
	return f, nil
}

// Filter checks requests with the rate-limit service of the route's config,
// or of the proxy-wide one.
type Filter struct {
	filter.Base
	// global is the proxy-wide config, nil for none.
	global                                   *settings
	ok, overLimit, errorAllowed, errorDenied prometheus.Counter
	// log samples the lines of failed calls: a dead service fails every
	// checked request, and the counters have them all.
	log *logs.Logger
}

var _ filter.Filter = (*Filter)(nil)

// errTooManyCalls is the failure of a request not checked because its
// service has max_calls_in_flight calls in flight.
var errTooManyCalls = errors.New("too many calls in flight to the rate-limit service (max_calls_in_flight)")

// OnRequest starts the call and pauses the request, unless no config
// selects it. A request that matched no route is not checked: the router
// answers it "no route" without sending it anywhere.
func (f *Filter) OnRequest(s *filter.Stream) filter.Status {
	if s.Route == nil {
		return filter.Continue
	}
	c := f.global
	if rc, ok := s.Route.FilterConfig(Name).(*settings); ok {
		c = rc
	}
	if c == nil || c.disabled || !c.match.Matches(s.Request.Metadata) {
		return filter.Continue
	}
	if !c.svc.acquire(c.maxInFlight) {
		if f.failed(c, errTooManyCalls) {
			s.Reply(codecs.ErrOverloaded, c.failed, filter.RateLimited)
			return filter.Stop
		}
		return filter.Continue
	}
	go f.call(s, c, c.request(s.Request.Metadata))
	return filter.Pause
}

// call asks the service and resumes or answers the paused request. It runs
// on a goroutine of its own, where a panic would take Envoy down with it:
// one is recovered, logged and treated as a failed call.
//
// The call's slot (max_calls_in_flight) is given back as soon as the
// service has answered, before the request goes on: it may be answered,
// and the client's next request make its own call, before this goroutine
// returns.
func (f *Filter) call(s *filter.Stream, c *settings, req *rlsv3.RateLimitRequest) {
	held := true
	defer func() {
		v := recover()
		if held {
			c.svc.release()
		}
		if v != nil {
			f.log.Error("panic", "global rate limit: panic in a call to the rate-limit service", "service", c.svc.addr, "panic", v, "stack", string(debug.Stack()))
			finish(s, f.failed(c, fmt.Errorf("panic: %v", v)), c.failed)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	resp, err := c.svc.client.ShouldRateLimit(ctx, req)
	cancel()
	held = false
	c.svc.release()
	switch {
	case err != nil:
		finish(s, f.failed(c, err), c.failed)
	case resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT:
		f.overLimit.Inc()
		finish(s, true, c.overLimit)
	default:
		// OK, and UNKNOWN as Envoy reads it: not over the limit.
		f.ok.Inc()
		finish(s, false, "")
	}
}

// finish resumes the paused request, or refuses it with the overload reply.
func finish(s *filter.Stream, refuse bool, detail string) {
	if refuse {
		s.Reply(codecs.ErrOverloaded, detail, filter.RateLimited)
		return
	}
	s.Resume()
}

// failed counts a call that failed and reports whether deny_on_fail
// refuses its request.
func (f *Filter) failed(c *settings, err error) (refuse bool) {
	if c.denyOnFail {
		f.errorDenied.Inc()
	} else {
		f.errorAllowed.Inc()
	}
	key := "call_failed"
	if errors.Is(err, errTooManyCalls) {
		key = "too_many_calls"
	}
	f.log.Warn(key, "global rate limit: rate-limit service call failed", "service", c.svc.addr, "domain", c.domain, "deny_on_fail", c.denyOnFail, "err", err)
	return c.denyOnFail
}
