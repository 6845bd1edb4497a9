package client

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

func TestDecode(t *testing.T) {
	rc, _ := anypb.New(&breezev1.RouteConfiguration{Name: "r"})
	cla, _ := anypb.New(&endpointv3.ClusterLoadAssignment{ClusterName: "e"})
	wrapped, _ := anypb.New(&discoveryv3.Resource{Name: "r", Resource: rc})
	empty, _ := anypb.New(&discoveryv3.Resource{Name: "gone"})

	if _, name, err := decodeRoutes(rc); err != nil || name != "r" {
		t.Fatalf("routes: %q %v", name, err)
	}
	if _, name, err := decodeRoutes(wrapped); err != nil || name != "r" {
		t.Fatalf("wrapped routes: %q %v", name, err)
	}
	if _, name, err := decodeEndpoints(cla); err != nil || name != "e" {
		t.Fatalf("endpoints: %q %v", name, err)
	}
	for _, tc := range []struct {
		a    *anypb.Any
		want string
	}{
		{cla, `type "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment" in a response for "type.googleapis.com/breeze.v1.RouteConfiguration"`},
		{empty, `resource "gone": empty wrapper`},
		{&anypb.Any{TypeUrl: RouteConfigurationType, Value: []byte{0xff}}, "cannot parse"},
	} {
		if _, _, err := decodeRoutes(tc.a); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("decode %s: %v, want %q", tc.a.GetTypeUrl(), err, tc.want)
		}
	}
}

func lbEndpoint(ip string, port uint32, weight uint32, md map[string]map[string]any) *endpointv3.LbEndpoint {
	lb := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}}}
	if weight > 0 {
		lb.LoadBalancingWeight = wrapperspb.UInt32(weight)
	}
	if md != nil {
		lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
		for ns, fields := range md {
			s, err := structpb.NewStruct(fields)
			if err != nil {
				panic(err)
			}
			lb.Metadata.FilterMetadata[ns] = s
		}
	}
	return lb
}

func TestEndpoints(t *testing.T) {
	unhealthy := lbEndpoint("10.0.0.9", 1, 0, nil)
	unhealthy.HealthStatus = corev3.HealthStatus_UNHEALTHY
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{
			Locality:            &corev3.Locality{Region: "eu", Zone: "eu-1"},
			LoadBalancingWeight: wrapperspb.UInt32(3),
			LbEndpoints: []*endpointv3.LbEndpoint{
				lbEndpoint("10.0.0.1", 20880, 2, map[string]map[string]any{
					"envoy.lb": {"version": "v1", "canary": true, "shard": 7.0},
					"breeze":   {"version": "v1b"},
				}),
				unhealthy,
			},
		},
		{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint("::ffff:10.0.0.2", 20880, 0, map[string]map[string]any{
			"envoy.lb": {ZoneLabel: "mine"}})}},
		{Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint("10.0.0.3", 20880, 0, nil)}},
	}}
	got, err := Endpoints(cla)
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{
		{Addr: "10.0.0.1:20880", Weight: 6, Labels: map[string]string{"version": "v1b", "canary": "true", "shard": "7", RegionLabel: "eu", ZoneLabel: "eu-1"}},
		{Addr: "10.0.0.2:20880", Weight: 1, Labels: map[string]string{ZoneLabel: "mine"}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i].Addr != want[i].Addr || got[i].Weight != want[i].Weight || len(got[i].Labels) != len(want[i].Labels) {
			t.Fatalf("endpoint %d: got %+v, want %+v", i, got[i], want[i])
		}
		for k, v := range want[i].Labels {
			if got[i].Labels[k] != v {
				t.Fatalf("endpoint %d label %q: got %q, want %q", i, k, got[i].Labels[k], v)
			}
		}
	}

	// Priority 0 empty: priority 1 serves.
	cla.Endpoints = cla.Endpoints[2:]
	if got, err := Endpoints(cla); err != nil || len(got) != 1 || got[0].Addr != "10.0.0.3:20880" {
		t.Fatalf("failover to priority 1: %+v %v", got, err)
	}

	for _, tc := range []struct {
		lb   *endpointv3.LbEndpoint
		want string
	}{
		{lbEndpoint("provider.local", 1, 0, nil), `endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: "provider.local": not a literal IP address`},
		{lbEndpoint("10.0.0.1", 0, 0, nil), `endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: 0: must be 1–65535`},
		{&endpointv3.LbEndpoint{}, `endpoints[0].lb_endpoints[0].endpoint: unset`},
		{lbEndpoint("10.0.0.1", 1, 0, map[string]map[string]any{"envoy.lb": {"x": nil}}), `endpoints[0].lb_endpoints[0].metadata.filter_metadata["envoy.lb"]["x"]: null is not a label value`},
	} {
		_, err := Endpoints(&endpointv3.ClusterLoadAssignment{Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{tc.lb}}}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}
