package controlplane

import (
	"math"
	"slices"

	metaprotocolv1alpha1 "github.com/aeraki-mesh/api/metaprotocol/v1alpha1"
	"google.golang.org/protobuf/proto"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// mirror translates a MetaRoute's mirror and mirrorPercentage into the
// route's request mirror policy, as Aeraki does (internal/xds/cache_mgr.go,
// constructAction): the mirror destination's cluster (its port, or the
// route table's), its subset, and the percentage (unset: 100), which
// Aeraki writes in millionths and so does the router. Aeraki's validating
// webhook refuses a mirrorPercentage without a mirror, or one not in
// (0, 100]: Breeze, which has no webhook, reports them as errors (the
// route table keeps its last good version). A mirror destination is
// checked as a route destination is: its host needs a ServiceEntry with
// that port, its subset a DestinationRule that defines it. It sets the
// policy on action (unless action is nil: the route failed already) and
// reports whether the route's mirror is good.
func (t *translator) mirror(o *Object, field string, r *metaprotocolv1alpha1.MetaRoute, port uint32, action *breezev1.RouteAction) bool {
	m, pct := r.GetMirror(), r.GetMirrorPercentage()
	if m == nil {
		if pct != nil {
			t.problem(o, field+".mirrorPercentage", false, "set without mirror: mirror and mirrorPercentage go together")
			return false
		}
		return true
	}
	ok := true
	policy := &breezev1.RequestMirrorPolicy{}
	if pct != nil {
		v := pct.GetValue()
		if math.IsNaN(v) || v <= 0 || v > 100 {
			t.problem(o, field+".mirrorPercentage.value", false, "%v: must be more than 0 and at most 100", v)
			ok = false
		}
		policy.Percentage = proto.Float64(v)
	}
	f := field + ".mirror"
	host := m.GetHost()
	p := port
	if n := m.GetPort().GetNumber(); n != 0 {
		p = n
	}
	se := t.services[host]
	switch {
	case host == "":
		t.problem(o, f+".host", false, "required")
		return false
	case se == nil:
		t.problem(o, f+".host", false, "%q: no ServiceEntry has this host%s", host, t.didYouMean(host))
		return false
	case !slices.ContainsFunc(se.Spec.(*networkingv1alpha3.ServiceEntry).GetPorts(), func(sp *networkingv1alpha3.ServicePort) bool { return sp.GetNumber() == p }):
		t.problem(o, f+".port.number", false, "%d: %s has no such port", p, se.Ref())
		return false
	case t.badRule(host):
		return false // reported on the DestinationRule
	}
	policy.Cluster = ClusterName(host, p)
	if name := m.GetSubset(); name != "" {
		labels, err := t.subset(host, name)
		if err != nil {
			t.problem(o, f+".subset", false, "%q: %v", name, err)
			return false
		}
		policy.Subset = labels
	}
	if ok && action != nil {
		action.RequestMirrorPolicies = []*breezev1.RequestMirrorPolicy{policy}
	}
	return ok
}
