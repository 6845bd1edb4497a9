package controlplane

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	dubbov1alpha1 "github.com/aeraki-mesh/api/dubbo/v1alpha1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/breeze-mesh/breeze/filters/authz"
	authzv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/authz/v1"
	securityv1alpha1 "github.com/breeze-mesh/breeze/protos/breeze/security/v1alpha1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// RootNamespace is the mesh's root namespace: a DubboAuthorizationPolicy
// there applies to the hosts of every namespace (Aeraki's API says so,
// as Istio's AuthorizationPolicy does).
const RootNamespace = "istio-system"

const kindDubboAuthz = "DubboAuthorizationPolicy"

// Breeze's protocol-neutral policy: Istio's AuthorizationPolicy for any
// codec, scoped by hosts (protos/breeze/security/v1alpha1). The group
// follows the breeze.io prefix of Breeze's labels, as Istio's kind lives
// in security.istio.io.
const (
	meshAuthzGroup = "security.breeze.io"
	kindMeshAuthz  = "AuthorizationPolicy"
)

// Aeraki's DubboAuthorizationPolicy is read as Aeraki publishes it, and
// all its fields are applied.
func init() {
	kinds["dubbo.aeraki.io/"+kindDubboAuthz] = func() proto.Message { return &dubbov1alpha1.DubboAuthorizationPolicy{} }
	for _, f := range []string{
		"DubboAuthorizationPolicy.rules", "DubboAuthorizationPolicy.action",
		"Rule.from", "Rule.to", "Rule.From.source", "Rule.To.operation",
		"Source.principals", "Source.not_principals", "Source.namespaces", "Source.not_namespaces",
		"Operation.interfaces", "Operation.not_interfaces", "Operation.methods", "Operation.not_methods",
	} {
		fields[protoreflect.FullName("dubbo.aeraki.io.v1alpha1."+f)] = applied
	}
	kinds[meshAuthzGroup+"/"+kindMeshAuthz] = func() proto.Message { return &securityv1alpha1.AuthorizationPolicy{} }
	// Breeze's own kind: every field is applied (its rules are the authz
	// filter's messages).
	for _, md := range []protoreflect.MessageDescriptor{
		(&securityv1alpha1.AuthorizationPolicy{}).ProtoReflect().Descriptor(),
		(&authzv1.Rule{}).ProtoReflect().Descriptor(), (&authzv1.From{}).ProtoReflect().Descriptor(),
		(&authzv1.To{}).ProtoReflect().Descriptor(), (&authzv1.Source{}).ProtoReflect().Descriptor(),
		(&authzv1.Operation{}).ProtoReflect().Descriptor(), (&authzv1.Condition{}).ProtoReflect().Descriptor(),
	} {
		for i := range md.Fields().Len() {
			fields[md.Fields().Get(i).FullName()] = applied
		}
	}
}

// authzScope is what the authorization policies (DubboAuthorizationPolicy
// and AuthorizationPolicy) of one namespace make: their translated
// policies, or, when one of them is wrong, failed (the route tables of the
// namespace's hosts then keep their last good version: serving them
// without the policy, or with a part of it, would open what the mesh
// closed).
type authzScope struct {
	policies []scopedPolicy
	failed   bool
}

// scopedPolicy is one translated policy and the hosts it applies to.
type scopedPolicy struct {
	policy *authzv1.Policy
	// hosts: the hosts an AuthorizationPolicy names, when it names any
	// (possibly none left: every one it named was ignored); otherwise
	// every host of the scope.
	hosts     []string
	someHosts bool
}

func (p scopedPolicy) appliesTo(host string) bool {
	return !p.someHosts || slices.Contains(p.hosts, host)
}

// indexAuthz translates every authorization policy, by namespace, in the
// order of their names (objs is sorted).
func (t *translator) indexAuthz(objs []Object) {
	t.authz = map[string]*authzScope{}
	for i := range objs {
		o := &objs[i]
		var p scopedPolicy
		var ok bool
		switch spec := o.Spec.(type) {
		case *dubbov1alpha1.DubboAuthorizationPolicy:
			t.unapplied(o)
			p.policy, ok = t.dubboAuthzPolicy(o, spec)
		case *securityv1alpha1.AuthorizationPolicy:
			t.unapplied(o)
			p, ok = t.meshAuthzPolicy(o, spec)
		default:
			continue
		}
		scope := t.authz[o.Namespace]
		if scope == nil {
			scope = &authzScope{}
			t.authz[o.Namespace] = scope
		}
		if !ok {
			scope.failed = true
			continue
		}
		scope.policies = append(scope.policies, p)
	}
}

// dubboAuthzPolicy translates one DubboAuthorizationPolicy, unchanged in
// meaning: Aeraki's evaluation (DENY first, then ALLOW; a policy without
// rules never matches; an empty rule always does) and its patterns
// (exact, prefix*, *suffix, * for presence) are the authz filter's. The
// interfaces become the filter's services: the request's service as the
// codec names it, Dubbo's interface.
func (t *translator) dubboAuthzPolicy(o *Object, dap *dubbov1alpha1.DubboAuthorizationPolicy) (*authzv1.Policy, bool) {
	p := &authzv1.Policy{Name: o.Namespace + "/" + o.Name}
	switch dap.GetAction() {
	case dubbov1alpha1.DubboAuthorizationPolicy_ALLOW:
		p.Action = authzv1.Policy_ALLOW
	case dubbov1alpha1.DubboAuthorizationPolicy_DENY:
		p.Action = authzv1.Policy_DENY
	default:
		t.problem(o, "spec.action", false, "%v: only ALLOW and DENY exist", dap.GetAction())
		return nil, false
	}
	for _, r := range dap.GetRules() {
		rule := &authzv1.Rule{}
		for _, f := range r.GetFrom() {
			from := &authzv1.From{}
			if s := f.GetSource(); s != nil {
				from.Source = &authzv1.Source{
					Principals: s.GetPrincipals(), NotPrincipals: s.GetNotPrincipals(),
					Namespaces: s.GetNamespaces(), NotNamespaces: s.GetNotNamespaces(),
				}
			}
			rule.From = append(rule.From, from)
		}
		for _, to := range r.GetTo() {
			out := &authzv1.To{}
			if op := to.GetOperation(); op != nil {
				out.Operation = &authzv1.Operation{
					Services: op.GetInterfaces(), NotServices: op.GetNotInterfaces(),
					Methods: op.GetMethods(), NotMethods: op.GetNotMethods(),
				}
			}
			rule.To = append(rule.To, out)
		}
		p.Rules = append(p.Rules, rule)
	}
	// The filter's own checks (patterns, empty sources and operations),
	// reported at the policy's fields as its file names them.
	return p, t.validPolicy(o, p, dubboNames)
}

// validPolicy runs the authz filter's own checks on p (patterns, empty
// sources and operations, IP blocks, conditions) and reports each error at
// the field of o's spec it comes from; names maps the filter's field names
// to the spec's where they differ.
func (t *translator) validPolicy(o *Object, p *authzv1.Policy, names *strings.Replacer) bool {
	err := authz.Validate(&authzv1.Authz{Policies: []*authzv1.Policy{p}})
	if err == nil {
		return true
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		field, msg, ok := strings.Cut(strings.TrimPrefix(line, "policies[0]."), ": ")
		if !ok {
			field, msg = "", line
		}
		t.problem(o, specPath(field, names), false, "%s", msg)
	}
	return false
}

var (
	snakeWord = regexp.MustCompile(`_([a-z])`)
	// dubboNames: Aeraki's names of the filter's fields.
	dubboNames = strings.NewReplacer("not_services", "not_interfaces", "services", "interfaces")
	sameNames  = strings.NewReplacer()
)

// specPath turns a path of the filter's config into the policy's own:
// rules[0].to[0].operation.not_services -> spec.rules[0].to[0].operation.notInterfaces
// (names: dubboNames).
func specPath(field string, names *strings.Replacer) string {
	if field == "" {
		return "spec"
	}
	return "spec." + snakeWord.ReplaceAllStringFunc(names.Replace(field), func(s string) string { return strings.ToUpper(s[1:]) })
}

// meshAuthzPolicy translates one of Breeze's AuthorizationPolicies: its
// action and rules are the filter's own, checked by the filter's
// validation; its hosts scope it. A host no ServiceEntry declares is
// warned about (as a MetaRouter's: nothing is served for it); a host of
// another namespace's ServiceEntry is an error, as Istio's validation
// refuses a targetRef into another namespace: a namespace's policy must
// not reach into another's services.
func (t *translator) meshAuthzPolicy(o *Object, ap *securityv1alpha1.AuthorizationPolicy) (scopedPolicy, bool) {
	p := &authzv1.Policy{Name: o.Namespace + "/" + o.Name, Action: ap.GetAction(), Rules: ap.GetRules()}
	ok := true
	switch p.Action {
	case authzv1.Policy_ALLOW, authzv1.Policy_DENY:
	default:
		t.problem(o, "spec.action", false, "%v: only ALLOW and DENY exist", p.Action)
		ok = false
	}
	sp := scopedPolicy{policy: p, someHosts: len(ap.GetHosts()) > 0}
	for i, h := range ap.GetHosts() {
		field := fmt.Sprintf("spec.hosts[%d]", i)
		se := t.services[h]
		switch {
		case h == "":
			t.problem(o, field, false, `"": must not be empty`)
			ok = false
		case se == nil && t.declared[h] != nil:
			t.problem(o, field, true, "%q: declared by %s, but Breeze's control plane serves the hosts of ServiceEntries only: the policy applies to nothing there", h, t.declared[h].Ref())
		case se == nil:
			t.problem(o, field, true, "%q: no ServiceEntry or Service declares this host: the policy applies to nothing there%s", h, t.didYouMean(h))
		case se.Namespace != o.Namespace && o.Namespace != RootNamespace:
			t.problem(o, field, false, "%q: a host of namespace %s (%s): a policy applies to the hosts of its own namespace (one in %s to any)", h, se.Namespace, se.Ref(), RootNamespace)
			ok = false
		default:
			sp.hosts = append(sp.hosts, h)
		}
	}
	return sp, t.validPolicy(o, p, sameNames) && ok
}

// authzRoutes puts the DubboAuthorizationPolicies that apply to host (its
// ServiceEntry's namespace's and the root namespace's) on every route of
// its table rc, as the authz filter's per-route config: the proxy's
// implicit authz filter applies them. Aeraki applies a namespace's
// policies on the inbound listeners of its Dubbo services; Breeze's
// proxies are per host and port, and a table is one host's, so its
// routes carry them. It reports false when one of those policies is
// wrong.
func (t *translator) authzRoutes(host string, rc *breezev1.RouteConfiguration) bool {
	ns := t.services[host].Namespace
	var policies []*authzv1.Policy
	for _, n := range slices.Compact([]string{RootNamespace, ns}) {
		scope := t.authz[n]
		if scope == nil {
			continue
		}
		if scope.failed {
			return false
		}
		for _, p := range scope.policies {
			if p.appliesTo(host) {
				policies = append(policies, p.policy)
			}
		}
	}
	if len(policies) == 0 {
		return true
	}
	a, err := anypb.New(&authzv1.Authz{Policies: policies})
	if err != nil {
		t.problem(t.services[host], "spec.hosts", false, "authorization policies: %v", err)
		return false
	}
	for _, r := range rc.GetRoutes() {
		if r.TypedPerFilterConfig == nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		r.TypedPerFilterConfig[authz.Name] = a
	}
	return true
}
