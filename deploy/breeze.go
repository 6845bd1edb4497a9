package deploy

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"

	golangv3alpha "github.com/envoyproxy/go-control-plane/contrib/envoy/extensions/filters/network/golang/v3alpha"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/config"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Findings are what a check found: Errors make Envoy or istiod reject the
// file, or break Breeze at run time; Warnings are likely mistakes.
type Findings struct {
	Errors   []error
	Warnings []error
}

// Err joins the errors, nil if there are none.
func (f Findings) Err() error { return errors.Join(f.Errors...) }

func (f *Findings) errorf(path, format string, args ...any) {
	f.Errors = append(f.Errors, errorf(path, format, args...))
}

func (f *Findings) warnf(path, format string, args ...any) {
	f.Warnings = append(f.Warnings, errorf(path, format, args...))
}

func (f *Findings) merge(o Findings) {
	f.Errors = append(f.Errors, o.Errors...)
	f.Warnings = append(f.Warnings, o.Warnings...)
}

// breezeFilter is one Breeze instance found in a config.
type breezeFilter struct {
	path       string // of the listener filter
	configPath string // of its golang Config
	golang     *golangv3alpha.Config
	proxy      *breezev1.ProxyConfig // nil if plugin_config did not parse
}

// checkFilterChain checks the Go filters of one filter chain (filters at
// path) and returns the Breeze instances it found.
func checkFilterChain(filters []*listenerv3.Filter, path string, f *Findings) []breezeFilter {
	var out []breezeFilter
	for i, flt := range filters {
		fpath := indexPath(path, i)
		b, ok := checkGolangFilter(flt, fpath, i == len(filters)-1, f)
		if ok {
			out = append(out, b)
		}
	}
	return out
}

// checkGolangFilter checks flt if it is Envoy's Go network filter, with
// Breeze's rules: terminal and last, plugin "breeze", an absolute library
// path, and a plugin_config that breeze.so parses and validates.
func checkGolangFilter(flt *listenerv3.Filter, fpath string, last bool, f *Findings) (breezeFilter, bool) {
	tc := flt.GetTypedConfig()
	cpath := joinPath(fpath, "typed_config")
	var msg proto.Message
	if tc != nil {
		m, err := tc.UnmarshalNew()
		if err == nil {
			if msg, _, err = typedStructMessage(m); msg != m {
				cpath = joinPath(cpath, "value") // Envoy also takes the Go filter's config as a TypedStruct
			}
		}
		if err != nil {
			return breezeFilter{}, false // reported by the schema checks
		}
	}
	gc, isGolang := msg.(*golangv3alpha.Config)
	if flt.GetName() != GolangFilterName && !isGolang {
		return breezeFilter{}, false
	}
	if !isGolang {
		if tc == nil {
			f.errorf(joinPath(fpath, "typed_config"), "required: %s takes an %s", GolangFilterName, golangConfigType)
		} else {
			f.errorf(joinPath(fpath, "typed_config.@type"), "%q: %s takes an %s", tc.GetTypeUrl(), GolangFilterName, golangConfigType)
		}
		return breezeFilter{}, false
	}
	if !gc.GetIsTerminalFilter() {
		f.errorf(joinPath(cpath, "is_terminal_filter"), "false: must be true: Envoy drains its buffer after the Go filter, so nothing after it sees the data")
	}
	if !last {
		f.errorf(fpath, "the Go filter must be the last filter of its chain (it is terminal)")
	}
	if n := gc.GetPluginName(); n != "" && n != PluginName {
		f.errorf(joinPath(cpath, "plugin_name"), "%q: breeze.so registers the plugin %q", n, PluginName)
	}
	if p := gc.GetLibraryPath(); p != "" && !path.IsAbs(p) {
		f.errorf(joinPath(cpath, "library_path"), "%q: want an absolute path (Envoy dlopens it)", p)
	}
	b := breezeFilter{path: fpath, golang: gc, configPath: cpath}
	b.proxy = checkPluginConfig(gc, joinPath(cpath, "plugin_config"), f)
	return b, true
}

var golangConfigType = typeURLPrefix + string((*golangv3alpha.Config)(nil).ProtoReflect().Descriptor().FullName())

const typeURLPrefix = "type.googleapis.com/"

// checkPluginConfig parses and validates a plugin_config with the same
// code breeze.so runs, reporting each mistake at its path in the file.
func checkPluginConfig(gc *golangv3alpha.Config, pcPath string, f *Findings) *breezev1.ProxyConfig {
	a := gc.GetPluginConfig()
	base := pcPath
	if a != nil && a.GetTypeUrl() != config.ProxyConfigTypeURL {
		base = joinPath(pcPath, "value")
	}
	pc, err := config.ParseAny(a)
	if err != nil {
		addConfigErrors(err, pcPath, base, f)
		return nil
	}
	if err := config.Validate(pc); err != nil {
		addConfigErrors(err, pcPath, base, f)
		return nil
	}
	addConfigWarnings(pc, base, f)
	return pc
}

// addConfigWarnings reports config.FieldWarnings of pc as warnings, each at
// base plus its path.
func addConfigWarnings(pc *breezev1.ProxyConfig, base string, f *Findings) {
	for _, w := range config.FieldWarnings(pc) {
		f.warnf(joinPath(base, w.Path), "%s", fieldErrorMsg(w))
	}
}

// fieldErrorMsg is a FieldError's message without its path.
func fieldErrorMsg(fe *config.FieldError) string {
	if fe.Value == "" {
		return fe.Err.Error()
	}
	return fe.Value + ": " + fe.Err.Error()
}

// addConfigErrors reports the errors of package config: a FieldError at
// base plus its path, anything else at fallback.
func addConfigErrors(err error, fallback, base string, f *Findings) {
	var fes []*config.FieldError
	collectFieldErrors(err, &fes)
	if len(fes) == 0 {
		msg := err.Error()
		if _, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(msg, "plugin_config") {
			msg = rest
		}
		f.errorf(fallback, "%s", msg)
		return
	}
	for _, fe := range fes {
		f.errorf(joinPath(base, fe.Path), "%s", fieldErrorMsg(fe))
	}
}

func collectFieldErrors(err error, out *[]*config.FieldError) {
	if fe, ok := err.(*config.FieldError); ok {
		*out = append(*out, fe)
		return
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			collectFieldErrors(e, out)
		}
	case interface{ Unwrap() error }:
		if e := u.Unwrap(); e != nil {
			collectFieldErrors(e, out)
		}
	}
}

// checkLibraries wants one library per library_id: Envoy loads a library
// once per id and keeps it, so a second path under the same id would be
// silently ignored; and one Go runtime per process means one .so.
func checkLibraries(bs []breezeFilter, f *Findings) {
	var first *breezeFilter
	for i := range bs {
		b := &bs[i]
		if first == nil {
			first = b
			continue
		}
		if b.golang.GetLibraryId() != first.golang.GetLibraryId() || b.golang.GetLibraryPath() != first.golang.GetLibraryPath() {
			f.errorf(b.configPath, "library %q at %q, but %s loads %q at %q: one process runs one Go library (one Go runtime), under one library_id",
				b.golang.GetLibraryId(), b.golang.GetLibraryPath(), first.path, first.golang.GetLibraryId(), first.golang.GetLibraryPath())
		}
	}
}

// checkPlainText checks the cluster Envoy's Go filter dials through.
func checkPlainText(c *clusterv3.Cluster, cpath string, f *Findings) {
	if c.GetType() != clusterv3.Cluster_ORIGINAL_DST || c.GetClusterType() != nil {
		f.errorf(joinPath(cpath, "type"), "%s: the %s cluster must be ORIGINAL_DST: Breeze hands Envoy the exact ip:port to dial", c.GetType(), PlainTextCluster)
	}
	if c.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
		f.errorf(joinPath(cpath, "lb_policy"), "%s: an ORIGINAL_DST cluster needs CLUSTER_PROVIDED", c.GetLbPolicy())
	}
	if len(c.GetLoadAssignment().GetEndpoints()) > 0 {
		f.errorf(joinPath(cpath, "load_assignment"), "an ORIGINAL_DST cluster takes no endpoints: Breeze picks them")
	}
	ts := c.GetTransportSocket()
	if ts == nil {
		return
	}
	m, err := ts.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return // reported by the schema checks
	}
	utc, ok := m.(*tlsv3.UpstreamTlsContext)
	if !ok {
		return
	}
	alpn := utc.GetCommonTlsContext().GetAlpnProtocols()
	if slices.Contains(alpn, istioPeerExchangeALPN) {
		f.errorf(joinPath(cpath, "transport_socket.typed_config.common_tls_context.alpn_protocols"),
			"%q: a peer sidecar answering %q expects Istio's metadata-exchange preamble, which Breeze never sends; offer only %q", alpn, istioPeerExchangeALPN, istioALPN)
	}
}

// isIstioMTLS reports whether c carries Istio's upstream mTLS (SDS
// secrets over sds-grpc).
func isIstioMTLS(c *clusterv3.Cluster) bool {
	m, err := c.GetTransportSocket().GetTypedConfig().UnmarshalNew()
	if err != nil {
		return false
	}
	utc, ok := m.(*tlsv3.UpstreamTlsContext)
	if !ok {
		return false
	}
	for _, s := range utc.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
		for _, g := range s.GetSdsConfig().GetApiConfigSource().GetGrpcServices() {
			if g.GetEnvoyGrpc().GetClusterName() == istioSDSCluster {
				return true
			}
		}
	}
	return false
}

// checkLoopbackEndpoints wants every STATIC endpoint of an inbound Breeze
// to be a loopback address: Envoy dialing the pod's own IP is redirected
// back into the sidecar's inbound listener.
func checkLoopbackEndpoints(b breezeFilter, f *Findings) {
	for i, c := range b.proxy.GetClusters() {
		if c.GetType() != breezev1.Cluster_STATIC {
			continue
		}
		for j, e := range c.GetEndpoints() {
			ip, err := netip.ParseAddr(e.GetAddress())
			if err != nil || ip.IsLoopback() {
				continue
			}
			f.errorf(joinPath(b.configPath, fmt.Sprintf("plugin_config.value.clusters[%d].endpoints[%d].address", i, j)),
				"%q: an inbound Breeze must dial the local app at 127.0.0.1: Envoy dialing the pod's own IP is redirected back into the inbound listener", e.GetAddress())
		}
	}
}
