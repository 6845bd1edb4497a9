package client

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/breeze-mesh/breeze/config"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func loadAssignment(name string, lbs ...*endpointv3.LbEndpoint) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

func TestClusterConversion(t *testing.T) {
	v1 := map[string]map[string]any{"envoy.lb": {"version": "v1"}}
	v2 := map[string]map[string]any{"envoy.lb": {"version": "v2"}}
	weighted := loadAssignment("static",
		lbEndpoint("10.0.0.1", 20880, 3, v1),
		lbEndpoint("::ffff:10.0.0.2", 20881, 0, v2),
		lbEndpoint("fd00::1", 20882, 0, nil))
	weighted.Endpoints[0].LoadBalancingWeight = wrapperspb.UInt32(2)
	weighted.Endpoints[0].Locality = &corev3.Locality{Zone: "z1"}

	for _, tc := range []struct {
		name string
		in   *clusterv3.Cluster
		want *breezev1.Cluster
	}{
		{
			name: "STATIC, literal IPs, labels and weights",
			in: &clusterv3.Cluster{
				Name:                 "static",
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
				LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
				LoadAssignment:       weighted,
			},
			want: &breezev1.Cluster{Name: "static", Type: breezev1.Cluster_STATIC, LbPolicy: breezev1.Cluster_ROUND_ROBIN, Endpoints: []*breezev1.Endpoint{
				{Address: "10.0.0.1", Port: 20880, Weight: 6, Labels: map[string]string{"version": "v1", ZoneLabel: "z1"}},
				{Address: "10.0.0.2", Port: 20881, Weight: 2, Labels: map[string]string{"version": "v2", ZoneLabel: "z1"}},
				{Address: "fd00::1", Port: 20882, Weight: 2, Labels: map[string]string{ZoneLabel: "z1"}},
			}},
		},
		{
			name: "STRICT_DNS, host names, refresh rate",
			in: &clusterv3.Cluster{
				Name:                 "dns",
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
				LbPolicy:             clusterv3.Cluster_LEAST_REQUEST,
				DnsRefreshRate:       durationpb.New(30 * time.Second),
				LoadAssignment: loadAssignment("dns",
					lbEndpoint("greeter-v1.demo.svc.cluster.local", 20880, 0, v1),
					lbEndpoint("10.0.0.9", 20880, 0, nil)),
			},
			want: &breezev1.Cluster{Name: "dns", Type: breezev1.Cluster_STRICT_DNS, LbPolicy: breezev1.Cluster_LEAST_REQUEST, DnsRefreshRate: durationpb.New(30 * time.Second),
				Endpoints: []*breezev1.Endpoint{
					{Address: "greeter-v1.demo.svc.cluster.local", Port: 20880, Weight: 1, Labels: map[string]string{"version": "v1"}},
					{Address: "10.0.0.9", Port: 20880, Weight: 1},
				}},
		},
		{
			name: "EDS over ADS, service name",
			in: &clusterv3.Cluster{
				Name:                 "outbound|20880||greeter",
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: "greeter-endpoints"},
				LbPolicy:             clusterv3.Cluster_RANDOM,
			},
			want: &breezev1.Cluster{Name: "outbound|20880||greeter", Type: breezev1.Cluster_EDS, LbPolicy: breezev1.Cluster_RANDOM, EdsServiceName: "greeter-endpoints"},
		},
		{
			name: "EDS, eds_config and service name unset",
			in: &clusterv3.Cluster{
				Name:                 "eds",
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{},
			},
			want: &breezev1.Cluster{Name: "eds", Type: breezev1.Cluster_EDS},
		},
		{
			name: "RING_HASH with options",
			in: &clusterv3.Cluster{
				Name:                 "ring",
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				LbPolicy:             clusterv3.Cluster_RING_HASH,
				LbConfig:             &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(1024)}},
				TypedExtensionProtocolOptions: map[string]*anypb.Any{
					OptionsKey: mustAny(t, &breezev1.ClusterOptions{HashKey: "user", ConnectionsPerEndpoint: 4, MaxRequestsPerEndpoint: 500}),
				},
			},
			want: &breezev1.Cluster{Name: "ring", Type: breezev1.Cluster_EDS, LbPolicy: breezev1.Cluster_RING_HASH, HashKey: "user", ConnectionsPerEndpoint: 4, MaxRequestsPerEndpoint: 500},
		},
		{
			name: "MAGLEV with subset policies",
			in: &clusterv3.Cluster{
				Name:                 "maglev",
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				LbPolicy:             clusterv3.Cluster_MAGLEV,
				LbConfig:             &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{}},
				TypedExtensionProtocolOptions: map[string]*anypb.Any{
					OptionsKey: mustAny(t, &breezev1.ClusterOptions{HashKey: "tenant", Subsets: []*breezev1.ClusterSubset{
						{Name: "v1", Labels: map[string]string{"version": "v1"}, LbPolicy: breezev1.Cluster_LEAST_REQUEST.Enum()},
						{Name: "v2", Labels: map[string]string{"version": "v2"}, HashKey: "user"},
					}}),
				},
			},
			want: &breezev1.Cluster{Name: "maglev", Type: breezev1.Cluster_EDS, LbPolicy: breezev1.Cluster_MAGLEV, HashKey: "tenant", Subsets: []*breezev1.ClusterSubset{
				{Name: "v1", Labels: map[string]string{"version": "v1"}, LbPolicy: breezev1.Cluster_LEAST_REQUEST.Enum()},
				{Name: "v2", Labels: map[string]string{"version": "v2"}, HashKey: "user"},
			}},
		},
		{
			name: "fields accepted without effect",
			in: &clusterv3.Cluster{
				Name:                 "ignored",
				AltStatName:          "greeter_stats",
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
				ConnectTimeout:       durationpb.New(time.Second),
				LbSubsetConfig:       &clusterv3.Cluster_LbSubsetConfig{SubsetSelectors: []*clusterv3.Cluster_LbSubsetConfig_LbSubsetSelector{{Keys: []string{"version"}}}},
				Metadata:             &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {}}},
			},
			want: &breezev1.Cluster{Name: "ignored", Type: breezev1.Cluster_STATIC},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Cluster(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Fatalf("got  %v\nwant %v", prototext.Format(got), prototext.Format(tc.want))
			}
			if err := config.ValidateCluster(got); err != nil {
				t.Fatalf("ValidateCluster: %v", err)
			}
		})
	}
}

// Every policy Breeze has, and every discovery type, by Envoy's name.
func TestClusterEnums(t *testing.T) {
	for in, want := range map[clusterv3.Cluster_LbPolicy]breezev1.Cluster_LbPolicy{
		clusterv3.Cluster_ROUND_ROBIN:   breezev1.Cluster_ROUND_ROBIN,
		clusterv3.Cluster_LEAST_REQUEST: breezev1.Cluster_LEAST_REQUEST,
		clusterv3.Cluster_RANDOM:        breezev1.Cluster_RANDOM,
		clusterv3.Cluster_RING_HASH:     breezev1.Cluster_RING_HASH,
		clusterv3.Cluster_MAGLEV:        breezev1.Cluster_MAGLEV,
	} {
		got, err := Cluster(&clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}, LbPolicy: in})
		if err != nil || got.GetLbPolicy() != want {
			t.Errorf("lb_policy %s: got %v %v, want %s", in, got.GetLbPolicy(), err, want)
			continue
		}
		if err := config.ValidateCluster(got); err != nil {
			t.Errorf("lb_policy %s: ValidateCluster: %v", in, err)
		}
	}
	for in, want := range map[clusterv3.Cluster_DiscoveryType]breezev1.Cluster_DiscoveryType{
		clusterv3.Cluster_STATIC:     breezev1.Cluster_STATIC,
		clusterv3.Cluster_STRICT_DNS: breezev1.Cluster_STRICT_DNS,
		clusterv3.Cluster_EDS:        breezev1.Cluster_EDS,
	} {
		got, err := Cluster(&clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: in}})
		if err != nil || got.GetType() != want {
			t.Errorf("type %s: got %v %v, want %s", in, got.GetType(), err, want)
			continue
		}
		if err := config.ValidateCluster(got); err != nil {
			t.Errorf("type %s: ValidateCluster: %v", in, err)
		}
	}
}

func TestClusterErrors(t *testing.T) {
	// eds names c and makes it an EDS cluster unless it has a type.
	eds := func(c *clusterv3.Cluster) *clusterv3.Cluster {
		c.Name = "c"
		if c.ClusterDiscoveryType == nil {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		}
		return c
	}
	typ := func(ty clusterv3.Cluster_DiscoveryType) *clusterv3.Cluster_Type {
		return &clusterv3.Cluster_Type{Type: ty}
	}
	for _, tc := range []struct {
		name string
		in   *clusterv3.Cluster
		want string
	}{
		{"health checks", eds(&clusterv3.Cluster{HealthChecks: []*corev3.HealthCheck{{}}}),
			"health_checks: not supported by Breeze; remove it"},
		{"transport socket", eds(&clusterv3.Cluster{TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls"}}),
			"transport_socket: not supported by Breeze; remove it"},
		{"several, sorted", eds(&clusterv3.Cluster{
			TransportSocket:           &corev3.TransportSocket{Name: "tls"},
			UpstreamBindConfig:        &corev3.BindConfig{},
			CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{},
		}), "common_http_protocol_options, transport_socket, upstream_bind_config: not supported by Breeze; remove it"},
		{"custom cluster type", eds(&clusterv3.Cluster{ClusterDiscoveryType: &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{Name: "envoy.clusters.aggregate"}}}),
			"cluster_type: not supported by Breeze; remove it"},
		{"LOGICAL_DNS", eds(&clusterv3.Cluster{ClusterDiscoveryType: typ(clusterv3.Cluster_LOGICAL_DNS)}),
			"type: LOGICAL_DNS: not supported (STATIC, STRICT_DNS or EDS)"},
		{"ORIGINAL_DST", eds(&clusterv3.Cluster{ClusterDiscoveryType: typ(clusterv3.Cluster_ORIGINAL_DST)}),
			"type: ORIGINAL_DST: not supported (STATIC, STRICT_DNS or EDS)"},
		{"CLUSTER_PROVIDED", eds(&clusterv3.Cluster{LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED}),
			"lb_policy: CLUSTER_PROVIDED: not supported (ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV)"},
		{"EDS from a file", eds(&clusterv3.Cluster{EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{Path: "/etc/eds.yaml"}}}}}),
			"eds_cluster_config.eds_config: Breeze fetches endpoints over its one ADS stream: set ads: {} or leave it unset"},
		{"EDS from its own server", eds(&clusterv3.Cluster{EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{ApiType: corev3.ApiConfigSource_GRPC}}}}}),
			"eds_cluster_config.eds_config: Breeze fetches endpoints over its one ADS stream"},
		{"load_assignment on EDS", eds(&clusterv3.Cluster{LoadAssignment: loadAssignment("c", lbEndpoint("10.0.0.1", 1, 0, nil))}),
			"load_assignment: an EDS cluster takes its endpoints from eds_cluster_config: remove it"},
		{"host name in a STATIC cluster", eds(&clusterv3.Cluster{ClusterDiscoveryType: typ(clusterv3.Cluster_STATIC), LoadAssignment: loadAssignment("c", lbEndpoint("10.0.0.1", 1, 0, nil), lbEndpoint("greeter.local", 1, 0, nil))}),
			`load_assignment.endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address: "greeter.local": not a literal IP address`},
		{"port 0 in a STRICT_DNS cluster", eds(&clusterv3.Cluster{ClusterDiscoveryType: typ(clusterv3.Cluster_STRICT_DNS), LoadAssignment: loadAssignment("c", lbEndpoint("greeter.local", 0, 0, nil))}),
			`load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: 0: must be 1–65535`},
		{"options of another type", eds(&clusterv3.Cluster{TypedExtensionProtocolOptions: map[string]*anypb.Any{
			OptionsKey: mustAny(t, &breezev1.Cluster{HashKey: "user"})}}),
			`typed_extension_protocol_options["breeze"]: want a breeze.v1.ClusterOptions: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Cluster(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, %v\nwant an error containing %q", got, err, tc.want)
			}
		})
	}
}

// Cluster converts; config.ValidateCluster judges the result, with paths
// relative to the cluster.
func TestClusterThenValidate(t *testing.T) {
	got, err := Cluster(&clusterv3.Cluster{
		Name:                 "c",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{OptionsKey: mustAny(t, &breezev1.ClusterOptions{Subsets: []*breezev1.ClusterSubset{
			{Name: "none"},
			{Name: "a", Labels: map[string]string{"v": "1"}},
			{Name: "b", Labels: map[string]string{"v": "1"}},
		}})},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = config.ValidateCluster(got)
	for _, want := range []string{"subsets[0].labels: {}: a subset needs at least one label", "subsets[2].labels: ", "same labels as subsets[1]"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateCluster: %v, want %q", err, want)
		}
	}
	if err := config.ValidateCluster(&breezev1.Cluster{Type: breezev1.Cluster_STATIC}); err == nil || !strings.Contains(err.Error(), "name") {
		t.Errorf("unnamed: %v", err)
	}
}
