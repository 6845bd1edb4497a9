package controlplane

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// resilienceOf is the served cluster's circuit_breakers and
// outlier_detection alone.
func resilienceOf(c *clusterv3.Cluster) *clusterv3.Cluster {
	return &clusterv3.Cluster{CircuitBreakers: c.GetCircuitBreakers(), OutlierDetection: c.GetOutlierDetection()}
}

// checkCluster compares a served cluster's circuit_breakers and
// outlier_detection with served (Envoy's cluster, text format), and what
// the proxy reads of the cluster (client.Cluster, then
// config.ValidateCluster) with proxy (a breeze.v1.Cluster beyond its
// name, type and EDS service name).
func checkCluster(t *testing.T, c *clusterv3.Cluster, served, proxy string) {
	t.Helper()
	if c == nil {
		t.Fatal("no cluster served")
	}
	wantServed := &clusterv3.Cluster{}
	if err := prototext.Unmarshal([]byte(served), wantServed); err != nil {
		t.Fatalf("served: %v", err)
	}
	if got := resilienceOf(c); !proto.Equal(got, wantServed) {
		t.Errorf("served %s:\n got %v\nwant %v", c.GetName(), prototext.Format(got), prototext.Format(wantServed))
	}
	wantProxy := &breezev1.Cluster{}
	if err := prototext.Unmarshal([]byte(proxy), wantProxy); err != nil {
		t.Fatalf("proxy: %v", err)
	}
	wantProxy.Name, wantProxy.Type, wantProxy.EdsServiceName = c.GetName(), breezev1.Cluster_EDS, c.GetName()
	if got := proxyView(t, c); !proto.Equal(got, wantProxy) {
		t.Errorf("the proxy reads %s as\n%v\nwant\n%v", c.GetName(), prototext.Format(got), prototext.Format(wantProxy))
	}
}

// Istio's thresholds when a connectionPool is set: 2^32-1 for what it
// does not limit.
const noLimit = "4294967295"

// Istio's published examples (testdata/istio-resilience, verbatim) go
// through the control plane: the served cluster carries Envoy's
// circuit_breakers and outlier_detection as istiod writes them, and the
// proxy reads Istio's meaning back; what Breeze does not apply is named.
func TestIstioResilienceExamples(t *testing.T) {
	cases := []struct {
		file, host string
		port       uint32
		served     string
		proxy      string
		warnings   []string
	}{
		{file: "reviews-cb-policy.yaml", host: "reviews.prod.svc.cluster.local", port: 9080,
			served: `circuit_breakers {thresholds {max_connections {value: 100} max_pending_requests {value: ` + noLimit + `} max_requests {value: 1000} max_retries {value: ` + noLimit + `}}}
outlier_detection {consecutive_5xx {value: 7} enforcing_consecutive_5xx {value: 100} enforcing_success_rate {value: 0} interval {seconds: 300} base_ejection_time {seconds: 900}}`,
			proxy: `circuit_breakers {max_connections: 100 max_requests: 1000}
outlier_detection {consecutive_errors: 7 interval {seconds: 300} base_ejection_time {seconds: 900}}`,
			warnings: []string{"reviews-cb-policy.yaml: DestinationRule default/reviews-cb-policy: spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection: not supported by Breeze: its upstream connections multiplex requests and are not recycled by count; ignored"}},
		{file: "bookinfo-redis.yaml", host: "myredissrv.prod.svc.cluster.local", port: 6379,
			served: `circuit_breakers {thresholds {max_connections {value: 100} max_pending_requests {value: ` + noLimit + `} max_requests {value: ` + noLimit + `} max_retries {value: ` + noLimit + `}}}`,
			proxy:  `circuit_breakers {max_connections: 100}`,
			warnings: []string{
				"bookinfo-redis.yaml: DestinationRule default/bookinfo-redis: spec.trafficPolicy.connectionPool.tcp.connectTimeout: not applied by Breeze: Envoy's plainText cluster dials its upstream connections, with its own settings; ignored",
				"bookinfo-redis.yaml: DestinationRule default/bookinfo-redis: spec.trafficPolicy.connectionPool.tcp.tcpKeepalive: not applied by Breeze: Envoy's plainText cluster dials its upstream connections, with its own settings; ignored",
			}},
		{file: "httpbin-circuit-breaking.yaml", host: "httpbin", port: 8000,
			served: `circuit_breakers {thresholds {max_connections {value: 1} max_pending_requests {value: 1} max_requests {value: ` + noLimit + `} max_retries {value: ` + noLimit + `}}}
outlier_detection {consecutive_5xx {value: 1} enforcing_consecutive_5xx {value: 100} enforcing_success_rate {value: 0} interval {seconds: 1} base_ejection_time {seconds: 180} max_ejection_percent {value: 100}}`,
			proxy: `circuit_breakers {max_connections: 1 max_pending_requests: 1}
outlier_detection {consecutive_errors: 1 interval {seconds: 1} base_ejection_time {seconds: 180} max_ejection_percent: 100}`,
			warnings: []string{"httpbin-circuit-breaking.yaml: DestinationRule default/httpbin: spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection: not supported by Breeze: its upstream connections multiplex requests and are not recycled by count; ignored"}},
		// Istio ignores the deprecated consecutiveErrors (since 1.7): Envoy's
		// default of 5 consecutive errors applies.
		{file: "httpbin-circuit-breaking-consecutive-errors.yaml", host: "httpbin", port: 8000,
			served: `circuit_breakers {thresholds {max_connections {value: 1} max_pending_requests {value: 1} max_requests {value: ` + noLimit + `} max_retries {value: ` + noLimit + `}}}
outlier_detection {enforcing_success_rate {value: 0} interval {seconds: 1} base_ejection_time {seconds: 180} max_ejection_percent {value: 100}}`,
			proxy: `circuit_breakers {max_connections: 1 max_pending_requests: 1}
outlier_detection {interval {seconds: 1} base_ejection_time {seconds: 180} max_ejection_percent: 100}`,
			warnings: []string{
				"httpbin-circuit-breaking-consecutive-errors.yaml: DestinationRule default/httpbin: spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection: not supported by Breeze: its upstream connections multiplex requests and are not recycled by count; ignored",
				"httpbin-circuit-breaking-consecutive-errors.yaml: DestinationRule default/httpbin: spec.trafficPolicy.outlierDetection.consecutiveErrors: deprecated, and ignored by Istio since 1.7: use consecutive5xxErrors or consecutiveGatewayErrors; ignored",
			}},
		// Its ServiceEntry is in the file.
		{file: "destination-rule-all.yaml", host: "destall.default.svc.cluster.local", port: 81,
			served: `circuit_breakers {thresholds {max_connections {value: 99} max_pending_requests {value: 14} max_requests {value: 33} max_retries {value: 4}}}
outlier_detection {enforcing_success_rate {value: 0} interval {nanos: 8000000} base_ejection_time {seconds: 60} max_ejection_percent {value: 11}}`,
			proxy: `circuit_breakers {max_connections: 99 max_pending_requests: 14 max_requests: 33 max_retries: 4}
outlier_detection {interval {nanos: 8000000} base_ejection_time {seconds: 60} max_ejection_percent: 11}
subsets {name: "v2" labels {key: "version" value: "v2"} lb_policy: ROUND_ROBIN}`,
			warnings: []string{
				"destination-rule-all.yaml#2: DestinationRule testns/destall: spec.trafficPolicy.connectionPool.tcp.connectTimeout: not applied by Breeze: Envoy's plainText cluster dials its upstream connections, with its own settings; ignored",
				"destination-rule-all.yaml#2: DestinationRule testns/destall: spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection: not supported by Breeze: its upstream connections multiplex requests and are not recycled by count; ignored",
				"destination-rule-all.yaml#2: DestinationRule testns/destall: spec.trafficPolicy.tls: not applied by Breeze: the sidecar's own TLS settings carry its upstream connections; ignored",
				"destination-rule-all.yaml#2: DestinationRule testns/destall: spec.subsets[1].trafficPolicy.loadBalancer.consistentHash.httpCookie: only httpHeaderName (a request metadata key) is supported; ignored, round robin is used",
				"destination-rule-all.yaml#2: DestinationRule testns/destall: spec.subsets[1].trafficPolicy.loadBalancer.consistentHash.minimumRingSize: Breeze's rings have a fixed size; ignored",
			}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/istio-resilience", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			files := map[string]string{tc.file: string(data)}
			if !strings.Contains(string(data), "kind: ServiceEntry") {
				files["se.yaml"] = entry(tc.host, tc.port)
			}
			d := dir(t, files)
			tr, problems := read(t, d)
			var warnings []string
			for _, p := range problems {
				msg := strings.ReplaceAll(p.Error(), d+"/", "")
				if !p.Warning {
					t.Fatalf("error: %s", msg)
				}
				warnings = append(warnings, msg)
			}
			if !slices.Equal(warnings, tc.warnings) {
				t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warnings, "\n"), strings.Join(tc.warnings, "\n"))
			}
			checkCluster(t, tr.Resources.Clusters[ClusterName(tc.host, tc.port)], tc.served, tc.proxy)
		})
	}
}

// Istio's semantics, case by case: what a 0 means, the defaults when a
// block is present, a subset's trafficPolicy replacing the rule's blocks
// whole, port-level entries replacing the rule-wide settings whole, Go's
// durations.
func TestTranslateResilience(t *testing.T) {
	const greeter = "org.example.Greeter"
	cases := []struct {
		name  string
		ports []uint32 // of the ServiceEntry; unset: 20880
		spec  string   // the DestinationRule's, after host
		// By port: the served cluster's resilience fields and the proxy's
		// view of it, in text format.
		served, proxy map[uint32]string
		warnings      []string
	}{
		{name: "consecutive5xxErrors 0 disables it; consecutiveGatewayErrors 0 stays off",
			spec: "  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 0, consecutiveGatewayErrors: 0}}\n",
			served: map[uint32]string{20880: `outlier_detection {consecutive_5xx {value: 0} enforcing_consecutive_5xx {value: 0}
consecutive_gateway_failure {value: 0} enforcing_consecutive_gateway_failure {value: 0} enforcing_success_rate {value: 0}}`},
			proxy: map[uint32]string{20880: `outlier_detection {consecutive_errors: 0}`}},
		{name: "an empty outlierDetection: Envoy's defaults (5 consecutive errors)",
			spec:   "  trafficPolicy: {outlierDetection: {}}\n",
			served: map[uint32]string{20880: `outlier_detection {enforcing_success_rate {value: 0}}`},
			proxy:  map[uint32]string{20880: `outlier_detection {}`}},
		{name: "gateway errors",
			spec: "  trafficPolicy: {outlierDetection: {consecutiveGatewayErrors: 3, consecutive5xxErrors: 10}}\n",
			served: map[uint32]string{20880: `outlier_detection {consecutive_5xx {value: 10} enforcing_consecutive_5xx {value: 100}
consecutive_gateway_failure {value: 3} enforcing_consecutive_gateway_failure {value: 100} enforcing_success_rate {value: 0}}`},
			proxy: map[uint32]string{20880: `outlier_detection {consecutive_errors: 10 consecutive_gateway_errors: 3}`}},
		{name: "local origin failures apart",
			ports: []uint32{20880, 20881, 20882},
			spec: `  trafficPolicy:
    outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2}
    portLevelSettings:
    - {port: {number: 20881}, outlierDetection: {splitExternalLocalOriginErrors: true}}
    - {port: {number: 20882}, outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 0}}
`,
			served: map[uint32]string{
				20880: `outlier_detection {split_external_local_origin_errors: true consecutive_local_origin_failure {value: 2}
enforcing_consecutive_local_origin_failure {value: 100} enforcing_local_origin_success_rate {value: 0} enforcing_success_rate {value: 0}}`,
				// Istio writes no count for 0 as for none: Envoy's 5.
				20881: `outlier_detection {split_external_local_origin_errors: true enforcing_local_origin_success_rate {value: 0} enforcing_success_rate {value: 0}}`,
				20882: `outlier_detection {split_external_local_origin_errors: true enforcing_local_origin_success_rate {value: 0} enforcing_success_rate {value: 0}}`,
			},
			proxy: map[uint32]string{
				20880: `outlier_detection {consecutive_local_origin_failures: 2}`,
				20881: `outlier_detection {consecutive_local_origin_failures: 5}`,
				20882: `outlier_detection {consecutive_local_origin_failures: 5}`,
			}},
		{name: "Go durations",
			spec:   "  trafficPolicy: {outlierDetection: {interval: 1m30s, baseEjectionTime: 1500ms}}\n",
			served: map[uint32]string{20880: `outlier_detection {enforcing_success_rate {value: 0} interval {seconds: 90} base_ejection_time {seconds: 1 nanos: 500000000}}`},
			proxy:  map[uint32]string{20880: `outlier_detection {interval {seconds: 90} base_ejection_time {seconds: 1 nanos: 500000000}}`}},
		{name: "every limit",
			spec:   "  trafficPolicy: {connectionPool: {tcp: {maxConnections: 4}, http: {http1MaxPendingRequests: 3, http2MaxRequests: 2, maxRetries: 1}}}\n",
			served: map[uint32]string{20880: `circuit_breakers {thresholds {max_connections {value: 4} max_pending_requests {value: 3} max_requests {value: 2} max_retries {value: 1}}}`},
			proxy:  map[uint32]string{20880: `circuit_breakers {max_connections: 4 max_pending_requests: 3 max_requests: 2 max_retries: 1}`}},
		{name: "zeros are Istio's unset: no limit",
			spec:   "  trafficPolicy: {connectionPool: {tcp: {maxConnections: 0}, http: {http2MaxRequests: 0}}}\n",
			served: map[uint32]string{20880: `circuit_breakers {thresholds {max_connections {value: ` + noLimit + `} max_pending_requests {value: ` + noLimit + `} max_requests {value: ` + noLimit + `} max_retries {value: ` + noLimit + `}}}`},
			proxy:  map[uint32]string{20880: `circuit_breakers {}`}},
		{name: "retry budget with Istio's defaults",
			spec: "  trafficPolicy: {retryBudget: {}}\n",
			served: map[uint32]string{20880: `circuit_breakers {thresholds {max_connections {value: ` + noLimit + `} max_pending_requests {value: ` + noLimit + `} max_requests {value: ` + noLimit + `} max_retries {value: ` + noLimit + `}
retry_budget {budget_percent {value: 20} min_retry_concurrency {value: 3}}}}`},
			proxy: map[uint32]string{20880: `circuit_breakers {retry_budget {budget_percent: 20 min_retry_concurrency: 3}}`}},
		{name: "a retry budget overrides maxRetries",
			spec: "  trafficPolicy: {connectionPool: {http: {maxRetries: 5}}, retryBudget: {percent: 50, minRetryConcurrency: 10}}\n",
			served: map[uint32]string{20880: `circuit_breakers {thresholds {max_connections {value: ` + noLimit + `} max_pending_requests {value: ` + noLimit + `} max_requests {value: ` + noLimit + `} max_retries {value: 5}
retry_budget {budget_percent {value: 50} min_retry_concurrency {value: 10}}}}`},
			proxy:    map[uint32]string{20880: `circuit_breakers {retry_budget {budget_percent: 50 min_retry_concurrency: 10}}`},
			warnings: []string{"dr.yaml: DestinationRule demo/greeter: spec.trafficPolicy.connectionPool.http.maxRetries: 5: has no effect with a retryBudget, which overrides it (in Istio too: Envoy's rule); ignored"}},
		{name: "port-level settings replace the rule-wide ones whole",
			ports: []uint32{20880, 20990},
			spec: `  trafficPolicy:
    connectionPool: {http: {http2MaxRequests: 100}}
    outlierDetection: {consecutive5xxErrors: 3}
    retryBudget: {percent: 30}
    portLevelSettings:
    - {port: {number: 20990}, outlierDetection: {consecutive5xxErrors: 9}}
`,
			served: map[uint32]string{
				20880: `circuit_breakers {thresholds {max_connections {value: ` + noLimit + `} max_pending_requests {value: ` + noLimit + `} max_requests {value: 100} max_retries {value: ` + noLimit + `}
retry_budget {budget_percent {value: 30} min_retry_concurrency {value: 3}}}}
outlier_detection {consecutive_5xx {value: 3} enforcing_consecutive_5xx {value: 100} enforcing_success_rate {value: 0}}`,
				20990: `outlier_detection {consecutive_5xx {value: 9} enforcing_consecutive_5xx {value: 100} enforcing_success_rate {value: 0}}`,
			},
			proxy: map[uint32]string{
				20880: `circuit_breakers {max_requests: 100 retry_budget {budget_percent: 30 min_retry_concurrency: 3}} outlier_detection {consecutive_errors: 3}`,
				20990: `outlier_detection {consecutive_errors: 9}`,
			}},
		{name: "a subset's blocks replace the rule's whole",
			ports: []uint32{20880, 20990},
			spec: `  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 50}, http: {http2MaxRequests: 100}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s}
  subsets:
  - {name: v0, labels: {version: v0}}
  - {name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {tcp: {maxConnections: 5}}}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {retryBudget: {percent: 10}}}
  - {name: v3, labels: {version: v3}, trafficPolicy: {outlierDetection: {consecutiveGatewayErrors: 2}}}
  - name: v4
    labels: {version: v4}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
      portLevelSettings: [{port: {number: 20990}, loadBalancer: {simple: LEAST_REQUEST}}]
`,
			served: map[uint32]string{
				20880: `circuit_breakers {thresholds {max_connections {value: 50} max_pending_requests {value: ` + noLimit + `} max_requests {value: 100} max_retries {value: ` + noLimit + `}}}
outlier_detection {consecutive_5xx {value: 3} enforcing_consecutive_5xx {value: 100} enforcing_success_rate {value: 0} interval {seconds: 5}}`,
				20990: `circuit_breakers {thresholds {max_connections {value: 50} max_pending_requests {value: ` + noLimit + `} max_requests {value: 100} max_retries {value: ` + noLimit + `}}}
outlier_detection {consecutive_5xx {value: 3} enforcing_consecutive_5xx {value: 100} enforcing_success_rate {value: 0} interval {seconds: 5}}`,
			},
			proxy: map[uint32]string{
				20880: `circuit_breakers {max_connections: 50 max_requests: 100}
outlier_detection {consecutive_errors: 3 interval {seconds: 5}}
subsets {name: "v1" labels {key: "version" value: "v1"} circuit_breakers {max_connections: 5}}
subsets {name: "v2" labels {key: "version" value: "v2"} circuit_breakers {max_connections: 50 max_requests: 100 retry_budget {budget_percent: 10 min_retry_concurrency: 3}}}
subsets {name: "v3" labels {key: "version" value: "v3"} outlier_detection {consecutive_gateway_errors: 2}}
subsets {name: "v4" labels {key: "version" value: "v4"} lb_policy: RANDOM}`,
				// v4's port-level entry replaces its limits and detector on
				// 20990: none, as Istio's subset cluster there has none.
				20990: `circuit_breakers {max_connections: 50 max_requests: 100}
outlier_detection {consecutive_errors: 3 interval {seconds: 5}}
subsets {name: "v1" labels {key: "version" value: "v1"} circuit_breakers {max_connections: 5}}
subsets {name: "v2" labels {key: "version" value: "v2"} circuit_breakers {max_connections: 50 max_requests: 100 retry_budget {budget_percent: 10 min_retry_concurrency: 3}}}
subsets {name: "v3" labels {key: "version" value: "v3"} outlier_detection {consecutive_gateway_errors: 2}}
subsets {name: "v4" labels {key: "version" value: "v4"} lb_policy: LEAST_REQUEST circuit_breakers {} outlier_detection {consecutive_errors: 0}}`,
			}},
		{name: "a subset's maxRetries under the rule's retry budget",
			spec: `  trafficPolicy: {retryBudget: {percent: 30}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {http: {maxRetries: 2}}}}
`,
			served: map[uint32]string{20880: `circuit_breakers {thresholds {max_connections {value: ` + noLimit + `} max_pending_requests {value: ` + noLimit + `} max_requests {value: ` + noLimit + `} max_retries {value: ` + noLimit + `}
retry_budget {budget_percent {value: 30} min_retry_concurrency {value: 3}}}}`},
			proxy: map[uint32]string{20880: `circuit_breakers {retry_budget {budget_percent: 30 min_retry_concurrency: 3}}
subsets {name: "v1" labels {key: "version" value: "v1"} circuit_breakers {retry_budget {budget_percent: 30 min_retry_concurrency: 3}}}`},
			warnings: []string{"dr.yaml: DestinationRule demo/greeter: spec.subsets[0].trafficPolicy.connectionPool.http.maxRetries: 2: has no effect with spec.trafficPolicy.retryBudget, which overrides it (in Istio too: Envoy's rule); ignored"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ports := tc.ports
			if ports == nil {
				ports = []uint32{20880}
			}
			d := dir(t, map[string]string{"se.yaml": entry(greeter, ports...), "dr.yaml": rule(tc.spec)})
			tr, problems := read(t, d)
			var warnings []string
			for _, p := range problems {
				msg := strings.ReplaceAll(p.Error(), d+"/", "")
				if !p.Warning {
					t.Fatalf("error: %s", msg)
				}
				warnings = append(warnings, msg)
			}
			if !slices.Equal(warnings, tc.warnings) {
				t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warnings, "\n"), strings.Join(tc.warnings, "\n"))
			}
			for _, port := range ports {
				checkCluster(t, tr.Resources.Clusters[ClusterName(greeter, port)], tc.served[port], tc.proxy[port])
			}
		})
	}
}

// Values istiod refuses are errors naming the field and the value; the
// rule's clusters keep their last good version (they fail here).
func TestTranslateResilienceErrors(t *testing.T) {
	cases := []struct {
		name, spec string
		want       []string
	}{
		{"ejection percent out of range", "  trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}\n",
			[]string{"spec.trafficPolicy.outlierDetection.maxEjectionPercent: 101: must be 0–100"}},
		{"negative ejection percent, port-level", "  trafficPolicy: {portLevelSettings: [{port: {number: 20880}, outlierDetection: {maxEjectionPercent: -1}}]}\n",
			[]string{"spec.trafficPolicy.portLevelSettings[0].outlierDetection.maxEjectionPercent: -1: must be 0–100"}},
		{"negative limits", "  trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}, http: {http1MaxPendingRequests: -2, http2MaxRequests: -3, maxRetries: -4}}}\n",
			[]string{
				"spec.trafficPolicy.connectionPool.tcp.maxConnections: -1: must not be negative",
				"spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests: -2: must not be negative",
				"spec.trafficPolicy.connectionPool.http.http2MaxRequests: -3: must not be negative",
				"spec.trafficPolicy.connectionPool.http.maxRetries: -4: must not be negative",
			}},
		{"durations Istio refuses", "  trafficPolicy: {outlierDetection: {interval: 0s, baseEjectionTime: 1500us}}\n",
			[]string{
				"spec.trafficPolicy.outlierDetection.interval: 0s: must be at least 1ms",
				"spec.trafficPolicy.outlierDetection.baseEjectionTime: 1.5ms: must be whole milliseconds",
			}},
		{"negative duration", "  trafficPolicy: {outlierDetection: {baseEjectionTime: -30s}}\n",
			[]string{"spec.trafficPolicy.outlierDetection.baseEjectionTime: -30s: must be at least 1ms"}},
		{"local origin count without the split", "  trafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}\n",
			[]string{"spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: 3: counted only with splitExternalLocalOriginErrors: true; set it too"}},
		{"retry budget percent out of range", "  trafficPolicy: {retryBudget: {percent: 150}}\n",
			[]string{"spec.trafficPolicy.retryBudget.percent: 150: must be 0–100"}},
		{"a subset's", "  subsets:\n  - {name: v1, labels: {version: v1}, trafficPolicy: {outlierDetection: {maxEjectionPercent: 200}, retryBudget: {percent: -5}}}\n",
			[]string{
				"spec.subsets[0].trafficPolicy.outlierDetection.maxEjectionPercent: 200: must be 0–100",
				"spec.subsets[0].trafficPolicy.retryBudget.percent: -5: must be 0–100",
			}},
	}
	const cname = "outbound|20880||org.example.Greeter"
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := dir(t, map[string]string{"se.yaml": entry("org.example.Greeter", 20880), "dr.yaml": rule(tc.spec)})
			tr, problems := read(t, d)
			var got []string
			for _, p := range problems {
				if !p.Warning {
					got = append(got, strings.TrimPrefix(p.Error(), d+"/dr.yaml: DestinationRule demo/greeter: "))
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if !tr.FailedClusters[cname] || tr.Resources.Clusters[cname] != nil {
				t.Fatalf("cluster %s not failed: failed %v, served %v", cname, tr.FailedClusters, tr.Resources.Clusters[cname])
			}
		})
	}
}

// breeze validate (Lint) reports the same errors, in files.
func TestLintResilience(t *testing.T) {
	se := entry("org.example.Greeter", 20880)
	dr := rule("  trafficPolicy: {outlierDetection: {maxEjectionPercent: 120, interval: 0s}, retryBudget: {percent: 101}}\n")
	var got []string
	for _, p := range Lint(File{Name: "se.yaml", Data: []byte(se)}, File{Name: "dr.yaml", Data: []byte(dr)}) {
		got = append(got, p.Error())
	}
	want := []string{
		"dr.yaml: DestinationRule demo/greeter: spec.trafficPolicy.outlierDetection.maxEjectionPercent: 120: must be 0–100",
		"dr.yaml: DestinationRule demo/greeter: spec.trafficPolicy.outlierDetection.interval: 0s: must be at least 1ms",
		"dr.yaml: DestinationRule demo/greeter: spec.trafficPolicy.retryBudget.percent: 101: must be 0–100",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
