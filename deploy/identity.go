package deploy

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	setfilterstatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/set_filter_state/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/authz"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/internal/release"
	authzv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/authz/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Envoy's network filters that carry the caller's identity, which
// Envoy's Go network filter cannot see, to or for Breeze's authz filter.
const (
	// SetFilterStateFilterName stores %DOWNSTREAM_PEER_URI_SAN% in the
	// connection's filter state, where Breeze reads it (Envoy >= 1.37).
	SetFilterStateFilterName = "envoy.filters.network.set_filter_state"
	// NetworkRBACFilterName enforces caller-only policies per connection
	// where no principal reaches Go (Envoy 1.36).
	NetworkRBACFilterName = "envoy.filters.network.rbac"
)

// firstEnvoyWithPeerIdentity is the first Envoy minor release whose
// set_filter_state has on_downstream_tls_handshake: before it, the filter
// runs before the TLS handshake, when there is no peer certificate yet.
const firstEnvoyWithPeerIdentity = 37

// peerIdentityReachesGo reports whether r's sidecars can hand the caller's
// certificate URI SAN to Breeze.
func peerIdentityReachesGo(r release.Release) bool {
	_, minor, ok := strings.Cut(r.Envoy, ".")
	n, err := strconv.Atoi(minor)
	return ok && err == nil && n >= firstEnvoyWithPeerIdentity
}

// buildKnowsHandshakeHook reports whether the Envoy API types this binary
// links (and checks with) have set_filter_state's
// on_downstream_tls_handshake: a 1.36 build cannot check a file using it.
func buildKnowsHandshakeHook() bool {
	return (&setfilterstatev3.Config{}).ProtoReflect().Descriptor().Fields().ByName("on_downstream_tls_handshake") != nil
}

// PeerPrincipalFilter is the set_filter_state filter that, placed before
// Breeze on an inbound chain, stores the caller's certificate URI SAN under
// key (an envoy.string) once the TLS handshake is done, and marks every
// connection with filter.IdentityHookKey when it opens. Plain-text
// connections (PERMISSIVE) store nothing: omit_empty_values makes the
// value empty and skip_if_empty skips it, so they have no identity rather
// than "-". It is built as JSON rather than typed: the field is Envoy >=
// 1.37's, absent from the 1.36 types a default build links.
func PeerPrincipalFilter(key string) (*structpb.Struct, error) {
	return structpb.NewStruct(map[string]any{
		"name": SetFilterStateFilterName,
		"typed_config": map[string]any{
			"@type": "type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config",
			// The mark that tells Breeze this chain hands it the
			// caller's certificate, so that a connection without a SAN
			// is a caller without identity, not an unknown one
			// (filter.Peer.IdentityKnown).
			"on_new_connection": []any{map[string]any{
				"object_key":  filter.IdentityHookKey,
				"factory_key": "envoy.string",
				"format_string": map[string]any{
					"text_format_source": map[string]any{"inline_string": "tls_handshake"},
				},
			}},
			"on_downstream_tls_handshake": []any{map[string]any{
				"object_key":    key,
				"factory_key":   "envoy.string",
				"skip_if_empty": true,
				"format_string": map[string]any{
					"text_format_source": map[string]any{"inline_string": "%DOWNSTREAM_PEER_URI_SAN%"},
					"omit_empty_values":  true,
				},
			}},
		},
	})
}

// inboundAuthz is the authz filters of the inbound proxy, unpacked, by
// their index in filters.
func inboundAuthz(filters []*breezev1.Filter) (map[int]*authzv1.Authz, error) {
	out := map[int]*authzv1.Authz{}
	for i, f := range filters {
		if f.GetName() != authz.Name {
			continue
		}
		c := &authzv1.Authz{}
		if err := config.UnpackFilterConfig(f.GetTypedConfig(), c); err != nil {
			return nil, errorf(indexPath("inbound_filters", i)+".typed_config", "%v", err)
		}
		out[i] = c
	}
	return out, nil
}

// principalKeys is the filter-state keys the inbound authz filters read
// the caller's principal from, each once.
func principalKeys(azs map[int]*authzv1.Authz, n int) []string {
	var keys []string
	seen := map[string]bool{}
	for i := range n {
		c, ok := azs[i]
		if !ok {
			continue
		}
		k := c.GetPrincipalFilterStateKey()
		if k == "" {
			k = authz.DefaultPrincipalKey
		}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// needsIdentity reports whether a rule looks at the caller's principal.
func needsIdentity(r *authzv1.Rule) bool {
	for _, f := range r.GetFrom() {
		s := f.GetSource()
		if len(s.GetPrincipals())+len(s.GetNotPrincipals())+len(s.GetNamespaces())+len(s.GetNotNamespaces()) > 0 {
			return true
		}
	}
	return false
}

// needsOperation reports whether a rule looks at the request.
func needsOperation(r *authzv1.Rule) bool { return len(r.GetTo())+len(r.GetWhen()) > 0 }

// policyNeeds says what a policy's rules look at.
func policyNeeds(p *authzv1.Policy) (identity, operation bool) {
	for _, r := range p.GetRules() {
		identity = identity || needsIdentity(r)
		operation = operation || needsOperation(r)
	}
	return identity, operation
}

// splitForEnvoy136 splits an authz config for sidecars whose Go filter sees
// no principal: the policies on the caller's identity alone go to Envoy's
// network RBAC (deny, allow: nil when there are none), the others stay in
// Breeze (rest). Whatever cannot be split without changing what is allowed
// is an error, path naming the filter: a policy on both the identity and
// the request; ALLOW policies some on identity, some on the request (Istio
// allows a request when one ALLOW policy matches; split across two filters
// both would have to).
func splitForEnvoy136(c *authzv1.Authz, path string, istio string) (deny, allow *rbacv3.RBAC, rest *authzv1.Authz, err error) {
	var errs []error
	rest = proto.CloneOf(c)
	rest.Policies = nil
	var identityAllow, otherAllow []string
	denyRules := &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_DENY, Policies: map[string]*rbacconfigv3.Policy{}}
	allowRules := &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW, Policies: map[string]*rbacconfigv3.Policy{}}
	for i, p := range c.GetPolicies() {
		ppath := indexPath(path+".policies", i)
		identity, operation := policyNeeds(p)
		switch {
		case identity && operation:
			errs = append(errs, errorf(ppath, "policy %q needs both the caller's identity and the request (service, method or metadata): Istio %s's Envoy hands no principal to Breeze, "+
				"and Envoy's network RBAC sees no request; it needs the Istio 1.31 build (istio: \"1.31\", breeze.so built with make plugin ENVOY=1.39)", p.GetName(), istio))
			continue
		case !identity:
			rest.Policies = append(rest.Policies, p)
			if p.GetAction() == authzv1.Policy_ALLOW {
				otherAllow = append(otherAllow, strconv.Quote(p.GetName()))
			}
			continue
		}
		rp, perr := rbacPolicy(p, ppath)
		if perr != nil {
			errs = append(errs, perr)
			continue
		}
		name := p.GetName()
		if name == "" {
			name = "policy-" + strconv.Itoa(i)
		}
		if p.GetAction() == authzv1.Policy_DENY {
			denyRules.Policies[name] = rp
		} else {
			allowRules.Policies[name] = rp
			identityAllow = append(identityAllow, strconv.Quote(p.GetName()))
		}
	}
	if len(identityAllow) > 0 && len(otherAllow) > 0 {
		errs = append(errs, errorf(path+".policies", "ALLOW policies %s are on the caller's identity alone, %s not: a request is allowed when one ALLOW policy matches, "+
			"which Istio %s cannot check once the identity ones go to Envoy's network RBAC (no principal reaches Breeze); it needs the Istio 1.31 build, or DENY policies instead",
			strings.Join(identityAllow, ", "), strings.Join(otherAllow, ", "), istio))
	}
	if len(errs) > 0 {
		return nil, nil, nil, errors.Join(errs...)
	}
	if len(denyRules.Policies) > 0 {
		deny = &rbacv3.RBAC{StatPrefix: "breeze_authz_deny.", Rules: denyRules}
	}
	if len(allowRules.Policies) > 0 {
		allow = &rbacv3.RBAC{StatPrefix: "breeze_authz_allow.", Rules: allowRules}
	}
	return deny, allow, rest, nil
}

// rbacPolicy is a caller-only policy as an Envoy RBAC policy: any
// permission, and a principal per rule (one of them must match).
func rbacPolicy(p *authzv1.Policy, path string) (*rbacconfigv3.Policy, error) {
	out := &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}}}
	var errs []error
	for i, r := range p.GetRules() {
		var froms []*rbacconfigv3.Principal
		for j, f := range r.GetFrom() {
			pr, err := sourcePrincipal(f.GetSource(), indexPath(joinPath(indexPath(path+".rules", i), "from"), j)+".source")
			if err != nil {
				errs = append(errs, err)
				continue
			}
			froms = append(froms, pr)
		}
		out.Principals = append(out.Principals, orIDs(froms))
	}
	return out, errors.Join(errs...)
}

// sourcePrincipal is an authz Source as an Envoy RBAC principal: every
// field set must match. Principals are matched on the peer certificate's
// URI SAN, as Istio renders them: "spiffe://" + principal.
func sourcePrincipal(s *authzv1.Source, path string) (*rbacconfigv3.Principal, error) {
	var and []*rbacconfigv3.Principal
	var errs []error
	list := func(values []string, field string, not bool, one func(string) (*rbacconfigv3.Principal, error)) {
		if len(values) == 0 {
			return
		}
		var ids []*rbacconfigv3.Principal
		for k, v := range values {
			id, err := one(v)
			if err != nil {
				errs = append(errs, errorf(indexPath(joinPath(path, field), k), "%q: %v", v, err))
				continue
			}
			ids = append(ids, id)
		}
		id := orIDs(ids)
		if not {
			id = &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_NotId{NotId: id}}
		}
		and = append(and, id)
	}
	list(s.GetPrincipals(), "principals", false, principalID)
	list(s.GetNotPrincipals(), "not_principals", true, principalID)
	list(s.GetNamespaces(), "namespaces", false, namespaceID)
	list(s.GetNotNamespaces(), "not_namespaces", true, namespaceID)
	list(s.GetIpBlocks(), "ip_blocks", false, ipBlockID)
	list(s.GetNotIpBlocks(), "not_ip_blocks", true, ipBlockID)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	switch len(and) {
	case 0:
		return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}, nil
	case 1:
		return and[0], nil
	}
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_AndIds{AndIds: &rbacconfigv3.Principal_Set{Ids: and}}}, nil
}

func orIDs(ids []*rbacconfigv3.Principal) *rbacconfigv3.Principal {
	switch len(ids) {
	case 0:
		return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
	case 1:
		return ids[0]
	}
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_OrIds{OrIds: &rbacconfigv3.Principal_Set{Ids: ids}}}
}

func authenticated(m *matcherv3.StringMatcher) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{
		Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: m},
	}}
}

func regexMatcher(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

// principalID matches a principal pattern (exact, "abc*", "*abc", "*") on
// the URI SAN.
func principalID(v string) (*rbacconfigv3.Principal, error) {
	switch {
	case v == "*":
		// Presence: any URI SAN at all, as the authz filter's "has an identity".
		return authenticated(regexMatcher(".+")), nil
	case strings.HasSuffix(v, "*"):
		return authenticated(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + strings.TrimSuffix(v, "*")}}), nil
	case strings.HasPrefix(v, "*"):
		return authenticated(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: strings.TrimPrefix(v, "*")}}), nil
	}
	return authenticated(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://" + v}}), nil
}

// namespaceID matches a namespace pattern on the <ns> of
// spiffe://<td>/ns/<ns>/sa/<sa> (Envoy's safe_regex matches the whole
// value).
func namespaceID(v string) (*rbacconfigv3.Principal, error) {
	var ns string
	switch {
	case v == "*":
		ns = `[^/]+`
	case strings.HasSuffix(v, "*"):
		ns = regexp.QuoteMeta(strings.TrimSuffix(v, "*")) + `[^/]*`
	case strings.HasPrefix(v, "*"):
		ns = `[^/]*` + regexp.QuoteMeta(strings.TrimPrefix(v, "*"))
	default:
		ns = regexp.QuoteMeta(v)
	}
	return authenticated(regexMatcher(`spiffe://[^/]+/ns/` + ns + `/sa/[^/]+`)), nil
}

// ipBlockID matches the connection's remote address, the one the authz
// filter reads.
func ipBlockID(v string) (*rbacconfigv3.Principal, error) {
	pfx, err := netip.ParsePrefix(v)
	if err != nil {
		a, aerr := netip.ParseAddr(v)
		if aerr != nil {
			return nil, errors.New("want an address or a CIDR block")
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{
		AddressPrefix: pfx.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(pfx.Bits())),
	}}}, nil
}

// rbacFilter is the network filter of an RBAC config, as a patch value.
func rbacFilter(r *rbacv3.RBAC) (*structpb.Struct, error) {
	a, err := anypb.New(r)
	if err != nil {
		return nil, err
	}
	return toStruct(&listenerv3.Filter{Name: NetworkRBACFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}})
}

// inboundIdentity is what the inbound chain needs in front of Breeze for
// the authz filters of filters, on rel's sidecars: set_filter_state where
// the principal reaches Go (always: any later filter may read it), network
// RBAC filters for caller-only policies where it does not, and the filters
// with those policies taken out. An error when a policy cannot be enforced
// as written.
func inboundIdentity(rel release.Release, filters []*breezev1.Filter) (before []*structpb.Struct, out []*breezev1.Filter, err error) {
	azs, err := inboundAuthz(filters)
	if err != nil {
		return nil, nil, err
	}
	if peerIdentityReachesGo(rel) {
		if !buildKnowsHandshakeHook() {
			return nil, nil, fmt.Errorf("inbound: Istio %s sidecars get the caller's identity from set_filter_state's on_downstream_tls_handshake (Envoy >= 1.%d), "+
				"which this breeze, built with Envoy %s's API types, cannot check: render them with a breeze built for Istio %s (make build ENVOY=%s)",
				rel.Istio, firstEnvoyWithPeerIdentity, builtRelease().Envoy, rel.Istio, rel.Envoy)
		}
		keys := principalKeys(azs, len(filters))
		if len(keys) == 0 {
			keys = []string{authz.DefaultPrincipalKey}
		}
		for _, k := range keys {
			st, err := PeerPrincipalFilter(k)
			if err != nil {
				return nil, nil, err
			}
			before = append(before, st)
		}
		return before, filters, nil
	}
	out = make([]*breezev1.Filter, len(filters))
	copy(out, filters)
	var denies, allows []*structpb.Struct
	var errs []error
	for i := range filters {
		c, ok := azs[i]
		if !ok {
			continue
		}
		path := indexPath("inbound_filters", i) + ".typed_config"
		deny, allow, rest, err := splitForEnvoy136(c, path, rel.Istio)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range []struct {
			rbac *rbacv3.RBAC
			to   *[]*structpb.Struct
		}{{deny, &denies}, {allow, &allows}} {
			if r.rbac == nil {
				continue
			}
			r.rbac.StatPrefix += strconv.Itoa(i) + "."
			st, err := rbacFilter(r.rbac)
			if err != nil {
				return nil, nil, err
			}
			*r.to = append(*r.to, st)
		}
		a, err := anypb.New(rest)
		if err != nil {
			return nil, nil, err
		}
		out[i] = &breezev1.Filter{Name: filters[i].GetName(), TypedConfig: a}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	// DENY before ALLOW, as Istio evaluates them.
	return append(denies, allows...), out, nil
}

// checkIdentityReach reports authz policies on the caller's identity in an
// inbound Breeze pinned (proxyVersion pv) to sidecars whose Go filter gets
// no principal: there every caller is without identity, so such a policy
// would silently never (or, negated, always) match.
func checkIdentityReach(b breezeFilter, pv string, f *Findings) {
	var blind []string
	for _, r := range release.All {
		if pv != "" && r.ProxyVersionMatches(pv) && !peerIdentityReachesGo(r) {
			blind = append(blind, r.String())
		}
	}
	if len(blind) == 0 {
		return
	}
	for i, flt := range b.proxy.GetFilters() {
		if flt.GetName() != authz.Name {
			continue
		}
		c := &authzv1.Authz{}
		if config.UnpackFilterConfig(flt.GetTypedConfig(), c) != nil {
			continue // the Breeze config checks report it
		}
		for j, p := range c.GetPolicies() {
			if identity, _ := policyNeeds(p); identity {
				f.errorf(joinPath(b.configPath, fmt.Sprintf("plugin_config.value.filters[%d].typed_config.policies[%d]", i, j)),
					"policy %q looks at the caller's principal or namespace, which the Go filter of %s never gets: there it would judge every caller as without identity. "+
						"Put caller-only policies in an envoy.filters.network.rbac before Breeze (breeze render envoyfilter does, from inbound_filters), or use the Istio 1.31 build",
					p.GetName(), strings.Join(blind, ", "))
			}
		}
	}
}
