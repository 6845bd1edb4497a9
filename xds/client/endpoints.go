package client

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// Metadata namespaces of an LbEndpoint's filter_metadata that carry its
// labels: Envoy's subset load balancer reads "envoy.lb", so control planes
// that do subsets already put labels there; "breeze" overrides it.
const (
	LabelsNamespace       = "envoy.lb"
	BreezeLabelsNamespace = "breeze"
)

// Labels that carry an endpoint's locality (Kubernetes' and Istio's well-known
// topology labels), so that routes can select a subset by locality.
const (
	RegionLabel  = "topology.kubernetes.io/region"
	ZoneLabel    = "topology.kubernetes.io/zone"
	SubzoneLabel = "topology.istio.io/subzone"
)

// Endpoint is one endpoint of a ClusterLoadAssignment as Breeze uses it.
type Endpoint struct {
	// Addr is a literal ip:port.
	Addr   string
	Labels map[string]string
	// Weight is at least 1.
	Weight uint32
}

// Endpoints reads a ClusterLoadAssignment:
//
//   - address: a socket_address with a literal IP and a port_value (Envoy
//     dials only literal addresses; a host name is an error, as in Envoy's
//     EDS);
//   - health: UNHEALTHY, DRAINING and TIMEOUT endpoints are left out;
//   - priority: only the lowest priority level that has endpoints serves
//     (Breeze does not fail over between priorities);
//   - weight: the endpoint's load_balancing_weight times its locality's
//     (each unset counts 1), capped at 2^32-1;
//   - labels: the string fields of filter_metadata["envoy.lb"], then of
//     filter_metadata["breeze"] (which win), other values in their JSON
//     form; the locality's region, zone and sub-zone are added as
//     topology.kubernetes.io/region, topology.kubernetes.io/zone and
//     topology.istio.io/subzone unless those labels are set.
//
// Errors name the field, e.g.
// endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address.
func Endpoints(cla *endpointv3.ClusterLoadAssignment) ([]Endpoint, error) {
	return endpoints(cla, false)
}

// endpoints reads cla as Endpoints documents; hostNames accepts host names
// (a STRICT_DNS cluster's load_assignment), whose Addr is then host:port.
func endpoints(cla *endpointv3.ClusterLoadAssignment, hostNames bool) ([]Endpoint, error) {
	best := uint32(math.MaxUint32)
	for _, l := range cla.GetEndpoints() {
		if len(l.GetLbEndpoints()) > 0 {
			best = min(best, l.GetPriority())
		}
	}
	var out []Endpoint
	for i, l := range cla.GetEndpoints() {
		if l.GetPriority() != best {
			continue
		}
		lw := uint64(max(l.GetLoadBalancingWeight().GetValue(), 1))
		for j, lb := range l.GetLbEndpoints() {
			path := fmt.Sprintf("endpoints[%d].lb_endpoints[%d]", i, j)
			switch lb.GetHealthStatus() {
			case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
				continue
			}
			ep := lb.GetEndpoint()
			if ep == nil {
				return nil, fmt.Errorf("%s.endpoint: unset (named endpoints are not supported)", path)
			}
			sa := ep.GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, fmt.Errorf("%s.endpoint.address: want a socket_address, got %v", path, ep.GetAddress())
			}
			port := sa.GetPortValue()
			if port == 0 || port > 65535 {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.port_value: %d: must be 1–65535", path, port)
			}
			var addr string
			ip, err := netip.ParseAddr(sa.GetAddress())
			switch {
			case err == nil && ip.Zone() == "":
				addr = netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()
			case hostNames && err != nil && sa.GetAddress() != "":
				addr = net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(port), 10))
			default:
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.address: %q: not a literal IP address", path, sa.GetAddress())
			}
			labels, err := labelsOf(lb.GetMetadata(), path)
			if err != nil {
				return nil, err
			}
			addLocality(labels, l.GetLocality())
			w := lw * uint64(max(lb.GetLoadBalancingWeight().GetValue(), 1))
			out = append(out, Endpoint{
				Addr:   addr,
				Labels: labels,
				Weight: uint32(min(w, math.MaxUint32)),
			})
		}
	}
	return out, nil
}

func labelsOf(md *corev3.Metadata, path string) (map[string]string, error) {
	labels := map[string]string{}
	for _, ns := range []string{LabelsNamespace, BreezeLabelsNamespace} {
		for k, v := range md.GetFilterMetadata()[ns].GetFields() {
			s, err := labelValue(v)
			if err != nil {
				return nil, fmt.Errorf("%s.metadata.filter_metadata[%q][%q]: %w", path, ns, k, err)
			}
			labels[k] = s
		}
	}
	return labels, nil
}

func labelValue(v *structpb.Value) (string, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue, nil
	case *structpb.Value_BoolValue:
		return strconv.FormatBool(k.BoolValue), nil
	case *structpb.Value_NumberValue:
		return strconv.FormatFloat(k.NumberValue, 'f', -1, 64), nil
	case *structpb.Value_NullValue:
		return "", fmt.Errorf("null is not a label value")
	}
	b, err := protojson.Marshal(v)
	return string(b), err
}

func addLocality(labels map[string]string, l *corev3.Locality) {
	for _, kv := range [][2]string{{RegionLabel, l.GetRegion()}, {ZoneLabel, l.GetZone()}, {SubzoneLabel, l.GetSubZone()}} {
		if _, set := labels[kv[0]]; !set && kv[1] != "" {
			labels[kv[0]] = kv[1]
		}
	}
}
