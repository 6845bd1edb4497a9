// Package istiod runs istiod's real config generation (istio.io/istio's
// pilot, in process, through its FakeDiscoveryServer) on what Breeze ships —
// the EnvoyFilters `breeze render` makes, the files under envoy-config/ —
// and checks the sidecar config it generates: Breeze's Go filter exactly on
// the Breeze ports, outbound on the clients and inbound on the providers,
// the plainText cluster as deploy renders it, and nothing else changed.
//
// It is its own module (like deploy/schemas) so that Istio's dependencies
// stay out of Breeze's. The checks are exported so that a test can feed
// them EnvoyFilters from any source (the Kubernetes controller's too):
// CheckPlacement takes the Kubernetes objects, the Istio configs, the
// EnvoyFilters and the service descriptions they were rendered from.
package istiod

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"istio.io/istio/pilot/pkg/model"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config/constants"
)

// IstioVersion is the release of istio.io/istio this module links (go.mod:
// the pseudo-version of its 1.28.3 tag): the istiod whose config
// generation runs here, and the version a Workload's sidecar reports unless
// it says otherwise.
const IstioVersion = "1.28.3"

// Inputs is what istiod reads, as YAML streams.
type Inputs struct {
	// Kubernetes objects of the default cluster: Services, Pods,
	// EndpointSlices, Namespaces...
	Kubernetes string
	// Istio configs: ServiceEntries, WorkloadEntries, EnvoyFilters,
	// AuthorizationPolicies, PeerAuthentications...
	Istio string
}

// Workload is a pod whose sidecar istiod generates config for. For its
// inbound listener to have the chains of its services, a Pod with its IP
// and labels must be among the Kubernetes objects (or a WorkloadEntry
// among the Istio configs).
type Workload struct {
	Name      string
	Namespace string
	IP        string
	Labels    map[string]string
	// IstioVersion the sidecar reports (EnvoyFilters' proxyVersion is
	// matched on it); default: IstioVersion.
	IstioVersion string
	// Router: the proxy is a gateway (istio-agent's "router" node type),
	// not a sidecar: istiod gives it the listeners of the Gateways that
	// select its labels.
	Router bool
}

func (w Workload) String() string { return w.Name + "." + w.Namespace + " (" + w.IP + ")" }

func (w Workload) istioVersion() string {
	if w.IstioVersion != "" {
		return w.IstioVersion
	}
	return IstioVersion
}

// nodeID is the xDS node ID istio-agent gives a sidecar.
func (w Workload) nodeID() string {
	if w.Router {
		return "router~" + w.IP + "~" + w.Name + "." + w.Namespace + "~" + w.Namespace + ".svc.cluster.local"
	}
	return "sidecar~" + w.IP + "~" + w.Name + "." + w.Namespace + "~" + w.Namespace + ".svc.cluster.local"
}

func (w Workload) metadata() model.NodeMetadata {
	return model.NodeMetadata{
		Namespace:    w.Namespace,
		IstioVersion: w.istioVersion(),
		Labels:       maps.Clone(w.Labels),
		ClusterID:    constants.DefaultClusterName,
	}
}

// Sidecar is the config istiod generates for one sidecar.
type Sidecar struct {
	Listeners []*listenerv3.Listener
	Clusters  []*clusterv3.Cluster
}

// Listener is the listener named name, or nil.
func (s Sidecar) Listener(name string) *listenerv3.Listener {
	for _, l := range s.Listeners {
		if l.GetName() == name {
			return l
		}
	}
	return nil
}

// Cluster is the cluster named name, or nil.
func (s Sidecar) Cluster(name string) *clusterv3.Cluster {
	for _, c := range s.Clusters {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

// Mesh is istiod's config generation over one set of Inputs.
type Mesh struct {
	t      testing.TB
	server *xds.FakeDiscoveryServer
}

// NewMesh starts istiod's discovery server, in process, on in. It stops
// when the test ends.
func NewMesh(t testing.TB, in Inputs) *Mesh {
	t.Helper()
	s := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		KubernetesObjectString: in.Kubernetes,
		ConfigString:           in.Istio,
	})
	return &Mesh{t: t, server: s}
}

// Server is the FakeDiscoveryServer, for what the helpers here do not ask.
func (m *Mesh) Server() *xds.FakeDiscoveryServer { return m.server }

// Sidecar is the config istiod generates for w's sidecar, built as a push
// builds it: the proxy set up from the current PushContext (its sidecar
// scope, its service targets by IP), then the listener and cluster
// generators.
func (m *Mesh) Sidecar(w Workload) Sidecar {
	md := w.metadata()
	typ := model.SidecarProxy
	if w.Router {
		typ = model.Router
	}
	p := m.server.SetupProxy(&model.Proxy{
		Type:            typ,
		ID:              w.Name + "." + w.Namespace,
		IPAddresses:     []string{w.IP},
		ConfigNamespace: w.Namespace,
		Labels:          maps.Clone(w.Labels),
		Metadata:        &md,
	})
	return Sidecar{Listeners: m.server.Listeners(p), Clusters: m.server.Clusters(p)}
}

// SidecarOverADS is the same config fetched the way a sidecar fetches it:
// a gRPC ADS stream to the discovery server, CDS then LDS requested and
// each response acked (istiod then builds the proxy from its connection,
// labels from the Pod at its IP).
func (m *Mesh) SidecarOverADS(t testing.TB, w Workload) Sidecar {
	t.Helper()
	ads := m.server.ConnectADS().WithID(w.nodeID()).WithMetadata(w.metadata())
	var out Sidecar
	for _, r := range ads.RequestResponseAck(t, &discoveryv3.DiscoveryRequest{TypeUrl: v3.ClusterType}).GetResources() {
		c := &clusterv3.Cluster{}
		if err := r.UnmarshalTo(c); err != nil {
			t.Fatalf("%s: CDS resource of type %s: %v", w, r.GetTypeUrl(), err)
		}
		out.Clusters = append(out.Clusters, c)
	}
	for _, r := range ads.RequestResponseAck(t, &discoveryv3.DiscoveryRequest{TypeUrl: v3.ListenerType}).GetResources() {
		l := &listenerv3.Listener{}
		if err := r.UnmarshalTo(l); err != nil {
			t.Fatalf("%s: LDS resource of type %s: %v", w, r.GetTypeUrl(), err)
		}
		out.Listeners = append(out.Listeners, l)
	}
	return out
}

// NetworkFilterNames is the name of each network filter of a chain, in
// order.
func NetworkFilterNames(fc *listenerv3.FilterChain) []string {
	names := make([]string, len(fc.GetFilters()))
	for i, f := range fc.GetFilters() {
		names[i] = f.GetName()
	}
	return names
}

// ChainMatch selects filter chains of a listener.
type ChainMatch struct {
	// DestinationPort of the chain's filter_chain_match (inbound chains
	// match the target port); 0: any.
	DestinationPort uint32
	// TransportProtocol of the chain's filter_chain_match ("tls",
	// "raw_buffer"); "": any.
	TransportProtocol string
}

func (c ChainMatch) matches(fc *listenerv3.FilterChain) bool {
	m := fc.GetFilterChainMatch()
	if c.DestinationPort != 0 && m.GetDestinationPort().GetValue() != c.DestinationPort {
		return false
	}
	return c.TransportProtocol == "" || m.GetTransportProtocol() == c.TransportProtocol
}

func (c ChainMatch) String() string {
	var parts []string
	if c.DestinationPort != 0 {
		parts = append(parts, fmt.Sprintf("destination port %d", c.DestinationPort))
	}
	if c.TransportProtocol != "" {
		parts = append(parts, "transport "+c.TransportProtocol)
	}
	if len(parts) == 0 {
		return "every chain"
	}
	return strings.Join(parts, ", ")
}

// chainName names a chain in messages: its index, name and match (Istio
// names the mTLS and plain-text chains of an inbound port alike).
func chainName(i int, fc *listenerv3.FilterChain) string {
	m := fc.GetFilterChainMatch()
	var match []string
	if p := m.GetDestinationPort().GetValue(); p != 0 {
		match = append(match, fmt.Sprintf("port %d", p))
	}
	if tp := m.GetTransportProtocol(); tp != "" {
		match = append(match, tp)
	}
	if alpn := m.GetApplicationProtocols(); len(alpn) > 0 {
		match = append(match, "alpn "+strings.Join(alpn, ","))
	}
	name := fmt.Sprintf("chain %d", i)
	if fc.GetName() != "" {
		name += fmt.Sprintf(" %q", fc.GetName())
	}
	if len(match) > 0 {
		name += " (" + strings.Join(match, ", ") + ")"
	}
	return name
}

// sortedKeys is m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
