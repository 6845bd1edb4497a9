package controller

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// The kinds the controller reads besides Services and EndpointSlices, as
// unstructured objects: no Istio or Aeraki clientset is needed, and the
// specs decode into the istio.io/api and aeraki-mesh/api protos the
// controlplane package translates.
var (
	ServiceEntryGVK        = schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "ServiceEntry"}
	DestinationRuleGVK     = schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "DestinationRule"}
	WorkloadEntryGVK       = schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "WorkloadEntry"}
	EnvoyFilterGVK         = schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1alpha3", Kind: "EnvoyFilter"}
	MetaRouterGVK          = schema.GroupVersionKind{Group: "metaprotocol.aeraki.io", Version: "v1alpha1", Kind: "MetaRouter"}
	ApplicationProtocolGVK = schema.GroupVersionKind{Group: "metaprotocol.aeraki.io", Version: "v1alpha1", Kind: "ApplicationProtocol"}
	// The authorization policies the control plane puts on the routes of
	// their hosts (controlplane/authz.go): Aeraki's, and Breeze's own,
	// protocol-neutral one.
	DubboAuthorizationPolicyGVK = schema.GroupVersionKind{Group: "dubbo.aeraki.io", Version: "v1alpha1", Kind: "DubboAuthorizationPolicy"}
	AuthorizationPolicyGVK      = schema.GroupVersionKind{Group: "security.breeze.io", Version: "v1alpha1", Kind: "AuthorizationPolicy"}
)

// Labels on every EnvoyFilter the controller writes: it lists its own by
// them (and deletes those whose source is gone), and people can tell who
// wrote them and from what.
const (
	// LabelManagedBy is deploy's label (breeze render writes it too);
	// LabelSourceKind tells the controller's own EnvoyFilters apart.
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedBy       = "breeze"
	LabelSourceKind = "breeze.io/source-kind"
	LabelSourceName = "breeze.io/source-name"
	// AnnotationClients on a Service or ServiceEntry: the labels
	// (k=v,k2=v2) of the client pods whose outbound traffic Breeze
	// handles; without it, every pod of the namespace.
	AnnotationClients = "breeze.io/clients"
	// LabelIstioRevision: Istio's revision label (Options.Revision).
	LabelIstioRevision = "istio.io/rev"
)

// objectOrigin is where objects of the API server come from, in messages.
const objectOrigin = "kubernetes"

// mesh is everything the controller reads, at one time.
type mesh struct {
	services         []corev1.Service
	endpointSlices   []discoveryv1.EndpointSlice
	serviceEntries   []unstructured.Unstructured
	destinationRules []unstructured.Unstructured
	workloadEntries  []unstructured.Unstructured
	metaRouters      []unstructured.Unstructured
	appProtocols     []unstructured.Unstructured
	authzPolicies    []unstructured.Unstructured
	gateways         []unstructured.Unstructured
}

// settings are what the controller puts in every EnvoyFilter.
type settings struct {
	// XDSAddress: the plugins' xDS server, this controller's.
	XDSAddress string
	// XDSCAFile and XDSTokenFile: Options'.
	XDSCAFile, XDSTokenFile string
	UpstreamTLS             deploy.UpstreamTLS
	Istio                   string
	LibraryPath             string
	// Revision: Options'.
	Revision string
	// KnownCodec reports whether Breeze has a codec of that name.
	KnownCodec func(string) bool
}

// xdsSource is the xds block of the plugins' config for route table rc.
func (s settings) xdsSource(rc string) *breezev1.XdsSource {
	x := &breezev1.XdsSource{Address: s.XDSAddress, RouteConfigName: rc, TokenFile: s.XDSTokenFile}
	if s.XDSCAFile != "" {
		x.Tls = &breezev1.XdsTls{CaFile: s.XDSCAFile}
	}
	return x
}

// issue is something the controller cannot honour in an object: an Event
// on it.
type issue struct {
	obj     metav1.Object
	kind    string
	reason  string
	message string
}

// desiredFilter is an EnvoyFilter the controller wants, with its owner.
type desiredFilter struct {
	obj   *unstructured.Unstructured
	owner metav1.OwnerReference
}

// breezePort is one port of a service that Breeze handles.
type breezePort struct {
	name        string
	port        uint32
	targetPort  uint32
	targetNamed string
	codec       string
}

func (m *mesh) resolver(s settings) codecResolver {
	r := codecResolver{known: s.KnownCodec, appProtocols: map[string]string{}}
	for _, ap := range m.appProtocols {
		p, _, _ := unstructured.NestedString(ap.Object, "spec", "protocol")
		c, _, _ := unstructured.NestedString(ap.Object, "spec", "codec")
		if p != "" && c != "" {
			r.appProtocols[p] = c
		}
	}
	return r
}

// servicePorts lists the Breeze ports of a Kubernetes Service, with an
// issue for each port that asks for a protocol Breeze has no codec for.
func servicePorts(svc *corev1.Service, r codecResolver) ([]breezePort, []issue) {
	var out []breezePort
	var issues []issue
	for i, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		codec, err := r.codec(p.Name, ptrString(p.AppProtocol))
		if err != nil {
			issues = append(issues, issue{obj: svc, kind: "Service", reason: "UnknownCodec",
				message: fmt.Sprintf("spec.ports[%d] (%s): %v; nothing is generated for this port", i, p.Name, err)})
			continue
		}
		if codec == "" {
			if r.overriddenName(p.Name, ptrString(p.AppProtocol)) {
				issues = append(issues, issue{obj: svc, kind: "Service", reason: "AppProtocolOverridesName",
					message: fmt.Sprintf("spec.ports[%d] (%s): the name asks for MetaProtocol, but appProtocol %q comes first (as in Istio): not Breeze's, nothing is generated for this port", i, p.Name, ptrString(p.AppProtocol))})
			}
			continue
		}
		bp := breezePort{name: p.Name, port: uint32(p.Port), codec: codec}
		switch {
		case p.TargetPort.IntVal != 0:
			bp.targetPort = uint32(p.TargetPort.IntVal)
		case p.TargetPort.StrVal != "":
			bp.targetNamed = p.TargetPort.StrVal
		default:
			bp.targetPort = bp.port
		}
		out = append(out, bp)
	}
	return out, issues
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// Host is the name clients call a Kubernetes Service by.
func Host(name, namespace string) string {
	return name + "." + namespace + "." + controlplane.ClusterDomain
}

// slicesOf lists the EndpointSlices of a Service.
func (m *mesh) slicesOf(svc *corev1.Service) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for i := range m.endpointSlices {
		es := &m.endpointSlices[i]
		if es.Namespace == svc.Namespace && es.Labels[discoveryv1.LabelServiceName] == svc.Name {
			out = append(out, es)
		}
	}
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// serviceEntryOf is what the control plane serves for a Service: a
// ServiceEntry of its host, ClusterIP and Breeze ports, with the ready
// endpoints of its EndpointSlices (as the endpoint controller writes
// them: ports by the Service port's name, with the target port number).
func (m *mesh) serviceEntryOf(svc *corev1.Service, ports []breezePort) *networkingv1alpha3.ServiceEntry {
	se := &networkingv1alpha3.ServiceEntry{
		Hosts:      []string{Host(svc.Name, svc.Namespace)},
		Resolution: networkingv1alpha3.ServiceEntry_STATIC,
		Location:   networkingv1alpha3.ServiceEntry_MESH_INTERNAL,
	}
	if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		se.Addresses = []string{ip}
	}
	names := map[string]bool{}
	for _, p := range ports {
		se.Ports = append(se.Ports, &networkingv1alpha3.ServicePort{Number: p.port, Name: p.name, Protocol: "TCP", TargetPort: p.targetPort})
		names[p.name] = true
	}
	seen := map[string]*networkingv1alpha3.WorkloadEntry{}
	for _, es := range m.slicesOf(svc) {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, ep := range es.Endpoints {
			// Ready unset means ready (the API's rule).
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			ports := map[string]uint32{}
			var key strings.Builder
			for _, p := range es.Ports {
				if p.Name != nil && p.Port != nil && names[*p.Name] {
					ports[*p.Name] = uint32(*p.Port)
					fmt.Fprintf(&key, " %s=%d", *p.Name, *p.Port)
				}
			}
			for _, addr := range ep.Addresses {
				// One endpoint per address and ports: the endpoint
				// controller may list an address in two slices while it
				// moves it, and two slices may give one address other
				// ports.
				k := addr + key.String()
				if seen[k] != nil {
					continue
				}
				we := &networkingv1alpha3.WorkloadEntry{Address: addr, Ports: maps.Clone(ports)}
				if ep.Zone != nil {
					we.Locality = *ep.Zone
				}
				seen[k] = we
				se.Endpoints = append(se.Endpoints, we)
			}
		}
	}
	slices.SortStableFunc(se.Endpoints, func(a, b *networkingv1alpha3.WorkloadEntry) int { return strings.Compare(a.Address, b.Address) })
	return se
}

// namedTarget is the number of a named targetPort, as the EndpointSlices
// say it (0 while none does).
func (m *mesh) namedTarget(svc *corev1.Service, portName string) uint32 {
	for _, es := range m.slicesOf(svc) {
		for _, p := range es.Ports {
			if p.Name != nil && *p.Name == portName && p.Port != nil {
				return uint32(*p.Port)
			}
		}
	}
	return 0
}

// exportedHere reports whether a ServiceEntry's exportTo makes it visible
// in its own namespace, where the EnvoyFilters the controller writes for
// it live (they are owned by it, so they are in its namespace).
func exportedHere(exportTo []string, namespace string) bool {
	if len(exportTo) == 0 {
		return true
	}
	return slices.Contains(exportTo, "*") || slices.Contains(exportTo, ".") || slices.Contains(exportTo, namespace)
}

// exportedAnywhere: "~" alone hides a ServiceEntry from every namespace.
func exportedAnywhere(exportTo []string) bool {
	return len(exportTo) == 0 || slices.ContainsFunc(exportTo, func(s string) bool { return s != "~" })
}

// result is what one look at the mesh yields.
type result struct {
	snapshot controlplane.Snapshot
	filters  []desiredFilter
	issues   []issue
	// metaRouterRefs: each MetaRouter by its controlplane.Object.Ref, to
	// find its problems; refs: every Istio and Aeraki object so.
	metaRouterRefs, refs map[string]*unstructured.Unstructured
	// translation of the snapshot, when computed withFilters (the
	// gateway EnvoyFilters need it: which port exposes which host).
	translation controlplane.Translation
}

// compute builds the control plane's snapshot and, withFilters, the
// EnvoyFilters the mesh asks for (the xDS feed does not need them, and
// rendering them is most of the work). It is a pure function of its input.
func (m *mesh) compute(s settings, withFilters bool) result {
	res := result{metaRouterRefs: map[string]*unstructured.Unstructured{}, refs: map[string]*unstructured.Unstructured{}}
	r := m.resolver(s)
	// codecOf: the codec of each Breeze host and port, for the gateways.
	codecOf := map[string]string{}
	for i := range m.services {
		svc := &m.services[i]
		ports, issues := servicePorts(svc, r)
		res.issues = append(res.issues, issues...)
		if len(ports) == 0 {
			continue
		}
		se := m.serviceEntryOf(svc, ports)
		for _, p := range ports {
			codecOf[controlplane.RouteConfigName(se.Hosts[0], p.port)] = p.codec
		}
		res.snapshot.Objects = append(res.snapshot.Objects, controlplane.Object{
			// Translated as the ServiceEntry it amounts to; its messages
			// name the Service.
			Kind: "ServiceEntry", Namespace: svc.Namespace, Name: svc.Name, Origin: "Service " + svc.Namespace + "/" + svc.Name,
			Spec: se, Version: svc.ResourceVersion,
		})
		if !withFilters {
			continue
		}
		owner := ownerRef("v1", "Service", svc)
		var vip string
		if len(se.Addresses) > 0 {
			vip = se.Addresses[0]
		}
		for _, p := range ports {
			if p.targetNamed != "" {
				p.targetPort = m.namedTarget(svc, p.name)
			}
			filters, issues := render(s, renderInput{
				host: se.Hosts[0], name: svc.Name + "-" + strconv.FormatUint(uint64(p.port), 10), namespace: svc.Namespace,
				vip: vip, port: p, selector: svc.Spec.Selector, annotations: svc.Annotations,
				kind: "Service", obj: svc,
			})
			res.issues = append(res.issues, issues...)
			for _, f := range filters {
				sourceLabels(f, "Service", svc.Name)
				res.filters = append(res.filters, desiredFilter{obj: f, owner: owner})
			}
		}
	}
	for i := range m.serviceEntries {
		m.serviceEntry(&m.serviceEntries[i], s, r, &res, withFilters, codecOf)
	}
	for _, list := range [][]unstructured.Unstructured{m.destinationRules, m.metaRouters, m.authzPolicies, m.gateways} {
		for i := range list {
			u := &list[i]
			o, problems := decode(u)
			res.snapshot.Problems = append(res.snapshot.Problems, problems...)
			res.refs[o.Ref()] = u
			if u.GetKind() == MetaRouterGVK.Kind {
				res.metaRouterRefs[o.Ref()] = u
			}
			if len(problems) == 0 {
				res.snapshot.Objects = append(res.snapshot.Objects, o)
			}
		}
	}
	if withFilters {
		res.translation = controlplane.Translate(res.snapshot.Objects)
		m.gatewayFilters(s, res.translation, codecOf, &res) // gateway.go
		if s.Revision != "" {
			for _, f := range res.filters {
				l := f.obj.GetLabels()
				l[LabelIstioRevision] = s.Revision
				f.obj.SetLabels(l)
			}
		}
	}
	return res
}

// decode reads an Istio or Aeraki object's spec as the control plane does.
func decode(u *unstructured.Unstructured) (controlplane.Object, []controlplane.Problem) {
	spec, _ := json.Marshal(u.Object["spec"])
	return controlplane.NewObject(u.GroupVersionKind().Group, u.GetKind(), u.GetNamespace(), u.GetName(), objectOrigin, u.GetResourceVersion(), spec)
}

// serviceEntry adds what a ServiceEntry gives: the object to translate
// (with the WorkloadEntries its workloadSelector selects as endpoints) and
// its EnvoyFilters.
func (m *mesh) serviceEntry(u *unstructured.Unstructured, s settings, r codecResolver, res *result, withFilters bool, codecOf map[string]string) {
	o, problems := decode(u)
	res.refs[o.Ref()] = u
	res.snapshot.Problems = append(res.snapshot.Problems, problems...)
	if len(problems) > 0 {
		return
	}
	se := o.Spec.(*networkingv1alpha3.ServiceEntry)
	if !exportedAnywhere(se.GetExportTo()) {
		return
	}
	if ws := se.GetWorkloadSelector().GetLabels(); len(ws) > 0 {
		se.Endpoints = append(se.Endpoints, m.workloadEntriesFor(u.GetNamespace(), ws)...)
		// The selected WorkloadEntries are its endpoints now.
		se.WorkloadSelector = nil
	}
	res.snapshot.Objects = append(res.snapshot.Objects, o)
	if !withFilters || !exportedHere(se.GetExportTo(), u.GetNamespace()) {
		return
	}
	owner := ownerRef(u.GetAPIVersion(), u.GetKind(), u)
	var vip string
	for _, a := range se.GetAddresses() {
		if ip, err := netip.ParseAddr(a); err == nil {
			vip = ip.String()
			break
		}
	}
	selector, _, _ := unstructured.NestedStringMap(u.Object, "spec", "workloadSelector", "labels")
	for hi, host := range se.GetHosts() {
		for pi, sp := range se.GetPorts() {
			codec, overridden, err := r.serviceEntryPortCodec(sp.GetName(), sp.GetProtocol())
			if err != nil {
				res.issues = append(res.issues, issue{obj: u, kind: u.GetKind(), reason: "UnknownCodec",
					message: fmt.Sprintf("spec.ports[%d] (%s): %v; nothing is generated for this port", pi, sp.GetName(), err)})
				continue
			}
			if overridden && hi == 0 {
				res.issues = append(res.issues, issue{obj: u, kind: u.GetKind(), reason: "ProtocolOverridesName",
					message: fmt.Sprintf("spec.ports[%d] (%s): the name asks for MetaProtocol, but Istio follows protocol %q: not Breeze's, nothing is generated for this port", pi, sp.GetName(), sp.GetProtocol())})
			}
			if codec == "" {
				continue
			}
			codecOf[controlplane.RouteConfigName(host, sp.GetNumber())] = codec
			name := u.GetName() + "-" + strconv.FormatUint(uint64(sp.GetNumber()), 10)
			if hi > 0 {
				name = u.GetName() + "-h" + strconv.Itoa(hi) + "-" + strconv.FormatUint(uint64(sp.GetNumber()), 10)
			}
			name = filterPrefix(name)
			target := sp.GetTargetPort()
			if target == 0 {
				target = sp.GetNumber()
			}
			filters, issues := render(s, renderInput{
				host: host, name: name, namespace: u.GetNamespace(), vip: vip,
				port:     breezePort{name: sp.GetName(), port: sp.GetNumber(), targetPort: target, codec: codec},
				selector: selector, annotations: u.GetAnnotations(), kind: u.GetKind(), obj: u,
			})
			res.issues = append(res.issues, issues...)
			for _, f := range filters {
				sourceLabels(f, u.GetKind(), u.GetName())
				res.filters = append(res.filters, desiredFilter{obj: f, owner: owner})
			}
		}
	}
}

// filterPrefix makes name a prefix deploy.Render takes for the
// EnvoyFilters' names (a DNS label of at most 40 characters): a registry's
// ServiceEntry is named after a Java interface, dots and all
// (dubbo-org.breeze.greeter-20880 → dubbo-org-breeze-greeter-20880). A
// longer one keeps its first 31 characters and a hash of the whole name.
func filterPrefix(name string) string {
	if len(name) <= 40 && len(validation.IsDNS1123Label(name)) == 0 {
		return name
	}
	out := strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9', r == '-':
			return r
		case 'A' <= r && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, name)
	if len(out) > 40 {
		h := fnv.New32a()
		h.Write([]byte(name))
		out = fmt.Sprintf("%s-%08x", strings.TrimRight(out[:31], "-"), h.Sum32())
	}
	return strings.Trim(out, "-")
}

// workloadEntriesFor lists, as ServiceEntry endpoints, the WorkloadEntries
// of a namespace whose labels the selector selects (Istio's rule).
func (m *mesh) workloadEntriesFor(namespace string, selector map[string]string) []*networkingv1alpha3.WorkloadEntry {
	sel := labels.SelectorFromSet(selector)
	var out []*networkingv1alpha3.WorkloadEntry
	for i := range m.workloadEntries {
		u := &m.workloadEntries[i]
		if u.GetNamespace() != namespace {
			continue
		}
		spec, _ := json.Marshal(u.Object["spec"])
		o, problems := controlplane.NewObject("networking.istio.io", "ServiceEntry", u.GetNamespace(), u.GetName(), objectOrigin, u.GetResourceVersion(),
			[]byte(`{"endpoints":[`+string(spec)+`]}`))
		if len(problems) > 0 {
			continue
		}
		we := o.Spec.(*networkingv1alpha3.ServiceEntry).GetEndpoints()[0]
		// Istio selects WorkloadEntries by their spec's labels.
		if sel.Matches(labels.Set(we.GetLabels())) {
			out = append(out, we)
		}
	}
	slices.SortFunc(out, func(a, b *networkingv1alpha3.WorkloadEntry) int { return strings.Compare(a.Address, b.Address) })
	return out
}

func ownerRef(apiVersion, kind string, o metav1.Object) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: o.GetName(), UID: o.GetUID(), Controller: &t, BlockOwnerDeletion: &t}
}

type renderInput struct {
	host, name, namespace, vip string
	port                       breezePort
	selector, annotations      map[string]string
	kind                       string
	obj                        metav1.Object
}

// render makes the EnvoyFilters of one port of a service with deploy's
// Render: outbound on the clients (when the service has an address: Istio
// names the listener <vip>_<port>), inbound on its own pods (when it
// selects them). The plugin config fetches routes, clusters and
// endpoints from this controller over xDS, so the EnvoyFilters change
// only when the service's shape does.
func render(s settings, in renderInput) ([]*unstructured.Unstructured, []issue) {
	var issues []issue
	bad := func(reason, format string, args ...any) {
		issues = append(issues, issue{obj: in.obj, kind: in.kind, reason: reason, message: fmt.Sprintf(format, args...)})
	}
	var clients map[string]string
	if c := in.annotations[AnnotationClients]; c != "" {
		set, err := labels.ConvertSelectorToLabelsMap(c)
		if err != nil {
			bad("BadAnnotation", "metadata.annotations[%s]: %q: want labels k=v,k2=v2: %v", AnnotationClients, c, err)
			return nil, issues
		}
		clients = set
	}
	base := deploy.Service{
		// deploy wants a lower-case host (it only names the route table
		// after it, which the controller names itself, below, after the
		// host as written: a registry's host is a Java interface,
		// org.breeze.Greeter).
		Host: strings.ToLower(in.host), Name: in.name, Namespace: in.namespace, Port: in.port.port, TargetPort: in.port.targetPort,
		Protocol: in.port.codec, UpstreamTLS: s.UpstreamTLS, Istio: s.Istio, LibraryPath: s.LibraryPath,
	}
	var out []*unstructured.Unstructured
	add := func(svc deploy.Service) {
		efs, err := deploy.Render(&svc)
		if err != nil {
			bad("RenderFailed", "port %d (%s), %s: %v", in.port.port, in.port.name, svc.Direction, err)
			return
		}
		for _, ef := range efs {
			u, err := toUnstructured(ef)
			if err != nil {
				bad("RenderFailed", "port %d (%s): %v", in.port.port, in.port.name, err)
				continue
			}
			out = append(out, u)
		}
	}
	outbound := func(svc deploy.Service) deploy.Service {
		svc.VIP, svc.Clients = in.vip, clients
		svc.Outbound = &breezev1.ProxyConfig{Xds: s.xdsSource(deploy.RouteConfigName(in.host, in.port.port))}
		return svc
	}
	inbound := len(in.selector) > 0
	if inbound && in.port.targetPort == 0 {
		inbound = false
		bad("TargetPortUnresolved", "port %d (%s): targetPort %q names a container port no EndpointSlice resolves yet: the inbound EnvoyFilter follows once one does",
			in.port.port, in.port.name, in.port.targetNamed)
	}
	switch {
	case in.vip != "" && inbound:
		// Both sides, with deploy's checks across them. The clients may
		// include the service's own pods: under Istio mTLS the inbound
		// side dials the app with the Go socket (GO_LOOPBACK) and leaves
		// the pod's plainText cluster to the outbound side.
		b := outbound(base)
		b.Direction, b.Selector = deploy.Both, in.selector
		add(b)
	case in.vip != "":
		o := outbound(base)
		o.Direction = deploy.Outbound
		add(o)
	case inbound:
		i := base
		i.Direction, i.Selector = deploy.Inbound, in.selector
		add(i)
	}
	return out, issues
}

// toUnstructured turns a rendered EnvoyFilter into the object the API
// server stores, with the controller's labels.
func toUnstructured(ef *deploy.EnvoyFilter) (*unstructured.Unstructured, error) {
	y, err := ef.YAML()
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	js, err := yamlToJSON(y)
	if err != nil {
		return nil, err
	}
	// UnmarshalJSON reads numbers as the API server's answers have them
	// (int64), so that comparing with what is stored is exact.
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, err
	}
	l := maps.Clone(u.GetLabels())
	if l == nil {
		l = map[string]string{}
	}
	l[LabelManagedBy] = ManagedBy
	u.SetLabels(l)
	return u, nil
}

// sourceLabels labels an EnvoyFilter with the object it is made of.
func sourceLabels(u *unstructured.Unstructured, kind, name string) {
	l := u.GetLabels()
	l[LabelSourceKind] = kind
	l[LabelSourceName] = name
	u.SetLabels(l)
}

func yamlToJSON(y []byte) ([]byte, error) { return yaml.YAMLToJSON(y) }
