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
		Validate: func(cfg proto.Message) error { _, err := parse(cfg.(*authzv1.Authz), anyCodec); return err },
		Build:    build,
	})
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
}

func (p *policy) match(s *filter.Stream, k keys) bool {
	for i := range p.rules {
		if p.rules[i].match(s, k) {
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
		// "none", as Envoy's RBAC says when no policy matched.
		allowedNoPolicy: metrics.Authz.WithLabelValues(ctx.ProxyName, "allowed", "none"),
		deniedNoMatch:   metrics.Authz.WithLabelValues(ctx.ProxyName, "denied", "none"),
	}
	if f.key == "" {
		f.key = DefaultPrincipalKey
	}
	for _, p := range policies {
		if p.deny {
			p.hits = metrics.Authz.WithLabelValues(ctx.ProxyName, "denied", p.name)
			p.detail = fmt.Sprintf("%s: DENY policy %q matched", deniedText, p.name)
			f.deny = append(f.deny, p)
		} else {
			p.hits = metrics.Authz.WithLabelValues(ctx.ProxyName, "allowed", p.name)
			f.allow = append(f.allow, p)
		}
	}
	return f, nil
}

// Filter decides each request by its policies.
type Filter struct {
	filter.Base // OnResponse, OnDone: nothing to do
	key         string
	keys        keys
	deny, allow []*policy

	allowedNoPolicy, deniedNoMatch prometheus.Counter
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

// OnRequest applies Istio's order: any matching DENY policy denies; then,
// if there are ALLOW policies, one of them must match.
func (f *Filter) OnRequest(s *filter.Stream) filter.Status {
	for _, p := range f.deny {
		if p.match(s, f.keys) {
			p.hits.Inc()
			s.Reply(DenyKind, p.detail, filter.UnauthorizedExternalService)
			return filter.Stop
		}
	}
	if len(f.allow) == 0 {
		f.allowedNoPolicy.Inc()
		return filter.Continue
	}
	for _, p := range f.allow {
		if p.match(s, f.keys) {
			p.hits.Inc()
			return filter.Continue
		}
	}
	f.deniedNoMatch.Inc()
	s.Reply(DenyKind, deniedNoAllow, filter.UnauthorizedExternalService)
	return filter.Stop
}
