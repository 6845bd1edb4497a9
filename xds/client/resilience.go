package client

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/wrapperspb"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Envoy's defaults of the consecutive-failure thresholds that Breeze's
// OutlierDetection spells out when Envoy's leave them unset.
const (
	envoyConsecutiveGatewayFailure     = 5
	envoyConsecutiveLocalOriginFailure = 5
)

// The fields of Envoy's CircuitBreakers and OutlierDetection that Breeze
// reads; some only with certain values, checked where they are read. Any
// other field set is refused by name: Breeze cannot do what it asks.
var (
	circuitBreakersFields = fieldSet("thresholds")
	thresholdsFields      = fieldSet("priority", "max_connections", "max_pending_requests", "max_requests", "max_retries", "retry_budget")
	retryBudgetFields     = fieldSet("budget_percent", "min_retry_concurrency")
	outlierFields         = fieldSet(
		"consecutive_5xx", "enforcing_consecutive_5xx",
		"consecutive_gateway_failure", "enforcing_consecutive_gateway_failure",
		"split_external_local_origin_errors", "consecutive_local_origin_failure", "enforcing_consecutive_local_origin_failure",
		"interval", "base_ejection_time", "max_ejection_percent", "max_ejection_time",
		// Accepted with the values that mean what Breeze does (checked below).
		"enforcing_success_rate", "enforcing_local_origin_success_rate",
		"enforcing_failure_percentage", "enforcing_failure_percentage_local_origin",
		"max_ejection_time_jitter", "always_eject_one_host",
	)
)

func fieldSet(names ...protoreflect.Name) map[protoreflect.Name]bool {
	m := make(map[protoreflect.Name]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// unsupported lists the fields set in m that known does not have, as
// prefix + name.
func unsupported(m protoreflect.Message, known map[protoreflect.Name]bool, prefix string) []string {
	var out []string
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !known[fd.Name()] {
			out = append(out, prefix+string(fd.Name()))
		}
		return true
	})
	return out
}

// notSupported is the error for fields Breeze cannot honour, named as the
// cluster's other unsupported fields are.
func notSupported(fields []string) error {
	slices.Sort(fields)
	return fmt.Errorf("%s: not supported by Breeze; remove it", strings.Join(fields, ", "))
}

// CircuitBreakers reads Envoy's circuit breakers as Breeze's: the one
// threshold of priority DEFAULT (Breeze has no request priorities, so a
// HIGH threshold is refused) gives max_connections, max_pending_requests,
// max_requests, max_retries and retry_budget. An unset limit, and Envoy's
// largest value 2^32-1 (what Istio writes for "no limit"), are Breeze's 0:
// no limit. An explicit 0, which in Envoy admits nothing, is refused:
// Breeze's 0 would mean the opposite. As in Envoy, a retry_budget
// overrides max_retries. Errors name the field relative to the message
// (thresholds[0].max_requests); every problem is reported.
func CircuitBreakers(cb *clusterv3.CircuitBreakers) (*breezev1.CircuitBreakers, error) {
	return circuitBreakers(cb, "")
}

// circuitBreakers is CircuitBreakers with prefix before every path.
func circuitBreakers(cb *clusterv3.CircuitBreakers, prefix string) (*breezev1.CircuitBreakers, error) {
	bad := unsupported(cb.ProtoReflect(), circuitBreakersFields, prefix)
	for i, th := range cb.GetThresholds() {
		p := fmt.Sprintf("%sthresholds[%d].", prefix, i)
		bad = append(bad, unsupported(th.ProtoReflect(), thresholdsFields, p)...)
		if rb := th.GetRetryBudget(); rb != nil {
			bad = append(bad, unsupported(rb.ProtoReflect(), retryBudgetFields, p+"retry_budget.")...)
		}
	}
	if len(bad) > 0 {
		return nil, notSupported(bad)
	}
	var errs []error
	out := &breezev1.CircuitBreakers{}
	found := -1
	for i, th := range cb.GetThresholds() {
		p := fmt.Sprintf("%sthresholds[%d]", prefix, i)
		switch {
		case th.GetPriority() != corev3.RoutingPriority_DEFAULT:
			errs = append(errs, fmt.Errorf("%s.priority: %s: Breeze has no request priorities, only the DEFAULT threshold applies; remove this one", p, th.GetPriority()))
			continue
		case found >= 0:
			errs = append(errs, fmt.Errorf("%s: a second DEFAULT threshold (the first is %sthresholds[%d]); keep one", p, prefix, found))
			continue
		}
		found = i
		limit := func(name string, v *wrapperspb.UInt32Value, admits string) uint32 {
			switch {
			case v == nil, v.GetValue() == math.MaxUint32:
				return 0
			case v.GetValue() == 0:
				errs = append(errs, fmt.Errorf("%s.%s: 0: Envoy would admit %s, and Breeze reads 0 as no limit: set at least 1, or remove it for no limit", p, name, admits))
			}
			return v.GetValue()
		}
		out.MaxConnections = limit("max_connections", th.GetMaxConnections(), "no connection")
		out.MaxPendingRequests = limit("max_pending_requests", th.GetMaxPendingRequests(), "no pending request")
		out.MaxRequests = limit("max_requests", th.GetMaxRequests(), "no request")
		if rb := th.GetRetryBudget(); rb != nil {
			// max_retries is left out: in Envoy "the retry budget will
			// override any configured retry circuit breaker".
			out.RetryBudget = &breezev1.RetryBudget{}
			if bp := rb.GetBudgetPercent(); bp != nil {
				out.RetryBudget.BudgetPercent = proto.Float64(bp.GetValue())
			}
			if mc := rb.GetMinRetryConcurrency(); mc != nil {
				out.RetryBudget.MinRetryConcurrency = proto.Uint32(mc.GetValue())
			}
		} else {
			out.MaxRetries = limit("max_retries", th.GetMaxRetries(), "no retry (to disable retries set the routes' retry_policy.num_retries to 0)")
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// OutlierDetection reads Envoy's outlier detection as Breeze's, keeping
// Envoy's defaults and enforcing semantics:
//
//   - consecutive_5xx → consecutive_errors (unset: Breeze's default, 5,
//     Envoy's too); enforcing_consecutive_5xx 0 disables it
//     (consecutive_errors 0);
//   - consecutive_gateway_failure → consecutive_gateway_errors, only when
//     enforcing_consecutive_gateway_failure is 100: Envoy's default
//     enforcing is 0, off;
//   - split_external_local_origin_errors → consecutive_local_origin_failures
//     set, to consecutive_local_origin_failure (unset: 5), or 0 when its
//     enforcing is 0; without the split Envoy ignores both, and so does
//     Breeze;
//   - interval, base_ejection_time, max_ejection_percent, max_ejection_time
//     as they are.
//
// Breeze ejects always or never: an enforcing_* other than 0 or 100 is
// refused, and success-rate and failure-percentage ejection, which it
// does not do, only with their enforcing at 0 (Envoy's default for
// enforcing_success_rate, 100, is not followed: that detection is not
// done). max_ejection_time_jitter is accepted at 0s and
// always_eject_one_host at true (Breeze always may eject one endpoint).
// Any other field set is refused by name.
func OutlierDetection(od *clusterv3.OutlierDetection) (*breezev1.OutlierDetection, error) {
	return outlierDetection(od, "")
}

// outlierDetection is OutlierDetection with prefix before every path.
func outlierDetection(od *clusterv3.OutlierDetection, prefix string) (*breezev1.OutlierDetection, error) {
	if bad := unsupported(od.ProtoReflect(), outlierFields, prefix); len(bad) > 0 {
		return nil, notSupported(bad)
	}
	var errs []error
	// enforced reads an enforcing_* percentage; def is Envoy's default.
	enforced := func(name string, v *wrapperspb.UInt32Value, def bool) bool {
		switch {
		case v == nil:
			return def
		case v.GetValue() == 0:
			return false
		case v.GetValue() == 100:
			return true
		}
		errs = append(errs, fmt.Errorf("%s%s: %d: Breeze ejects always or never: set 100 or 0", prefix, name, v.GetValue()))
		return false
	}
	off := func(name string, v *wrapperspb.UInt32Value, what string) {
		if v.GetValue() != 0 {
			errs = append(errs, fmt.Errorf("%s%s: %d: Breeze does no %s ejection: set 0 or remove it", prefix, name, v.GetValue(), what))
		}
	}
	off("enforcing_success_rate", od.GetEnforcingSuccessRate(), "success-rate")
	off("enforcing_local_origin_success_rate", od.GetEnforcingLocalOriginSuccessRate(), "success-rate")
	off("enforcing_failure_percentage", od.GetEnforcingFailurePercentage(), "failure-percentage")
	off("enforcing_failure_percentage_local_origin", od.GetEnforcingFailurePercentageLocalOrigin(), "failure-percentage")
	if j := od.GetMaxEjectionTimeJitter(); j != nil && j.AsDuration() != 0 {
		errs = append(errs, fmt.Errorf("%smax_ejection_time_jitter: %s: not supported by Breeze: set 0s or remove it", prefix, j.AsDuration()))
	}
	if a := od.GetAlwaysEjectOneHost(); a != nil && !a.GetValue() {
		errs = append(errs, fmt.Errorf("%salways_eject_one_host: false: Breeze always may eject one endpoint, whatever max_ejection_percent says: remove it", prefix))
	}

	out := &breezev1.OutlierDetection{
		Interval:         od.GetInterval(),
		BaseEjectionTime: od.GetBaseEjectionTime(),
		MaxEjectionTime:  od.GetMaxEjectionTime(),
	}
	if !enforced("enforcing_consecutive_5xx", od.GetEnforcingConsecutive_5Xx(), true) {
		out.ConsecutiveErrors = proto.Uint32(0)
	} else if v := od.GetConsecutive_5Xx(); v != nil {
		out.ConsecutiveErrors = proto.Uint32(v.GetValue())
	}
	if enforced("enforcing_consecutive_gateway_failure", od.GetEnforcingConsecutiveGatewayFailure(), false) {
		out.ConsecutiveGatewayErrors = valueOr(od.GetConsecutiveGatewayFailure(), envoyConsecutiveGatewayFailure)
	}
	if od.GetSplitExternalLocalOriginErrors() {
		n := valueOr(od.GetConsecutiveLocalOriginFailure(), envoyConsecutiveLocalOriginFailure)
		if !enforced("enforcing_consecutive_local_origin_failure", od.GetEnforcingConsecutiveLocalOriginFailure(), true) {
			n = 0
		}
		out.ConsecutiveLocalOriginFailures = &n
	}
	if v := od.GetMaxEjectionPercent(); v != nil {
		out.MaxEjectionPercent = proto.Uint32(v.GetValue())
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func valueOr(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}
