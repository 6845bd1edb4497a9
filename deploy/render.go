package deploy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/internal/release"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// DefaultIstio is the Istio release a Service is rendered for unless it
// names one: the one this binary is built for (its Envoy API types, see
// internal/release), whose types the rendered EnvoyFilters are checked
// with.
func DefaultIstio() string { return builtRelease().Istio }

// ProxyVersion is the proxyVersion pin of an Istio release's sidecars
// (^1\.28\. for Istio 1.28, which runs Envoy 1.36): breeze.so is built
// against one Envoy Go API, and another Envoy would load it and fail in
// ways no config check can foresee. An error names the releases Breeze is
// built for.
func ProxyVersion(istio string) (string, error) {
	r, err := release.ForIstio(istio)
	if err != nil {
		return "", err
	}
	return r.ProxyVersion(), nil
}

// builtRelease is the release whose API types this binary links (the
// default target if it cannot tell).
func builtRelease() release.Release {
	if r, ok := release.Built(); ok {
		return r
	}
	if r, ok := release.ForFunc(release.EnvoyAPITypes, (*clusterv3.Cluster).Reset); ok {
		return r
	}
	return release.Default()
}

// upstreamConnectTimeout is the plainText cluster's connect timeout, an
// upper bound for every Breeze cluster of the pod: each Breeze cluster's
// own connect_timeout (5s unless set) normally fires first.
const upstreamConnectTimeout = 10 * time.Second

// Render translates a service description into Istio EnvoyFilters: for
// outbound, Breeze in place of tcp_proxy on the service's <vip>_<port>
// listener of the clients' sidecars, with the plainText cluster (Istio
// mTLS unless UpstreamTLS says otherwise); for inbound, Breeze in place of
// tcp_proxy on the virtualInbound chain of the target port of the
// service's pods, dialing the app at 127.0.0.1 in plain text: with Istio
// mTLS through the Go runtime's own socket (upstream_connect GO_LOOPBACK)
// and no plainText cluster, so that the pod's plainText stays the
// outbound side's mTLS one and a pod may call and serve; with upstream_tls
// none through a plain-text plainText cluster; for gateway, the outbound
// proxy in place of tcp_proxy on the gateway proxies' listener of the port
// (context GATEWAY), with the plainText cluster as for outbound. Every
// patch is pinned to ProxyVersion. The result passes the same checks
// `breeze validate` runs, or Render fails.
func Render(s *Service) ([]*EnvoyFilter, error) {
	r, err := Resolve(s)
	if err != nil {
		return nil, err
	}
	var out []*EnvoyFilter
	if r.Direction == Gateway {
		ef, err := r.gateway()
		if err != nil {
			return nil, err
		}
		out = append(out, ef)
	}
	if r.Direction == Outbound || r.Direction == Both {
		ef, err := r.outbound()
		if err != nil {
			return nil, err
		}
		out = append(out, ef)
	}
	if r.Direction == Inbound || r.Direction == Both {
		ef, err := r.inbound()
		if err != nil {
			return nil, err
		}
		out = append(out, ef)
	}
	// Self-check: the translation is only done when its output passes.
	var f Findings
	var uses []istioUse
	for _, ef := range out {
		y, err := ef.YAML()
		if err != nil {
			return nil, err
		}
		v, _, err := yamlValue(y)
		if err != nil {
			return nil, err
		}
		_, use, ef := checkEnvoyFilter(v.(map[string]any), ef.Name)
		f.merge(ef)
		uses = append(uses, use)
	}
	checkIstioSet(uses, func(_ *istioUse, e error) { f.Errors = append(f.Errors, e) })
	if err := f.Err(); err != nil {
		return nil, fmt.Errorf("rendered EnvoyFilters fail their checks: %w", err)
	}
	return out, nil
}

// RouteConfigName is the route table an outbound proxy with xds and no
// xds.route_config_name fetches: host_port, as breeze xds names the table
// of a ServiceEntry host and port (controlplane.RouteConfigName).
func RouteConfigName(host string, port uint32) string {
	return host + "_" + strconv.FormatUint(uint64(port), 10)
}

// Resolve returns a copy of a Service with its defaults filled in, after
// checking it; errors name the service file's fields. Render calls it.
//
// With xds (outbound), xds.route_config_name defaults to RouteConfigName
// of Host and Port, and routes and clusters are errors: the xDS server
// serves them, so that the plugin_config holds only what does not change
// at run time (codec, stat prefix, xds source, timeouts, filters).
func Resolve(in *Service) (*Service, error) {
	s := *in
	var errs []error
	bad := func(field, format string, args ...any) { errs = append(errs, errorf(field, format, args...)) }

	labels := strings.Split(s.Host, ".")
	switch {
	case s.Host == "":
		bad("host", "required: the service's host name, e.g. greeter.demo.svc.cluster.local")
	case !dns1123Subdomain.MatchString(s.Host):
		bad("host", "%q: not a DNS name in lower case", s.Host)
	}
	if s.Name == "" {
		s.Name = labels[0]
	}
	if !dns1123Label.MatchString(s.Name) || len(s.Name) > 40 {
		bad("name", "%q: want a DNS label of at most 40 characters (it prefixes resource names)", s.Name)
	}
	if s.Namespace == "" {
		s.Namespace = "default"
		if len(labels) >= 2 && labels[1] != "" {
			s.Namespace = labels[1]
		}
	}
	if !dns1123Label.MatchString(s.Namespace) {
		bad("namespace", "%q: not a DNS-1123 label", s.Namespace)
	}
	if s.Port == 0 || s.Port > 65535 {
		bad("port", "%d: want the service port, 1–65535", s.Port)
	}
	if s.TargetPort == 0 {
		s.TargetPort = s.Port
	}
	if s.TargetPort > 65535 {
		bad("target_port", "%d: want 1–65535", s.TargetPort)
	}
	if s.Protocol == "" {
		bad("protocol", "required: a Breeze codec, e.g. dubbo")
	}
	switch s.Direction {
	case "":
		s.Direction = Outbound
	case Outbound, Inbound, Both, Gateway:
	default:
		bad("direction", "%q: want %s, %s, %s or %s", s.Direction, Outbound, Inbound, Both, Gateway)
	}
	switch s.UpstreamTLS {
	case "":
		s.UpstreamTLS = UpstreamIstioMTLS
	case UpstreamIstioMTLS, UpstreamPlaintext:
	default:
		bad("upstream_tls", "%q: want %s or %s", s.UpstreamTLS, UpstreamIstioMTLS, UpstreamPlaintext)
	}
	if s.LibraryPath == "" {
		s.LibraryPath = DefaultLibraryPath
	}
	if !path.IsAbs(s.LibraryPath) {
		bad("library_path", "%q: want an absolute path", s.LibraryPath)
	}
	if s.Istio == "" {
		s.Istio = DefaultIstio()
	}
	rel, err := release.ForIstio(s.Istio)
	if err != nil {
		bad("istio", "%v", err)
	} else {
		s.Istio = rel.Istio
	}
	switch s.ProxyVersion {
	case "":
		s.ProxyVersion = rel.ProxyVersion()
	case "-":
		s.ProxyVersion = ""
	default:
		if _, err := regexp.Compile(s.ProxyVersion); err != nil {
			bad("proxy_version", "%q: %v", s.ProxyVersion, err)
		} else if rel.Istio != "" && !rel.ProxyVersionMatches(s.ProxyVersion) {
			bad("proxy_version", "%q does not select Istio %s proxies, which the patches are for (istio: %q); leave it out for %q", s.ProxyVersion, rel.Istio, rel.Istio, rel.ProxyVersion())
		}
	}
	if s.Direction != Inbound {
		// A gateway's listener is matched by port: no VIP.
		if ip, err := netip.ParseAddr(s.VIP); s.Direction != Gateway && (err != nil || ip.IsUnspecified() || ip.IsLoopback() || ip.Zone() != "") {
			bad("vip", "%q: outbound needs the service's ClusterIP (kubectl get svc): Istio names its listener <vip>_<port>", s.VIP)
		}
		if len(s.Outbound.GetClusters()) == 0 && len(s.Outbound.GetRouteConfig().GetRoutes()) == 0 && s.Outbound.GetXds() == nil {
			bad("routes", "outbound needs clusters (and routes), or xds")
		}
	}
	if s.Direction != Inbound && s.Outbound.GetXds() != nil {
		s.Outbound = proto.CloneOf(s.Outbound)
		x := s.Outbound.GetXds()
		if x.GetRouteConfigName() == "" && s.Host != "" && s.Port != 0 {
			x.RouteConfigName = RouteConfigName(s.Host, s.Port)
		}
		// What changes at run time stays out of the EnvoyFilter: a new
		// plugin_config is a new listener in every client sidecar, and
		// Envoy drains the old one's connections.
		if len(s.Outbound.GetRouteConfig().GetRoutes()) > 0 {
			bad("routes", "with xds, the route table is the xDS resource %q (xds.route_config_name): serve these routes from the xDS server (breeze xds: a MetaRouter for %s) and remove them here, "+
				"so that the EnvoyFilter stays the same when they change", x.GetRouteConfigName(), s.Host)
		}
		if cs := s.Outbound.GetClusters(); len(cs) > 0 {
			names := make([]string, len(cs))
			for i, c := range cs {
				names[i] = strconv.Quote(c.GetName())
			}
			bad("clusters", "%s: with xds, each cluster a route names is an Envoy Cluster fetched from the xDS server: serve them from it (breeze xds) and remove them here, "+
				"so that the EnvoyFilter stays the same when they change", strings.Join(names, ", "))
		}
	}
	if (s.Direction == Outbound || s.Direction == Gateway) && len(s.InboundFilters) > 0 {
		bad("inbound_filters", "direction %s: there is no inbound proxy for them; say direction: inbound or both", s.Direction)
	}
	if (s.Direction == Inbound || s.Direction == Both) && len(s.Selector) == 0 {
		bad("selector", "required for inbound: the labels of the service's pods (without it every pod of the namespace gets Breeze on port %d)", s.TargetPort)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &s, nil
}

func (s *Service) labels(direction Direction) map[string]string {
	return map[string]string{
		"app.kubernetes.io/managed-by": "breeze",
		"app.kubernetes.io/name":       s.Name,
		"app.kubernetes.io/component":  string(direction),
	}
}

func (s *Service) proxyMatch() *networkingv1alpha3.EnvoyFilter_ProxyMatch {
	if s.ProxyVersion == "" {
		return nil
	}
	return &networkingv1alpha3.EnvoyFilter_ProxyMatch{ProxyVersion: s.ProxyVersion}
}

// clientProxy is the proxy config of the clients' side, outbound or on a
// gateway.
func (s *Service) clientProxy(statPrefix string) (*breezev1.ProxyConfig, error) {
	pc := proto.CloneOf(s.Outbound)
	pc.StatPrefix = statPrefix
	pc.Codec = s.Protocol
	if pc.GetXds() == nil && len(pc.GetRouteConfig().GetRoutes()) == 0 && len(pc.GetClusters()) > 0 {
		pc.RouteConfig = &breezev1.RouteConfiguration{Name: s.Name, Routes: []*breezev1.Route{{
			Name:  "all",
			Route: &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: pc.GetClusters()[0].GetName()}},
		}}}
	}
	if err := config.Validate(pc); err != nil {
		return nil, serviceProxyErrors(err)
	}
	return pc, nil
}

func (s *Service) outbound() (*EnvoyFilter, error) {
	pc, err := s.clientProxy("outbound_" + s.Name)
	if err != nil {
		return nil, err
	}
	listener := s.VIP + "_" + strconv.FormatUint(uint64(s.Port), 10)
	return s.envoyFilter(Outbound, networkingv1alpha3.EnvoyFilter_SIDECAR_OUTBOUND, s.Clients,
		&networkingv1alpha3.EnvoyFilter_ListenerMatch{
			Name: listener,
			FilterChain: &networkingv1alpha3.EnvoyFilter_ListenerMatch_FilterChainMatch{
				Filter: &networkingv1alpha3.EnvoyFilter_ListenerMatch_FilterMatch{Name: TCPProxyFilterName},
			},
		}, pc, s.UpstreamTLS)
}

// gateway is the outbound proxy on a gateway's listener of Port: istiod
// gives a Gateway's TCP server the listener 0.0.0.0_<port> with one
// tcp_proxy chain (when a VirtualService's tcp route binds to it), which
// the patch matches by port, in context GATEWAY (no sidecar has it).
func (s *Service) gateway() (*EnvoyFilter, error) {
	pc, err := s.clientProxy("gateway_" + s.Name)
	if err != nil {
		return nil, err
	}
	return s.envoyFilter(Gateway, networkingv1alpha3.EnvoyFilter_GATEWAY, s.Clients,
		&networkingv1alpha3.EnvoyFilter_ListenerMatch{
			PortNumber: s.Port,
			FilterChain: &networkingv1alpha3.EnvoyFilter_ListenerMatch_FilterChainMatch{
				Filter: &networkingv1alpha3.EnvoyFilter_ListenerMatch_FilterMatch{Name: TCPProxyFilterName},
			},
		}, pc, s.UpstreamTLS)
}

func (s *Service) inbound() (*EnvoyFilter, error) {
	pc := &breezev1.ProxyConfig{
		StatPrefix:     "inbound_" + s.Name,
		Codec:          s.Protocol,
		CodecParams:    s.Outbound.GetCodecParams(),
		MaxFrameSize:   s.Outbound.GetMaxFrameSize(),
		RequestTimeout: s.Outbound.GetRequestTimeout(),
		IdleTimeout:    s.Outbound.GetIdleTimeout(),
		Metrics:        s.Outbound.GetMetrics(),
		Filters:        s.InboundFilters,
		RouteConfig: &breezev1.RouteConfiguration{Name: s.Name + "-inbound", Routes: []*breezev1.Route{{
			Name:  "local-app",
			Route: &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "local-app"}},
		}}},
		Clusters: []*breezev1.Cluster{{
			Name:      "local-app",
			Endpoints: []*breezev1.Endpoint{{Address: "127.0.0.1", Port: s.TargetPort}},
		}},
	}
	if err := config.Validate(pc); err != nil {
		return nil, renameField(serviceProxyErrors(err), "filters", "inbound_filters")
	}
	rel, err := release.ForIstio(s.Istio)
	if err != nil {
		return nil, err // Resolve has checked it
	}
	before, filters, err := inboundIdentity(rel, pc.GetFilters())
	if err != nil {
		return nil, err
	}
	pc.Filters = filters
	// Envoy's Go filter dials every Envoy upstream connection of the pod
	// through the one plainText cluster. Under Istio mTLS that cluster is
	// the outbound side's, with TLS: the inbound side reaches the app with
	// the Go runtime's own socket instead, which the sidecar's iptables
	// leave alone (Envoy's uid 1337 to 127.0.0.1: RETURN), and adds no
	// plainText. So the inbound and outbound sides of any services can
	// land on one pod.
	plainText := UpstreamPlaintext
	if s.UpstreamTLS == UpstreamIstioMTLS {
		pc.UpstreamConnect = breezev1.UpstreamConnect_GO_LOOPBACK
		plainText = ""
	}
	return s.envoyFilter(Inbound, networkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND, s.Selector,
		&networkingv1alpha3.EnvoyFilter_ListenerMatch{
			Name: virtualInbound,
			FilterChain: &networkingv1alpha3.EnvoyFilter_ListenerMatch_FilterChainMatch{
				DestinationPort: s.TargetPort,
				Filter:          &networkingv1alpha3.EnvoyFilter_ListenerMatch_FilterMatch{Name: TCPProxyFilterName},
			},
		}, pc, plainText, before...)
}

// envoyFilter is one direction's resource: the Go filter in place of
// tcp_proxy, and the plainText cluster for the same pods (none when tls is
// ""); the network filters before, in order, in front of it.
func (s *Service) envoyFilter(dir Direction, ctx networkingv1alpha3.EnvoyFilter_PatchContext, selector map[string]string,
	lm *networkingv1alpha3.EnvoyFilter_ListenerMatch, pc *breezev1.ProxyConfig, tls UpstreamTLS, before ...*structpb.Struct,
) (*EnvoyFilter, error) {
	flt, err := GolangFilter(s.LibraryPath, pc)
	if err != nil {
		return nil, err
	}
	fv, err := toStruct(flt)
	if err != nil {
		return nil, err
	}
	spec := &networkingv1alpha3.EnvoyFilter{
		ConfigPatches: []*networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch{{
			ApplyTo: networkingv1alpha3.EnvoyFilter_NETWORK_FILTER,
			Match: &networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectMatch{
				Context:     ctx,
				Proxy:       s.proxyMatch(),
				ObjectTypes: &networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectMatch_Listener{Listener: lm},
			},
			Patch: &networkingv1alpha3.EnvoyFilter_Patch{Operation: networkingv1alpha3.EnvoyFilter_Patch_REPLACE, Value: fv},
		}},
	}
	if tls != "" {
		c, err := PlainTextClusterConfig(tls, upstreamConnectTimeout)
		if err != nil {
			return nil, err
		}
		cv, err := toStruct(c)
		if err != nil {
			return nil, err
		}
		spec.ConfigPatches = append(spec.ConfigPatches, &networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch{
			ApplyTo: networkingv1alpha3.EnvoyFilter_CLUSTER,
			Match: &networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectMatch{
				Context: ctx,
				Proxy:   s.proxyMatch(),
			},
			Patch: &networkingv1alpha3.EnvoyFilter_Patch{Operation: networkingv1alpha3.EnvoyFilter_Patch_ADD, Value: cv},
		})
	}
	// Inserted before tcp_proxy ahead of the patch that replaces it: istiod
	// applies one EnvoyFilter's patches in order, so they end up in front
	// of the Go filter, in this order.
	var inserts []*networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch
	for _, b := range before {
		inserts = append(inserts, &networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch{
			ApplyTo: networkingv1alpha3.EnvoyFilter_NETWORK_FILTER,
			Match: &networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectMatch{
				Context:     ctx,
				Proxy:       s.proxyMatch(),
				ObjectTypes: &networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectMatch_Listener{Listener: lm},
			},
			Patch: &networkingv1alpha3.EnvoyFilter_Patch{Operation: networkingv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE, Value: b},
		})
	}
	spec.ConfigPatches = append(inserts, spec.ConfigPatches...)
	if len(selector) > 0 {
		spec.WorkloadSelector = &networkingv1alpha3.WorkloadSelector{Labels: selector}
	}
	return &EnvoyFilter{
		Name:      s.Name + "-breeze-" + string(dir),
		Namespace: s.Namespace,
		Labels:    s.labels(dir),
		Spec:      spec,
	}, nil
}

// toStruct turns an Envoy message into a patch value, in proto field names
// as Envoy's own docs and istioctl write them.
func toStruct(m proto.Message) (*structpb.Struct, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	st := &structpb.Struct{}
	if err := protojson.Unmarshal(js, st); err != nil {
		return nil, err
	}
	return st, nil
}

// serviceProxyErrors names config.Validate's errors by the service file's
// keys (routes, clusters, xds, ...).
func serviceProxyErrors(err error) error {
	var fes []*config.FieldError
	collectFieldErrors(err, &fes)
	if len(fes) == 0 {
		return err
	}
	errs := make([]error, len(fes))
	for i, fe := range fes {
		msg := fe.Err.Error()
		if fe.Value != "" {
			msg = fe.Value + ": " + msg
		}
		errs[i] = errorf(strings.TrimPrefix(fe.Path, "route_config."), "%s", msg)
	}
	return errors.Join(errs...)
}

// RenderFile parses a service description and renders its EnvoyFilters as
// a YAML stream, headed by a comment naming the description (name).
func RenderFile(name string, data []byte) ([]byte, error) {
	return RenderFileFor("", name, data)
}

// RenderFileFor is RenderFile for the sidecars of an Istio release
// (`breeze render envoyfilter --istio 1.31`): istio stands for the
// description's own istio, which, when set, must say the same. "" keeps
// the description's, or DefaultIstio().
func RenderFileFor(istio, name string, data []byte) ([]byte, error) {
	s, err := ParseService(data)
	if err != nil {
		return nil, err
	}
	if istio != "" {
		if s.Istio != "" && minorRelease(s.Istio) != minorRelease(istio) {
			return nil, errorf("istio", "%q: the description is for Istio %s, not %s: change it, or render without --istio", s.Istio, s.Istio, istio)
		}
		s.Istio = istio
	}
	if s.Istio == "" {
		s.Istio = DefaultIstio()
	}
	efs, err := Render(s)
	if err != nil {
		return nil, err
	}
	y, err := MarshalEnvoyFilters(efs)
	if err != nil {
		return nil, err
	}
	rel, err := release.ForIstio(s.Istio)
	if err != nil {
		return nil, err // Resolve has checked it
	}
	header := fmt.Sprintf("# Rendered by `breeze render envoyfilter %s`: edit that file and render again.\n"+
		"# Needs Istio %s sidecars (Envoy %s) carrying breeze.so built for them (make plugin%s)\n"+
		"# at its library_path, with GODEBUG=cgocheck=0 (see the README's \"Run in Istio\").\n",
		name, rel.Istio, rel.Envoy, makeEnvoyArg(rel))
	if x := s.Outbound.GetXds(); x != nil && s.Direction != Inbound {
		table := x.GetRouteConfigName()
		if table == "" {
			table = RouteConfigName(s.Host, s.Port)
		}
		header += fmt.Sprintf("# Outbound routes and clusters come from the xDS server at %s,\n"+
			"# route table %q: these EnvoyFilters stay the same when they change.\n", x.GetAddress(), table)
	}
	if a := PodAnnotations(s); a != nil {
		if r, err := Resolve(s); err == nil {
			header += podAnnotationsComment(r, a)
		}
	}
	return append([]byte(header), y...), nil
}

// PodAnnotations are the annotations that make istio-agent merge the
// plugin's metrics (ProxyConfig.metrics) into the sidecar's
// :15020/stats/prometheus: prometheus.io/scrape, port and path, which the
// injector reads when it injects the sidecar (so they belong on the pod
// template). Nil when the service description names no metrics address.
func PodAnnotations(s *Service) map[string]string {
	addr := s.Outbound.GetMetrics().GetAddress()
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	return map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   port,
		"prometheus.io/path":   "/metrics",
	}
}

// podAnnotationsComment says which pods take the annotations, as a
// comment heading the rendered file (render makes no workload objects).
func podAnnotationsComment(s *Service, a map[string]string) string {
	var pods []string
	if s.Direction != Inbound {
		pods = append(pods, "the clients' ("+selectorText(s.Clients, "every pod of namespace "+s.Namespace)+")")
	}
	if s.Direction == Inbound || s.Direction == Both {
		pods = append(pods, "the service's ("+selectorText(s.Selector, "")+")")
	}
	return fmt.Sprintf("# Breeze serves its metrics (breeze_*, istio_*) on %s inside Envoy. For istio-agent\n"+
		"# to merge them into :15020/stats/prometheus, add to the pod template of %s pods\n"+
		"# (read when the sidecar is injected; one app endpoint per pod: see deploy/README.md#metrics):\n"+
		"#   prometheus.io/scrape: %q\n#   prometheus.io/port: %q\n#   prometheus.io/path: %s\n",
		s.Outbound.GetMetrics().GetAddress(), strings.Join(pods, " and "),
		a["prometheus.io/scrape"], a["prometheus.io/port"], a["prometheus.io/path"])
}

func selectorText(sel map[string]string, empty string) string {
	if len(sel) == 0 {
		return empty
	}
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + sel[k]
	}
	return strings.Join(keys, ",")
}

// makeEnvoyArg is what `make plugin` needs to build for r.
func makeEnvoyArg(r release.Release) string {
	if r == release.Default() {
		return ""
	}
	return " ENVOY=" + r.Envoy
}

// minorRelease is "1.31" of "1.31.4".
func minorRelease(v string) string {
	if r, err := release.ForIstio(v); err == nil {
		return r.Istio
	}
	return v
}
