// Package localratelimit is the "local_ratelimit" L7 filter: token buckets
// kept in the proxy process, shared by all its connections, refuse the
// requests over the rate with the protocol's own overload reply (flag RL).
// Its config is Aeraki's MetaRouter localRateLimit (a default bucket and
// conditions, first match wins), plus descriptors (a bucket per distinct
// value of some metadata keys) and scopes (which configs share buckets).
//
// Buckets live in a process-wide registry keyed by the proxy's
// stat_prefix, the scope and the bucket's settings: a new route table or
// proxy config with the same settings keeps them (they are not refilled);
// changed settings start new, full buckets. Refill is lazy, computed from
// the clock when a bucket is used: no timer per bucket.
package localratelimit

import (
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/route"
	localratelimitv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/local_ratelimit/v1"
)

// Name is the filter's registered name.
const Name = "local_ratelimit"

// MinFillInterval is the shortest fill interval, as in Aeraki's filter.
const MinFillInterval = 50 * time.Millisecond

func init() {
	filter.Register(&filter.Factory{
		Name:          Name,
		Config:        func() proto.Message { return &localratelimitv1.LocalRateLimit{} },
		RouteConfig:   func() proto.Message { return &localratelimitv1.LocalRateLimit{} },
		Validate:      Validate,
		ValidateRoute: Validate,
		Build:         build,
		ParseRoute: func(cfg proto.Message) (any, error) {
			return compile(cfg.(*localratelimitv1.LocalRateLimit))
		},
	})
}

var (
	decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_local_ratelimit_total", Help: "Requests that took a token from a local rate limit bucket (ok) or found it empty and were refused (over_limit: answered overloaded, flag RL), by proxy and scope.",
	}, []string{"proxy", "scope", "result"})
	overflows = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_local_ratelimit_overflow_total", Help: "Requests of a descriptor value that found the descriptor at max_buckets and counted into its shared overflow bucket.",
	}, []string{"proxy", "scope"})
)

func init() { metrics.Registry.MustRegister(decisions, overflows) }

// Validate checks a LocalRateLimit (the filter's or a route's); errors
// name the field path and value.
func Validate(cfg proto.Message) error {
	c := cfg.(*localratelimitv1.LocalRateLimit)
	var errs []error
	if c.GetTokenBucket() != nil {
		errs = append(errs, validateBucket("token_bucket", c.GetTokenBucket())...)
	}
	for i, cond := range c.GetConditions() {
		path := fmt.Sprintf("conditions[%d]", i)
		if _, err := route.CompileMatcher(cond.GetMatch()); err != nil {
			errs = append(errs, fmt.Errorf("%s.match%w", path, err))
		}
		if cond.GetTokenBucket() == nil {
			errs = append(errs, fmt.Errorf("%s.token_bucket: required", path))
		} else {
			errs = append(errs, validateBucket(path+".token_bucket", cond.GetTokenBucket())...)
		}
		for j, k := range cond.GetDescriptorKeys() {
			if k == "" {
				errs = append(errs, fmt.Errorf(`%s.descriptor_keys[%d]: "": must not be empty`, path, j))
			}
		}
	}
	return errors.Join(errs...)
}

func validateBucket(path string, b *localratelimitv1.TokenBucket) []error {
	var errs []error
	if b.GetMaxTokens() < 1 {
		errs = append(errs, fmt.Errorf("%s.max_tokens: %d: must be at least 1", path, b.GetMaxTokens()))
	}
	if b.TokensPerFill != nil && b.GetTokensPerFill().GetValue() < 1 {
		errs = append(errs, fmt.Errorf("%s.tokens_per_fill: 0: must be at least 1 (unset: 1)", path))
	}
	switch fi := b.GetFillInterval(); {
	case fi == nil:
		errs = append(errs, fmt.Errorf("%s.fill_interval: required", path))
	case fi.CheckValid() != nil:
		errs = append(errs, fmt.Errorf("%s.fill_interval: %w", path, fi.CheckValid()))
	case fi.AsDuration() < MinFillInterval:
		errs = append(errs, fmt.Errorf("%s.fill_interval: %v: must be at least %v", path, fi.AsDuration(), MinFillInterval))
	}
	return errs
}

// limits is a compiled LocalRateLimit.
type limits struct {
	conds []cond
	// dflt is the default bucket; nil: requests no condition matches are
	// not limited.
	dflt   *spec
	dfltID string
	scope  string
	// bound is the binding of a route's limits, made by the first request
	// (a route's config does not know its proxy before).
	bound atomic.Pointer[binding]
}

type cond struct {
	match      route.Matcher
	sp         spec
	keys       []string
	maxBuckets int
	// id is the condition's settings, as part of its registry key.
	id string
}

func specOf(b *localratelimitv1.TokenBucket) spec {
	sp := spec{max: b.GetMaxTokens(), perFill: 1, interval: int64(b.GetFillInterval().AsDuration())}
	if b.TokensPerFill != nil {
		sp.perFill = b.GetTokensPerFill().GetValue()
	}
	return sp
}

func (sp spec) String() string {
	return fmt.Sprintf("%d+%d/%s", sp.max, sp.perFill, time.Duration(sp.interval))
}

func compile(c *localratelimitv1.LocalRateLimit) (*limits, error) {
	l := &limits{scope: c.GetScope()}
	if b := c.GetTokenBucket(); b != nil {
		sp := specOf(b)
		l.dflt, l.dfltID = &sp, "default "+sp.String()
	}
	for i, pc := range c.GetConditions() {
		m, err := route.CompileMatcher(pc.GetMatch())
		if err != nil {
			return nil, fmt.Errorf("conditions[%d].match%w", i, err)
		}
		cd := cond{match: m, sp: specOf(pc.GetTokenBucket()), keys: pc.GetDescriptorKeys(), maxBuckets: int(pc.GetMaxBuckets())}
		if len(cd.keys) == 0 {
			cd.keys = nil
		}
		// The match as its message says it, deterministically: the same
		// condition in a new config has the same id.
		mb, err := proto.MarshalOptions{Deterministic: true}.Marshal(&localratelimitv1.Condition{Match: pc.GetMatch()})
		if err != nil {
			return nil, fmt.Errorf("conditions[%d].match: %w", i, err)
		}
		cd.id = fmt.Sprintf("condition %s keys=%q max=%d match=%x", cd.sp, cd.keys, cd.maxBuckets, mb)
		l.conds = append(l.conds, cd)
	}
	return l, nil
}

// empty reports whether l limits nothing.
func (l *limits) empty() bool { return l.dflt == nil && len(l.conds) == 0 }

// binding is limits bound to the groups of one proxy and scope.
type binding struct {
	proxy string
	// conds parallels limits.conds; dflt is nil without a default bucket.
	conds []*group
	dflt  *group
	scope string
	// detail is the reply's detail, built once.
	detail                 string
	ok, limited, overflows prometheus.Counter
}

// bind finds (or makes) the groups of l for a proxy; scope is l's own or,
// when it has none, the default given.
func (l *limits) bind(proxy, defaultScope string) *binding {
	scope := l.scope
	if scope == "" {
		scope = defaultScope
	}
	b := &binding{
		proxy: proxy, scope: scope,
		detail:    "local rate limit exceeded (scope " + strconv.Quote(scope) + ")",
		ok:        decisions.WithLabelValues(proxy, scope, "ok"),
		limited:   decisions.WithLabelValues(proxy, scope, "over_limit"),
		overflows: overflows.WithLabelValues(proxy, scope),
	}
	prefix := proxy + "\x00" + scope + "\x00"
	keys := make([]string, 0, len(l.conds)+1)
	for _, c := range l.conds {
		keys = append(keys, prefix+c.id)
	}
	if l.dflt != nil {
		keys = append(keys, prefix+l.dfltID)
	}
	gs := acquire(b, keys, func(i int, now int64) *group {
		if i < len(l.conds) {
			c := &l.conds[i]
			return newGroup(c.sp, c.keys, c.maxBuckets, now)
		}
		return newGroup(*l.dflt, nil, 0, now)
	})
	b.conds = gs[:len(l.conds)]
	if l.dflt != nil {
		b.dflt = gs[len(l.conds)]
	}
	return b
}

// routeBinding returns the binding of a route's limits for proxy.
func (l *limits) routeBinding(proxy, routeName string) *binding {
	if b := l.bound.Load(); b != nil && b.proxy == proxy {
		return b
	}
	// A route table is compiled per proxy, so this runs once per table;
	// were one shared, each proxy would rebind in turn, correctly.
	b := l.bind(proxy, "route:"+routeName)
	l.bound.Store(b)
	return b
}

func build(cfg proto.Message, ctx filter.BuildContext) (filter.Filter, error) {
	l, err := compile(cfg.(*localratelimitv1.LocalRateLimit))
	if err != nil {
		return nil, err
	}
	f := &Filter{
		proxy:  ctx.ProxyName,
		limits: l,
	}
	if !l.empty() {
		f.binding = l.bind(ctx.ProxyName, "filter")
	}
	return f, nil
}

// Filter refuses requests over their bucket's rate.
type Filter struct {
	filter.Base
	proxy   string
	limits  *limits
	binding *binding // nil when the filter's own config limits nothing
}

var _ filter.Filter = (*Filter)(nil)

// OnRequest takes a token for the request from the bucket its route's
// config (or else the filter's) gives it, or refuses it.
func (f *Filter) OnRequest(s *filter.Stream) filter.Status {
	l, b := f.limits, f.binding
	if rl, ok := s.RouteConfig(Name).(*limits); ok {
		if rl.empty() {
			return filter.Continue
		}
		l, b = rl, rl.routeBinding(f.proxy, s.Route.RouteName())
	}
	if b == nil {
		return filter.Continue
	}
	g := b.dflt
	for i := range l.conds {
		if l.conds[i].match.Matches(s.Request.Metadata) {
			g = b.conds[i]
			break
		}
	}
	if g == nil {
		return filter.Continue
	}
	ok, overflow := g.take(s.Request.Metadata, clock())
	if overflow {
		b.overflows.Inc()
	}
	if ok {
		b.ok.Inc()
		return filter.Continue
	}
	// The proxy logs the reply (sampled, with the detail naming the scope)
	// and counts it; the counters here say which scope refused.
	b.limited.Inc()
	s.Reply(codecs.ErrOverloaded, b.detail, filter.RateLimited)
	return filter.Stop
}
