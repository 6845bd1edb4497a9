package controlplane

import (
	"math"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

// resilience is the part of a DestinationRule traffic policy that becomes
// a cluster's (or subset's) circuit breakers and outlier detection.
type resilience struct {
	pool    *networkingv1alpha3.ConnectionPoolSettings
	outlier *networkingv1alpha3.OutlierDetection
	budget  *networkingv1alpha3.TrafficPolicy_RetryBudget
}

// resilienceFor returns what a traffic policy sets for a port, as Istio's
// GetPortLevelTrafficPolicy reads it: a portLevelSettings entry for the
// port replaces the rule-wide settings whole — what the entry leaves out
// takes the defaults, not the rule-wide value, and an entry has no
// retryBudget — else the rule-wide ones. Entries that set nothing Breeze
// applies (only tls, say) are not read. portLevel reports an entry.
func resilienceFor(tp *networkingv1alpha3.TrafficPolicy, port uint32) (r resilience, portLevel bool) {
	for _, pl := range tp.GetPortLevelSettings() {
		if pl.GetPort().GetNumber() == port && portLevelApplies(pl) {
			return resilience{pool: pl.GetConnectionPool(), outlier: pl.GetOutlierDetection()}, true
		}
	}
	return resilience{pool: tp.GetConnectionPool(), outlier: tp.GetOutlierDetection(), budget: tp.GetRetryBudget()}, false
}

// portLevelApplies reports whether a port-level entry sets something
// Breeze applies.
func portLevelApplies(pl *networkingv1alpha3.TrafficPolicy_PortTrafficPolicy) bool {
	return pl.GetLoadBalancer() != nil || pl.GetConnectionPool() != nil || pl.GetOutlierDetection() != nil
}

// subsetResilience merges a subset's traffic policy for a port over the
// cluster's settings, as Istio's MergeSubsetTrafficPolicy does: each of
// connectionPool, outlierDetection and retryBudget the subset sets
// replaces the cluster's whole (fields are not merged), and a port-level
// entry of the subset for the port replaces connectionPool and
// outlierDetection even where it leaves them out. ownLimits and
// ownDetector report whether the subset has limits (connectionPool or
// retryBudget) or a detector of its own: in Istio a subset is a cluster
// of its own, counted apart. Not when neither it nor the cluster has any.
func subsetResilience(cluster resilience, tp *networkingv1alpha3.TrafficPolicy, port uint32) (r resilience, ownLimits, ownDetector bool) {
	r = cluster
	sub, portLevel := resilienceFor(tp, port)
	if sub.pool != nil || portLevel {
		r.pool, ownLimits = sub.pool, true
	}
	if sub.outlier != nil || portLevel {
		r.outlier, ownDetector = sub.outlier, true
	}
	if sub.budget != nil {
		r.budget, ownLimits = sub.budget, true
	}
	// A subset left without settings where the cluster has none either
	// (a port-level entry for its loadBalancer alone) is no different.
	if r.pool == nil && r.budget == nil && cluster.pool == nil && cluster.budget == nil {
		ownLimits = false
	}
	if r.outlier == nil && cluster.outlier == nil {
		ownDetector = false
	}
	return r, ownLimits, ownDetector
}

// envoyCircuitBreakers writes connectionPool and retryBudget as Istio
// does (applyConnectionPool, applyRetryBudget): one DEFAULT threshold
// whose limits are 2^32-1 ("no limit") unless the pool sets them above 0,
// and Istio's retry budget defaults (20%, 3). nil when neither is set.
// Istio's track_remaining is left out: it is a stats switch Breeze has
// not.
func envoyCircuitBreakers(r resilience) *clusterv3.CircuitBreakers {
	if r.pool == nil && r.budget == nil {
		return nil
	}
	limit := func(n int32) *wrapperspb.UInt32Value {
		if n > 0 {
			return wrapperspb.UInt32(uint32(n))
		}
		return wrapperspb.UInt32(math.MaxUint32)
	}
	http, tcp := r.pool.GetHttp(), r.pool.GetTcp()
	th := &clusterv3.CircuitBreakers_Thresholds{
		MaxConnections:     limit(tcp.GetMaxConnections()),
		MaxPendingRequests: limit(http.GetHttp1MaxPendingRequests()),
		MaxRequests:        limit(http.GetHttp2MaxRequests()),
		MaxRetries:         limit(http.GetMaxRetries()),
	}
	if b := r.budget; b != nil {
		rb := &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: 20},
			MinRetryConcurrency: wrapperspb.UInt32(3),
		}
		if b.GetPercent() != nil {
			rb.BudgetPercent.Value = b.GetPercent().GetValue()
		}
		if n := b.GetMinRetryConcurrency(); n > 0 {
			rb.MinRetryConcurrency.Value = n
		}
		th.RetryBudget = rb
	}
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
}

// envoyOutlierDetection writes outlierDetection as Istio does
// (applyOutlierDetection): success-rate ejection off; consecutive5xxErrors
// and consecutiveGatewayErrors enforced when above 0, off at 0 (unset:
// Envoy's defaults, 5 and off); interval and baseEjectionTime as they
// are; maxEjectionPercent when above 0 (else Envoy's 10);
// splitExternalLocalOriginErrors with consecutiveLocalOriginFailures when
// above 0 (else Envoy's 5). minHealthPercent, Envoy's panic threshold, is
// left out: Breeze has no panic mode (fields warns when it is set).
func envoyOutlierDetection(od *networkingv1alpha3.OutlierDetection) *clusterv3.OutlierDetection {
	if od == nil {
		return nil
	}
	enforcing := func(v uint32) *wrapperspb.UInt32Value {
		if v > 0 {
			return wrapperspb.UInt32(100)
		}
		return wrapperspb.UInt32(0)
	}
	out := &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0)}
	if e := od.GetConsecutive_5XxErrors(); e != nil {
		out.Consecutive_5Xx = wrapperspb.UInt32(e.GetValue())
		out.EnforcingConsecutive_5Xx = enforcing(e.GetValue())
	}
	if e := od.GetConsecutiveGatewayErrors(); e != nil {
		out.ConsecutiveGatewayFailure = wrapperspb.UInt32(e.GetValue())
		out.EnforcingConsecutiveGatewayFailure = enforcing(e.GetValue())
	}
	out.Interval = od.GetInterval()
	out.BaseEjectionTime = od.GetBaseEjectionTime()
	if p := od.GetMaxEjectionPercent(); p > 0 {
		out.MaxEjectionPercent = wrapperspb.UInt32(uint32(p))
	}
	if od.GetSplitExternalLocalOriginErrors() {
		out.SplitExternalLocalOriginErrors = true
		if n := od.GetConsecutiveLocalOriginFailures().GetValue(); n > 0 {
			out.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(n)
			out.EnforcingConsecutiveLocalOriginFailure = wrapperspb.UInt32(100)
		}
		out.EnforcingLocalOriginSuccessRate = wrapperspb.UInt32(0)
	}
	return out
}

// subsetLimits is a subset's own circuit breakers: what the merged
// settings make of them, read as the proxy reads the cluster's; with
// neither connectionPool nor retryBudget left (a port-level entry without
// them), no limits, as an Istio subset cluster without them has.
func subsetLimits(r resilience) (*breezev1.CircuitBreakers, error) {
	cb := envoyCircuitBreakers(r)
	if cb == nil {
		return &breezev1.CircuitBreakers{}, nil
	}
	return client.CircuitBreakers(cb)
}

// subsetDetector is a subset's own outlier detection, read as the proxy
// reads the cluster's; without outlierDetection left (a port-level entry
// without it), one that ejects nothing, as an Istio subset cluster
// without outlier detection does not eject.
func subsetDetector(od *networkingv1alpha3.OutlierDetection) (*breezev1.OutlierDetection, error) {
	if od == nil {
		return &breezev1.OutlierDetection{ConsecutiveErrors: proto.Uint32(0)}, nil
	}
	return client.OutlierDetection(envoyOutlierDetection(od))
}

// checkResilience reports the problems of a traffic policy's (or
// port-level entry's) connectionPool, outlierDetection and retryBudget
// with Istio's rules (istiod refuses such a rule); false: errors.
func (t *translator) checkResilience(o *Object, field string, pool *networkingv1alpha3.ConnectionPoolSettings, od *networkingv1alpha3.OutlierDetection, budget *networkingv1alpha3.TrafficPolicy_RetryBudget) bool {
	ok := true
	fail := func(f, format string, args ...any) {
		t.problem(o, f, false, format, args...)
		ok = false
	}
	nonNegative := func(f string, n int32) {
		if n < 0 {
			fail(f, "%d: must not be negative", n)
		}
	}
	if pool != nil {
		f := field + ".connectionPool"
		nonNegative(f+".tcp.maxConnections", pool.GetTcp().GetMaxConnections())
		nonNegative(f+".http.http1MaxPendingRequests", pool.GetHttp().GetHttp1MaxPendingRequests())
		nonNegative(f+".http.http2MaxRequests", pool.GetHttp().GetHttp2MaxRequests())
		nonNegative(f+".http.maxRetries", pool.GetHttp().GetMaxRetries())
		if pool.GetHttp().GetMaxRetries() > 0 && budget != nil {
			t.problem(o, f+".http.maxRetries", true, "%d: has no effect with a retryBudget, which overrides it (in Istio too: Envoy's rule); ignored", pool.GetHttp().GetMaxRetries())
		}
	}
	if od != nil {
		f := field + ".outlierDetection"
		if p := od.GetMaxEjectionPercent(); p < 0 || p > 100 {
			fail(f+".maxEjectionPercent", "%d: must be 0–100", p)
		}
		if n := od.GetConsecutiveLocalOriginFailures(); n.GetValue() > 0 && !od.GetSplitExternalLocalOriginErrors() {
			fail(f+".consecutiveLocalOriginFailures", "%d: counted only with splitExternalLocalOriginErrors: true; set it too", n.GetValue())
		}
		for _, d := range []struct {
			name string
			d    *durationpb.Duration
		}{{"interval", od.GetInterval()}, {"baseEjectionTime", od.GetBaseEjectionTime()}} {
			if msg := istioDuration(d.d); msg != "" {
				fail(f+"."+d.name, "%s: %s", d.d.AsDuration(), msg)
			}
		}
	}
	if p := budget.GetPercent(); p != nil {
		if v := p.GetValue(); math.IsNaN(v) || v < 0 || v > 100 {
			fail(field+".retryBudget.percent", "%v: must be 0–100", v)
		}
	}
	return ok
}

// istioDuration says what is wrong with a duration Istio's validation
// refuses (at least 1ms, in whole milliseconds), "" when nothing is.
func istioDuration(d *durationpb.Duration) string {
	switch {
	case d == nil:
		return ""
	case d.AsDuration() < time.Millisecond:
		return "must be at least 1ms"
	case d.AsDuration()%time.Millisecond != 0:
		return "must be whole milliseconds"
	}
	return ""
}
