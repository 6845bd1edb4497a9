package controller

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// GatewayGVK: Istio Gateways, read at v1 (the API server serves the
// v1beta1 and v1alpha3 objects at v1 too: one stored version).
var GatewayGVK = schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "Gateway"}

// gatewayFilters renders the EnvoyFilters of the gateway ports that carry
// Breeze (controlplane.Translation.Gateways: which port exposes which
// host, by the Gateway's servers and the MetaRouters bound to it): in the
// Gateway's namespace, for the pods of its selector, context GATEWAY,
// Breeze on the listener of the port with the gateway's own route table
// from this controller's xDS server, owned by the Gateway.
//
// codecOf: the Breeze codec of each host and port (RouteConfigName), as
// the Services' and ServiceEntries' ports ask: a gateway port whose host
// port is not Breeze's gets nothing.
func (m *mesh) gatewayFilters(s settings, tr controlplane.Translation, codecOf map[string]string, res *result) {
	byRef := map[string]*unstructured.Unstructured{}
	for i := range m.gateways {
		u := &m.gateways[i]
		byRef[u.GetNamespace()+"/"+u.GetName()] = u
	}
	for _, gl := range tr.Gateways {
		u := byRef[gl.Namespace+"/"+gl.Name]
		codec := codecOf[controlplane.RouteConfigName(gl.Host, gl.Port)]
		if u == nil || codec == "" {
			continue
		}
		svc := deploy.Service{
			Host: gl.Host, Name: gl.Name + "-" + strconv.FormatUint(uint64(gl.Port), 10), Namespace: gl.Namespace,
			Port: gl.Port, Protocol: codec, Direction: deploy.Gateway, Clients: gl.Selector,
			UpstreamTLS: s.UpstreamTLS, Istio: s.Istio, LibraryPath: s.LibraryPath,
			Outbound: &breezev1.ProxyConfig{Xds: s.xdsSource(gl.RouteConfigName)},
		}
		efs, err := deploy.Render(&svc)
		if err != nil {
			res.issues = append(res.issues, issue{obj: u, kind: "Gateway", reason: "RenderFailed",
				message: "spec.servers[" + strconv.Itoa(gl.Server) + "] (port " + strconv.FormatUint(uint64(gl.Port), 10) + ", host " + gl.Host + "): " + err.Error()})
			continue
		}
		owner := ownerRef(u.GetAPIVersion(), "Gateway", u)
		for _, ef := range efs {
			f, err := toUnstructured(ef)
			if err != nil {
				res.issues = append(res.issues, issue{obj: u, kind: "Gateway", reason: "RenderFailed", message: err.Error()})
				continue
			}
			sourceLabels(f, "Gateway", u.GetName())
			res.filters = append(res.filters, desiredFilter{obj: f, owner: owner})
		}
	}
}

// GatewayEnvoyFilters is what the controller writes for Istio Gateways,
// given the Services and MetaRouters of the mesh: the gateway
// EnvoyFilters only (labelled as the reconciler labels them, without
// owner references), and the messages of the Events it would send on the
// Gateways. Like ServiceEnvoyFilters, it runs the reconciler's own
// computation, for deploy/istiod to put through istiod.
func GatewayEnvoyFilters(gateways, metaRouters []unstructured.Unstructured, services []corev1.Service, opts Options) ([]*unstructured.Unstructured, []string, error) {
	m := &mesh{services: services, gateways: gateways, metaRouters: metaRouters}
	s, err := standaloneSettings(opts)
	if err != nil {
		return nil, nil, err
	}
	res := m.compute(s, true)
	var filters []*unstructured.Unstructured
	for _, f := range res.filters {
		if f.obj.GetLabels()[LabelSourceKind] == "Gateway" {
			filters = append(filters, f.obj)
		}
	}
	// The Gateways' Events only: the Services have ServiceEnvoyFilters.
	var messages []string
	for _, is := range res.issues {
		if is.kind == "Gateway" {
			messages = append(messages, is.reason+": "+is.message)
		}
	}
	for _, p := range res.translation.Problems {
		if res.refs[p.Object] != nil && res.refs[p.Object].GetKind() == "Gateway" {
			messages = append(messages, p.Error())
		}
	}
	return filters, messages, nil
}

// standaloneSettings are the settings of Options outside a running
// controller (ServiceEnvoyFilters, GatewayEnvoyFilters).
func standaloneSettings(opts Options) (settings, error) {
	if opts.XDSAddress == "" {
		return settings{}, errXDSAddress
	}
	if opts.KnownCodec == nil {
		opts.KnownCodec = func(name string) bool { _, ok := codecs.Lookup(name); return ok }
	}
	return settings{XDSAddress: opts.XDSAddress, XDSCAFile: opts.XDSCAFile, XDSTokenFile: opts.XDSTokenFile, UpstreamTLS: opts.UpstreamTLS,
		Istio: opts.Istio, LibraryPath: opts.LibraryPath, Revision: opts.Revision, KnownCodec: opts.KnownCodec}, nil
}
