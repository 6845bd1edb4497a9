package controlplane

import (
	"regexp"
	"slices"
	"strings"

	dubbov1alpha1 "github.com/aeraki-mesh/api/dubbo/v1alpha1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/breeze-mesh/breeze/filters/authz"
	authzv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/authz/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// RootNamespace is the mesh's root namespace: a DubboAuthorizationPolicy
// there applies to the hosts of every namespace (Aeraki's API says so,
// as Istio's AuthorizationPolicy does).
const RootNamespace = "istio-system"

const kindDubboAuthz = "DubboAuthorizationPolicy"

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
}

// authzScope is what the DubboAuthorizationPolicies of one namespace
// make: their translated policies, or, when one of them is wrong, failed
// (the route tables of the namespace's hosts then keep their last good
// version: serving them without the policy, or with a part of it, would
// open what the mesh closed).
type authzScope struct {
	policies []*authzv1.Policy
	failed   bool
}

// indexAuthz translates every DubboAuthorizationPolicy, by namespace, in
// the order of their names (objs is sorted).
func (t *translator) indexAuthz(objs []Object) {
	t.authz = map[string]*authzScope{}
	for i := range objs {
		o := &objs[i]
		dap, ok := o.Spec.(*dubbov1alpha1.DubboAuthorizationPolicy)
		if !ok {
			continue
		}
		t.unapplied(o)
		scope := t.authz[o.Namespace]
		if scope == nil {
			scope = &authzScope{}
			t.authz[o.Namespace] = scope
		}
		p, ok := t.dubboAuthzPolicy(o, dap)
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
	if err := authz.Validate(&authzv1.Authz{Policies: []*authzv1.Policy{p}}); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			field, msg, ok := strings.Cut(strings.TrimPrefix(line, "policies[0]."), ": ")
			if !ok {
				field, msg = "", line
			}
			t.problem(o, specPath(field), false, "%s", msg)
		}
		return nil, false
	}
	return p, true
}

var snakeWord = regexp.MustCompile(`_([a-z])`)

// specPath turns a path of the filter's config into the policy's own:
// rules[0].to[0].operation.not_services -> spec.rules[0].to[0].operation.notInterfaces.
func specPath(field string) string {
	if field == "" {
		return "spec"
	}
	field = strings.NewReplacer("not_services", "not_interfaces", "services", "interfaces").Replace(field)
	return "spec." + snakeWord.ReplaceAllStringFunc(field, func(s string) string { return strings.ToUpper(s[1:]) })
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
		policies = append(policies, scope.policies...)
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
