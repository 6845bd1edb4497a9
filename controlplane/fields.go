package controlplane

import (
	"fmt"
	"maps"
	"slices"
	"strconv"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// use says what the translation does with one field of the resources it
// reads.
type use struct {
	// applied: Breeze applies the field; its contents are looked at too.
	applied bool
	// why the field is not applied, as the warning says it: the field is
	// named in a warning and the object used without it.
	why string
}

var (
	applied = use{applied: true}
	// istios: Istio's business (the listener Breeze sits in), nothing for
	// Breeze to apply.
	istios       = use{}
	notYet       = use{why: "not supported by Breeze yet; ignored"}
	notSupported = use{why: "not supported by Breeze; ignored"}
	allProxies   = use{why: "not used: Breeze serves every resource to every proxy that asks; ignored"}
	fixedSize    = use{why: "Breeze's rings have a fixed size; ignored"}
	onlyHeader   = use{why: "only httpHeaderName (a request metadata key) is supported; ignored, round robin is used"}
	// plainTextDials: Envoy's plainText cluster opens Breeze's upstream
	// connections, with its own settings.
	plainTextDials = use{why: "not applied by Breeze: Envoy's plainText cluster dials its upstream connections, with its own settings; ignored"}
	httpOnly       = use{why: "an HTTP setting, nothing for Breeze's protocols; ignored"}
)

// fields says, for every field of MetaRouter, DestinationRule and
// ServiceEntry, whether Breeze applies it. A set field that is not applied
// is named in a warning; so is one this table does not know (a newer API
// version). When Breeze comes to apply a field, it moves to applied here
// and stops warning.
var fields = map[protoreflect.FullName]use{
	// MetaRouter (metaprotocol.aeraki.io/v1alpha1).
	"metaprotocol.aeraki.io.v1alpha1.MetaRouter.hosts":                            applied,
	"metaprotocol.aeraki.io.v1alpha1.MetaRouter.routes":                           applied,
	"metaprotocol.aeraki.io.v1alpha1.MetaRouter.gateways":                         applied, // gateway.go
	"metaprotocol.aeraki.io.v1alpha1.MetaRouter.local_rate_limit":                 applied, // localratelimit.go
	"metaprotocol.aeraki.io.v1alpha1.MetaRouter.global_rate_limit":                applied, // globalratelimit.go
	"metaprotocol.aeraki.io.v1alpha1.MetaRouter.export_to":                        allProxies,
	"metaprotocol.aeraki.io.v1alpha1.MetaRoute.name":                              applied,
	"metaprotocol.aeraki.io.v1alpha1.MetaRoute.match":                             applied,
	"metaprotocol.aeraki.io.v1alpha1.MetaRoute.route":                             applied,
	"metaprotocol.aeraki.io.v1alpha1.MetaRoute.mirror":                            applied,
	"metaprotocol.aeraki.io.v1alpha1.MetaRoute.mirror_percentage":                 applied,
	"metaprotocol.aeraki.io.v1alpha1.MetaRoute.request_mutation":                  applied,
	"metaprotocol.aeraki.io.v1alpha1.MetaRoute.response_mutation":                 applied,
	"metaprotocol.aeraki.io.v1alpha1.MetaRouteMatch.attributes":                   applied,
	"metaprotocol.aeraki.io.v1alpha1.StringMatch.exact":                           applied,
	"metaprotocol.aeraki.io.v1alpha1.StringMatch.prefix":                          applied,
	"metaprotocol.aeraki.io.v1alpha1.StringMatch.regex":                           applied,
	"metaprotocol.aeraki.io.v1alpha1.MetaRouteDestination.destination":            applied,
	"metaprotocol.aeraki.io.v1alpha1.MetaRouteDestination.weight":                 applied,
	"metaprotocol.aeraki.io.v1alpha1.Destination.host":                            applied,
	"metaprotocol.aeraki.io.v1alpha1.Destination.subset":                          applied,
	"metaprotocol.aeraki.io.v1alpha1.Destination.port":                            applied,
	"metaprotocol.aeraki.io.v1alpha1.PortSelector.number":                         applied,
	"metaprotocol.aeraki.io.v1alpha1.Percent.value":                               applied,
	"metaprotocol.aeraki.io.v1alpha1.KeyValue.key":                                applied,
	"metaprotocol.aeraki.io.v1alpha1.KeyValue.value":                              applied,
	"metaprotocol.aeraki.io.v1alpha1.GlobalRateLimit.match":                       applied,
	"metaprotocol.aeraki.io.v1alpha1.GlobalRateLimit.domain":                      applied,
	"metaprotocol.aeraki.io.v1alpha1.GlobalRateLimit.request_timeout":             applied,
	"metaprotocol.aeraki.io.v1alpha1.GlobalRateLimit.deny_on_fail":                applied,
	"metaprotocol.aeraki.io.v1alpha1.GlobalRateLimit.rate_limit_service":          applied,
	"metaprotocol.aeraki.io.v1alpha1.GlobalRateLimit.descriptors":                 applied,
	"metaprotocol.aeraki.io.v1alpha1.GlobalRateLimit.Descriptor.property":         applied,
	"metaprotocol.aeraki.io.v1alpha1.GlobalRateLimit.Descriptor.descriptor_key":   applied,
	"istio.networking.v1alpha3.DestinationRule.host":                              applied,
	"istio.networking.v1alpha3.DestinationRule.traffic_policy":                    applied,
	"istio.networking.v1alpha3.DestinationRule.subsets":                           applied,
	"istio.networking.v1alpha3.DestinationRule.export_to":                         allProxies,
	"istio.networking.v1alpha3.DestinationRule.workload_selector":                 {why: "not used: Breeze's clusters apply to every proxy that asks; ignored"},
	"istio.networking.v1alpha3.Subset.name":                                       applied,
	"istio.networking.v1alpha3.Subset.labels":                                     applied,
	"istio.networking.v1alpha3.Subset.traffic_policy":                             applied,
	"istio.networking.v1alpha3.TrafficPolicy.load_balancer":                       applied,
	"istio.networking.v1alpha3.TrafficPolicy.connection_pool":                     applied,
	"istio.networking.v1alpha3.TrafficPolicy.outlier_detection":                   applied,
	"istio.networking.v1alpha3.TrafficPolicy.tls":                                 {why: "not applied by Breeze: the sidecar's own TLS settings carry its upstream connections; ignored"},
	"istio.networking.v1alpha3.TrafficPolicy.port_level_settings":                 applied,
	"istio.networking.v1alpha3.TrafficPolicy.tunnel":                              notSupported,
	"istio.networking.v1alpha3.TrafficPolicy.proxy_protocol":                      notSupported,
	"istio.networking.v1alpha3.TrafficPolicy.retry_budget":                        applied,
	"istio.networking.v1alpha3.TrafficPolicy.PortTrafficPolicy.port":              applied,
	"istio.networking.v1alpha3.TrafficPolicy.PortTrafficPolicy.load_balancer":     applied,
	"istio.networking.v1alpha3.TrafficPolicy.PortTrafficPolicy.connection_pool":   applied,
	"istio.networking.v1alpha3.TrafficPolicy.PortTrafficPolicy.outlier_detection": applied,
	"istio.networking.v1alpha3.TrafficPolicy.PortTrafficPolicy.tls":               {why: "not applied by Breeze: the sidecar's own TLS settings carry its upstream connections; ignored"},
	"istio.networking.v1alpha3.PortSelector.number":                               applied,
	// connectionPool and retryBudget become the cluster's circuit breakers;
	// outlierDetection its detector (resilience.go).
	"istio.networking.v1alpha3.ConnectionPoolSettings.tcp":                                      applied,
	"istio.networking.v1alpha3.ConnectionPoolSettings.http":                                     applied,
	"istio.networking.v1alpha3.ConnectionPoolSettings.TCPSettings.max_connections":              applied,
	"istio.networking.v1alpha3.ConnectionPoolSettings.TCPSettings.connect_timeout":              plainTextDials,
	"istio.networking.v1alpha3.ConnectionPoolSettings.TCPSettings.tcp_keepalive":                plainTextDials,
	"istio.networking.v1alpha3.ConnectionPoolSettings.TCPSettings.max_connection_duration":      notSupported,
	"istio.networking.v1alpha3.ConnectionPoolSettings.TCPSettings.idle_timeout":                 {why: "not applied by Breeze: its upstream connections stay open while the cluster has endpoints; ignored"},
	"istio.networking.v1alpha3.ConnectionPoolSettings.HTTPSettings.http1_max_pending_requests":  applied,
	"istio.networking.v1alpha3.ConnectionPoolSettings.HTTPSettings.http2_max_requests":          applied,
	"istio.networking.v1alpha3.ConnectionPoolSettings.HTTPSettings.max_retries":                 applied,
	"istio.networking.v1alpha3.ConnectionPoolSettings.HTTPSettings.max_requests_per_connection": {why: "not supported by Breeze: its upstream connections multiplex requests and are not recycled by count; ignored"},
	"istio.networking.v1alpha3.ConnectionPoolSettings.HTTPSettings.idle_timeout":                {why: "not applied by Breeze: its upstream connections stay open while the cluster has endpoints; ignored"},
	"istio.networking.v1alpha3.ConnectionPoolSettings.HTTPSettings.h2_upgrade_policy":           httpOnly,
	"istio.networking.v1alpha3.ConnectionPoolSettings.HTTPSettings.use_client_protocol":         httpOnly,
	"istio.networking.v1alpha3.ConnectionPoolSettings.HTTPSettings.max_concurrent_streams":      httpOnly,
	"istio.networking.v1alpha3.OutlierDetection.consecutive_5xx_errors":                         applied,
	"istio.networking.v1alpha3.OutlierDetection.consecutive_gateway_errors":                     applied,
	"istio.networking.v1alpha3.OutlierDetection.split_external_local_origin_errors":             applied,
	"istio.networking.v1alpha3.OutlierDetection.consecutive_local_origin_failures":              applied,
	"istio.networking.v1alpha3.OutlierDetection.interval":                                       applied,
	"istio.networking.v1alpha3.OutlierDetection.base_ejection_time":                             applied,
	"istio.networking.v1alpha3.OutlierDetection.max_ejection_percent":                           applied,
	"istio.networking.v1alpha3.OutlierDetection.consecutive_errors":                             {why: "deprecated, and ignored by Istio since 1.7: use consecutive5xxErrors or consecutiveGatewayErrors; ignored"},
	"istio.networking.v1alpha3.OutlierDetection.min_health_percent":                             {why: "not supported by Breeze: it has no panic mode (maxEjectionPercent bounds the endpoints ejected); ignored"},
	"istio.networking.v1alpha3.TrafficPolicy.RetryBudget.percent":                               applied,
	"istio.networking.v1alpha3.TrafficPolicy.RetryBudget.min_retry_concurrency":                 applied,
	// checkLB reports what depends on the value: PASSTHROUGH, and a
	// consistentHash without a key.
	"istio.networking.v1alpha3.LoadBalancerSettings.simple":                                      applied,
	"istio.networking.v1alpha3.LoadBalancerSettings.consistent_hash":                             applied,
	"istio.networking.v1alpha3.LoadBalancerSettings.locality_lb_setting":                         notSupported,
	"istio.networking.v1alpha3.LoadBalancerSettings.warmup_duration_secs":                        notSupported,
	"istio.networking.v1alpha3.LoadBalancerSettings.warmup":                                      notSupported,
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.http_header_name":           applied,
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.http_cookie":                onlyHeader,
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.use_source_ip":              onlyHeader,
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.http_query_parameter_name":  onlyHeader,
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.ring_hash":                  applied,
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.maglev":                     applied, // selects MAGLEV
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.minimum_ring_size":          fixedSize,
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.RingHash.minimum_ring_size": fixedSize,
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.MagLev.table_size":          {why: "Breeze's tables have a fixed size; ignored"},

	// ServiceEntry. Istio builds the listener Breeze sits in from
	// addresses and ports; Breeze balances over spec.endpoints whatever
	// resolution and location say (the plainText cluster decides TLS).
	"istio.networking.v1alpha3.ServiceEntry.hosts":             applied,
	"istio.networking.v1alpha3.ServiceEntry.addresses":         istios,
	"istio.networking.v1alpha3.ServiceEntry.ports":             applied,
	"istio.networking.v1alpha3.ServiceEntry.location":          istios,
	"istio.networking.v1alpha3.ServiceEntry.resolution":        istios,
	"istio.networking.v1alpha3.ServiceEntry.endpoints":         applied,
	"istio.networking.v1alpha3.ServiceEntry.workload_selector": {why: "not supported (WorkloadEntries are not read): list the endpoints in spec.endpoints"},
	"istio.networking.v1alpha3.ServiceEntry.export_to":         allProxies,
	"istio.networking.v1alpha3.ServiceEntry.subject_alt_names": {why: "not applied by Breeze: its upstream connections take the TLS of Envoy's plainText cluster, which authenticates peers as mesh members; ignored"},
	"istio.networking.v1alpha3.ServicePort.number":             applied,
	"istio.networking.v1alpha3.ServicePort.protocol":           istios,
	"istio.networking.v1alpha3.ServicePort.name":               applied,
	"istio.networking.v1alpha3.ServicePort.target_port":        applied,
	"istio.networking.v1alpha3.WorkloadEntry.address":          applied,
	"istio.networking.v1alpha3.WorkloadEntry.ports":            applied,
	"istio.networking.v1alpha3.WorkloadEntry.labels":           applied,
	"istio.networking.v1alpha3.WorkloadEntry.network":          {why: "not supported: Breeze dials every endpoint directly, without network gateways; ignored"},
	"istio.networking.v1alpha3.WorkloadEntry.locality":         applied,
	"istio.networking.v1alpha3.WorkloadEntry.weight":           applied,
	"istio.networking.v1alpha3.WorkloadEntry.service_account":  {why: "not applied by Breeze: its upstream connections take the TLS of Envoy's plainText cluster, which authenticates peers as mesh members; ignored"},
}

// unapplied warns about every field of o's spec that is set and that
// Breeze does not apply, once per object, by its path as the file writes
// it (spec.routes[1].mirror).
func (t *translator) unapplied(o *Object) {
	w := t.cache.work(o)
	if w == nil {
		t.walkUnapplied(o)
		return
	}
	if w.unapplied == nil {
		before := len(t.out.Problems)
		t.walkUnapplied(o)
		w.unapplied = append([]Problem{}, t.out.Problems[before:]...) // not nil: known to have none
		return
	}
	t.out.Problems = append(t.out.Problems, w.unapplied...)
}

// walkUnapplied is unapplied, walking o's fields.
func (t *translator) walkUnapplied(o *Object) {
	var walk func(m protoreflect.Message, path string)
	walk = func(m protoreflect.Message, path string) {
		fds := m.Descriptor().Fields()
		for i := range fds.Len() {
			fd := fds.Get(i)
			if !m.Has(fd) {
				continue
			}
			f := path + "." + fd.JSONName()
			u, known := fields[fd.FullName()]
			switch {
			case !known:
				t.problem(o, f, true, "not applied by Breeze; ignored")
			case u.why != "":
				t.problem(o, f, true, "%s", u.why)
			case !u.applied || fd.Message() == nil || wellKnown(fd.Message()):
			case fd.IsList():
				l := m.Get(fd).List()
				for j := range l.Len() {
					walk(l.Get(j).Message(), f+"["+strconv.Itoa(j)+"]")
				}
			case fd.IsMap():
				if fd.MapValue().Message() == nil {
					continue
				}
				entries := map[string]protoreflect.Message{}
				m.Get(fd).Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
					entries[k.String()] = v.Message()
					return true
				})
				for _, k := range slices.Sorted(maps.Keys(entries)) {
					walk(entries[k], fmt.Sprintf("%s[%q]", f, k))
				}
			default:
				walk(m.Get(fd).Message(), f)
			}
		}
	}
	walk(o.Spec.ProtoReflect(), "spec")
}

// wellKnown reports whether md is one of protobuf's own types (Duration,
// UInt32Value...): a value, with no fields of the API's to look into.
func wellKnown(md protoreflect.MessageDescriptor) bool {
	return md.ParentFile().Package() == "google.protobuf"
}
