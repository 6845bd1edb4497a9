package controlplane

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	metaprotocolv1alpha1 "github.com/aeraki-mesh/api/metaprotocol/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	"github.com/breeze-mesh/breeze/config"
	mutationv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/mutation/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

// ClusterName is the name of the cluster (and of its EDS resource) for a
// ServiceEntry host and port, as Istio names outbound clusters.
// Breeze selects subsets by label within one cluster, so the subset part
// stays empty.
func ClusterName(host string, port uint32) string {
	return "outbound|" + strconv.FormatUint(uint64(port), 10) + "||" + host
}

// RouteConfigName is the name of the route table for a host and port, as
// Aeraki names it.
func RouteConfigName(host string, port uint32) string {
	return host + "_" + strconv.FormatUint(uint64(port), 10)
}

// Translation is what Translate makes of a set of objects.
type Translation struct {
	Resources Resources
	// Problems are per object: errors (the object is left out) and
	// warnings (a part of it Breeze does not support is ignored).
	Problems []Problem
	// FailedRoutes, FailedClusters and FailedEndpoints name the resources
	// whose source object has errors: the caller keeps serving their last
	// good version rather than a fallback (a default route or balancing
	// policy would change traffic).
	FailedRoutes, FailedClusters, FailedEndpoints map[string]bool
	// Gateways are the ports of Istio Gateways that carry Breeze, each
	// with its own route table (gateway.go).
	Gateways []GatewayListener
}

// Translate turns MetaRouters, DestinationRules and ServiceEntries into
// Breeze route tables, Envoy clusters and EDS resources, one of each per
// ServiceEntry host and port. A host with no MetaRouter gets a default
// route to all its endpoints; one with no DestinationRule a round-robin
// cluster. Hosts match exactly (no short-name expansion).
func Translate(objs []Object) Translation {
	return (&Translator{}).Translate(objs)
}

// Translator is Translate for a caller that translates snapshot after
// snapshot (Run): what depends on one object alone — the fields Breeze
// does not apply, and a ServiceEntry's endpoint sets — is kept from the
// last snapshot for each object passed again as it was (the same Spec,
// the same pointer, at the same Version), so that a registry with 1,000
// interfaces where one provider came builds one endpoint set again, not
// 1,000. The pointer, not the Version alone: the Kubernetes controller
// gives a Service's ServiceEntry the Service's resourceVersion, while its
// endpoints come from EndpointSlices; it builds a new Spec each time, so
// it gets no reuse, and nothing stale. The sets kept are the same pointers,
// which Server.Set recognises as unchanged without comparing them. The
// zero value is ready; not for concurrent use.
type Translator struct {
	// last: the work of the previous Translate by object; next: this
	// one's. An object gone (or changed) is dropped with the next call.
	last, next map[objectKey]*objectWork
	// lastPlain, nextPlain: the cluster and route table of each plain
	// host and port (see plainResources), as for last and next.
	lastPlain, nextPlain map[hostPort]*plainResources
}

type hostPort struct {
	host string
	port uint32
}

// plainResources are the cluster and route table of a plain host: one
// that no MetaRouter, DestinationRule or authorization policy names, as
// every interface of a registry is unless rules were written for it. They
// depend on the host and port alone.
type plainResources struct {
	cluster *clusterv3.Cluster
	route   *breezev1.RouteConfiguration
}

// objectKey identifies an object: its Spec (by pointer) at one Version,
// and where it came from, which its problems name.
type objectKey struct {
	spec                                         proto.Message
	kind, namespace, name, origin, file, version string
}

// objectWork is what was made of one object at one version.
type objectWork struct {
	unapplied []Problem
	// endpoints by cluster name and port name.
	endpoints map[[2]string]endpointsWork
}

type endpointsWork struct {
	cla      *endpointv3.ClusterLoadAssignment
	ok       bool
	problems []Problem
}

// work is o's cached work, nil when o has no version (it cannot be told
// apart from a changed object).
func (tr *Translator) work(o *Object) *objectWork {
	if tr == nil || o.Version == "" {
		return nil
	}
	k := objectKey{o.Spec, o.Kind, o.Namespace, o.Name, o.Origin, o.File, o.Version}
	if w := tr.next[k]; w != nil {
		return w
	}
	w := tr.last[k]
	if w == nil {
		w = &objectWork{}
	}
	tr.next[k] = w
	return w
}

// Translate translates objs as the function Translate does.
func (tr *Translator) Translate(objs []Object) Translation {
	tr.next = make(map[objectKey]*objectWork, len(tr.last))
	tr.nextPlain = make(map[hostPort]*plainResources, len(tr.lastPlain))
	defer func() {
		tr.last, tr.next = tr.next, nil
		tr.lastPlain, tr.nextPlain = tr.nextPlain, nil
	}()
	t := &translator{
		cache: tr,
		out: Translation{
			Resources: Resources{
				Routes:    map[string]*breezev1.RouteConfiguration{},
				Clusters:  map[string]*clusterv3.Cluster{},
				Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
			},
			FailedRoutes:    map[string]bool{},
			FailedClusters:  map[string]bool{},
			FailedEndpoints: map[string]bool{},
		},
		services: map[string]*Object{},
		rules:    map[string]*Object{},
		routers:  map[string]*Object{},
		declared: map[string]*Object{},
		gateways: map[string]*Object{},
		scopes:   map[*Object][]string{},
	}
	// Kubernetes Services and EnvoyFilters are not translated: they
	// declare hosts and listeners the others are checked against.
	objs = slices.DeleteFunc(slices.Clone(objs), func(o Object) bool {
		switch o.Kind {
		case kindService:
			t.kubeServices = append(t.kubeServices, o)
			return true
		case kindEnvoyFilter:
			t.envoyFilters = append(t.envoyFilters, o)
			return true
		case kindGateway:
			g := o
			t.gateways[gatewayRef(o.Namespace, o.Name)] = &g
			return true
		}
		return false
	})
	for i := range t.kubeServices {
		for _, h := range t.kubeServices[i].Spec.(*networkingv1alpha3.ServiceEntry).GetHosts() {
			if t.declared[h] == nil {
				t.declared[h] = &t.kubeServices[i]
			}
		}
	}
	slices.SortStableFunc(objs, func(a, b Object) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	t.index(objs)
	t.indexAuthz(objs) // authz.go
	for i := range objs {
		if t.used(&objs[i]) {
			t.unapplied(&objs[i])
			t.unserved(&objs[i])
		}
	}
	for i := range objs {
		if dr, ok := objs[i].Spec.(*networkingv1alpha3.DestinationRule); ok && t.rules[dr.GetHost()] == &objs[i] {
			t.checkRule(&objs[i], dr)
		}
	}
	for i := range objs {
		if se, ok := objs[i].Spec.(*networkingv1alpha3.ServiceEntry); ok && t.owns(&objs[i], se.GetHosts()) {
			t.serviceEntry(&objs[i], se)
		}
	}
	t.gatewayListeners() // gateway.go
	t.checkEnvoyFilters(objs)
	return t.out
}

type translator struct {
	out   Translation
	cache *Translator
	// By host: the ServiceEntry, DestinationRule and MetaRouter that own it.
	services, rules, routers map[string]*Object
	// bad objects: their problems are reported, their hosts skipped (or,
	// for a DestinationRule, the resources it feeds fail).
	bad map[*Object]bool
	// Kubernetes Services (their Spec a ServiceEntry of what they
	// declare), and by host; EnvoyFilters (Lint).
	kubeServices, envoyFilters []Object
	declared                   map[string]*Object
	// authz: the DubboAuthorizationPolicies by namespace (authz.go).
	authz map[string]*authzScope
	// gateways: Istio Gateways by "<namespace>/<name>"; metaRouters in
	// order, with the scopes (mesh, gateway refs) of each (gateway.go).
	gateways    map[string]*Object
	metaRouters []*Object
	scopes      map[*Object][]string
}

func (t *translator) problem(o *Object, field string, warning bool, format string, args ...any) {
	t.out.Problems = append(t.out.Problems, Problem{Object: o.Ref(), File: o.File, Field: field, Warning: warning, Err: fmt.Errorf(format, args...), Version: o.Version})
}

// didYouMean is "; did you mean X?" with X the host of a ServiceEntry
// nearest to h, or "" when none is near.
func (t *translator) didYouMean(h string) string {
	if near := config.Nearest(h, slices.Sorted(maps.Keys(t.services))); near != "" {
		return "; did you mean " + near + "?"
	}
	return ""
}

// index maps hosts to their objects; a host claimed twice by one kind is
// an error on the later object.
func (t *translator) index(objs []Object) {
	t.bad = map[*Object]bool{}
	claim := func(o *Object, m map[string]*Object, field, host string) {
		if host == "" {
			t.problem(o, field, false, "required")
			t.bad[o] = true
			return
		}
		if prev := m[host]; prev != nil && prev != o {
			t.problem(o, field, false, "%q is already taken by %s", host, prev.Ref())
			t.bad[o] = true
			return
		}
		m[host] = o
	}
	for i := range objs {
		o := &objs[i]
		switch s := o.Spec.(type) {
		case *networkingv1alpha3.ServiceEntry:
			if len(s.GetHosts()) == 0 {
				t.problem(o, "spec.hosts", false, "at least one host is required")
			}
			for j, h := range s.GetHosts() {
				claim(o, t.services, fmt.Sprintf("spec.hosts[%d]", j), h)
			}
		case *networkingv1alpha3.DestinationRule:
			claim(o, t.rules, "spec.host", s.GetHost())
		case *metaprotocolv1alpha1.MetaRouter:
			t.metaRouters = append(t.metaRouters, o)
			if len(s.GetHosts()) == 0 {
				t.problem(o, "spec.hosts", false, "at least one host is required")
			}
			scopes, ok := t.routerScopes(o, s)
			if !ok {
				t.bad[o] = true
			}
			t.scopes[o] = scopes
			// One MetaRouter per host in each scope (the sidecars, each
			// gateway), as Istio takes one VirtualService per host.
			for j, h := range s.GetHosts() {
				field := fmt.Sprintf("spec.hosts[%d]", j)
				if h == "" {
					claim(o, t.routers, field, h)
					continue
				}
				for _, sc := range scopes {
					key := routerKey(sc, h)
					if prev := t.routers[key]; prev != nil && prev != o {
						where := ""
						if sc != MeshGateway {
							where = " on gateway " + sc
						}
						t.problem(o, field, false, "%q is already taken%s by %s", h, where, prev.Ref())
						t.bad[o] = true
						continue
					}
					t.routers[key] = o
				}
			}
		}
	}
}

// used reports whether o holds at least one of its hosts: it is not
// ignored as a whole (a duplicate), so what it sets that Breeze does not
// apply is worth a warning.
func (t *translator) used(o *Object) bool {
	switch s := o.Spec.(type) {
	case *networkingv1alpha3.ServiceEntry:
		return t.owns(o, s.GetHosts())
	case *networkingv1alpha3.DestinationRule:
		return t.rules[s.GetHost()] == o
	case *metaprotocolv1alpha1.MetaRouter:
		return slices.ContainsFunc(s.GetHosts(), func(h string) bool {
			return slices.ContainsFunc(t.scopes[o], func(sc string) bool { return t.routers[routerKey(sc, h)] == o })
		})
	}
	return false
}

// unserved warns about each host of a MetaRouter or DestinationRule that
// no ServiceEntry has: nothing is served for it, so the object has no
// effect there.
func (t *translator) unserved(o *Object) {
	var field string
	var hosts []string
	switch s := o.Spec.(type) {
	case *networkingv1alpha3.DestinationRule:
		field, hosts = "spec.host", []string{s.GetHost()}
	case *metaprotocolv1alpha1.MetaRouter:
		hosts = s.GetHosts()
	default:
		return
	}
	for i, h := range hosts {
		f := field
		if f == "" {
			f = fmt.Sprintf("spec.hosts[%d]", i)
		}
		switch {
		case h == "" || t.services[h] != nil:
		case t.declared[h] != nil:
			t.problem(o, f, true, "%q: declared by %s, but Breeze's control plane serves the hosts of ServiceEntries only: nothing is served for it; add a ServiceEntry with its endpoints", h, t.declared[h].Ref())
		default:
			t.problem(o, f, true, "%q: no ServiceEntry or Service declares this host: nothing is served for it%s", h, t.didYouMean(h))
		}
	}
}

// owns reports whether o may be used for hosts (it is not a duplicate).
func (t *translator) owns(o *Object, hosts []string) bool {
	for _, h := range hosts {
		if t.services[h] == o {
			return true
		}
	}
	return false
}

func (t *translator) serviceEntry(o *Object, se *networkingv1alpha3.ServiceEntry) {
	if len(se.GetPorts()) == 0 {
		t.problem(o, "spec.ports", false, "at least one port is required")
	}
	ports := map[uint32]bool{}
	for i, p := range se.GetPorts() {
		field := fmt.Sprintf("spec.ports[%d].number", i)
		if p.GetNumber() == 0 || p.GetNumber() > 65535 {
			t.problem(o, field, false, "%d: must be 1–65535", p.GetNumber())
			continue
		}
		if ports[p.GetNumber()] {
			t.problem(o, field, false, "%d: duplicate port", p.GetNumber())
			continue
		}
		ports[p.GetNumber()] = true
		for _, host := range se.GetHosts() {
			if t.services[host] != o {
				continue
			}
			name := ClusterName(host, p.GetNumber())
			rname := RouteConfigName(host, p.GetNumber())
			if cla, ok := t.cachedEndpoints(o, se, p, name); ok {
				t.out.Resources.Endpoints[name] = cla
			} else {
				t.out.FailedEndpoints[name] = true
			}
			if pr := t.plain(host, p.GetNumber()); pr != nil {
				t.out.Resources.Clusters[name] = pr.cluster
				t.out.Resources.Routes[rname] = pr.route
				continue
			}
			if c, ok := t.cluster(host, p.GetNumber()); ok {
				t.out.Resources.Clusters[name] = c
			} else {
				t.out.FailedClusters[name] = true
			}
			if rc, ok := t.routes(host, p.GetNumber()); ok && t.globalRateLimit(host, rc) && t.authzRoutes(host, rc) {
				t.out.Resources.Routes[rname] = rc
			} else {
				t.out.FailedRoutes[rname] = true
			}
		}
	}
}

// plain returns the cluster and route table of host and port when the
// host is plain (plainResources), the same ones as the last Translate
// when there were any: nil when it is not plain (or without a cache).
func (t *translator) plain(host string, port uint32) *plainResources {
	if t.cache == nil || t.routers[host] != nil || t.rules[host] != nil ||
		t.authz[RootNamespace] != nil || t.authz[t.services[host].Namespace] != nil {
		return nil
	}
	k := hostPort{host, port}
	if pr := t.cache.nextPlain[k]; pr != nil {
		return pr
	}
	pr := t.cache.lastPlain[k]
	if pr == nil {
		before := len(t.out.Problems)
		c, cok := t.cluster(host, port)
		rc, rok := t.routes(host, port)
		if !cok || !rok || !t.globalRateLimit(host, rc) || !t.authzRoutes(host, rc) || len(t.out.Problems) != before {
			// Not expected of a plain host; translated as any other then.
			t.out.Problems = t.out.Problems[:before]
			return nil
		}
		pr = &plainResources{cluster: c, route: rc}
	}
	t.cache.nextPlain[k] = pr
	return pr
}

// cachedEndpoints is endpoints, from the cache when o did not change.
func (t *translator) cachedEndpoints(o *Object, se *networkingv1alpha3.ServiceEntry, port *networkingv1alpha3.ServicePort, name string) (*endpointv3.ClusterLoadAssignment, bool) {
	w := t.cache.work(o)
	if w == nil {
		return t.endpoints(o, se, port, name)
	}
	key := [2]string{name, port.GetName()}
	if e, ok := w.endpoints[key]; ok {
		t.out.Problems = append(t.out.Problems, e.problems...)
		return e.cla, e.ok
	}
	before := len(t.out.Problems)
	cla, ok := t.endpoints(o, se, port, name)
	if w.endpoints == nil {
		w.endpoints = map[[2]string]endpointsWork{}
	}
	w.endpoints[key] = endpointsWork{cla: cla, ok: ok, problems: slices.Clone(t.out.Problems[before:])}
	return cla, ok
}

// endpoints builds the assignment of one port of a ServiceEntry. Labels go
// to filter_metadata["envoy.lb"], where the client reads them.
func (t *translator) endpoints(o *Object, se *networkingv1alpha3.ServiceEntry, port *networkingv1alpha3.ServicePort, name string) (*endpointv3.ClusterLoadAssignment, bool) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	byLocality := map[string]*endpointv3.LocalityLbEndpoints{}
	ok := true
	for i, e := range se.GetEndpoints() {
		field := fmt.Sprintf("spec.endpoints[%d]", i)
		ip, err := netip.ParseAddr(e.GetAddress())
		if err != nil || ip.Zone() != "" {
			t.problem(o, field+".address", false, "%q: not an IP address (Breeze's control plane does not resolve host names)", e.GetAddress())
			ok = false
			continue
		}
		p := port.GetNumber()
		if port.GetTargetPort() != 0 {
			p = port.GetTargetPort()
		}
		if n, set := e.GetPorts()[port.GetName()]; set && port.GetName() != "" {
			p = n
		}
		if p == 0 || p > 65535 {
			t.problem(o, fmt.Sprintf("%s.ports[%q]", field, port.GetName()), false, "%d: must be 1–65535", p)
			ok = false
			continue
		}
		lb := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: ip.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: p}}}}}}}
		if w := e.GetWeight(); w > 0 {
			lb.LoadBalancingWeight = wrapperspb.UInt32(w)
		}
		if len(e.GetLabels()) > 0 {
			fields := map[string]*structpb.Value{}
			for k, v := range e.GetLabels() {
				fields[k] = structpb.NewStringValue(v)
			}
			lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{client.LabelsNamespace: {Fields: fields}}}
		}
		loc := byLocality[e.GetLocality()]
		if loc == nil {
			loc = &endpointv3.LocalityLbEndpoints{Locality: locality(e.GetLocality())}
			byLocality[e.GetLocality()] = loc
			cla.Endpoints = append(cla.Endpoints, loc)
		}
		loc.LbEndpoints = append(loc.LbEndpoints, lb)
	}
	return cla, ok
}

// locality reads Istio's "region/zone/subzone".
func locality(s string) *corev3.Locality {
	if s == "" {
		return nil
	}
	parts := strings.SplitN(s, "/", 3)
	parts = append(parts, "", "")
	return &corev3.Locality{Region: parts[0], Zone: parts[1], SubZone: parts[2]}
}

// routes builds the route table of a host and port: its MetaRouter's
// routes, or a default route to the whole cluster. A MetaRouter without
// routes (one for rate limits only, as in Aeraki's samples) leaves the
// host its default route, as Aeraki does.
func (t *translator) routes(host string, port uint32) (*breezev1.RouteConfiguration, bool) {
	return t.routesIn(MeshGateway, host, port, RouteConfigName(host, port))
}

// routesIn builds the route table name of a host and port in a scope
// (the mesh, or a gateway ref: gateway.go) from the MetaRouter of the host
// there.
func (t *translator) routesIn(scope, host string, port uint32, name string) (*breezev1.RouteConfiguration, bool) {
	rc := &breezev1.RouteConfiguration{Name: name}
	o := t.routers[routerKey(scope, host)]
	if o != nil && t.bad[o] {
		return nil, false
	}
	var mr *metaprotocolv1alpha1.MetaRouter
	if o != nil {
		mr = o.Spec.(*metaprotocolv1alpha1.MetaRouter)
	}
	if len(mr.GetRoutes()) == 0 {
		if t.badRule(host) {
			return nil, false // the default route would lose the rule's hash key
		}
		key := t.hashKey(host, "", port)
		rc.Routes = []*breezev1.Route{{Name: "default", Route: &breezev1.RouteAction{
			ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: ClusterName(host, port)}, HashKey: key}}}
		if !t.localRateLimit(o, mr, rc) {
			return nil, false
		}
		return rc, true
	}
	before := len(t.out.Problems)
	failed := false
	for i, r := range mr.GetRoutes() {
		field := fmt.Sprintf("spec.routes[%d]", i)
		route := &breezev1.Route{Name: r.GetName()}
		matchers, ok := t.attributeMatchers(o, field+".match", r.GetMatch())
		failed = failed || !ok
		if len(matchers) > 0 {
			route.Match = &breezev1.RouteMatch{Metadata: matchers}
		}
		action, ok := t.action(o, field, r.GetRoute(), port)
		failed = failed || !ok
		failed = !t.mirror(o, field, r, port, action) || failed // mirror.go
		route.Route = action
		for j, kv := range r.GetRequestMutation() {
			if kv.GetKey() == "" {
				t.problem(o, fmt.Sprintf("%s.requestMutation[%d].key", field, j), false, "required")
				failed = true
			}
			route.RequestMutation = append(route.RequestMutation, &breezev1.KeyValue{Key: kv.GetKey(), Value: kv.GetValue()})
		}
		if rm := r.GetResponseMutation(); len(rm) > 0 {
			// The mutation filter writes them into the responses of this route.
			muts := &mutationv1.Mutations{}
			for j, kv := range rm {
				if kv.GetKey() == "" {
					t.problem(o, fmt.Sprintf("%s.responseMutation[%d].key", field, j), false, "required")
					failed = true
				}
				muts.Response = append(muts.Response, &mutationv1.KeyValue{Key: kv.GetKey(), Value: kv.GetValue()})
			}
			a, err := anypb.New(muts)
			if err != nil {
				t.problem(o, field+".responseMutation", false, "%v", err)
				failed = true
			} else {
				route.TypedPerFilterConfig = map[string]*anypb.Any{"mutation": a}
			}
		}
		rc.Routes = append(rc.Routes, route)
	}
	failed = !t.localRateLimit(o, mr, rc) || failed
	// Problems of this MetaRouter were reported for an earlier port: keep
	// one copy.
	t.dedupe(before)
	if failed {
		return nil, false
	}
	return rc, true
}

// dedupe drops problems added since index from that are already listed
// before it (a MetaRouter is translated once per port).
func (t *translator) dedupe(from int) {
	kept := t.out.Problems[:from]
	for _, p := range t.out.Problems[from:] {
		if !slices.ContainsFunc(kept, func(q Problem) bool { return q.Error() == p.Error() }) {
			kept = append(kept, p)
		}
	}
	t.out.Problems = kept
}

func (t *translator) action(o *Object, field string, dests []*metaprotocolv1alpha1.MetaRouteDestination, port uint32) (*breezev1.RouteAction, bool) {
	if len(dests) == 0 {
		t.problem(o, field+".route", false, "at least one destination is required")
		return nil, false
	}
	ok := true
	action := &breezev1.RouteAction{}
	var weighted []*breezev1.ClusterWeight
	var total uint64
	for j, d := range dests {
		f := fmt.Sprintf("%s.route[%d].destination", field, j)
		host := d.GetDestination().GetHost()
		if host == "" {
			t.problem(o, f+".host", false, "required")
			ok = false
			continue
		}
		p := port
		if n := d.GetDestination().GetPort().GetNumber(); n != 0 {
			p = n
		}
		se := t.services[host]
		if se == nil {
			t.problem(o, f+".host", false, "%q: no ServiceEntry has this host%s", host, t.didYouMean(host))
			ok = false
			continue
		}
		if !slices.ContainsFunc(se.Spec.(*networkingv1alpha3.ServiceEntry).GetPorts(), func(sp *networkingv1alpha3.ServicePort) bool { return sp.GetNumber() == p }) {
			t.problem(o, f+".port.number", false, "%d: %s has no such port", p, se.Ref())
			ok = false
			continue
		}
		if t.badRule(host) {
			// Its errors are reported on it; the routes it feeds keep
			// their last good version.
			ok = false
			continue
		}
		var labels map[string]string
		if name := d.GetDestination().GetSubset(); name != "" {
			var err error
			if labels, err = t.subset(host, name); err != nil {
				t.problem(o, f+".subset", false, "%q: %v", name, err)
				ok = false
				continue
			}
		}
		if key := t.hashKey(host, d.GetDestination().GetSubset(), p); key != "" {
			if action.HashKey != "" && action.HashKey != key {
				t.problem(o, f, true, "DestinationRule hash key %q differs from %q of an earlier destination; %q applies to the route", key, action.HashKey, action.HashKey)
			} else {
				action.HashKey = key
			}
		}
		weighted = append(weighted, &breezev1.ClusterWeight{Name: ClusterName(host, p), Weight: d.GetWeight(), Subset: labels})
		total += uint64(d.GetWeight())
	}
	if !ok {
		return nil, false
	}
	if len(weighted) == 1 {
		action.ClusterSpecifier = &breezev1.RouteAction_Cluster{Cluster: weighted[0].Name}
		action.Subset = weighted[0].Subset
		return action, true
	}
	if total == 0 {
		t.problem(o, field+".route", false, "the weights of %d destinations add up to 0", len(weighted))
		return nil, false
	}
	if total != 100 {
		// Aeraki's API: the weights SHOULD add up to 100. Breeze takes
		// them as relative, which is likely not what was meant.
		shares := make([]string, len(weighted))
		for i, w := range weighted {
			shares[i] = strconv.FormatFloat(math.Round(float64(w.GetWeight())*1000/float64(total))/10, 'f', -1, 64) + "%"
		}
		t.problem(o, field+".route", true, "the weights add up to %d, not 100: Breeze takes them as relative and splits traffic %s; make them add up to 100", total, strings.Join(shares, " / "))
	}
	action.ClusterSpecifier = &breezev1.RouteAction_WeightedClusters{WeightedClusters: &breezev1.WeightedClusters{Clusters: weighted}}
	return action, true
}

// subset returns the labels of a DestinationRule subset.
func (t *translator) subset(host, name string) (map[string]string, error) {
	o := t.rules[host]
	switch {
	case o == nil:
		return nil, fmt.Errorf("no DestinationRule has host %s, so it has no subsets: add one that defines this subset", host)
	case t.bad[o]:
		return nil, fmt.Errorf("%s has errors", o.Ref())
	}
	dr := o.Spec.(*networkingv1alpha3.DestinationRule)
	var names []string
	for _, s := range dr.GetSubsets() {
		if s.GetName() == name {
			return s.GetLabels(), nil
		}
		names = append(names, s.GetName())
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s defines no subsets", o.Ref())
	}
	msg := fmt.Sprintf("%s defines no such subset (only %s)", o.Ref(), strings.Join(names, ", "))
	if near := config.Nearest(name, names); near != "" {
		msg += "; did you mean " + near + "?"
	}
	return nil, errors.New(msg)
}

// badRule reports whether the DestinationRule of host has errors.
func (t *translator) badRule(host string) bool {
	o := t.rules[host]
	return o != nil && t.bad[o]
}

// hashKey returns the metadata key a DestinationRule hashes on for a
// host, subset and port (subset policy over port-level over the rule's
// own), "" for none. checkRule reported what Breeze cannot carry.
func (t *translator) hashKey(host, subset string, port uint32) string {
	o := t.rules[host]
	if o == nil || t.bad[o] {
		return ""
	}
	dr := o.Spec.(*networkingv1alpha3.DestinationRule)
	lb := loadBalancer(dr.GetTrafficPolicy(), port)
	for _, s := range dr.GetSubsets() {
		if s.GetName() == subset && subset != "" {
			if l := loadBalancer(s.GetTrafficPolicy(), port); l != nil {
				lb = l
			}
		}
	}
	// Breeze hashes on request metadata (a Dubbo attachment, say), the
	// MetaProtocol reading of an HTTP header, as in Aeraki.
	return lb.GetConsistentHash().GetHttpHeaderName()
}
