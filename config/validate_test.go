package config

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/breeze-mesh/breeze/codecs"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// testCodec stands in for a real codec: Validate only needs a registered name
// whose factory judges the options.
const testCodec = "dubbo"

func init() {
	if _, ok := codecs.Lookup(testCodec); ok {
		return // the real one is linked in
	}
	codecs.Register(testCodec, func(o codecs.Options) (codecs.Codec, error) {
		for k := range o.Params {
			if k != "serialization" {
				return nil, fmt.Errorf("unknown codec_params key %q", k)
			}
		}
		return nil, nil
	})
}

// validConfig is the README's runner proxy.
func validConfig() *breezev1.ProxyConfig {
	return &breezev1.ProxyConfig{
		StatPrefix:     "greeter",
		Codec:          testCodec,
		RequestTimeout: durationpb.New(3 * time.Second),
		RouteConfig: &breezev1.RouteConfiguration{
			Name: "greeter",
			Routes: []*breezev1.Route{
				{
					Name: "say-hello-v1",
					Match: &breezev1.RouteMatch{Metadata: []*breezev1.MetadataMatcher{
						{Key: "interface", Match: &breezev1.MetadataMatcher_Exact{Exact: "org.example.Greeter"}},
						{Key: "method", Match: &breezev1.MetadataMatcher_Exact{Exact: "SayHello"}},
					}},
					Route: &breezev1.RouteAction{
						ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "greeter"},
						Subset:           map[string]string{"version": "v1"},
					},
					Timeout: durationpb.New(time.Second),
				},
				{
					Name: "canary-split",
					Route: &breezev1.RouteAction{
						ClusterSpecifier: &breezev1.RouteAction_WeightedClusters{WeightedClusters: &breezev1.WeightedClusters{
							Clusters: []*breezev1.ClusterWeight{
								{Name: "greeter-canary", Weight: 20},
								{Name: "greeter", Weight: 80},
							},
						}},
					},
				},
			},
		},
		Clusters: []*breezev1.Cluster{
			{
				Name:     "greeter",
				Type:     breezev1.Cluster_STATIC,
				LbPolicy: breezev1.Cluster_LEAST_REQUEST,
				Endpoints: []*breezev1.Endpoint{
					{Address: "127.0.0.1", Port: 20881, Labels: map[string]string{"version": "v1"}},
					{Address: "127.0.0.1", Port: 20882, Labels: map[string]string{"version": "v2"}},
				},
			},
			{
				Name:           "greeter-canary",
				Type:           breezev1.Cluster_STRICT_DNS,
				DnsRefreshRate: durationpb.New(10 * time.Second),
				Endpoints: []*breezev1.Endpoint{
					{Address: "localhost", Port: 20883, Labels: map[string]string{"version": "v3"}},
				},
			},
		},
	}
}

// Shorthands into validConfig.
func route(c *breezev1.ProxyConfig, i int) *breezev1.Route { return c.RouteConfig.Routes[i] }
func weights(c *breezev1.ProxyConfig) []*breezev1.ClusterWeight {
	return route(c, 1).Route.GetWeightedClusters().Clusters
}
func matcher(c *breezev1.ProxyConfig, j int) *breezev1.MetadataMatcher {
	return route(c, 0).Match.Metadata[j]
}
func endpoint(c *breezev1.ProxyConfig, i, k int) *breezev1.Endpoint {
	return c.Clusters[i].Endpoints[k]
}

// joined returns the errors errors.Join put together (or err alone).
func joined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestValidateAcceptsValid(t *testing.T) {
	cases := map[string]func(c *breezev1.ProxyConfig){
		"readme config": func(*breezev1.ProxyConfig) {},
		// Its endpoints are 127.0.0.1 and localhost: all loopback.
		"go loopback": func(c *breezev1.ProxyConfig) { c.UpstreamConnect = breezev1.UpstreamConnect_GO_LOOPBACK },
		"go loopback to ::1 and 127.0.0.2": func(c *breezev1.ProxyConfig) {
			c.UpstreamConnect = breezev1.UpstreamConnect_GO_LOOPBACK
			endpoint(c, 0, 0).Address = "::1"
			endpoint(c, 0, 1).Address = "127.0.0.2"
		},
		"no routes": func(c *breezev1.ProxyConfig) { c.RouteConfig = nil },
		"matchers of every kind": func(c *breezev1.ProxyConfig) {
			route(c, 0).Match.Metadata = []*breezev1.MetadataMatcher{
				{Key: "method", Match: &breezev1.MetadataMatcher_Prefix{Prefix: "Say"}},
				{Key: "method", Match: &breezev1.MetadataMatcher_Regex{Regex: "Say(Hello|Bye)"}},
				{Key: "tenant", Match: &breezev1.MetadataMatcher_Present{Present: false}, Invert: true},
				{Key: "empty", Match: &breezev1.MetadataMatcher_Exact{Exact: ""}},
			}
		},
		"hash key on cluster": func(c *breezev1.ProxyConfig) {
			c.Clusters[0].LbPolicy = breezev1.Cluster_RING_HASH
			c.Clusters[0].HashKey = "user"
		},
		"hash key on every route": func(c *breezev1.ProxyConfig) {
			c.Clusters[0].LbPolicy = breezev1.Cluster_MAGLEV
			route(c, 0).Route.HashKey = "user"
			route(c, 1).Route.HashKey = "user"
		},
		"hash cluster no route targets": func(c *breezev1.ProxyConfig) {
			c.Clusters = append(c.Clusters, &breezev1.Cluster{Name: "spare", LbPolicy: breezev1.Cluster_RING_HASH})
		},
		"dns names": func(c *breezev1.ProxyConfig) {
			c.Clusters[1].Endpoints = []*breezev1.Endpoint{
				{Address: "greeter.default.svc.cluster.local.", Port: 1, Labels: map[string]string{"version": "v3"}},
				{Address: "_grpc.example.com", Port: 65535},
				{Address: "10.0.0.1", Port: 80},
				{Address: "::1", Port: 80},
				{Address: "a-b.c3", Port: 80},
			}
		},
		"ipv6 static": func(c *breezev1.ProxyConfig) { endpoint(c, 0, 0).Address = "2001:db8::1" },
		"zero durations where allowed": func(c *breezev1.ProxyConfig) {
			c.IdleTimeout = durationpb.New(0)
			c.RequestTimeout = durationpb.New(0)
			route(c, 0).Timeout = durationpb.New(0)
			c.Clusters[0].ConnectTimeout = durationpb.New(0)
			c.Clusters[1].DnsRefreshRate = durationpb.New(0)
		},
		"weighted subsets": func(c *breezev1.ProxyConfig) {
			weights(c)[1].Subset = map[string]string{"version": "v2"}
			weights(c)[0].Weight = 0
		},
		"codec params": func(c *breezev1.ProxyConfig) {
			c.CodecParams = map[string]string{"serialization": "hessian2"}
			c.MaxFrameSize = 1 << 20
		},
		"xds routes only": func(c *breezev1.ProxyConfig) {
			c.Xds = &breezev1.XdsSource{Address: "istiod.istio-system.svc:15010", RouteConfigName: "greeter_20880"}
			c.RouteConfig = nil
		},
		"resilience at the bounds": func(c *breezev1.ProxyConfig) {
			c.Clusters[0].CircuitBreakers = &breezev1.CircuitBreakers{MaxConnections: 1, RetryBudget: &breezev1.RetryBudget{BudgetPercent: proto.Float64(100)}}
			c.Clusters[0].OutlierDetection = &breezev1.OutlierDetection{
				ConsecutiveErrors: proto.Uint32(0), MaxEjectionPercent: proto.Uint32(100),
				Interval: durationpb.New(time.Millisecond), BaseEjectionTime: durationpb.New(time.Nanosecond), MaxEjectionTime: durationpb.New(time.Hour),
			}
			c.Clusters[0].Subsets = []*breezev1.ClusterSubset{{Labels: map[string]string{"version": "v1"},
				CircuitBreakers:  &breezev1.CircuitBreakers{RetryBudget: &breezev1.RetryBudget{BudgetPercent: proto.Float64(0)}},
				OutlierDetection: &breezev1.OutlierDetection{MaxEjectionPercent: proto.Uint32(0)},
			}}
		},
		"mirrors at the bounds": func(c *breezev1.ProxyConfig) {
			route(c, 0).Route.RequestMirrorPolicies = []*breezev1.RequestMirrorPolicy{
				{Cluster: "greeter", Subset: map[string]string{"version": "v2"}, Percentage: proto.Float64(0)},
				{Cluster: "greeter-canary", Percentage: proto.Float64(100)},
				{Cluster: "greeter"}, // unset: every request
			}
			route(c, 1).Route.RequestMirrorPolicies = []*breezev1.RequestMirrorPolicy{{Cluster: "greeter", Percentage: proto.Float64(0.0001)}}
		},
		"mirror to an xds cluster": func(c *breezev1.ProxyConfig) {
			c.Xds = &breezev1.XdsSource{Address: "127.0.0.1:15010"} // names nothing to fetch but the mirror
			route(c, 0).Route.RequestMirrorPolicies = []*breezev1.RequestMirrorPolicy{{Cluster: "outbound|20880||shadow"}}
		},
		"eds cluster with subsets": func(c *breezev1.ProxyConfig) {
			c.Xds = &breezev1.XdsSource{Address: "127.0.0.1:15010", NodeId: "n1"}
			c.Clusters[1].Type = breezev1.Cluster_EDS
			c.Clusters[1].Endpoints = nil
			c.Clusters[1].EdsServiceName = "outbound|20880||greeter"
			weights(c)[0].Subset = map[string]string{"version": "v9"} // labels arrive at run time
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			c := validConfig()
			mutate(c)
			if err := Validate(c); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(c *breezev1.ProxyConfig)
		want   []string // one substring per reported error, in order
	}{
		{"stat_prefix empty", func(c *breezev1.ProxyConfig) { c.StatPrefix = "" },
			[]string{`stat_prefix: "": required`}},
		{"codec empty", func(c *breezev1.ProxyConfig) { c.Codec = "" },
			[]string{`codec: "": required`}},
		{"codec unknown", func(c *breezev1.ProxyConfig) { c.Codec = "dubbbo" },
			[]string{`codec: "dubbbo": no such codec (registered: `}},
		{"codec rejects params", func(c *breezev1.ProxyConfig) { c.CodecParams = map[string]string{"serialisation": "x"} },
			[]string{`codec: "dubbo": rejects max_frame_size or codec_params: unknown codec_params key "serialisation"`}},
		{"idle_timeout negative", func(c *breezev1.ProxyConfig) { c.IdleTimeout = durationpb.New(-time.Second) },
			[]string{`idle_timeout: -1s: must not be negative`}},
		{"request_timeout invalid", func(c *breezev1.ProxyConfig) {
			c.RequestTimeout = &durationpb.Duration{Seconds: 1, Nanos: 2e9}
		}, []string{`request_timeout: {seconds: 1, nanos: 2000000000}: invalid duration`}},
		{"retry_on unknown", func(c *breezev1.ProxyConfig) { route(c, 0).RetryPolicy = &breezev1.RetryPolicy{RetryOn: "reset,5xx"} },
			[]string{`route_config.routes[0].retry_policy: retry_on "reset,5xx": unknown condition "5xx" (known: connect-failure, reset, goaway, retriable-status-codes, timeout)`}},
		{"timeout retries need idempotent", func(c *breezev1.ProxyConfig) { c.RetryPolicy = &breezev1.RetryPolicy{RetryOn: "timeout"} },
			[]string{`retry_policy: retry_on "timeout" needs idempotent: true`}},
		{"per-try timeout negative", func(c *breezev1.ProxyConfig) {
			route(c, 1).RetryPolicy = &breezev1.RetryPolicy{PerTryTimeout: durationpb.New(-time.Second)}
		}, []string{`route_config.routes[1].retry_policy.per_try_timeout: -1s: must not be negative`}},
		{"upstream_connect unknown", func(c *breezev1.ProxyConfig) { c.UpstreamConnect = 7 },
			[]string{`upstream_connect: 7: `}},
		{"go loopback to the pod IP", func(c *breezev1.ProxyConfig) {
			c.UpstreamConnect = breezev1.UpstreamConnect_GO_LOOPBACK
			endpoint(c, 0, 1).Address = "10.1.2.3"
		}, []string{`clusters[0].endpoints[1].address: "10.1.2.3": upstream_connect GO_LOOPBACK dials only loopback addresses (127.0.0.0/8, ::1): any other would bypass the mesh's mTLS`}},
		{"go loopback to a host name", func(c *breezev1.ProxyConfig) {
			c.UpstreamConnect = breezev1.UpstreamConnect_GO_LOOPBACK
			endpoint(c, 1, 0).Address = "greeter.demo.svc"
		}, []string{`clusters[1].endpoints[0].address: "greeter.demo.svc": upstream_connect GO_LOOPBACK dials only loopback addresses (127.0.0.0/8, ::1): any other would bypass the mesh's mTLS; a host name other than localhost may resolve to any address`}},
		{"go loopback with endpoints from xds", func(c *breezev1.ProxyConfig) {
			c.UpstreamConnect = breezev1.UpstreamConnect_GO_LOOPBACK
			c.Xds = &breezev1.XdsSource{Address: "127.0.0.1:15010"}
			c.Clusters[1].Type = breezev1.Cluster_EDS
			c.Clusters[1].Endpoints = nil
		}, []string{
			`xds: set: upstream_connect GO_LOOPBACK dials only loopback addresses`,
			`clusters[1].type: EDS: upstream_connect GO_LOOPBACK dials only loopback addresses (127.0.0.0/8, ::1): any other would bypass the mesh's mTLS, and endpoints from xDS may be any address: use STATIC`,
		}},
		{"route without action", func(c *breezev1.ProxyConfig) { route(c, 0).Route = nil },
			[]string{`route_config.routes[0].route: <unset>: a route needs an action: cluster or weighted_clusters`}},
		{"route with empty action", func(c *breezev1.ProxyConfig) { route(c, 1).Route = &breezev1.RouteAction{HashKey: "x"} },
			[]string{`route_config.routes[1].route: <unset>: a route needs an action`}},
		{"route to missing cluster", func(c *breezev1.ProxyConfig) {
			route(c, 0).Route.ClusterSpecifier = &breezev1.RouteAction_Cluster{Cluster: "greeter-v1"}
		}, []string{`route_config.routes[0].route.cluster: "greeter-v1": no such cluster`}},
		{"route to empty cluster name", func(c *breezev1.ProxyConfig) {
			route(c, 0).Route.ClusterSpecifier = &breezev1.RouteAction_Cluster{}
		}, []string{`route_config.routes[0].route.cluster: "": required`}},
		{"subset no endpoint has", func(c *breezev1.ProxyConfig) { route(c, 0).Route.Subset["version"] = "v9" },
			[]string{`route_config.routes[0].route.subset: {"version": "v9"}: no endpoint of cluster "greeter" has these labels`}},
		{"subset labels on different endpoints", func(c *breezev1.ProxyConfig) {
			endpoint(c, 0, 1).Labels["zone"] = "a"
			route(c, 0).Route.Subset["zone"] = "a" // v1 is on endpoint 0, zone a on endpoint 1
		}, []string{`route_config.routes[0].route.subset: {"version": "v1", "zone": "a"}: no endpoint of cluster "greeter"`}},
		{"subset of dns cluster", func(c *breezev1.ProxyConfig) { weights(c)[0].Subset = map[string]string{"version": "v1"} },
			[]string{`route_config.routes[1].route.weighted_clusters.clusters[0].subset: {"version": "v1"}: no endpoint of cluster "greeter-canary"`}},
		{"route subset with weighted clusters", func(c *breezev1.ProxyConfig) {
			route(c, 1).Route.Subset = map[string]string{"version": "v1"}
		}, []string{`route_config.routes[1].route.subset: {"version": "v1"}: applies to route.cluster only`}},
		{"weighted total 0", func(c *breezev1.ProxyConfig) { weights(c)[0].Weight, weights(c)[1].Weight = 0, 0 },
			[]string{`route_config.routes[1].route.weighted_clusters.clusters: total weight 0: the weights must add up to more than 0`}},
		{"weighted no clusters", func(c *breezev1.ProxyConfig) { route(c, 1).Route.GetWeightedClusters().Clusters = nil },
			[]string{`route_config.routes[1].route.weighted_clusters.clusters: []: needs at least one cluster`}},
		{"weighted missing cluster", func(c *breezev1.ProxyConfig) { weights(c)[1].Name = "greeter-main" },
			[]string{`route_config.routes[1].route.weighted_clusters.clusters[1].name: "greeter-main": no such cluster`}},
		{"weighted empty name", func(c *breezev1.ProxyConfig) { weights(c)[0].Name = "" },
			[]string{`route_config.routes[1].route.weighted_clusters.clusters[0].name: "": required`}},
		{"regex does not compile", func(c *breezev1.ProxyConfig) {
			matcher(c, 1).Match = &breezev1.MetadataMatcher_Regex{Regex: "("}
		}, []string{"route_config.routes[0].match.metadata[1].regex: \"(\": error parsing regexp: missing closing ): `(`"}},
		{"matcher without key", func(c *breezev1.ProxyConfig) { matcher(c, 0).Key = "" },
			[]string{`route_config.routes[0].match.metadata[0].key: "": required`}},
		{"matcher without match", func(c *breezev1.ProxyConfig) { matcher(c, 1).Match = nil },
			[]string{`route_config.routes[0].match.metadata[1]: key "method": needs one of exact, prefix, regex, present`}},
		{"mutation without key", func(c *breezev1.ProxyConfig) {
			route(c, 0).RequestMutation = []*breezev1.KeyValue{{Key: "env", Value: "x"}, {Value: "y"}}
		}, []string{`route_config.routes[0].request_mutation[1].key: "": required`}},
		{"mirror to missing cluster", func(c *breezev1.ProxyConfig) {
			route(c, 0).Route.RequestMirrorPolicies = []*breezev1.RequestMirrorPolicy{{Cluster: "greeter-shadow"}}
		}, []string{`route_config.routes[0].route.request_mirror_policies[0].cluster: "greeter-shadow": no such cluster`}},
		{"mirror without cluster", func(c *breezev1.ProxyConfig) {
			route(c, 1).Route.RequestMirrorPolicies = []*breezev1.RequestMirrorPolicy{{Percentage: proto.Float64(5)}}
		}, []string{`route_config.routes[1].route.request_mirror_policies[0].cluster: "": required`}},
		{"mirror subset no endpoint has", func(c *breezev1.ProxyConfig) {
			route(c, 0).Route.RequestMirrorPolicies = []*breezev1.RequestMirrorPolicy{{Cluster: "greeter"}, {Cluster: "greeter", Subset: map[string]string{"version": "v9"}}}
		}, []string{`route_config.routes[0].route.request_mirror_policies[1].subset: {"version": "v9"}: no endpoint of cluster "greeter" has these labels`}},
		{"mirror percentages out of range", func(c *breezev1.ProxyConfig) {
			route(c, 0).Route.RequestMirrorPolicies = []*breezev1.RequestMirrorPolicy{
				{Cluster: "greeter", Percentage: proto.Float64(100.5)},
				{Cluster: "greeter", Percentage: proto.Float64(-1)},
				{Cluster: "greeter", Percentage: proto.Float64(math.NaN())},
			}
		}, []string{
			`route_config.routes[0].route.request_mirror_policies[0].percentage: 100.5: must be 0–100 (percent of the route's requests mirrored)`,
			`route_config.routes[0].route.request_mirror_policies[1].percentage: -1: must be 0–100`,
			`route_config.routes[0].route.request_mirror_policies[2].percentage: NaN: must be 0–100`,
		}},
		{"route timeout negative", func(c *breezev1.ProxyConfig) { route(c, 1).Timeout = durationpb.New(-1500 * time.Millisecond) },
			[]string{`route_config.routes[1].timeout: -1.5s: must not be negative`}},
		{"cluster without name", func(c *breezev1.ProxyConfig) {
			c.Clusters = append(c.Clusters, &breezev1.Cluster{})
		}, []string{`clusters[2].name: "": required`}},
		{"duplicate cluster", func(c *breezev1.ProxyConfig) {
			c.Clusters = append(c.Clusters, &breezev1.Cluster{Name: "greeter"})
		}, []string{`clusters[2].name: "greeter": duplicate cluster name (also clusters[0])`}},
		{"unknown discovery type", func(c *breezev1.ProxyConfig) { c.Clusters[0].Type = 9 },
			[]string{`clusters[0].type: 9: type must be one of STATIC, STRICT_DNS, EDS`}},
		{"unknown lb policy", func(c *breezev1.ProxyConfig) { c.Clusters[1].LbPolicy = -1 },
			[]string{`clusters[1].lb_policy: -1: lb_policy must be one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV`}},
		{"static host name", func(c *breezev1.ProxyConfig) { endpoint(c, 0, 1).Address = "greeter.local" },
			[]string{`clusters[0].endpoints[1].address: "greeter.local": a STATIC cluster needs a literal IP address`}},
		{"static ip with port", func(c *breezev1.ProxyConfig) { endpoint(c, 0, 0).Address = "127.0.0.1:20880" },
			[]string{`clusters[0].endpoints[0].address: "127.0.0.1:20880": a STATIC cluster needs a literal IP address`}},
		{"static empty address", func(c *breezev1.ProxyConfig) { endpoint(c, 0, 0).Address = "" },
			[]string{`clusters[0].endpoints[0].address: "": a STATIC cluster needs a literal IP address`}},
		{"static ipv6 zone", func(c *breezev1.ProxyConfig) { endpoint(c, 0, 0).Address = "fe80::1%eth0" },
			[]string{`clusters[0].endpoints[0].address: "fe80::1%eth0": IPv6 zones are not supported`}},
		{"port 0", func(c *breezev1.ProxyConfig) { endpoint(c, 0, 0).Port = 0 },
			[]string{`clusters[0].endpoints[0].port: 0: must be 1–65535`}},
		{"port too large", func(c *breezev1.ProxyConfig) { endpoint(c, 1, 0).Port = 65536 },
			[]string{`clusters[1].endpoints[0].port: 65536: must be 1–65535`}},
		{"dns bad names", func(c *breezev1.ProxyConfig) {
			c.Clusters[1].Endpoints = append(c.Clusters[1].Endpoints,
				&breezev1.Endpoint{Address: "greeter canary", Port: 1},
				&breezev1.Endpoint{Address: "-greeter.local", Port: 1},
				&breezev1.Endpoint{Address: "10.0.0.256", Port: 1},
				&breezev1.Endpoint{Address: "a..b", Port: 1},
				&breezev1.Endpoint{Address: "", Port: 1},
				&breezev1.Endpoint{Address: strings.Repeat("a", 64) + ".com", Port: 1},
			)
		}, []string{
			`clusters[1].endpoints[1].address: "greeter canary": not a valid host name`,
			`clusters[1].endpoints[2].address: "-greeter.local": not a valid host name`,
			`clusters[1].endpoints[3].address: "10.0.0.256": not a valid host name`,
			`clusters[1].endpoints[4].address: "a..b": not a valid host name`,
			`clusters[1].endpoints[5].address: "": not a valid host name`,
			`clusters[1].endpoints[6].address: "aaaa`,
		}},
		{"dns_refresh_rate negative", func(c *breezev1.ProxyConfig) { c.Clusters[1].DnsRefreshRate = durationpb.New(-time.Minute) },
			[]string{`clusters[1].dns_refresh_rate: -1m0s: must not be negative`}},
		{"connect_timeout negative", func(c *breezev1.ProxyConfig) { c.Clusters[0].ConnectTimeout = durationpb.New(-time.Millisecond) },
			[]string{`clusters[0].connect_timeout: -1ms: must not be negative`}},
		{"ring hash without any hash key", func(c *breezev1.ProxyConfig) { c.Clusters[0].LbPolicy = breezev1.Cluster_RING_HASH },
			[]string{`clusters[0].hash_key: "": RING_HASH cluster needs a hash_key, or one on every route that targets it (none on route_config.routes[0], route_config.routes[1])`}},
		{"maglev with a route lacking the key", func(c *breezev1.ProxyConfig) {
			c.Clusters[1].LbPolicy = breezev1.Cluster_MAGLEV
			route(c, 0).Route.HashKey = "user" // does not target greeter-canary anyway
		}, []string{`clusters[1].hash_key: "": MAGLEV cluster needs a hash_key, or one on every route that targets it (none on route_config.routes[1])`}},
		{"eds without xds", func(c *breezev1.ProxyConfig) {
			c.Clusters[1].Type = breezev1.Cluster_EDS
			c.Clusters[1].Endpoints = nil
		}, []string{`clusters[1].type: EDS: needs xds.address, the server to fetch endpoints from`}},
		{"eds with endpoints", func(c *breezev1.ProxyConfig) {
			c.Xds = &breezev1.XdsSource{Address: "127.0.0.1:15010"}
			c.Clusters[1].Type = breezev1.Cluster_EDS
		}, []string{`clusters[1].endpoints: 1 endpoints: an EDS cluster takes its endpoints from xDS only: remove them`}},
		{"eds_service_name on static", func(c *breezev1.ProxyConfig) { c.Clusters[0].EdsServiceName = "x" },
			[]string{`clusters[0].eds_service_name: "x": applies to type EDS only (type is STATIC)`}},
		{"retry budget over 100%", func(c *breezev1.ProxyConfig) {
			c.Clusters[0].CircuitBreakers = &breezev1.CircuitBreakers{RetryBudget: &breezev1.RetryBudget{BudgetPercent: proto.Float64(100.5)}}
		}, []string{`clusters[0].circuit_breakers.retry_budget.budget_percent: 100.5: must be 0–100`}},
		{"retry budget negative or NaN", func(c *breezev1.ProxyConfig) {
			c.Clusters[0].CircuitBreakers = &breezev1.CircuitBreakers{RetryBudget: &breezev1.RetryBudget{BudgetPercent: proto.Float64(-1)}}
			c.Clusters[1].CircuitBreakers = &breezev1.CircuitBreakers{RetryBudget: &breezev1.RetryBudget{BudgetPercent: proto.Float64(math.NaN())}}
		}, []string{
			`clusters[0].circuit_breakers.retry_budget.budget_percent: -1: must be 0–100`,
			`clusters[1].circuit_breakers.retry_budget.budget_percent: NaN: must be 0–100`,
		}},
		{"outlier detection out of range", func(c *breezev1.ProxyConfig) {
			c.Clusters[0].OutlierDetection = &breezev1.OutlierDetection{
				MaxEjectionPercent: proto.Uint32(101),
				Interval:           durationpb.New(0),
				BaseEjectionTime:   durationpb.New(-time.Second),
				MaxEjectionTime:    &durationpb.Duration{Nanos: -1, Seconds: 1},
			}
		}, []string{
			`clusters[0].outlier_detection.interval: 0s: must be more than 0`,
			`clusters[0].outlier_detection.base_ejection_time: -1s: must not be negative`,
			`clusters[0].outlier_detection.max_ejection_time: {seconds: 1, nanos: -1}: invalid duration`,
			`clusters[0].outlier_detection.max_ejection_percent: 101: must be 0–100`,
		}},
		{"a subset's own settings", func(c *breezev1.ProxyConfig) {
			c.Clusters[0].Subsets = []*breezev1.ClusterSubset{{Name: "v1", Labels: map[string]string{"version": "v1"},
				CircuitBreakers:  &breezev1.CircuitBreakers{RetryBudget: &breezev1.RetryBudget{BudgetPercent: proto.Float64(250)}},
				OutlierDetection: &breezev1.OutlierDetection{BaseEjectionTime: durationpb.New(0), MaxEjectionPercent: proto.Uint32(1000)},
			}}
		}, []string{
			`clusters[0].subsets[0].circuit_breakers.retry_budget.budget_percent: 250: must be 0–100`,
			`clusters[0].subsets[0].outlier_detection.base_ejection_time: 0s: must be more than 0`,
			`clusters[0].subsets[0].outlier_detection.max_ejection_percent: 1000: must be 0–100`,
		}},
		{"metrics without address", func(c *breezev1.ProxyConfig) { c.Metrics = &breezev1.Metrics{} },
			[]string{`metrics.address: "": required`}},
		{"metrics bad address", func(c *breezev1.ProxyConfig) { c.Metrics = &breezev1.Metrics{Address: "15093"} },
			[]string{`metrics.address: "15093": want host:port: missing port in address`}},
		{"tracing without collector", func(c *breezev1.ProxyConfig) { c.Tracing = &breezev1.Tracing{} },
			[]string{`tracing.collector: "": required`}},
		{"tracing bad settings", func(c *breezev1.ProxyConfig) {
			c.Tracing = &breezev1.Tracing{Collector: "otel:4317", RandomSamplingPercentage: 101, BatchTimeout: durationpb.New(-time.Second)}
		}, []string{
			`tracing.random_sampling_percentage: 101: must be 0–100`,
			`tracing.batch_timeout: -1s: must not be negative`,
		}},
		{"tracing collector without port", func(c *breezev1.ProxyConfig) { c.Tracing = &breezev1.Tracing{Collector: "otel"} },
			[]string{`tracing.collector: "otel": want host:port: missing port in address`}},
		{"xds without address", func(c *breezev1.ProxyConfig) { c.Xds = &breezev1.XdsSource{RouteConfigName: "r"} },
			[]string{`xds.address: "": required`}},
		{"xds bad addresses", func(c *breezev1.ProxyConfig) { c.Xds = &breezev1.XdsSource{Address: "127.0.0.1", RouteConfigName: "r"} },
			[]string{`xds.address: "127.0.0.1": want host:port: missing port in address`}},
		{"xds port 0", func(c *breezev1.ProxyConfig) { c.Xds = &breezev1.XdsSource{Address: "cp:0", RouteConfigName: "r"} },
			[]string{`xds.address: "cp:0": port "0" is not a number 1–65535`}},
		{"xds no host", func(c *breezev1.ProxyConfig) { c.Xds = &breezev1.XdsSource{Address: ":15010", RouteConfigName: "r"} },
			[]string{`xds.address: ":15010": host "" is neither an IP address nor a host name`}},
		{"xds negative timeout", func(c *breezev1.ProxyConfig) {
			c.Xds = &breezev1.XdsSource{Address: "cp:1", RouteConfigName: "r", InitialFetchTimeout: durationpb.New(-time.Second)}
		}, []string{`xds.initial_fetch_timeout: -1s: must not be negative`}},
		{"xds tls without a ca", func(c *breezev1.ProxyConfig) {
			c.Xds = &breezev1.XdsSource{Address: "cp:1", RouteConfigName: "r", Tls: &breezev1.XdsTls{ServerName: "cp"}}
		}, []string{`xds.tls.ca_file: "": required`}},
		{"xds token in clear", func(c *breezev1.ProxyConfig) {
			c.Xds = &breezev1.XdsSource{Address: "cp:1", RouteConfigName: "r", TokenFile: "/var/run/secrets/tokens/breeze"}
		}, []string{`xds.token_file: "/var/run/secrets/tokens/breeze": needs xds.tls: the token must not travel in clear`}},
		{"xds fetching nothing", func(c *breezev1.ProxyConfig) { c.Xds = &breezev1.XdsSource{Address: "cp:15010"} },
			[]string{`xds: {address: "cp:15010"}: names nothing to fetch: set route_config_name, give a cluster type EDS, or route to a cluster the server defines`}},
		{"every error at once", func(c *breezev1.ProxyConfig) {
			c.StatPrefix = ""
			matcher(c, 0).Match = &breezev1.MetadataMatcher_Regex{Regex: "a{2,1}"}
			endpoint(c, 1, 0).Port = 0
			weights(c)[0].Name = "nope"
		}, []string{
			`stat_prefix: "": required`,
			`clusters[1].endpoints[0].port: 0: must be 1–65535`,
			`route_config.routes[0].match.metadata[0].regex: "a{2,1}": error parsing regexp: invalid repeat count`,
			`route_config.routes[1].route.weighted_clusters.clusters[0].name: "nope": no such cluster`,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(c)
			err := Validate(c)
			if err == nil {
				t.Fatal("Validate accepted the config")
			}
			errs := joined(err)
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(tc.want), err)
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tc.want[i]) {
					t.Errorf("error %d:\n got %s\nwant it to contain %s", i, e, tc.want[i])
				}
				var fe *FieldError
				if !errors.As(e, &fe) || fe.Path == "" {
					t.Errorf("error %d is not a *FieldError with a path: %#v", i, e)
				}
			}
		})
	}
}

func TestValidateNil(t *testing.T) {
	if err := Validate(nil); err == nil {
		t.Fatal("Validate(nil) = nil")
	}
}

func TestFieldErrorUnwraps(t *testing.T) {
	c := validConfig()
	c.StatPrefix = ""
	if err := Validate(c); !errors.Is(err, errRequired) {
		t.Fatalf("errors.Is(%v, errRequired) = false", err)
	}
}

func TestValidateRoutes(t *testing.T) {
	clusters := validConfig().Clusters
	clusters = append(clusters,
		&breezev1.Cluster{Name: "eds", Type: breezev1.Cluster_EDS},
		&breezev1.Cluster{Name: "ring", Type: breezev1.Cluster_EDS, LbPolicy: breezev1.Cluster_RING_HASH})
	to := func(cluster string, subset map[string]string) *breezev1.Route {
		return &breezev1.Route{Route: &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: cluster}, Subset: subset}}
	}
	good := &breezev1.RouteConfiguration{Name: "r", Routes: []*breezev1.Route{
		to("greeter", map[string]string{"version": "v2"}),
		to("eds", map[string]string{"version": "anything"}),
		{Route: &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "ring"}, HashKey: "user"}},
	}}
	// A cluster the proxy does not define arrives over xDS: not an error.
	good.Routes = append(good.Routes, to("from-xds", map[string]string{"version": "v1"}))
	if err := ValidateRoutes(good, clusters); err != nil {
		t.Fatalf("ValidateRoutes: %v", err)
	}
	bad := &breezev1.RouteConfiguration{Name: "r", Routes: []*breezev1.Route{
		to("greeter", map[string]string{"version": "v9"}),
		to("", nil),
		{Match: &breezev1.RouteMatch{Metadata: []*breezev1.MetadataMatcher{{Key: "m", Match: &breezev1.MetadataMatcher_Regex{Regex: "("}}}}, Route: to("eds", nil).Route},
		to("ring", nil),
	}}
	want := []string{
		`routes[0].route.subset: {"version": "v9"}: no endpoint of cluster "greeter" has these labels`,
		`routes[1].route.cluster: "": required`,
		`routes[2].match.metadata[0].regex: "(": error parsing regexp`,
		`routes[3].route.hash_key: "": cluster "ring" is RING_HASH without a hash_key, so every route that targets it needs one (none on routes[3])`,
	}
	errs := joined(ValidateRoutes(bad, clusters))
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d: %v", len(errs), len(want), errs)
	}
	for i, e := range errs {
		if !strings.Contains(e.Error(), want[i]) {
			t.Errorf("error %d:\n got %s\nwant it to contain %s", i, e, want[i])
		}
	}
	if err := ValidateRoutes(nil, clusters); err == nil {
		t.Fatal("ValidateRoutes(nil) = nil")
	}
}
