package controlplane

import (
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strconv"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	"github.com/breeze-mesh/breeze/config"
)

// Lint checks files of Kubernetes manifests as a mesh, the way `breeze
// validate` does: MetaRouters, DestinationRules and ServiceEntries are
// read and translated as `breeze xds` would read and translate them (the
// same rules: a route to a subset no DestinationRule defines, a host no
// ServiceEntry or Kubernetes Service declares, weights, fields Breeze does
// not apply), and EnvoyFilters are checked against the Services and
// ServiceEntries of the files. Problems of a document as a whole (not
// YAML, not a Kubernetes object) are left out: deploy's checks of the
// same files report them. Each problem names its file.
func Lint(files ...File) []Problem {
	d := &DirSource{Log: slog.New(slog.DiscardHandler), lint: true}
	snap := d.read(files, Snapshot{})
	problems := slices.DeleteFunc(snap.Problems, func(p Problem) bool { return p.document })
	return append(problems, Translate(snap.Objects).Problems...)
}

// outboundListenerName is Istio's name for a service's outbound listener:
// <address>_<port>.
var outboundListenerName = regexp.MustCompile(`^(.+)_([0-9]+)$`)

// checkEnvoyFilters warns about each EnvoyFilter patch whose listener
// match names an address and port, or a port, that no Service or
// ServiceEntry among the objects declares: it would patch no listener, and
// the traffic it means to give Breeze would go through tcp_proxy as
// before. Without any Service or ServiceEntry there is nothing to judge
// against.
func (t *translator) checkEnvoyFilters(objs []Object) {
	var services []*Object
	for i := range objs {
		if _, ok := objs[i].Spec.(*networkingv1alpha3.ServiceEntry); ok {
			services = append(services, &objs[i])
		}
	}
	for i := range t.kubeServices {
		services = append(services, &t.kubeServices[i])
	}
	if len(services) == 0 {
		return
	}
	var listeners []string // <address>_<port> of every service
	for _, o := range services {
		se := o.Spec.(*networkingv1alpha3.ServiceEntry)
		for _, a := range se.GetAddresses() {
			for _, p := range se.GetPorts() {
				listeners = append(listeners, a+"_"+strconv.FormatUint(uint64(p.GetNumber()), 10))
			}
		}
	}
	for i := range t.envoyFilters {
		o := &t.envoyFilters[i]
		for j, cp := range o.Spec.(*networkingv1alpha3.EnvoyFilter).GetConfigPatches() {
			path := fmt.Sprintf("spec.configPatches[%d].match", j)
			lm := cp.GetMatch().GetListener()
			inbound := cp.GetMatch().GetContext() == networkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND
			if m := outboundListenerName.FindStringSubmatch(lm.GetName()); m != nil && !inbound {
				port, _ := strconv.ParseUint(m[2], 10, 32)
				if !slices.ContainsFunc(services, func(s *Object) bool { return hasAddressPort(s, m[1], uint32(port)) }) {
					msg := fmt.Sprintf("%q: no Service or ServiceEntry among these files has address %s and port %d: this patch applies to no listener", lm.GetName(), m[1], port)
					if near := config.Nearest(lm.GetName(), listeners); near != "" {
						msg += "; did you mean " + near + "?"
					}
					t.problem(o, path+".listener.name", true, "%s", msg)
				}
			}
			if p := lm.GetPortNumber(); p != 0 {
				if !slices.ContainsFunc(services, func(s *Object) bool { return hasPort(s, p, inbound) }) {
					t.problem(o, path+".listener.portNumber", true, "%d: no Service or ServiceEntry among these files has this %s: this patch applies to no listener", p, portKind(inbound))
				}
			}
			if p := lm.GetFilterChain().GetDestinationPort(); p != 0 && inbound {
				if !slices.ContainsFunc(services, func(s *Object) bool { return hasPort(s, p, true) }) {
					t.problem(o, path+".listener.filterChain.destinationPort", true, "%d: no Service or ServiceEntry among these files has this target port: this patch applies to no inbound filter chain", p)
				}
			}
		}
	}
}

func portKind(inbound bool) string {
	if inbound {
		return "target port"
	}
	return "port"
}

// hasAddressPort reports whether a Service or ServiceEntry has address (an
// IP, or a CIDR of ServiceEntry addresses) and port.
func hasAddressPort(o *Object, address string, port uint32) bool {
	se := o.Spec.(*networkingv1alpha3.ServiceEntry)
	ip, err := netip.ParseAddr(address)
	matches := func(a string) bool {
		if a == address {
			return true
		}
		if pfx, perr := netip.ParsePrefix(a); perr == nil && err == nil {
			return pfx.Contains(ip)
		}
		return false
	}
	return slices.ContainsFunc(se.GetAddresses(), matches) && hasPort(o, port, false)
}

// hasPort reports whether a Service or ServiceEntry has port: a service
// port, or with inbound a port its pods listen on (targetPort, else the
// port; a ServiceEntry endpoint's own port).
func hasPort(o *Object, port uint32, inbound bool) bool {
	if inbound && o.namedTargetPorts {
		return true // its pods' ports are named: cannot tell
	}
	se := o.Spec.(*networkingv1alpha3.ServiceEntry)
	for _, p := range se.GetPorts() {
		switch {
		case !inbound && p.GetNumber() == port:
			return true
		case inbound && p.GetTargetPort() == port:
			return true
		case inbound && p.GetTargetPort() == 0 && p.GetNumber() == port:
			return true
		}
		for _, e := range se.GetEndpoints() {
			if inbound && e.GetPorts()[p.GetName()] == port {
				return true
			}
		}
	}
	return false
}
