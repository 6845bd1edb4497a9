package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/breeze-mesh/breeze/config"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Direction says which side of a service Breeze runs on.
type Direction string

const (
	// Outbound: in the sidecars of the service's clients, in place of
	// tcp_proxy on the service's <vip>_<port> listener.
	Outbound Direction = "outbound"
	// Inbound: in the sidecars of the service's own pods, in place of
	// tcp_proxy on the virtualInbound chain of the target port, dialing the
	// app at 127.0.0.1.
	Inbound Direction = "inbound"
	// Both directions.
	Both Direction = "both"
	// Gateway: in Istio gateway proxies (an ingress gateway, for clients
	// outside the mesh), in place of tcp_proxy on the listener of Port (a
	// Gateway's TCP server), with the outbound proxy config and the
	// plainText cluster (Istio mTLS toward the mesh unless UpstreamTLS
	// says otherwise). Clients is the Gateway's selector, Namespace the
	// Gateway's; no VIP: istiod names the listener 0.0.0.0_<port>, and the
	// patch matches it by port.
	Gateway Direction = "gateway"
)

// Service is what `breeze render envoyfilter` reads: one Kubernetes
// service whose traffic Breeze manages in Istio sidecars. A control plane
// fills it from its own resources and calls Render the same way.
type Service struct {
	// Host is the service's name, as its clients call it
	// (greeter.demo.svc.cluster.local); required.
	Host string
	// Name prefixes the resource names; default: Host's first label.
	Name string
	// Namespace of the EnvoyFilters: the clients' and the service's
	// (istio-system applies to every namespace); default: Host's second
	// label, else "default".
	Namespace string
	// VIP is the service's ClusterIP: Istio names its outbound listener
	// <VIP>_<Port>. Required for outbound.
	VIP string
	// Port is the service port; required.
	Port uint32
	// TargetPort is the container port, where the inbound chain matches;
	// default: Port.
	TargetPort uint32
	// Protocol is the Breeze codec, e.g. "dubbo"; required.
	Protocol string
	// Direction: default Outbound.
	Direction Direction
	// Clients selects the pods whose outbound traffic to the service
	// Breeze handles (workloadSelector labels); empty: every pod of
	// Namespace.
	Clients map[string]string
	// Selector selects the service's own pods (inbound); required for
	// inbound.
	Selector map[string]string
	// UpstreamTLS of the clients' plainText cluster: default
	// UpstreamIstioMTLS. Inbound always dials the local app in plain text:
	// under UpstreamIstioMTLS with the Go runtime's own socket (GO_LOOPBACK)
	// and no plainText cluster, so that a pod may also be a client; under
	// UpstreamPlaintext through a plain plainText cluster.
	UpstreamTLS UpstreamTLS
	// Outbound is the clients' proxy: its route_config, clusters, xds,
	// timeouts, filters, codec_params and max_frame_size. stat_prefix and
	// codec are filled in by Render. With clusters but no routes, one
	// catch-all route goes to the first cluster. With xds, no routes or
	// clusters: the xDS server serves them (see Resolve). The inbound
	// proxy takes its timeouts, codec_params and max_frame_size (the wire
	// is the same on both sides) and metrics, not its filters.
	Outbound *breezev1.ProxyConfig
	// LibraryPath of breeze.so in the sidecar; default DefaultLibraryPath.
	LibraryPath string
	// Istio is the Istio release whose sidecars the patches are for, 1.28
	// or 1.31 (a patch release such as 1.31.4 names its minor release):
	// breeze.so is built per release (make plugin ENVOY=...), and the
	// patches are pinned to it. Default: DefaultIstio().
	Istio string
	// InboundFilters are the L7 filters of the inbound proxy (the
	// service's side), e.g. authz: its policies judge the callers. On
	// Istio 1.31 the caller's principal reaches them through
	// set_filter_state; on 1.28, where it does not, caller-only authz
	// policies become Envoy's network RBAC in front of Breeze and policies
	// needing both the caller and the request are refused (see Render).
	InboundFilters []*breezev1.Filter
	// ProxyVersion is the regex the patches match Istio's proxy version
	// with; default: Istio's, ProxyVersion(Istio) (^1\.31\.). "-" matches
	// every version. Breeze is built against one Envoy Go API per release.
	ProxyVersion string
}

// serviceFile is the YAML form of a Service, in snake_case like the rest
// of Breeze's config. The routing part is breeze.v1's own JSON.
type serviceFile struct {
	Host           string            `json:"host"`
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	VIP            string            `json:"vip"`
	Port           uint32            `json:"port"`
	TargetPort     uint32            `json:"target_port"`
	Protocol       string            `json:"protocol"`
	Direction      Direction         `json:"direction"`
	Clients        map[string]string `json:"clients"`
	Selector       map[string]string `json:"selector"`
	UpstreamTLS    UpstreamTLS       `json:"upstream_tls"`
	LibraryPath    string            `json:"library_path"`
	Istio          istioRelease      `json:"istio"`
	ProxyVersion   string            `json:"proxy_version"`
	RequestTimeout json.RawMessage   `json:"request_timeout"`
	IdleTimeout    json.RawMessage   `json:"idle_timeout"`
	CodecParams    json.RawMessage   `json:"codec_params"`
	MaxFrameSize   json.RawMessage   `json:"max_frame_size"`
	Filters        json.RawMessage   `json:"filters"`
	InboundFilters json.RawMessage   `json:"inbound_filters"`
	Metrics        json.RawMessage   `json:"metrics"`
	Routes         json.RawMessage   `json:"routes"`
	Clusters       json.RawMessage   `json:"clusters"`
	XDS            json.RawMessage   `json:"xds"`
}

// proxyKeys are the keys of a service file that are ProxyConfig fields.
var proxyKeys = map[string]string{
	"request_timeout": "request_timeout",
	"idle_timeout":    "idle_timeout",
	"codec_params":    "codec_params",
	"max_frame_size":  "max_frame_size",
	"filters":         "filters",
	"metrics":         "metrics",
	"routes":          "route_config",
	"clusters":        "clusters",
	"xds":             "xds",
}

// ParseService reads a service description (YAML or JSON). Unknown fields
// are errors naming their path; the proxy part (routes, clusters, xds,
// request_timeout, idle_timeout, codec_params, max_frame_size, filters) is
// parsed by Breeze's config package. It does not validate: Render does.
func ParseService(data []byte) (*Service, error) {
	v, js, err := yamlValue(data)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("want an object (a service description), got %s", config.JSONKind(v))
	}
	var errs []error
	known := jsonFields(serviceFile{})
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if !known[k] {
			errs = append(errs, errorf(k, "unknown field of a service description%s", didYouMean(k, sortedKeys(known))))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var sf serviceFile
	if err := json.Unmarshal(js, &sf); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, errorf(te.Field, "want %s, got a JSON %s", te.Type, te.Value)
		}
		return nil, err
	}
	s := &Service{
		Host: sf.Host, Name: sf.Name, Namespace: sf.Namespace, VIP: sf.VIP,
		Port: sf.Port, TargetPort: sf.TargetPort, Protocol: sf.Protocol,
		Direction: sf.Direction, Clients: sf.Clients, Selector: sf.Selector,
		UpstreamTLS: sf.UpstreamTLS, LibraryPath: sf.LibraryPath, Istio: string(sf.Istio), ProxyVersion: sf.ProxyVersion,
	}
	pj := map[string]any{}
	for k, pk := range proxyKeys {
		if val, ok := obj[k]; ok {
			if k == "routes" {
				val = map[string]any{"routes": val}
			}
			pj[pk] = val
		}
	}
	if v, ok := obj["inbound_filters"]; ok {
		pc, err := parseProxyFragment(map[string]any{"filters": v})
		if err != nil {
			return nil, renameField(err, "filters", "inbound_filters")
		}
		s.InboundFilters = pc.GetFilters()
	}
	if len(pj) > 0 {
		pc, err := parseProxyFragment(pj)
		if err != nil {
			return nil, err
		}
		s.Outbound = pc
	}
	return s, nil
}

// parseProxyFragment decodes part of a ProxyConfig with Breeze's own
// parser (the one breeze.so runs), and names errors by the service file's
// keys.
func parseProxyFragment(pj map[string]any) (*breezev1.ProxyConfig, error) {
	b, err := json.Marshal(pj)
	if err != nil {
		return nil, err
	}
	st := &structpb.Struct{}
	if err := protojson.Unmarshal(b, st); err != nil {
		return nil, err
	}
	a, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: config.ProxyConfigTypeURL, Value: st})
	if err != nil {
		return nil, err
	}
	pc, err := config.ParseAny(a)
	if err != nil {
		return nil, serviceProxyErrors(err)
	}
	return pc, nil
}

// renameField names errors at field (and under it) by another name: the
// inbound filters are parsed as a ProxyConfig's filters.
func renameField(err error, field, to string) error {
	under := func(p string) bool {
		return p == field || strings.HasPrefix(p, field+".") || strings.HasPrefix(p, field+"[") || strings.HasPrefix(p, field+":")
	}
	var out []error
	for _, e := range unjoin(err) {
		if fe, ok := e.(*Error); ok {
			if under(fe.Path) {
				c := *fe
				c.Path = to + strings.TrimPrefix(fe.Path, field)
				e = &c
			}
		} else if msg := e.Error(); under(msg) {
			// Some of config's errors carry their path in the text alone.
			e = errors.New(to + strings.TrimPrefix(msg, field))
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// jsonFields lists the JSON names of a struct's fields.
func jsonFields(v any) map[string]bool {
	out := map[string]bool{}
	b, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for k := range m {
		out[k] = true
	}
	return out
}

// istioRelease is the service description's istio: a string. YAML reads an
// unquoted 1.30 as the number 1.3, so numbers are refused with that reason.
type istioRelease string

func (r *istioRelease) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errorf("istio", "%s: want the release as a string, quoted (\"1.31\"): YAML reads an unquoted 1.30 as the number 1.3", b)
	}
	*r = istioRelease(s)
	return nil
}
