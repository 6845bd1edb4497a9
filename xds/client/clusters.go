package client

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// OptionsKey is the key of a Cluster's typed_extension_protocol_options that
// carries Breeze's own settings (breeze.v1.ClusterOptions).
const OptionsKey = "breeze"

// clusterFields are the fields of Envoy's Cluster that Breeze reads or may
// safely ignore. Any other field set is an error: silently dropping, say,
// a transport_socket or health_checks would change what the operator
// asked for.
var clusterFields = map[protoreflect.Name]string{
	"name":                             "",
	"alt_stat_name":                    "",
	"type":                             "",
	"eds_cluster_config":               "",
	"lb_policy":                        "",
	"load_assignment":                  "",
	"dns_refresh_rate":                 "",
	"typed_extension_protocol_options": "",
	"metadata":                         "",
	// Envoy's plainText cluster dials every upstream connection of the
	// Go filter; its connect_timeout applies.
	"connect_timeout": "",
	// Breeze builds a subset for each label set a route selects.
	"lb_subset_config": "",
	// Breeze's rings have a fixed size.
	"ring_hash_lb_config": "",
	"maglev_lb_config":    "",
	// Read by CircuitBreakers and OutlierDetection, which refuse what
	// Breeze cannot do by the name of the field inside.
	"circuit_breakers":  "",
	"outlier_detection": "",
}

// EnvoyLbPolicy is the Envoy Cluster lb_policy of each Breeze policy (the
// same algorithms).
var EnvoyLbPolicy = map[breezev1.Cluster_LbPolicy]clusterv3.Cluster_LbPolicy{
	breezev1.Cluster_ROUND_ROBIN:   clusterv3.Cluster_ROUND_ROBIN,
	breezev1.Cluster_LEAST_REQUEST: clusterv3.Cluster_LEAST_REQUEST,
	breezev1.Cluster_RANDOM:        clusterv3.Cluster_RANDOM,
	breezev1.Cluster_RING_HASH:     clusterv3.Cluster_RING_HASH,
	breezev1.Cluster_MAGLEV:        clusterv3.Cluster_MAGLEV,
}

func breezePolicy(p clusterv3.Cluster_LbPolicy) (breezev1.Cluster_LbPolicy, bool) {
	for b, e := range EnvoyLbPolicy {
		if e == p {
			return b, true
		}
	}
	return 0, false
}

// Cluster reads an Envoy Cluster served to Breeze as the Breeze cluster it
// describes:
//
//   - type STATIC, STRICT_DNS or EDS (eds_cluster_config.service_name is
//     the ClusterLoadAssignment to fetch, over this ADS stream);
//   - lb_policy ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV;
//   - load_assignment: the endpoints of STATIC (literal IPs) and
//     STRICT_DNS (host names) clusters, read as Endpoints does;
//   - circuit_breakers and outlier_detection, as CircuitBreakers and
//     OutlierDetection read them (one DEFAULT threshold; consecutive
//     failures);
//   - typed_extension_protocol_options["breeze"]: a breeze.v1.ClusterOptions
//     (hash key, connections and requests per endpoint, subset policies,
//     a subset's own circuit breakers and outlier detection);
//   - connect_timeout, lb_subset_config, ring_hash_lb_config and
//     maglev_lb_config are accepted and have no effect (see clusterFields);
//     any other field set is an error naming it.
//
// The result is not validated beyond that (config.ValidateCluster does).
func Cluster(c *clusterv3.Cluster) (*breezev1.Cluster, error) {
	var unsupported []string
	c.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if _, ok := clusterFields[fd.Name()]; !ok {
			unsupported = append(unsupported, string(fd.Name()))
		}
		return true
	})
	if len(unsupported) > 0 {
		slices.Sort(unsupported)
		return nil, fmt.Errorf("%s: not supported by Breeze; remove it", strings.Join(unsupported, ", "))
	}
	out := &breezev1.Cluster{Name: c.GetName(), DnsRefreshRate: c.GetDnsRefreshRate()}
	switch c.GetType() {
	case clusterv3.Cluster_STATIC:
		out.Type = breezev1.Cluster_STATIC
	case clusterv3.Cluster_STRICT_DNS:
		out.Type = breezev1.Cluster_STRICT_DNS
	case clusterv3.Cluster_EDS:
		out.Type = breezev1.Cluster_EDS
		out.EdsServiceName = c.GetEdsClusterConfig().GetServiceName()
		if src := c.GetEdsClusterConfig().GetEdsConfig(); src != nil && src.GetAds() == nil {
			return nil, fmt.Errorf("eds_cluster_config.eds_config: Breeze fetches endpoints over its one ADS stream: set ads: {} or leave it unset")
		}
	default:
		return nil, fmt.Errorf("type: %s: not supported (STATIC, STRICT_DNS or EDS)", c.GetType())
	}
	policy, ok := breezePolicy(c.GetLbPolicy())
	if !ok {
		return nil, fmt.Errorf("lb_policy: %s: not supported (ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV)", c.GetLbPolicy())
	}
	out.LbPolicy = policy
	if la := c.GetLoadAssignment(); la != nil {
		if out.Type == breezev1.Cluster_EDS {
			return nil, fmt.Errorf("load_assignment: an EDS cluster takes its endpoints from eds_cluster_config: remove it")
		}
		eps, err := endpoints(la, out.Type == breezev1.Cluster_STRICT_DNS)
		if err != nil {
			return nil, fmt.Errorf("load_assignment.%w", err)
		}
		for _, e := range eps {
			host, port, _ := net.SplitHostPort(e.Addr)
			p, _ := strconv.ParseUint(port, 10, 16)
			out.Endpoints = append(out.Endpoints, &breezev1.Endpoint{Address: host, Port: uint32(p), Labels: e.Labels, Weight: e.Weight})
		}
	}
	if cb := c.GetCircuitBreakers(); cb != nil {
		var err error
		if out.CircuitBreakers, err = circuitBreakers(cb, "circuit_breakers."); err != nil {
			return nil, err
		}
	}
	if od := c.GetOutlierDetection(); od != nil {
		var err error
		if out.OutlierDetection, err = outlierDetection(od, "outlier_detection."); err != nil {
			return nil, err
		}
	}
	if a := c.GetTypedExtensionProtocolOptions()[OptionsKey]; a != nil {
		var o breezev1.ClusterOptions
		if err := a.UnmarshalTo(&o); err != nil {
			return nil, fmt.Errorf("typed_extension_protocol_options[%q]: want a %s: %w", OptionsKey, proto.MessageName(&o), err)
		}
		out.HashKey = o.GetHashKey()
		out.ConnectionsPerEndpoint = o.GetConnectionsPerEndpoint()
		out.MaxRequestsPerEndpoint = o.GetMaxRequestsPerEndpoint()
		out.Subsets = o.GetSubsets()
	}
	return out, nil
}
