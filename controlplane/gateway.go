package controlplane

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	metaprotocolv1alpha1 "github.com/aeraki-mesh/api/metaprotocol/v1alpha1"
	"google.golang.org/protobuf/proto"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
)

// Istio Gateways: the control plane reads them for the ports where a
// gateway proxy (an ingress gateway) carries Breeze, and serves each such
// port its own route table, made of the MetaRouters whose `gateways` name
// the Gateway, exactly as a VirtualService's `gateways` field works:
//
//   - no `gateways`, or `mesh` among them: the routes apply in the
//     sidecars (the table <host>_<port>);
//   - `<namespace>/<name>` (or `<name>`, in the MetaRouter's namespace):
//     the routes apply on that Gateway (the table
//     GatewayRouteConfigName); `mesh` and a Gateway: both.
//
// A MetaRouter bound to a gateway only leaves the sidecars' table as it
// was. A host exposed on a gateway that no MetaRouter binds to it gets
// the default route to all its endpoints there, as in the mesh.
const (
	kindGateway = "Gateway"
	// MeshGateway is the reserved name of the sidecars in `gateways`.
	MeshGateway = "mesh"
)

func init() {
	kinds["networking.istio.io/"+kindGateway] = func() proto.Message { return &networkingv1alpha3.Gateway{} }
}

// GatewayRouteConfigName is the route table of a host and port on one
// Gateway: "<gateway namespace>/<gateway name>/<host>_<port>". A name of
// its own, so that the sidecars' table of the host (RouteConfigName) does
// not change when a MetaRouter binds routes to the gateway.
func GatewayRouteConfigName(gatewayNamespace, gatewayName, host string, port uint32) string {
	return gatewayNamespace + "/" + gatewayName + "/" + RouteConfigName(host, port)
}

// GatewayListener is one port of a Gateway that carries Breeze: the
// gateway proxies its selector selects run Breeze on their listener of
// Port, for Host, with the route table RouteConfigName.
type GatewayListener struct {
	// Namespace and Name of the Gateway.
	Namespace, Name string
	// Selector is the Gateway's: the labels of its proxies' pods.
	Selector map[string]string
	// Server is the index of the server in spec.servers.
	Server int
	Port   uint32
	// Host is the Breeze host exposed there (a ServiceEntry's).
	Host            string
	RouteConfigName string
}

// gatewayRef is a Gateway as a MetaRouter names it, "<namespace>/<name>".
func gatewayRef(namespace, name string) string { return namespace + "/" + name }

// routerKey is the key of t.routers for a host in a scope: the host
// itself for the sidecars (the mesh), "<gateway ref>|<host>" for a Gateway.
func routerKey(scope, host string) string {
	if scope == MeshGateway {
		return host
	}
	return scope + "|" + host
}

// routerScopes reads a MetaRouter's `gateways`: where its routes apply,
// as "mesh" and gateway refs; ok is false after an error.
func (t *translator) routerScopes(o *Object, mr *metaprotocolv1alpha1.MetaRouter) (scopes []string, ok bool) {
	if len(mr.GetGateways()) == 0 {
		return []string{MeshGateway}, true
	}
	ok = true
	for i, g := range mr.GetGateways() {
		field := fmt.Sprintf("spec.gateways[%d]", i)
		ns, name, qualified := strings.Cut(g, "/")
		if !qualified {
			ns, name = o.Namespace, g
		}
		switch {
		case g == MeshGateway:
			scopes = append(scopes, MeshGateway)
			continue
		case ns == "" || name == "" || strings.Contains(name, "/"):
			t.problem(o, field, false, "%q: want %s, <gateway name> or <namespace>/<gateway name>, as in a VirtualService", g, MeshGateway)
			ok = false
			continue
		}
		scopes = append(scopes, gatewayRef(ns, name))
	}
	slices.Sort(scopes)
	return slices.Compact(scopes), ok
}

// checkGatewayRefs warns about each gateway a MetaRouter names that is not
// a Gateway, or that exposes none of its hosts: its routes apply nowhere
// there (a warning, as Istio's for a VirtualService: the Gateway may come
// later).
func (t *translator) checkGatewayRefs(o *Object, mr *metaprotocolv1alpha1.MetaRouter, exposed map[string]bool) {
	for i, g := range mr.GetGateways() {
		if g == MeshGateway {
			continue
		}
		ref := g
		if !strings.Contains(g, "/") {
			ref = gatewayRef(o.Namespace, g)
		}
		field := fmt.Sprintf("spec.gateways[%d]", i)
		if t.gateways[ref] == nil {
			t.problem(o, field, true, "%q: no such Gateway: these routes apply at no gateway until there is one", g)
			continue
		}
		var hosts []string
		for _, h := range mr.GetHosts() {
			if !exposed[routerKey(ref, h)] {
				hosts = append(hosts, h)
			}
		}
		if len(hosts) > 0 {
			t.problem(o, field, true, "%q: the Gateway exposes no port of %s (a TCP server whose port is the host's and whose hosts select it): these routes apply there to nothing", g, strings.Join(hosts, ", "))
		}
	}
}

// hostSelected reports whether a Gateway server's `hosts` select a host of
// a namespace, with Istio's rules: "[namespace/]name", namespace "*" (any;
// the default), "." (the Gateway's) or a name, "~" none; name "*", a
// "*.suffix" wildcard or exact.
func hostSelected(serverHosts []string, gatewayNamespace, host, hostNamespace string) bool {
	for _, sh := range serverHosts {
		ns, name, qualified := strings.Cut(sh, "/")
		if !qualified {
			ns, name = "*", sh
		}
		switch ns {
		case "*":
		case ".":
			if hostNamespace != gatewayNamespace {
				continue
			}
		case "~":
			continue
		default:
			if ns != hostNamespace {
				continue
			}
		}
		switch {
		case name == "*" || name == host:
			return true
		case strings.HasPrefix(name, "*.") && strings.HasSuffix(host, name[1:]):
			return true
		}
	}
	return false
}

// gatewayListeners finds, for every Gateway, the ports that carry Breeze
// and their route tables. A server is Breeze's when its protocol is TCP
// (Istio builds a tcp_proxy chain for it, which Breeze replaces), and its
// port is a port of one Breeze host its hosts select. Several hosts: those
// a MetaRouter binds to the Gateway; still several is an error on the
// Gateway (one listener carries one route table), and the port is left to
// Istio.
func (t *translator) gatewayListeners() {
	exposed := map[string]bool{}
	for _, ref := range slices.Sorted(maps.Keys(t.gateways)) {
		o := t.gateways[ref]
		gw := o.Spec.(*networkingv1alpha3.Gateway)
		byPort := map[uint32]string{}
		for i, s := range gw.GetServers() {
			port := s.GetPort().GetNumber()
			if port == 0 || !strings.EqualFold(s.GetPort().GetProtocol(), "TCP") {
				continue
			}
			var hosts []string
			for _, h := range slices.Sorted(maps.Keys(t.services)) {
				se := t.services[h]
				if !slices.ContainsFunc(se.Spec.(*networkingv1alpha3.ServiceEntry).GetPorts(), func(p *networkingv1alpha3.ServicePort) bool { return p.GetNumber() == port }) {
					continue
				}
				if hostSelected(s.GetHosts(), o.Namespace, h, se.Namespace) {
					hosts = append(hosts, h)
				}
			}
			if bound := slices.DeleteFunc(slices.Clone(hosts), func(h string) bool { return t.routers[routerKey(ref, h)] == nil }); len(bound) > 0 {
				hosts = bound
			}
			field := fmt.Sprintf("spec.servers[%d]", i)
			switch {
			case len(hosts) == 0:
				continue
			case len(hosts) > 1:
				t.problem(o, field+".hosts", false, "port %d: selects %d Breeze hosts (%s): one gateway port carries one Breeze route table; "+
					"select one in hosts, or bind a MetaRouter of one to this Gateway (its spec.gateways); Breeze leaves this port to Istio",
					port, len(hosts), strings.Join(hosts, ", "))
				continue
			}
			h := hosts[0]
			if prev, ok := byPort[port]; ok {
				if prev != h {
					t.problem(o, field, false, "port %d: another server of this port exposes %s, this one %s: one gateway port carries one Breeze route table; the first is kept", port, prev, h)
				}
				continue
			}
			byPort[port] = h
			name := GatewayRouteConfigName(o.Namespace, o.Name, h, port)
			t.out.Gateways = append(t.out.Gateways, GatewayListener{
				Namespace: o.Namespace, Name: o.Name, Selector: gw.GetSelector(), Server: i, Port: port, Host: h, RouteConfigName: name,
			})
			exposed[routerKey(ref, h)] = true
			if rc, ok := t.routesIn(ref, h, port, name); ok && t.globalRateLimit(routerKey(ref, h), rc) && t.authzRoutes(h, rc) {
				t.out.Resources.Routes[name] = rc
			} else {
				t.out.FailedRoutes[name] = true
			}
		}
	}
	for _, o := range t.metaRouters {
		if t.used(o) {
			t.checkGatewayRefs(o, o.Spec.(*metaprotocolv1alpha1.MetaRouter), exposed)
		}
	}
}
