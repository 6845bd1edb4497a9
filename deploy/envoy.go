package deploy

import (
	"fmt"
	"time"

	golangv3alpha "github.com/envoyproxy/go-control-plane/contrib/envoy/extensions/filters/network/golang/v3alpha"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/breeze-mesh/breeze/config"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Names Envoy, the plugin and Istio agree on.
const (
	// GolangFilterName is the name of Envoy's Go network filter.
	GolangFilterName = "envoy.filters.network.golang"
	// PluginName is the plugin_name breeze.so registers (filters/proxy.PluginName).
	PluginName = "breeze"
	// LibraryID is the library_id Breeze's configs use. Envoy keeps one
	// loaded library per id for the life of the process.
	LibraryID = "breeze"
	// DefaultLibraryPath is where the images built by the Dockerfile put
	// breeze.so. Not under /etc/istio/proxy: the sidecar mounts an emptyDir
	// there, which would hide the file.
	DefaultLibraryPath = "/usr/local/lib/breeze/breeze.so"
	// PlainTextCluster is the cluster Envoy's Go network filter dials every
	// upstream connection through (contrib/golang/filters/network/source/upstream.cc
	// hardcodes the name).
	PlainTextCluster = "plainText"
	// TCPProxyFilterName is the filter Istio puts on TCP listeners, which
	// the EnvoyFilters replace.
	TCPProxyFilterName = "envoy.filters.network.tcp_proxy"

	// Istio's SDS names (istio.io/istio pkg/model/authentication.go).
	istioSDSCluster     = "sds-grpc"
	istioCertSecret     = "default"
	istioRootCertSecret = "ROOTCA"
	// istioALPN is the ALPN an Istio inbound TLS filter chain accepts for
	// mTLS. "istio-peer-exchange" would make the server expect Istio's
	// metadata-exchange preamble, which the Go filter never sends.
	istioALPN             = "istio"
	istioPeerExchangeALPN = "istio-peer-exchange"
)

// GolangFilter returns Envoy's Go network filter running Breeze with pc
// as its plugin_config, carried as an xds.type.v3.TypedStruct: neither
// Envoy's YAML loader nor istiod know breeze.v1.ProxyConfig, so that is the
// one form both can pass through.
func GolangFilter(libraryPath string, pc *breezev1.ProxyConfig) (*listenerv3.Filter, error) {
	ts, err := config.ToTypedStruct(pc)
	if err != nil {
		return nil, err
	}
	gc, err := anypb.New(&golangv3alpha.Config{
		IsTerminalFilter: true,
		LibraryId:        LibraryID,
		LibraryPath:      libraryPath,
		PluginName:       PluginName,
		PluginConfig:     ts,
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{
		Name:       GolangFilterName,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: gc},
	}, nil
}

// UpstreamTLS is how the plainText cluster protects Breeze's upstream
// connections.
type UpstreamTLS string

const (
	// UpstreamIstioMTLS: Istio's workload certificate and root CA over SDS,
	// so the connections pass STRICT peer authentication at the peer's
	// sidecar. Every destination must then have a sidecar.
	UpstreamIstioMTLS UpstreamTLS = "istio"
	// UpstreamPlaintext: no TLS (plain Envoy; Istio's inbound direction,
	// which dials the local app; PERMISSIVE meshes).
	UpstreamPlaintext UpstreamTLS = "none"
)

// PlainTextClusterConfig returns the plainText cluster: ORIGINAL_DST with
// CLUSTER_PROVIDED balancing, so that Envoy connects to exactly the ip:port
// Breeze asks for. Its connect timeout, circuit breakers and transport
// socket apply to every upstream connection of every Breeze proxy in the
// process.
func PlainTextClusterConfig(mode UpstreamTLS, connectTimeout time.Duration) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:                 PlainTextCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(connectTimeout),
	}
	switch mode {
	case UpstreamPlaintext:
	case UpstreamIstioMTLS:
		tc, err := anypb.New(istioUpstreamTLS())
		if err != nil {
			return nil, err
		}
		c.TransportSocket = &corev3.TransportSocket{
			Name:       "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tc},
		}
	default:
		return nil, fmt.Errorf("upstream TLS %q: want %q or %q", mode, UpstreamIstioMTLS, UpstreamPlaintext)
	}
	return c, nil
}

// istioUpstreamTLS is the client side of Istio's mTLS as a sidecar's own
// outbound clusters have it (istio.io/istio pilot/pkg/networking/core
// cluster TLS), minus the SAN pinning: ORIGINAL_DST does not know which
// service account is behind an address, so a peer is authenticated as a
// member of the mesh (signed by its root CA), not as a given workload.
func istioUpstreamTLS() *tlsv3.UpstreamTlsContext {
	return &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{
				TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
				TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			},
			AlpnProtocols:                  []string{istioALPN},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{istioSDSSecret(istioCertSecret)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
					ValidationContextSdsSecretConfig: istioSDSSecret(istioRootCertSecret),
				},
			},
		},
	}
}

// istioSDSSecret is Istio's SDS secret config for a workload proxy
// (istio.io/istio pkg/model/authentication.go): pilot-agent serves the
// secrets over the bootstrap's sds-grpc cluster.
func istioSDSSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{
		Name: name,
		SdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{
				ApiConfigSource: &corev3.ApiConfigSource{
					ApiType:                   corev3.ApiConfigSource_GRPC,
					SetNodeOnFirstMessageOnly: true,
					TransportApiVersion:       corev3.ApiVersion_V3,
					GrpcServices: []*corev3.GrpcService{{
						TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
							EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: istioSDSCluster},
						},
					}},
				},
			},
			ResourceApiVersion:  corev3.ApiVersion_V3,
			InitialFetchTimeout: durationpb.New(0),
		},
	}
}
