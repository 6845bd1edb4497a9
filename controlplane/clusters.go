package controlplane

import (
	"fmt"
	"maps"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

// cluster builds the Envoy cluster of a ServiceEntry host and port: type
// EDS over ADS (its ClusterLoadAssignment has the same name), balanced,
// limited (circuit_breakers) and watched (outlier_detection) as the host's
// DestinationRule says, with the subsets that have a policy of their own
// in its Breeze options. It fails when the DestinationRule has errors: the
// cluster then keeps its last good version.
func (t *translator) cluster(host string, port uint32) (*clusterv3.Cluster, bool) {
	name := ClusterName(host, port)
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			},
			ServiceName: name,
		},
		LbPolicy: clusterv3.Cluster_ROUND_ROBIN,
	}
	o := t.rules[host]
	if o == nil {
		return c, true
	}
	if t.bad[o] {
		return nil, false
	}
	dr := o.Spec.(*networkingv1alpha3.DestinationRule)
	opts := &breezev1.ClusterOptions{}
	var policy breezev1.Cluster_LbPolicy
	policy, opts.HashKey = lbPolicy(loadBalancer(dr.GetTrafficPolicy(), port))
	c.LbPolicy = client.EnvoyLbPolicy[policy]
	// Limits and ejection in Envoy's own fields, as Istio writes them, so
	// that stock tooling reads them.
	r, _ := resilienceFor(dr.GetTrafficPolicy(), port)
	c.CircuitBreakers = envoyCircuitBreakers(r)
	c.OutlierDetection = envoyOutlierDetection(r.outlier)
	for i, s := range dr.GetSubsets() {
		if !ownPolicy(s.GetTrafficPolicy()) {
			continue // balanced, limited and watched as the cluster is
		}
		sub := &breezev1.ClusterSubset{Name: s.GetName(), Labels: maps.Clone(s.GetLabels())}
		if lb := loadBalancer(s.GetTrafficPolicy(), port); lb != nil {
			p, key := lbPolicy(lb)
			sub.LbPolicy, sub.HashKey = &p, key
		}
		sr, ownLimits, ownDetector := subsetResilience(r, s.GetTrafficPolicy(), port)
		var err error
		if ownLimits {
			sub.CircuitBreakers, err = subsetLimits(sr)
		}
		if ownDetector && err == nil {
			sub.OutlierDetection, err = subsetDetector(sr.outlier)
		}
		if err != nil {
			// checkRule lets through only what the proxy reads.
			t.problem(o, fmt.Sprintf("spec.subsets[%d].trafficPolicy", i), false, "%v", err)
			return nil, false
		}
		if sub.LbPolicy == nil && sub.CircuitBreakers == nil && sub.OutlierDetection == nil {
			continue // its own settings are for other ports
		}
		opts.Subsets = append(opts.Subsets, sub)
	}
	if opts.GetHashKey() == "" && len(opts.GetSubsets()) == 0 {
		return c, true
	}
	a := &anypb.Any{}
	// Deterministic: an unchanged cluster marshals the same (labels are a
	// map), so it is not sent again.
	if err := anypb.MarshalFrom(a, opts, proto.MarshalOptions{Deterministic: true}); err != nil {
		t.problem(o, "spec", false, "%v", err)
		return nil, false
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{client.OptionsKey: a}
	return c, true
}

// loadBalancer returns the loadBalancer a traffic policy sets for a port:
// that of its portLevelSettings for the port, else its own, else nil.
// Port-level settings override the rest, as in Istio.
func loadBalancer(tp *networkingv1alpha3.TrafficPolicy, port uint32) *networkingv1alpha3.LoadBalancerSettings {
	for _, pl := range tp.GetPortLevelSettings() {
		if pl.GetPort().GetNumber() == port && pl.GetLoadBalancer() != nil {
			return pl.GetLoadBalancer()
		}
	}
	return tp.GetLoadBalancer()
}

// lbPolicy maps a loadBalancer that checkRule accepted to Breeze's policy
// and hash key. Consistent hashing on anything but httpHeaderName, and
// PASSTHROUGH, were reported as warnings and become round robin; so does
// nil (no policy set).
func lbPolicy(lb *networkingv1alpha3.LoadBalancerSettings) (breezev1.Cluster_LbPolicy, string) {
	if ch := lb.GetConsistentHash(); ch != nil {
		key := ch.GetHttpHeaderName()
		switch {
		case key == "":
			return breezev1.Cluster_ROUND_ROBIN, ""
		case ch.GetMaglev() != nil:
			return breezev1.Cluster_MAGLEV, key
		default:
			return breezev1.Cluster_RING_HASH, key
		}
	}
	switch lb.GetSimple() {
	case networkingv1alpha3.LoadBalancerSettings_LEAST_REQUEST, networkingv1alpha3.LoadBalancerSettings_LEAST_CONN:
		return breezev1.Cluster_LEAST_REQUEST, ""
	case networkingv1alpha3.LoadBalancerSettings_RANDOM:
		return breezev1.Cluster_RANDOM, ""
	default:
		return breezev1.Cluster_ROUND_ROBIN, ""
	}
}

// checkRule reports the problems of a DestinationRule once, whichever
// hosts and ports use it. With errors the rule is bad: the clusters and
// routes it feeds keep their last good version.
func (t *translator) checkRule(o *Object, dr *networkingv1alpha3.DestinationRule) {
	ok := true
	fail := func(field, format string, args ...any) {
		t.problem(o, field, false, format, args...)
		ok = false
	}
	// What Breeze does not apply is named by unapplied.
	policy := func(tp *networkingv1alpha3.TrafficPolicy, field string) {
		if lb := tp.GetLoadBalancer(); lb != nil {
			ok = t.checkLB(o, lb, field+".loadBalancer") && ok
		}
		ok = t.checkResilience(o, field, tp.GetConnectionPool(), tp.GetOutlierDetection(), tp.GetRetryBudget()) && ok
		for i, pl := range tp.GetPortLevelSettings() {
			f := fmt.Sprintf("%s.portLevelSettings[%d]", field, i)
			if n := pl.GetPort().GetNumber(); n == 0 || n > 65535 {
				fail(f+".port.number", "%d: must be 1–65535", n)
			}
			if lb := pl.GetLoadBalancer(); lb != nil {
				ok = t.checkLB(o, lb, f+".loadBalancer") && ok
			}
			// An entry has no retryBudget: the rule-wide one does not apply
			// to its port (Istio's rule).
			ok = t.checkResilience(o, f, pl.GetConnectionPool(), pl.GetOutlierDetection(), nil) && ok
		}
	}
	policy(dr.GetTrafficPolicy(), "spec.trafficPolicy")
	names := map[string]int{}
	// Subsets with a policy of their own, by labels: Breeze tells them
	// apart by their labels alone.
	balanced := map[string]int{}
	for i, s := range dr.GetSubsets() {
		f := fmt.Sprintf("spec.subsets[%d]", i)
		if s.GetName() == "" {
			fail(f+".name", "required")
		} else if j, dup := names[s.GetName()]; dup {
			fail(f+".name", "%q: also the name of spec.subsets[%d]", s.GetName(), j)
		} else {
			names[s.GetName()] = i
		}
		policy(s.GetTrafficPolicy(), f+".trafficPolicy")
		// The rule's retryBudget overrides a subset's maxRetries too,
		// unless the subset has a budget of its own (checked with it).
		if n := s.GetTrafficPolicy().GetConnectionPool().GetHttp().GetMaxRetries(); n > 0 && s.GetTrafficPolicy().GetRetryBudget() == nil && dr.GetTrafficPolicy().GetRetryBudget() != nil {
			t.problem(o, f+".trafficPolicy.connectionPool.http.maxRetries", true, "%d: has no effect with spec.trafficPolicy.retryBudget, which overrides it (in Istio too: Envoy's rule); ignored", n)
		}
		if !ownPolicy(s.GetTrafficPolicy()) {
			continue
		}
		key := labelsKey(s.GetLabels())
		if len(s.GetLabels()) == 0 {
			fail(f+".labels", "required for a subset with a policy of its own (loadBalancer, connectionPool, outlierDetection or retryBudget): Breeze applies it to the endpoints carrying the subset's labels")
		} else if j, dup := balanced[key]; dup {
			fail(f+".labels", "%s: same labels as spec.subsets[%d], and both have a policy of their own", key, j)
		} else {
			balanced[key] = i
		}
	}
	if !ok {
		t.bad[o] = true
	}
}

// ownPolicy reports whether a subset's traffic policy sets something
// Breeze applies, which makes it a ClusterSubset of its own (for some
// port at least).
func ownPolicy(tp *networkingv1alpha3.TrafficPolicy) bool {
	return tp.GetLoadBalancer() != nil || tp.GetConnectionPool() != nil || tp.GetOutlierDetection() != nil || tp.GetRetryBudget() != nil ||
		slices.ContainsFunc(tp.GetPortLevelSettings(), portLevelApplies)
}

func labelsKey(m map[string]string) string {
	s := "{"
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			s += ", "
		}
		s += k + ": " + m[k]
	}
	return s + "}"
}

// checkLB reports the problems of one loadBalancer; false: it has errors.
func (t *translator) checkLB(o *Object, lb *networkingv1alpha3.LoadBalancerSettings, field string) bool {
	warn := func(f, format string, args ...any) { t.problem(o, f, true, format, args...) }
	ok := true
	if ch := lb.GetConsistentHash(); ch != nil {
		f := field + ".consistentHash"
		switch k := ch.GetHashKey().(type) {
		case *networkingv1alpha3.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
			if k.HttpHeaderName == "" {
				t.problem(o, f+".httpHeaderName", false, "required: the request metadata key to hash on")
				ok = false
			}
		case nil:
			warn(f, "no hash key: set httpHeaderName (a request metadata key); ignored, round robin is used")
		}
		// Other keys, ring and table sizes: named by unapplied.
	}
	switch s := lb.GetSimple(); s {
	case networkingv1alpha3.LoadBalancerSettings_UNSPECIFIED, networkingv1alpha3.LoadBalancerSettings_ROUND_ROBIN,
		networkingv1alpha3.LoadBalancerSettings_LEAST_REQUEST, networkingv1alpha3.LoadBalancerSettings_LEAST_CONN,
		networkingv1alpha3.LoadBalancerSettings_RANDOM:
	case networkingv1alpha3.LoadBalancerSettings_PASSTHROUGH:
		warn(field+".simple", "PASSTHROUGH: Breeze always balances over the endpoints; round robin is used")
	default:
		t.problem(o, field+".simple", false, "%d: not a policy (ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM or PASSTHROUGH)", int32(s))
		ok = false
	}
	return ok
}
