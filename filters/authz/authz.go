// Package authz is the "authz" L7 filter: request-level authorization
// with the semantics of Istio's AuthorizationPolicy, on the caller's mTLS
// identity and address (filter.Peer: what the connection's handshake
// established, never what a request says) and on the request's service,
// method and metadata, for any codec. See README.md for the policy format
// and the reply a denied request gets.
package authz

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
	authzv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/authz/v1"
)

// Name is the filter's registered name.
const Name = "authz"

// DefaultPrincipalKey is the filter-state key the caller's URI SAN is read
// from when the config names none: where the set_filter_state filter that
// the control plane puts before Breeze stores %DOWNSTREAM_PEER_URI_SAN%.
const DefaultPrincipalKey = "io.istio.peer_principal"

// DenyKind is the error reply a denied request gets: Dubbo status 40
// BAD_REQUEST, Thrift TApplicationException PROTOCOL_ERROR (7) (the
// codecs' mapping of ErrBadRequest). Neither protocol has a "forbidden"
// status; the refusal is the caller's doing, and retrying it elsewhere
// gets the same answer, so a client error rather than the server error
// (Dubbo 80, Thrift INTERNAL_ERROR) a retrying client would take for a
// broken provider. README.md says more.
const DenyKind = codecs.ErrBadRequest

// deniedText starts the detail of every denial: Envoy's RBAC filters'
// wording, which operators grep for.
const deniedText = "RBAC: access denied"

func init() {
	filter.Register(&filter.Factory{
		Name:     Name,
		Config:   func() proto.Message { return &authzv1.Authz{} },
		Validate: Validate,
		Build:    build,
		// A route's config (what the control plane makes of the mesh's
		// policies for the route's host) replaces the filter's policies
		// for the route's requests; the principal's filter-state key
		// stays the filter's (the identity is read once per connection).
		RouteConfig:   func() proto.Message { return &authzv1.Authz{} },
		ValidateRoute: Validate,
		ParseRoute:    parseRoute,
	})
}

// Validate checks an Authz config (the filter's or a route's); errors name
// the field path and value.
func Validate(cfg proto.Message) error { _, err := parse(cfg.(*authzv1.Authz), anyCodec); return err }

// parseRoute builds a route's policy set. The proxy's codec is unknown
// here: the rules are parsed as if it named services and methods, and the
// set records whether it needs them, so that a proxy whose codec does not
// denies rather than evaluating rules it cannot (which would let a DENY
// on a method through).
func parseRoute(cfg proto.Message) (any, error) {
	c := cfg.(*authzv1.Authz)
	ps, err := parse(c, anyCodec)
	if err != nil {
		return nil, err
	}
	set := newPolicySet(ps)
	for _, p := range c.GetPolicies() {
		for _, r := range p.GetRules() {
			for _, to := range r.GetTo() {
				op := to.GetOperation()
				set.needService = set.needService || len(op.GetServices())+len(op.GetNotServices()) > 0
				set.needMethod = set.needMethod || len(op.GetMethods())+len(op.GetNotMethods()) > 0
			}
		}
	}
	return set, nil
}

// policySet is the policies one request is decided by: the filter's own,
// or its route's.
type policySet struct {
	deny, allow []*policy
	// needService, needMethod: a route's rules name services or methods
	// (the filter's own are refused at build when its codec cannot).
	needService, needMethod bool
}

func newPolicySet(ps []*policy) *policySet {
	set := &policySet{}
	for _, p := range ps {
		if p.deny {
			p.detail = fmt.Sprintf("%s: DENY policy %q matched", deniedText, p.name)
			set.deny = append(set.deny, p)
		} else {
			set.allow = append(set.allow, p)
		}
	}
	return set
}

// anyCodec: validating without the proxy's codec, assume it names both.
var anyCodec = keys{service: "-", method: "-"}

type policy struct {
	name  string
	deny  bool
	rules []rule
	// hits counts the requests this policy decided; detail is the
	// denial's text: both made once, not per request.
	hits   prometheus.Counter
	detail string
	// routeHits: for a route's policy (parsed without knowing the
	// proxy), its counter in the last proxy that counted it.
	routeHits atomic.Pointer[proxyCounter]
}

type proxyCounter struct {
	proxy string
	c     prometheus.Counter
}

func (p *policy) match(s *filter.Stream, k keys) bool {
	for i := range p.rules {
		if p.rules[i].match(s, k, p.deny) {
			return true
		}
	}
	return false
}

// parse builds the policies, naming the offending field on error.
func parse(c *authzv1.Authz, k keys) ([]*policy, error) {
	var errs []error
	seen := map[string]bool{}
	var out []*policy
	for i, pp := range c.GetPolicies() {
		at := fmt.Sprintf("policies[%d]", i)
		switch {
		case pp.GetName() == "":
			errs = append(errs, fmt.Errorf(`%s.name: "": must not be empty`, at))
		case seen[pp.GetName()]:
			errs = append(errs, fmt.Errorf("%s.name: %q: used twice", at, pp.GetName()))
		}
		seen[pp.GetName()] = true
		a := pp.GetAction()
		if a != authzv1.Policy_ALLOW && a != authzv1.Policy_DENY {
			errs = append(errs, fmt.Errorf("%s.action: %v: only ALLOW and DENY are supported", at, a))
		}
		p := &policy{name: pp.GetName(), deny: a == authzv1.Policy_DENY}
		for j, pr := range pp.GetRules() {
			r, err := parseRule(pr, k)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.rules[%d].%w", at, j, err))
				continue
			}
			p.rules = append(p.rules, r)
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

func build(cfg proto.Message, ctx filter.BuildContext) (filter.Filter, error) {
	c := cfg.(*authzv1.Authz)
	var k keys
	if d, ok := codecs.Instance(ctx.Codec).(codecs.Describer); ok {
		k.service, k.method = d.RequestKeys()
	}
	policies, err := parse(c, k)
	if err != nil {
		return nil, err
	}
	f := &Filter{
		key:  c.GetPrincipalFilterStateKey(),
		keys: k,
		own:  newPolicySet(policies),
		// "none", as Envoy's RBAC says when no policy matched.
		allowedNoPolicy: metrics.Authz.WithLabelValues(ctx.ProxyName, "allowed", "none"),
		deniedNoMatch:   metrics.Authz.WithLabelValues(ctx.ProxyName, "denied", "none"),
		deniedNoKeys:    metrics.Authz.WithLabelValues(ctx.ProxyName, "denied", "codec"),
		proxy:           ctx.ProxyName,
	}
	if f.key == "" {
		f.key = DefaultPrincipalKey
	}
	for _, p := range policies {
		p.hits = f.counter(p)
	}
	return f, nil
}

// counter is the breeze_authz_total counter of p's decisions in this
// proxy. A route's policies are parsed without knowing the proxy: their
// counter is looked up on first use and kept on the policy (so it goes
// with its route table), and a request costs a string comparison, no
// allocation. A table shared by several proxies would look it up again
// whenever the proxy changes: slower, still right.
func (f *Filter) counter(p *policy) prometheus.Counter {
	if p.hits != nil {
		return p.hits
	}
	if pc := p.routeHits.Load(); pc != nil && pc.proxy == f.proxy {
		return pc.c
	}
	result := "allowed"
	if p.deny {
		result = "denied"
	}
	c := metrics.Authz.WithLabelValues(f.proxy, result, p.name)
	p.routeHits.Store(&proxyCounter{proxy: f.proxy, c: c})
	return c
}

// Filter decides each request by its policies.
type Filter struct {
	filter.Base // OnResponse, OnDone: nothing to do
	key         string
	keys        keys
	own         *policySet
	proxy       string

	allowedNoPolicy, deniedNoMatch, deniedNoKeys prometheus.Counter
}

var (
	_ filter.Filter     = (*Filter)(nil)
	_ filter.PeerReader = (*Filter)(nil)
)

// PeerPrincipalKey implements filter.PeerReader: the proxy reads the
// caller's identity from the connection's filter state under this key.
func (f *Filter) PeerPrincipalKey() string { return f.key }

// deniedNoAllow is the detail of a request no ALLOW policy matched.
const deniedNoAllow = deniedText + ": no ALLOW policy matched"

// deniedNoKeysText is the detail of a request whose route's policies name
// services or methods the proxy's codec does not.
const deniedNoKeysText = deniedText + ": the route's policies match services or methods, which this proxy's codec does not name"

// OnRequest applies Istio's order: any matching DENY policy denies; then,
// if there are ALLOW policies, one of them must match. The route's
// policies, when it has some, replace the filter's.
func (f *Filter) OnRequest(s *filter.Stream) filter.Status {
	set := f.own
	if rs, ok := s.RouteConfig(Name).(*policySet); ok {
		set = rs
		if (rs.needService && f.keys.service == "") || (rs.needMethod && f.keys.method == "") {
			f.deniedNoKeys.Inc()
			s.Reply(DenyKind, deniedNoKeysText, filter.UnauthorizedExternalService)
			return filter.Stop
		}
	}
	for _, p := range set.deny {
		if p.match(s, f.keys) {
			f.counter(p).Inc()
			s.Reply(DenyKind, p.detail, filter.UnauthorizedExternalService)
			return filter.Stop
		}
	}
	if len(set.allow) == 0 {
		f.allowedNoPolicy.Inc()
		return filter.Continue
	}
	for _, p := range set.allow {
		if p.match(s, f.keys) {
			f.counter(p).Inc()
			return filter.Continue
		}
	}
	f.deniedNoMatch.Inc()
	s.Reply(DenyKind, deniedNoAllow, filter.UnauthorizedExternalService)
	return filter.Stop
}
