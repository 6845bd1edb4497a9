package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/accesslog"
	"github.com/breeze-mesh/breeze/filters/retry"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// FieldError is one mistake in a configuration.
type FieldError struct {
	// Path names the field with proto field names, list indexes and map
	// keys, e.g. route_config.routes[2].match.metadata[0].regex.
	Path string
	// Value is the offending value as shown in the message: strings quoted,
	// "<unset>" for a missing field, empty for an unknown field.
	Value string
	// Err says what is wrong.
	Err error
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return e.Path + ": " + e.Err.Error()
	}
	return e.Path + ": " + e.Value + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks the meaning of a ProxyConfig and reports every mistake it
// finds, joined (errors.Join), each a *FieldError naming the field path and
// the value. Beyond required fields and well-formed values it checks that:
//
//   - codec names a codec registered in package codecs (only codecs linked
//     into the binary count) and that the codec accepts max_frame_size and
//     codec_params;
//   - every route has an action, and every cluster it names exists (with
//     xds set, a cluster the config does not define is fetched from the
//     server instead);
//   - a route's subset labels (route.subset with route.cluster, or
//     weighted_clusters.clusters[].subset) are carried by at least one
//     endpoint of that cluster. Endpoint labels are configuration for STATIC
//     and STRICT_DNS clusters alike, so a subset no endpoint has would always
//     be empty: an error, not a warning. route.subset together with
//     weighted_clusters is an error too (it would be ignored: use the
//     per-cluster subset);
//   - a route's request_mirror_policies name a cluster (that exists, as
//     above) and a subset some endpoint carries, as route targets do, and
//     their percentage is 0–100;
//   - a RING_HASH or MAGLEV cluster has a hash_key, or every route that
//     targets it names one (there is no fallback key; a mirror's shadows
//     without one are spread at random, as Envoy does);
//   - STATIC endpoints are literal IP addresses without zone, STRICT_DNS
//     endpoints host names (or IP literals), ports 1–65535;
//   - EDS clusters list no endpoints (their subsets are not checked: labels
//     arrive at run time), need xds, and only they set eds_service_name;
//   - xds has an address host:port and names something to fetch
//     (route_config_name, an EDS cluster, or a cluster a route names or
//     mirrors to and the config does not define);
//   - a cluster's subsets have labels, distinct ones, and known policies;
//   - circuit breakers' retry_budget.budget_percent and outlier detection's
//     max_ejection_percent are 0–100; outlier detection's interval,
//     base_ejection_time and max_ejection_time are more than 0 (of the
//     cluster and of each subset);
//   - each access_log has a path (absolute, or /dev/stdout, /dev/stderr),
//     one format whose operators are known, known response flags and a
//     sample_percentage of 0–100 (accesslog.Validate);
//   - durations are valid and not negative.
func Validate(c *breezev1.ProxyConfig) error {
	if c == nil {
		return &FieldError{Path: "proxy config", Value: unset, Err: errRequired}
	}
	var v validator
	v.proxy(c)
	return errors.Join(v.errs...)
}

const unset = "<unset>"

var errRequired = errors.New("required")

type validator struct {
	prefix string // prepended to every path, e.g. "listeners[0].proxy."
	errs   []error
	// discovered: clusters not in the config arrive over xDS, so a route
	// may name any.
	discovered bool
}

func (v *validator) add(path, value string, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: v.prefix + path, Value: value, Err: fmt.Errorf(format, args...)})
}

func (v *validator) addErr(path, value string, err error) {
	v.errs = append(v.errs, &FieldError{Path: v.prefix + path, Value: value, Err: err})
}

func (v *validator) required(path, s string) bool {
	if s == "" {
		v.addErr(path, `""`, errRequired)
		return false
	}
	return true
}

// duration checks d when set: valid and not negative.
func (v *validator) duration(path string, d *durationpb.Duration) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		v.add(path, fmt.Sprintf("{seconds: %d, nanos: %d}", d.GetSeconds(), d.GetNanos()), "invalid duration")
		return
	}
	if dur := d.AsDuration(); dur < 0 {
		v.add(path, dur.String(), "must not be negative")
	}
}

func (v *validator) enum(path string, e protoreflect.Enum) {
	if e.Descriptor().Values().ByNumber(e.Number()) == nil {
		v.add(path, strconv.Itoa(int(e.Number())), "%s", EnumMessage(e.Descriptor(), path[strings.LastIndexByte(path, '.')+1:]))
	}
}

func (v *validator) proxy(c *breezev1.ProxyConfig) {
	v.required("stat_prefix", c.GetStatPrefix())
	if v.required("codec", c.GetCodec()) {
		v.codec(c)
	}
	v.duration("idle_timeout", c.GetIdleTimeout())
	v.duration("request_timeout", c.GetRequestTimeout())
	v.retryPolicy("retry_policy", c.GetRetryPolicy())
	v.xds(c)
	if m := c.GetMetrics(); m != nil && v.required("metrics.address", m.GetAddress()) {
		v.listenAddress("metrics.address", m.GetAddress())
	}
	v.tracing(c.GetTracing())
	v.filters(c)
	v.accessLogs(c.GetAccessLog())
	v.discovered = c.GetXds() != nil

	clusters := v.clusters("clusters", c.GetClusters(), c.GetXds() != nil)
	v.routeTable("route_config.", c.GetRouteConfig(), c.GetClusters(), clusters)
	v.enum("upstream_connect", c.GetUpstreamConnect())
	if c.GetUpstreamConnect() == breezev1.UpstreamConnect_GO_LOOPBACK {
		v.goLoopback(c)
	}
}

// goLoopback holds a GO_LOOPBACK proxy to endpoints the config shows to be
// loopback addresses: its socket carries no mesh mTLS, so a connection
// anywhere else would leave the pod in plain text. What the config cannot
// show (xDS, DNS other than localhost) is refused; the dialer refuses
// non-loopback addresses again at dial time.
func (v *validator) goLoopback(c *breezev1.ProxyConfig) {
	const why = "upstream_connect GO_LOOPBACK dials only loopback addresses (127.0.0.0/8, ::1): any other would bypass the mesh's mTLS"
	if c.GetXds() != nil {
		v.add("xds", "set", "%s, and endpoints from xDS may be any address: list the local app's endpoints in clusters", why)
	}
	for i, cl := range c.GetClusters() {
		p := fmt.Sprintf("clusters[%d]", i)
		if cl.GetType() == breezev1.Cluster_EDS {
			v.add(p+".type", "EDS", "%s, and endpoints from xDS may be any address: use STATIC", why)
			continue
		}
		for k, e := range cl.GetEndpoints() {
			addr := e.GetAddress()
			ep := fmt.Sprintf("%s.endpoints[%d].address", p, k)
			switch cl.GetType() {
			case breezev1.Cluster_STATIC:
				if ip, err := netip.ParseAddr(addr); err == nil && !ip.Unmap().IsLoopback() {
					v.add(ep, strconv.Quote(addr), "%s", why)
				}
			case breezev1.Cluster_STRICT_DNS:
				if addr != "localhost" {
					v.add(ep, strconv.Quote(addr), "%s; a host name other than localhost may resolve to any address", why)
				}
			}
		}
	}
}

// clusters checks each cluster and returns the index of each name's first
// definition.
func (v *validator) clusters(path string, cls []*breezev1.Cluster, hasXDS bool) map[string]int {
	byName := map[string]int{}
	for i, cl := range cls {
		p := fmt.Sprintf("%s[%d]", path, i)
		v.cluster(p, cl, hasXDS)
		if name := cl.GetName(); name != "" {
			if j, dup := byName[name]; dup {
				v.add(p+".name", strconv.Quote(name), "duplicate cluster name (also %s[%d])", path, j)
			} else {
				byName[name] = i
			}
		}
	}
	return byName
}

// routeTable checks the routes of rc against the clusters they may target;
// prefix is the path of rc ("route_config." or "" for an xDS resource).
func (v *validator) routeTable(prefix string, rc *breezev1.RouteConfiguration, clusters []*breezev1.Cluster, byName map[string]int) {
	// Routes that reach each cluster without a hash_key of their own.
	unhashed := map[string][]string{}
	for i, r := range rc.GetRoutes() {
		path := fmt.Sprintf("%sroutes[%d]", prefix, i)
		v.route(path, r, clusters, byName)
		if r.GetRoute().GetHashKey() == "" {
			for _, name := range targets(r.GetRoute()) {
				unhashed[name] = append(unhashed[name], v.prefix+path)
			}
		}
	}
	for i, cl := range clusters {
		switch cl.GetLbPolicy() {
		case breezev1.Cluster_RING_HASH, breezev1.Cluster_MAGLEV:
		default:
			continue
		}
		if j, ok := byName[cl.GetName()]; !ok || j != i {
			continue // unnamed or duplicate: reported above
		}
		if routes := unhashed[cl.GetName()]; cl.GetHashKey() == "" && len(routes) > 0 {
			routes = slices.Compact(routes)
			if prefix == "" {
				// An xDS resource: its routes are at fault, the clusters
				// are not part of it.
				v.add(routes[0]+".route.hash_key", `""`,
					"cluster %q is %s without a hash_key, so every route that targets it needs one (none on %s)",
					cl.GetName(), cl.GetLbPolicy(), strings.Join(routes, ", "))
				continue
			}
			v.add(fmt.Sprintf("clusters[%d].hash_key", i), `""`,
				"%s cluster needs a hash_key, or one on every route that targets it (none on %s)",
				cl.GetLbPolicy(), strings.Join(routes, ", "))
		}
	}
}

// ValidateRoutes checks a route table that arrives over xDS for a proxy
// whose clusters are clusters (already validated): what Validate checks of
// route_config, with paths relative to the resource (routes[2].route.cluster).
// Subsets of EDS clusters are not checked: their labels arrive at run time.
func ValidateRoutes(rc *breezev1.RouteConfiguration, clusters []*breezev1.Cluster) error {
	if rc == nil {
		return &FieldError{Path: "route configuration", Value: unset, Err: errRequired}
	}
	v := validator{discovered: true}
	byName := map[string]int{}
	for i, cl := range clusters {
		if _, dup := byName[cl.GetName()]; !dup {
			byName[cl.GetName()] = i
		}
	}
	v.routeTable("", rc, clusters, byName)
	return errors.Join(v.errs...)
}

// xds checks the xDS source, and that it names something to fetch.
func (v *validator) xds(c *breezev1.ProxyConfig) {
	x := c.GetXds()
	if x == nil {
		return
	}
	if v.required("xds.address", x.GetAddress()) {
		v.dialAddress("xds.address", x.GetAddress())
	}
	v.duration("xds.initial_fetch_timeout", x.GetInitialFetchTimeout())
	if t := x.GetTls(); t != nil {
		v.required("xds.tls.ca_file", t.GetCaFile())
	} else if x.GetTokenFile() != "" {
		// The token is the proxy's identity: in clear, anyone on the path
		// could replay it.
		v.add("xds.token_file", fmt.Sprintf("%q", x.GetTokenFile()), "needs xds.tls: the token must not travel in clear")
	}
	if x.GetRouteConfigName() != "" {
		return
	}
	for _, cl := range c.GetClusters() {
		if cl.GetType() == breezev1.Cluster_EDS {
			return
		}
	}
	static := map[string]bool{}
	for _, cl := range c.GetClusters() {
		static[cl.GetName()] = true
	}
	for _, r := range c.GetRouteConfig().GetRoutes() {
		for _, name := range append(targets(r.GetRoute()), mirrors(r.GetRoute())...) {
			if !static[name] {
				return // fetched as an xDS cluster
			}
		}
	}
	v.add("xds", fmt.Sprintf("{address: %q}", x.GetAddress()), "names nothing to fetch: set route_config_name, give a cluster type EDS, or route to a cluster the server defines")
}

// dialAddress checks a host:port to connect to: a host and a port 1–65535.
func (v *validator) dialAddress(path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := err.Error()
		if ae, ok := err.(*net.AddrError); ok {
			reason = ae.Err // its Error() would repeat the address
		}
		v.add(path, strconv.Quote(addr), "want host:port: %s", reason)
		return
	}
	if !validHost(host) {
		v.add(path, strconv.Quote(addr), "host %q is neither an IP address nor a host name", host)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		v.add(path, strconv.Quote(addr), "port %q is not a number 1–65535", port)
	}
}

func (v *validator) codec(c *breezev1.ProxyConfig) {
	f, ok := codecs.Lookup(c.GetCodec())
	if !ok {
		registered := strings.Join(codecs.Names(), ", ")
		if registered == "" {
			registered = "none"
		}
		v.add("codec", strconv.Quote(c.GetCodec()), "no such codec (registered: %s)", registered)
		return
	}
	if _, err := f(codecs.Options{MaxFrameSize: int(c.GetMaxFrameSize()), Params: c.GetCodecParams()}); err != nil {
		v.add("codec", strconv.Quote(c.GetCodec()), "rejects max_frame_size or codec_params: %w", err)
	}
}

// targets lists the clusters a route action sends to.
func targets(a *breezev1.RouteAction) []string {
	switch s := a.GetClusterSpecifier().(type) {
	case *breezev1.RouteAction_Cluster:
		return []string{s.Cluster}
	case *breezev1.RouteAction_WeightedClusters:
		var names []string
		for _, w := range s.WeightedClusters.GetClusters() {
			names = append(names, w.GetName())
		}
		return names
	}
	return nil
}

// mirrors lists the clusters a route action mirrors to.
func mirrors(a *breezev1.RouteAction) []string {
	var names []string
	for _, m := range a.GetRequestMirrorPolicies() {
		names = append(names, m.GetCluster())
	}
	return names
}

func (v *validator) route(path string, r *breezev1.Route, clusters []*breezev1.Cluster, byName map[string]int) {
	for j, m := range r.GetMatch().GetMetadata() {
		v.matcher(fmt.Sprintf("%s.match.metadata[%d]", path, j), m)
	}
	for j, kv := range r.GetRequestMutation() {
		v.required(fmt.Sprintf("%s.request_mutation[%d].key", path, j), kv.GetKey())
	}
	v.duration(path+".timeout", r.GetTimeout())
	v.retryPolicy(path+".retry_policy", r.GetRetryPolicy())
	v.routeFilters(path, r)

	// clusterRef checks a reference to a cluster and the subset it selects.
	clusterRef := func(path, name string, subsetPath string, subset map[string]string) {
		if !v.required(path, name) {
			return
		}
		i, ok := byName[name]
		if !ok {
			if !v.discovered {
				v.add(path, strconv.Quote(name), "no such cluster")
			}
			return
		}
		// EDS endpoints and their labels are only known at run time.
		if len(subset) > 0 && clusters[i].GetType() != breezev1.Cluster_EDS && !hasSubset(clusters[i], subset) {
			v.add(subsetPath, formatLabels(subset), "no endpoint of cluster %q has these labels", name)
		}
	}

	a := r.GetRoute()
	switch s := a.GetClusterSpecifier().(type) {
	case *breezev1.RouteAction_Cluster:
		clusterRef(path+".route.cluster", s.Cluster, path+".route.subset", a.GetSubset())
	case *breezev1.RouteAction_WeightedClusters:
		wpath := path + ".route.weighted_clusters.clusters"
		ws := s.WeightedClusters.GetClusters()
		if len(ws) == 0 {
			v.add(wpath, "[]", "needs at least one cluster")
			break
		}
		var total uint64
		for k, w := range ws {
			p := fmt.Sprintf("%s[%d]", wpath, k)
			clusterRef(p+".name", w.GetName(), p+".subset", w.GetSubset())
			total += uint64(w.GetWeight())
		}
		if total == 0 {
			v.add(wpath, "total weight 0", "the weights must add up to more than 0")
		}
		if len(a.GetSubset()) > 0 {
			v.add(path+".route.subset", formatLabels(a.GetSubset()),
				"applies to route.cluster only; with weighted_clusters set weighted_clusters.clusters[].subset")
		}
	default:
		v.add(path+".route", unset, "a route needs an action: cluster or weighted_clusters")
	}
	for j, m := range a.GetRequestMirrorPolicies() {
		p := fmt.Sprintf("%s.route.request_mirror_policies[%d]", path, j)
		clusterRef(p+".cluster", m.GetCluster(), p+".subset", m.GetSubset())
		if m.Percentage != nil {
			if pct := m.GetPercentage(); math.IsNaN(pct) || pct < 0 || pct > 100 {
				v.add(p+".percentage", strconv.FormatFloat(pct, 'g', -1, 64), "must be 0–100 (percent of the route's requests mirrored)")
			}
		}
	}
}

// retryPolicy checks a policy with the compiler the router uses.
func (v *validator) retryPolicy(path string, p *breezev1.RetryPolicy) {
	if p == nil {
		return
	}
	n := len(v.errs)
	v.duration(path+".per_try_timeout", p.GetPerTryTimeout())
	v.duration(path+".retry_back_off.base_interval", p.GetRetryBackOff().GetBaseInterval())
	v.duration(path+".retry_back_off.max_interval", p.GetRetryBackOff().GetMaxInterval())
	if len(v.errs) > n {
		return // one error per bad duration is enough
	}
	if _, err := retry.Compile(p); err != nil {
		v.addErr(path, "", err)
	}
}

func (v *validator) matcher(path string, m *breezev1.MetadataMatcher) {
	v.required(path+".key", m.GetKey())
	switch s := m.GetMatch().(type) {
	case *breezev1.MetadataMatcher_Regex:
		if _, err := regexp.Compile(s.Regex); err != nil {
			v.addErr(path+".regex", strconv.Quote(s.Regex), err)
		}
	case nil:
		v.add(path, fmt.Sprintf("key %q", m.GetKey()), "needs one of exact, prefix, regex, present")
	}
}

// ValidateCluster checks a cluster that arrives over xDS, with paths
// relative to it (lb_policy, subsets[0].labels).
func ValidateCluster(c *breezev1.Cluster) error {
	var v validator
	v.cluster("", c, true)
	for i, e := range v.errs {
		if fe, ok := e.(*FieldError); ok {
			fe.Path = strings.TrimPrefix(fe.Path, ".")
			v.errs[i] = fe
		}
	}
	return errors.Join(v.errs...)
}

func (v *validator) cluster(path string, c *breezev1.Cluster, hasXDS bool) {
	v.required(path+".name", c.GetName())
	v.enum(path+".type", c.GetType())
	switch {
	case c.GetType() == breezev1.Cluster_EDS:
		if !hasXDS {
			v.add(path+".type", "EDS", "needs xds.address, the server to fetch endpoints from")
		}
		if n := len(c.GetEndpoints()); n > 0 {
			v.add(path+".endpoints", fmt.Sprintf("%d endpoints", n), "an EDS cluster takes its endpoints from xDS only: remove them")
		}
	case c.GetEdsServiceName() != "":
		v.add(path+".eds_service_name", strconv.Quote(c.GetEdsServiceName()), "applies to type EDS only (type is %s)", c.GetType())
	}
	v.enum(path+".lb_policy", c.GetLbPolicy())
	v.duration(path+".dns_refresh_rate", c.GetDnsRefreshRate())
	v.duration(path+".connect_timeout", c.GetConnectTimeout())
	seen := map[string]int{}
	for k, sub := range c.GetSubsets() {
		p := fmt.Sprintf("%s.subsets[%d]", path, k)
		if len(sub.GetLabels()) == 0 {
			v.add(p+".labels", "{}", "a subset needs at least one label")
		} else if j, dup := seen[formatLabels(sub.GetLabels())]; dup {
			v.add(p+".labels", formatLabels(sub.GetLabels()), "same labels as subsets[%d]", j)
		} else {
			seen[formatLabels(sub.GetLabels())] = k
		}
		if sub.LbPolicy != nil {
			v.enum(p+".lb_policy", sub.GetLbPolicy())
		}
		v.circuitBreakers(p+".circuit_breakers", sub.GetCircuitBreakers())
		v.outlierDetection(p+".outlier_detection", sub.GetOutlierDetection())
	}
	v.circuitBreakers(path+".circuit_breakers", c.GetCircuitBreakers())
	v.outlierDetection(path+".outlier_detection", c.GetOutlierDetection())
	for k, e := range c.GetEndpoints() {
		p := fmt.Sprintf("%s.endpoints[%d]", path, k)
		addr := e.GetAddress()
		switch c.GetType() {
		case breezev1.Cluster_STATIC:
			if ip, err := netip.ParseAddr(addr); err != nil {
				v.add(p+".address", strconv.Quote(addr), "a STATIC cluster needs a literal IP address")
			} else if ip.Zone() != "" {
				v.add(p+".address", strconv.Quote(addr), "IPv6 zones are not supported")
			}
		case breezev1.Cluster_STRICT_DNS:
			if !validHost(addr) {
				v.add(p+".address", strconv.Quote(addr), "not a valid host name")
			}
		}
		if port := e.GetPort(); port == 0 || port > 65535 {
			v.add(p+".port", strconv.FormatUint(uint64(port), 10), "must be 1–65535")
		}
	}
}

// circuitBreakers checks a cluster's (or subset's) limits: a retry
// budget is a percentage. The limits themselves take any value (0: none).
func (v *validator) circuitBreakers(path string, cb *breezev1.CircuitBreakers) {
	if rb := cb.GetRetryBudget(); rb != nil && rb.BudgetPercent != nil {
		if p := rb.GetBudgetPercent(); math.IsNaN(p) || p < 0 || p > 100 {
			v.add(path+".retry_budget.budget_percent", strconv.FormatFloat(p, 'g', -1, 64), "must be 0–100")
		}
	}
}

// outlierDetection checks a cluster's (or subset's) detector: the
// durations, when set, are more than 0 (a zero interval or ejection time
// means nothing; Envoy refuses them too), and max_ejection_percent is a
// percentage.
func (v *validator) outlierDetection(path string, od *breezev1.OutlierDetection) {
	if od == nil {
		return
	}
	v.positiveDuration(path+".interval", od.GetInterval())
	v.positiveDuration(path+".base_ejection_time", od.GetBaseEjectionTime())
	v.positiveDuration(path+".max_ejection_time", od.GetMaxEjectionTime())
	if od.MaxEjectionPercent != nil && od.GetMaxEjectionPercent() > 100 {
		v.add(path+".max_ejection_percent", strconv.FormatUint(uint64(od.GetMaxEjectionPercent()), 10), "must be 0–100")
	}
}

// positiveDuration checks d when set: valid and more than 0.
func (v *validator) positiveDuration(path string, d *durationpb.Duration) {
	if d == nil {
		return
	}
	n := len(v.errs)
	v.duration(path, d)
	if len(v.errs) == n && d.AsDuration() == 0 {
		v.add(path, "0s", "must be more than 0")
	}
}

// hasSubset reports whether an endpoint of c carries every label of subset.
func hasSubset(c *breezev1.Cluster, subset map[string]string) bool {
	for _, e := range c.GetEndpoints() {
		ok := true
		for k, want := range subset {
			if got, has := e.GetLabels()[k]; !has || got != want {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func formatLabels(m map[string]string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(k))
		b.WriteString(": ")
		b.WriteString(strconv.Quote(m[k]))
	}
	b.WriteByte('}')
	return b.String()
}

// validHost reports whether s is an IP literal or a DNS host name: labels of
// 1–63 letters, digits, '-' (not first or last) and '_' (which Go's
// resolver accepts and some internal names use), 253 bytes at most, an
// optional final dot, and a last label that is not all digits (so that a
// mistyped IPv4 address such as 10.0.0.256 is not taken for a name).
func validHost(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			switch ch := l[i]; {
			case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9', ch == '-', ch == '_':
			default:
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

// accessLogs checks each access log (accesslog.Validate), its errors
// placed under access_log[i].
func (v *validator) accessLogs(logs []*breezev1.AccessLog) {
	for i, al := range logs {
		p := fmt.Sprintf("access_log[%d].", i)
		for _, err := range splitErrors(accesslog.Validate(al)) {
			var fe *accesslog.FieldError
			if errors.As(err, &fe) {
				v.addErr(p+fe.Path, fe.Value, fe.Err)
			} else if err != nil {
				v.addErr(p[:len(p)-1], "", err)
			}
		}
	}
}

// tracing checks the tracing config: a collector to dial, a sampling
// percentage of 0–100, valid durations.
func (v *validator) tracing(t *breezev1.Tracing) {
	if t == nil {
		return
	}
	if v.required("tracing.collector", t.GetCollector()) {
		v.dialAddress("tracing.collector", t.GetCollector())
	}
	if p := t.GetRandomSamplingPercentage(); !(p >= 0 && p <= 100) {
		v.add("tracing.random_sampling_percentage", fmt.Sprint(p), "must be 0–100")
	}
	v.duration("tracing.batch_timeout", t.GetBatchTimeout())
	v.duration("tracing.export_timeout", t.GetExportTimeout())
}
