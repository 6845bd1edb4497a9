package client

import (
	"math"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/breeze-mesh/breeze/config"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

// withResilience is an EDS cluster "c" with the given settings.
func withResilience(cb *clusterv3.CircuitBreakers, od *clusterv3.OutlierDetection) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 "c",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		CircuitBreakers:      cb,
		OutlierDetection:     od,
	}
}

func thresholds(th ...*clusterv3.CircuitBreakers_Thresholds) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: th}
}

// Envoy's circuit breakers and outlier detection, as Envoy means them,
// become Breeze's: what is unset stays unset (Breeze's defaults are
// Envoy's), Envoy's enforcing percentages decide what is on.
func TestClusterResilience(t *testing.T) {
	for _, tc := range []struct {
		name string
		cb   *clusterv3.CircuitBreakers
		od   *clusterv3.OutlierDetection
		want string // the breeze.v1.Cluster fields beyond name and type, as text
	}{
		{name: "Istio's thresholds: 2^32-1 is no limit",
			cb: thresholds(&clusterv3.CircuitBreakers_Thresholds{
				MaxConnections: u32(100), MaxPendingRequests: u32(math.MaxUint32), MaxRequests: u32(1000), MaxRetries: u32(math.MaxUint32),
			}),
			want: `circuit_breakers {max_connections: 100 max_requests: 1000}`},
		{name: "every limit, no budget",
			cb:   thresholds(&clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT, MaxConnections: u32(1), MaxPendingRequests: u32(2), MaxRequests: u32(3), MaxRetries: u32(4)}),
			want: `circuit_breakers {max_connections: 1 max_pending_requests: 2 max_requests: 3 max_retries: 4}`},
		{name: "unset limits",
			cb:   thresholds(&clusterv3.CircuitBreakers_Thresholds{}),
			want: `circuit_breakers {}`},
		{name: "no thresholds",
			cb:   &clusterv3.CircuitBreakers{},
			want: `circuit_breakers {}`},
		{name: "a retry budget overrides max_retries, as in Envoy",
			cb: thresholds(&clusterv3.CircuitBreakers_Thresholds{MaxRetries: u32(7), RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
				BudgetPercent: &typev3.Percent{Value: 25.5}, MinRetryConcurrency: u32(5)}}),
			want: `circuit_breakers {retry_budget {budget_percent: 25.5 min_retry_concurrency: 5}}`},
		{name: "a retry budget of Envoy's defaults",
			cb:   thresholds(&clusterv3.CircuitBreakers_Thresholds{MaxRetries: u32(0), RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}}),
			want: `circuit_breakers {retry_budget {}}`},
		{name: "a zero retry budget",
			cb: thresholds(&clusterv3.CircuitBreakers_Thresholds{RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
				BudgetPercent: &typev3.Percent{}, MinRetryConcurrency: u32(0)}}),
			want: `circuit_breakers {retry_budget {budget_percent: 0 min_retry_concurrency: 0}}`},

		{name: "outlier detection of Envoy's defaults",
			od:   &clusterv3.OutlierDetection{},
			want: `outlier_detection {}`},
		{name: "Istio's consecutive5xxErrors: 7",
			od: &clusterv3.OutlierDetection{
				EnforcingSuccessRate: u32(0), Consecutive_5Xx: u32(7), EnforcingConsecutive_5Xx: u32(100),
				Interval: durationpb.New(5 * time.Minute), BaseEjectionTime: durationpb.New(15 * time.Minute),
			},
			want: `outlier_detection {consecutive_errors: 7 interval {seconds: 300} base_ejection_time {seconds: 900}}`},
		{name: "Istio's consecutive5xxErrors: 0 disables",
			od:   &clusterv3.OutlierDetection{Consecutive_5Xx: u32(0), EnforcingConsecutive_5Xx: u32(0)},
			want: `outlier_detection {consecutive_errors: 0}`},
		{name: "enforcing_consecutive_5xx 0 disables whatever the count",
			od:   &clusterv3.OutlierDetection{Consecutive_5Xx: u32(3), EnforcingConsecutive_5Xx: u32(0)},
			want: `outlier_detection {consecutive_errors: 0}`},
		{name: "gateway failures are off unless enforced (Envoy's default enforcing is 0)",
			od:   &clusterv3.OutlierDetection{ConsecutiveGatewayFailure: u32(3)},
			want: `outlier_detection {}`},
		{name: "gateway failures enforced",
			od:   &clusterv3.OutlierDetection{ConsecutiveGatewayFailure: u32(3), EnforcingConsecutiveGatewayFailure: u32(100)},
			want: `outlier_detection {consecutive_gateway_errors: 3}`},
		{name: "gateway failures enforced, Envoy's default count",
			od:   &clusterv3.OutlierDetection{EnforcingConsecutiveGatewayFailure: u32(100)},
			want: `outlier_detection {consecutive_gateway_errors: 5}`},
		{name: "gateway failures explicitly off",
			od:   &clusterv3.OutlierDetection{ConsecutiveGatewayFailure: u32(3), EnforcingConsecutiveGatewayFailure: u32(0)},
			want: `outlier_detection {}`},
		{name: "local origin split, Envoy's default count",
			od:   &clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true, EnforcingLocalOriginSuccessRate: u32(0)},
			want: `outlier_detection {consecutive_local_origin_failures: 5}`},
		{name: "local origin split with a count",
			od:   &clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailure: u32(2), EnforcingConsecutiveLocalOriginFailure: u32(100)},
			want: `outlier_detection {consecutive_local_origin_failures: 2}`},
		{name: "local origin split, not enforced",
			od:   &clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailure: u32(2), EnforcingConsecutiveLocalOriginFailure: u32(0)},
			want: `outlier_detection {consecutive_local_origin_failures: 0}`},
		{name: "local origin count without the split is ignored, as in Envoy",
			od:   &clusterv3.OutlierDetection{ConsecutiveLocalOriginFailure: u32(2), EnforcingConsecutiveLocalOriginFailure: u32(30)},
			want: `outlier_detection {}`},
		{name: "ejection bounds; what means what Breeze does",
			od: &clusterv3.OutlierDetection{
				MaxEjectionPercent: u32(100), MaxEjectionTime: durationpb.New(10 * time.Minute),
				MaxEjectionTimeJitter: durationpb.New(0), AlwaysEjectOneHost: wrapperspb.Bool(true),
				EnforcingFailurePercentage: u32(0), EnforcingFailurePercentageLocalOrigin: u32(0),
			},
			want: `outlier_detection {max_ejection_percent: 100 max_ejection_time {seconds: 600}}`},
		{name: "max_ejection_percent 0",
			od:   &clusterv3.OutlierDetection{MaxEjectionPercent: u32(0)},
			want: `outlier_detection {max_ejection_percent: 0}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Cluster(withResilience(tc.cb, tc.od))
			if err != nil {
				t.Fatal(err)
			}
			want := &breezev1.Cluster{}
			if err := prototext.Unmarshal([]byte(`name: "c" type: EDS `+tc.want), want); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("got  %v\nwant %v", prototext.Format(got), prototext.Format(want))
			}
			if err := config.ValidateCluster(got); err != nil {
				t.Fatalf("ValidateCluster: %v", err)
			}
		})
	}
}

// Everything Breeze cannot do as asked is refused, by the field's path,
// with what to do instead; every problem of a cluster at once.
func TestClusterResilienceErrors(t *testing.T) {
	def := func(th *clusterv3.CircuitBreakers_Thresholds) *clusterv3.CircuitBreakers { return thresholds(th) }
	for _, tc := range []struct {
		name string
		cb   *clusterv3.CircuitBreakers
		od   *clusterv3.OutlierDetection
		want []string // the error's lines
	}{
		{name: "HIGH threshold", cb: thresholds(&clusterv3.CircuitBreakers_Thresholds{MaxRequests: u32(10)}, &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_HIGH, MaxRequests: u32(20)}),
			want: []string{"circuit_breakers.thresholds[1].priority: HIGH: Breeze has no request priorities, only the DEFAULT threshold applies; remove this one"}},
		{name: "two DEFAULT thresholds", cb: thresholds(&clusterv3.CircuitBreakers_Thresholds{}, &clusterv3.CircuitBreakers_Thresholds{MaxRequests: u32(20)}),
			want: []string{"circuit_breakers.thresholds[1]: a second DEFAULT threshold (the first is circuit_breakers.thresholds[0]); keep one"}},
		{name: "threshold fields Breeze has not", cb: &clusterv3.CircuitBreakers{
			Thresholds:        []*clusterv3.CircuitBreakers_Thresholds{{TrackRemaining: true, MaxConnectionPools: u32(3)}},
			PerHostThresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: u32(1)}},
		}, want: []string{"circuit_breakers.per_host_thresholds, circuit_breakers.thresholds[0].max_connection_pools, circuit_breakers.thresholds[0].track_remaining: not supported by Breeze; remove it"}},
		{name: "explicit zero limits", cb: def(&clusterv3.CircuitBreakers_Thresholds{MaxConnections: u32(0), MaxPendingRequests: u32(0), MaxRequests: u32(0), MaxRetries: u32(0)}),
			want: []string{
				"circuit_breakers.thresholds[0].max_connections: 0: Envoy would admit no connection, and Breeze reads 0 as no limit: set at least 1, or remove it for no limit",
				"circuit_breakers.thresholds[0].max_pending_requests: 0: Envoy would admit no pending request, and Breeze reads 0 as no limit",
				"circuit_breakers.thresholds[0].max_requests: 0: Envoy would admit no request, and Breeze reads 0 as no limit",
				"circuit_breakers.thresholds[0].max_retries: 0: Envoy would admit no retry (to disable retries set the routes' retry_policy.num_retries to 0), and Breeze reads 0 as no limit",
			}},
		{name: "success-rate fields", od: &clusterv3.OutlierDetection{SuccessRateMinimumHosts: u32(3), SuccessRateStdevFactor: u32(1900), Consecutive_5Xx: u32(2)},
			want: []string{"outlier_detection.success_rate_minimum_hosts, outlier_detection.success_rate_stdev_factor: not supported by Breeze; remove it"}},
		{name: "failure-percentage and others", od: &clusterv3.OutlierDetection{
			FailurePercentageThreshold: u32(85), FailurePercentageMinimumHosts: u32(5), FailurePercentageRequestVolume: u32(50), SuccessRateRequestVolume: u32(100),
			SuccessfulActiveHealthCheckUnejectHost: wrapperspb.Bool(false), Monitors: []*corev3.TypedExtensionConfig{{Name: "m"}},
		}, want: []string{"outlier_detection.failure_percentage_minimum_hosts, outlier_detection.failure_percentage_request_volume, outlier_detection.failure_percentage_threshold, " +
			"outlier_detection.monitors, outlier_detection.success_rate_request_volume, outlier_detection.successful_active_health_check_uneject_host: not supported by Breeze; remove it"}},
		{name: "partial enforcement", od: &clusterv3.OutlierDetection{
			EnforcingConsecutive_5Xx: u32(50), EnforcingConsecutiveGatewayFailure: u32(101),
			SplitExternalLocalOriginErrors: true, EnforcingConsecutiveLocalOriginFailure: u32(30),
		}, want: []string{
			"outlier_detection.enforcing_consecutive_5xx: 50: Breeze ejects always or never: set 100 or 0",
			"outlier_detection.enforcing_consecutive_gateway_failure: 101: Breeze ejects always or never: set 100 or 0",
			"outlier_detection.enforcing_consecutive_local_origin_failure: 30: Breeze ejects always or never: set 100 or 0",
		}},
		{name: "ejection Breeze does not do", od: &clusterv3.OutlierDetection{
			EnforcingSuccessRate: u32(100), EnforcingLocalOriginSuccessRate: u32(1),
			EnforcingFailurePercentage: u32(10), EnforcingFailurePercentageLocalOrigin: u32(100),
			MaxEjectionTimeJitter: durationpb.New(time.Second), AlwaysEjectOneHost: wrapperspb.Bool(false),
		}, want: []string{
			"outlier_detection.enforcing_success_rate: 100: Breeze does no success-rate ejection: set 0 or remove it",
			"outlier_detection.enforcing_local_origin_success_rate: 1: Breeze does no success-rate ejection: set 0 or remove it",
			"outlier_detection.enforcing_failure_percentage: 10: Breeze does no failure-percentage ejection: set 0 or remove it",
			"outlier_detection.enforcing_failure_percentage_local_origin: 100: Breeze does no failure-percentage ejection: set 0 or remove it",
			"outlier_detection.max_ejection_time_jitter: 1s: not supported by Breeze: set 0s or remove it",
			"outlier_detection.always_eject_one_host: false: Breeze always may eject one endpoint, whatever max_ejection_percent says: remove it",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Cluster(withResilience(tc.cb, tc.od))
			if err == nil {
				t.Fatalf("accepted: %v", prototext.Format(got))
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("error %d:\n got %s\nwant %s", i, lines[i], w)
				}
			}
		})
	}
}

// A subset's own limits and detector travel in the Breeze options, as
// they are; config.ValidateCluster judges them with the cluster's, by
// their path in the Breeze cluster.
func TestClusterSubsetResilience(t *testing.T) {
	subsets := []*breezev1.ClusterSubset{
		{Name: "v1", Labels: map[string]string{"version": "v1"},
			CircuitBreakers:  &breezev1.CircuitBreakers{MaxRequests: 10, RetryBudget: &breezev1.RetryBudget{BudgetPercent: proto.Float64(50)}},
			OutlierDetection: &breezev1.OutlierDetection{ConsecutiveErrors: proto.Uint32(1), BaseEjectionTime: durationpb.New(3 * time.Minute)}},
		{Name: "v2", Labels: map[string]string{"version": "v2"}, CircuitBreakers: &breezev1.CircuitBreakers{}},
	}
	c := withResilience(thresholds(&clusterv3.CircuitBreakers_Thresholds{MaxRequests: u32(100)}), nil)
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{OptionsKey: mustAny(t, &breezev1.ClusterOptions{Subsets: subsets})}
	got, err := Cluster(c)
	if err != nil {
		t.Fatal(err)
	}
	want := &breezev1.Cluster{Name: "c", Type: breezev1.Cluster_EDS, CircuitBreakers: &breezev1.CircuitBreakers{MaxRequests: 100}, Subsets: subsets}
	if !proto.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", prototext.Format(got), prototext.Format(want))
	}
	if err := config.ValidateCluster(got); err != nil {
		t.Fatalf("ValidateCluster: %v", err)
	}

	// Converted, then refused by ValidateCluster.
	subsets[1].CircuitBreakers.RetryBudget = &breezev1.RetryBudget{BudgetPercent: proto.Float64(120)}
	subsets[1].OutlierDetection = &breezev1.OutlierDetection{Interval: durationpb.New(0)}
	c = withResilience(nil, &clusterv3.OutlierDetection{MaxEjectionPercent: u32(150), BaseEjectionTime: durationpb.New(0)})
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{OptionsKey: mustAny(t, &breezev1.ClusterOptions{Subsets: subsets})}
	if got, err = Cluster(c); err != nil {
		t.Fatal(err)
	}
	err = config.ValidateCluster(got)
	wantErrs := []string{
		"subsets[1].circuit_breakers.retry_budget.budget_percent: 120: must be 0–100",
		"subsets[1].outlier_detection.interval: 0s: must be more than 0",
		"outlier_detection.base_ejection_time: 0s: must be more than 0",
		"outlier_detection.max_ejection_percent: 150: must be 0–100",
	}
	if err == nil || err.Error() != strings.Join(wantErrs, "\n") {
		t.Fatalf("ValidateCluster: %v\nwant:\n%s", err, strings.Join(wantErrs, "\n"))
	}
}
