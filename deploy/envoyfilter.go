package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"

	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/internal/release"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Istio's names for the EnvoyFilter resource (networking.istio.io; Istio
// 1.28 serves EnvoyFilter as v1alpha3 only).
const (
	EnvoyFilterAPIVersion = "networking.istio.io/v1alpha3"
	EnvoyFilterKind       = "EnvoyFilter"
	// IstioRootNamespace is Istio's default config root namespace: an
	// EnvoyFilter there applies to workloads of every namespace.
	IstioRootNamespace = "istio-system"
	// virtualInbound is the sidecar's inbound listener.
	virtualInbound = "virtualInbound"
)

// EnvoyFilter is an Istio EnvoyFilter resource.
type EnvoyFilter struct {
	Name      string
	Namespace string
	Labels    map[string]string
	Spec      *networkingv1alpha3.EnvoyFilter
}

// YAML renders e as a Kubernetes manifest (the spec in Istio's
// camelCase field names; patch values in Envoy's proto field names).
func (e *EnvoyFilter) YAML() ([]byte, error) {
	js, err := protojson.Marshal(e.Spec)
	if err != nil {
		return nil, err
	}
	var spec any
	if err := json.Unmarshal(js, &spec); err != nil {
		return nil, err
	}
	meta := map[string]any{"name": e.Name}
	if e.Namespace != "" {
		meta["namespace"] = e.Namespace
	}
	if len(e.Labels) > 0 {
		meta["labels"] = e.Labels
	}
	return yaml.Marshal(map[string]any{
		"apiVersion": EnvoyFilterAPIVersion,
		"kind":       EnvoyFilterKind,
		"metadata":   meta,
		"spec":       spec,
	})
}

// MarshalEnvoyFilters renders resources as one multi-document YAML stream.
func MarshalEnvoyFilters(efs []*EnvoyFilter) ([]byte, error) {
	var b bytes.Buffer
	for i, e := range efs {
		y, err := e.YAML()
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}

// splitDocs splits a YAML stream at its "---" lines, dropping documents
// that hold nothing but comments and blank lines.
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range splitDocsAt(data) {
		docs = append(docs, d.data)
	}
	return docs
}

// yamlDoc is one document of a YAML stream.
type yamlDoc struct {
	data []byte
	// line is the number of lines of the stream before the document: a
	// syntax error's line in the document plus line is its line in the
	// file.
	line int
}

// splitDocsAt is splitDocs, with where each document starts.
func splitDocsAt(data []byte) []yamlDoc {
	var docs []yamlDoc
	var cur bytes.Buffer
	start, n := 0, 0
	flush := func() {
		for _, l := range strings.Split(cur.String(), "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				docs = append(docs, yamlDoc{data: bytes.Clone(cur.Bytes()), line: start})
				break
			}
		}
		cur.Reset()
	}
	for _, l := range strings.SplitAfter(string(data), "\n") {
		n++
		if t := strings.TrimRight(l, " \t\r\n"); t == "---" || strings.HasPrefix(t, "--- ") {
			flush()
			start = n
			continue
		}
		cur.WriteString(l)
	}
	flush()
	return docs
}

// objectMetaFields are the fields of a Kubernetes ObjectMeta; anything
// else under metadata is a mistake the API server would reject or drop.
var objectMetaFields = map[string]bool{
	"name": true, "generateName": true, "namespace": true, "selfLink": true, "uid": true,
	"resourceVersion": true, "generation": true, "creationTimestamp": true,
	"deletionTimestamp": true, "deletionGracePeriodSeconds": true, "labels": true,
	"annotations": true, "ownerReferences": true, "finalizers": true, "managedFields": true,
}

var (
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// outboundListener is Istio's name for a service's outbound listener.
	outboundListener = regexp.MustCompile(`^(\d{1,3}(\.\d{1,3}){3}|[0-9a-fA-F:]+)_\d+$`)
)

// istioUse is what the set-wide checks need to know of one EnvoyFilter.
type istioUse struct {
	doc string
	// file is the index of the file among those checked together.
	file      int
	namespace string
	// name: the EnvoyFilter's metadata.name.
	name       string
	selector   map[string]string
	breezes    []istioBreeze
	plainTexts []istioPlainText
}

type istioBreeze struct {
	path    string
	inbound bool
	// goLoopback: upstream_connect GO_LOOPBACK; it dials with the Go
	// runtime's own socket and needs no plainText cluster.
	goLoopback bool
	// proxyVersion is the patch's match.proxy.proxyVersion.
	proxyVersion string
}

type istioPlainText struct {
	path    string
	cluster *clusterv3.Cluster
}

// checkEnvoyFilter checks one EnvoyFilter document: the Kubernetes
// envelope; the spec with Istio's own types (unknown fields are errors:
// the CRD would prune them); istiod's validation rules (istio.io/istio
// pkg/config/validation/envoyfilter, 1.28); every patch value with
// go-control-plane's types for its applyTo, as istiod builds it; and
// Breeze's rules for Go filters and the plainText cluster.
func checkEnvoyFilter(v map[string]any, doc string) (*EnvoyFilter, istioUse, Findings) {
	var f Findings
	use := istioUse{doc: doc}
	for _, k := range slices.Sorted(maps.Keys(v)) {
		switch k {
		case "apiVersion", "kind", "metadata", "spec":
		case "status":
			f.warnf(k, "status is written by Istio, not by you")
		default:
			f.errorf(k, "unknown field of a Kubernetes object%s", didYouMean(k, []string{"apiVersion", "kind", "metadata", "spec"}))
		}
	}
	if av, _ := v["apiVersion"].(string); av != EnvoyFilterAPIVersion {
		f.errorf("apiVersion", "%q: want %q (Istio 1.28 serves EnvoyFilter as v1alpha3 only)", av, EnvoyFilterAPIVersion)
	}
	ef := &EnvoyFilter{Spec: &networkingv1alpha3.EnvoyFilter{}}
	meta, ok := v["metadata"].(map[string]any)
	if !ok {
		f.errorf("metadata", "required: an object with at least a name")
	}
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		if !objectMetaFields[k] {
			f.errorf(joinPath("metadata", k), "unknown field of a Kubernetes ObjectMeta%s", didYouMean(k, sortedKeys(objectMetaFields)))
		}
	}
	ef.Name, _ = meta["name"].(string)
	ef.Namespace, _ = meta["namespace"].(string)
	switch {
	case ef.Name == "":
		f.errorf("metadata.name", "required")
	case len(ef.Name) > 253 || !dns1123Subdomain.MatchString(ef.Name):
		f.errorf("metadata.name", "%q: not a DNS-1123 subdomain (lower case letters, digits, '-' and '.')", ef.Name)
	}
	if ef.Namespace != "" && (len(ef.Namespace) > 63 || !dns1123Label.MatchString(ef.Namespace)) {
		f.errorf("metadata.namespace", "%q: not a DNS-1123 label", ef.Namespace)
	}
	if labels, ok := meta["labels"].(map[string]any); ok {
		ef.Labels = map[string]string{}
		for k, lv := range labels {
			s, ok := lv.(string)
			if !ok {
				f.errorf(joinPath("metadata.labels", k), "want a string, got %s", config.JSONKind(lv))
			}
			ef.Labels[k] = s
		}
	}
	use.namespace = ef.Namespace
	use.name = ef.Name

	spec, ok := v["spec"]
	if !ok {
		f.errorf("spec", "required")
		return nil, use, f
	}
	var errs []error
	jsonNamesOnly(ef.Spec.ProtoReflect().Descriptor(), spec, "spec", &errs)
	if len(errs) > 0 {
		f.Errors = append(f.Errors, errs...)
		return nil, use, f
	}
	if err := decodeStrict(spec, ef.Spec, "spec", istiod); err != nil {
		f.Errors = append(f.Errors, unjoin(err)...)
		return nil, use, f
	}
	use.selector = ef.Spec.GetWorkloadSelector().GetLabels()
	if len(ef.Spec.GetTargetRefs()) > 0 && ef.Spec.GetWorkloadSelector() != nil {
		f.errorf("spec", "at most one of workloadSelector and targetRefs")
	}
	for _, k := range slices.Sorted(maps.Keys(use.selector)) {
		if k == "" || strings.Contains(k, "*") || strings.Contains(use.selector[k], "*") {
			f.errorf(joinPath("spec.workloadSelector.labels", k), "no wildcards and no empty keys")
		}
	}

	patches, _ := spec.(map[string]any)["configPatches"].([]any)
	for i, cp := range ef.Spec.GetConfigPatches() {
		cpath := indexPath("spec.configPatches", i)
		var raw any
		if i < len(patches) {
			if p, ok := patches[i].(map[string]any)["patch"].(map[string]any); ok {
				raw = p["value"]
			}
		}
		checkPatch(cp, raw, cpath, &use, &f)
	}
	return ef, use, f
}

// jsonNamesOnly reports keys of the spec that are proto (snake_case)
// names: protojson would take them, but the Kubernetes API server prunes
// whatever the CRD's schema, in camelCase, does not name. Patch values are
// Structs, left as they are.
func jsonNamesOnly(md protoreflect.MessageDescriptor, v any, path string, errs *[]error) {
	obj, ok := v.(map[string]any)
	if !ok || strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			if fd = md.Fields().ByTextName(k); fd != nil {
				*errs = append(*errs, errorf(joinPath(path, k), "write %q: the Kubernetes API server drops fields its CRD schema does not name", fd.JSONName()))
			}
			continue
		}
		if fd.Message() == nil || fd.IsMap() {
			continue
		}
		if fd.IsList() {
			if l, ok := obj[k].([]any); ok {
				for i, e := range l {
					jsonNamesOnly(fd.Message(), e, indexPath(joinPath(path, k), i), errs)
				}
			}
			continue
		}
		jsonNamesOnly(fd.Message(), obj[k], joinPath(path, k), errs)
	}
}

// patchObject is the Envoy type istiod builds a patch value into
// (istio.io/istio pkg/config/xds BuildXDSObjectFromStruct).
func patchObject(applyTo networkingv1alpha3.EnvoyFilter_ApplyTo) proto.Message {
	switch applyTo {
	case networkingv1alpha3.EnvoyFilter_CLUSTER:
		return &clusterv3.Cluster{}
	case networkingv1alpha3.EnvoyFilter_LISTENER:
		return &listenerv3.Listener{}
	case networkingv1alpha3.EnvoyFilter_ROUTE_CONFIGURATION:
		return &routev3.RouteConfiguration{}
	case networkingv1alpha3.EnvoyFilter_FILTER_CHAIN:
		return &listenerv3.FilterChain{}
	case networkingv1alpha3.EnvoyFilter_HTTP_FILTER:
		return &hcmv3.HttpFilter{}
	case networkingv1alpha3.EnvoyFilter_NETWORK_FILTER:
		return &listenerv3.Filter{}
	case networkingv1alpha3.EnvoyFilter_VIRTUAL_HOST:
		return &routev3.VirtualHost{}
	case networkingv1alpha3.EnvoyFilter_HTTP_ROUTE:
		return &routev3.Route{}
	case networkingv1alpha3.EnvoyFilter_EXTENSION_CONFIG:
		return &corev3.TypedExtensionConfig{}
	case networkingv1alpha3.EnvoyFilter_BOOTSTRAP:
		return &bootstrapv3.Bootstrap{}
	case networkingv1alpha3.EnvoyFilter_LISTENER_FILTER:
		return &listenerv3.ListenerFilter{}
	}
	return nil
}

func checkPatch(cp *networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch, raw any, cpath string, use *istioUse, f *Findings) {
	// istiod's own rules.
	if cp.GetApplyTo() == networkingv1alpha3.EnvoyFilter_INVALID {
		f.errorf(joinPath(cpath, "applyTo"), "required")
		return
	}
	op := cp.GetPatch().GetOperation()
	switch {
	case cp.GetPatch() == nil:
		f.errorf(joinPath(cpath, "patch"), "required")
		return
	case op == networkingv1alpha3.EnvoyFilter_Patch_INVALID:
		f.errorf(joinPath(cpath, "patch.operation"), "required")
		return
	case op != networkingv1alpha3.EnvoyFilter_Patch_REMOVE && cp.GetPatch().GetValue() == nil:
		f.errorf(joinPath(cpath, "patch.value"), "required for %s", op)
		return
	}
	match := cp.GetMatch()
	if pv := match.GetProxy().GetProxyVersion(); pv != "" {
		if _, err := regexp.Compile(pv); err != nil {
			f.errorf(joinPath(cpath, "match.proxy.proxyVersion"), "%q: %v", pv, err)
		}
	}
	lm := match.GetListener()
	switch cp.GetApplyTo() {
	case networkingv1alpha3.EnvoyFilter_LISTENER, networkingv1alpha3.EnvoyFilter_FILTER_CHAIN,
		networkingv1alpha3.EnvoyFilter_NETWORK_FILTER, networkingv1alpha3.EnvoyFilter_HTTP_FILTER:
		if match.GetObjectTypes() != nil && lm == nil {
			f.errorf(joinPath(cpath, "match"), "applyTo %s needs a listener match", cp.GetApplyTo())
		}
		if fm := lm.GetFilterChain().GetFilter(); fm != nil && fm.GetName() == "" {
			f.errorf(joinPath(cpath, "match.listener.filterChain.filter.name"), "required: a filter match needs a name")
		}
		if fm := lm.GetFilterChain().GetFilter(); fm.GetSubFilter() != nil && cp.GetApplyTo() != networkingv1alpha3.EnvoyFilter_HTTP_FILTER {
			f.errorf(joinPath(cpath, "match.listener.filterChain.filter.subFilter"), "only with applyTo HTTP_FILTER")
		}
	case networkingv1alpha3.EnvoyFilter_CLUSTER:
		if match.GetObjectTypes() != nil && match.GetCluster() == nil {
			f.errorf(joinPath(cpath, "match"), "applyTo CLUSTER needs a cluster match")
		}
	case networkingv1alpha3.EnvoyFilter_ROUTE_CONFIGURATION, networkingv1alpha3.EnvoyFilter_VIRTUAL_HOST, networkingv1alpha3.EnvoyFilter_HTTP_ROUTE:
		if match.GetObjectTypes() != nil && match.GetRouteConfiguration() == nil {
			f.errorf(joinPath(cpath, "match"), "applyTo %s needs a routeConfiguration match", cp.GetApplyTo())
		}
	}
	if raw == nil {
		return
	}

	// The value, as istiod builds it (it rejects unknown Any types even
	// when lenient) and Envoy loads it.
	vpath := joinPath(cpath, "patch.value")
	obj := patchObject(cp.GetApplyTo())
	if err := decodeStrict(raw, obj, vpath, istiod); err != nil {
		f.Errors = append(f.Errors, unjoin(err)...)
		return
	}
	if op != networkingv1alpha3.EnvoyFilter_Patch_MERGE {
		// A MERGE value is a fragment: required fields may be missing.
		f.Errors = append(f.Errors, validateTree(obj, vpath)...)
	}

	// Breeze's rules.
	var found []breezeFilter
	switch o := obj.(type) {
	case *listenerv3.Filter:
		b, ok := checkGolangFilter(o, vpath, true, f)
		if !ok {
			break
		}
		found = append(found, b)
		checkBreezePatch(cp, cpath, f)
	case *listenerv3.FilterChain:
		found = checkFilterChain(o.GetFilters(), joinPath(vpath, "filters"), f)
	case *listenerv3.Listener:
		for j, fc := range o.GetFilterChains() {
			found = append(found, checkFilterChain(fc.GetFilters(), joinPath(indexPath(joinPath(vpath, "filter_chains"), j), "filters"), f)...)
		}
	case *clusterv3.Cluster:
		if o.GetName() == PlainTextCluster {
			if op != networkingv1alpha3.EnvoyFilter_Patch_MERGE {
				checkPlainText(o, vpath, f)
			}
			if op == networkingv1alpha3.EnvoyFilter_Patch_ADD {
				use.plainTexts = append(use.plainTexts, istioPlainText{path: cpath, cluster: o})
			}
		}
	}
	inbound := match.GetContext() == networkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND
	for _, b := range found {
		pv := match.GetProxy().GetProxyVersion()
		if pv == "" {
			f.warnf(joinPath(cpath, "match.proxy.proxyVersion"), "unset: pin Breeze patches to the Istio release whose Envoy the plugin was built for: %s", pinExamples())
		}
		if inbound && b.proxy != nil {
			checkLoopbackEndpoints(b, f)
			checkIdentityReach(b, pv, f)
		}
		use.breezes = append(use.breezes, istioBreeze{path: cpath, inbound: inbound, proxyVersion: pv,
			goLoopback: b.proxy.GetUpstreamConnect() == breezev1.UpstreamConnect_GO_LOOPBACK})
	}
}

// checkBreezePatch checks where a NETWORK_FILTER patch puts the Go filter:
// in place of tcp_proxy (the terminal filter of Istio's TCP chains), on
// one service's listener or one inbound port.
func checkBreezePatch(cp *networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch, cpath string, f *Findings) {
	lm := cp.GetMatch().GetListener()
	if cp.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_REPLACE || lm.GetFilterChain().GetFilter().GetName() != TCPProxyFilterName {
		f.errorf(cpath, "the Go filter must REPLACE %s (match.listener.filterChain.filter.name): it is terminal, and any other placement leaves tcp_proxy in front of it or after it", TCPProxyFilterName)
	}
	switch cp.GetMatch().GetContext() {
	case networkingv1alpha3.EnvoyFilter_SIDECAR_OUTBOUND:
		switch name := lm.GetName(); {
		case name == "":
			f.errorf(joinPath(cpath, "match.listener.name"), "required: without it tcp_proxy is replaced on every outbound TCP listener of the pod, passthrough included")
		case !outboundListener.MatchString(name):
			f.warnf(joinPath(cpath, "match.listener.name"), "%q: Istio names a service's outbound listener <vip>_<port>, e.g. 10.96.0.20_20880", name)
		}
	case networkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND:
		if lm.GetName() != virtualInbound {
			f.errorf(joinPath(cpath, "match.listener.name"), "%q: the sidecar's inbound listener is %q", lm.GetName(), virtualInbound)
		}
		if lm.GetFilterChain().GetDestinationPort() == 0 {
			f.errorf(joinPath(cpath, "match.listener.filterChain.destinationPort"), "required: the target (container) port; without it every inbound TCP port gets Breeze")
		}
	case networkingv1alpha3.EnvoyFilter_GATEWAY:
		if lm.GetName() == "" && lm.GetPortNumber() == 0 {
			f.errorf(joinPath(cpath, "match.listener.portNumber"), "required: the port of the Gateway's TCP server (or match.listener.name 0.0.0.0_<port>); without it tcp_proxy is replaced on every TCP listener of the gateway")
		}
	default:
		f.errorf(joinPath(cpath, "match.context"), "%s: say SIDECAR_OUTBOUND, SIDECAR_INBOUND or GATEWAY: the two directions need different Breeze configs", cp.GetMatch().GetContext())
	}
}

// checkIstioSet checks what holds only across EnvoyFilters: each Breeze
// patch has a plainText cluster on every pod it applies to (but one that
// dials with the Go socket, GO_LOOPBACK), and no pod gets two different
// plainText clusters, nor an mTLS one under an inbound Breeze that dials
// the local app through it. Each error goes to
// add with the EnvoyFilter it names.
func checkIstioSet(uses []istioUse, add func(u *istioUse, e error)) {
	// Two EnvoyFilters of one name in one namespace are one object: the
	// second apply replaces the first, silently. Rendering one service
	// description per port of a multi-port Service without a name of
	// its own does exactly that (the name defaults to the host's first
	// label).
	for i := range uses {
		u := &uses[i]
		for j := range i {
			if o := &uses[j]; u.name != "" && o.name == u.name && o.namespace == u.namespace {
				add(u, &Error{Doc: u.doc, Path: "metadata.name", Msg: fmt.Sprintf(
					"%q: %s has the same name in namespace %q, and the one applied last replaces the other: give each its own name (for one description per port of a Service, name: <service>-<port>)", u.name, o.doc, u.namespace)})
				break
			}
		}
	}
	for _, u := range uses {
		for _, b := range u.breezes {
			if b.goLoopback {
				continue // it never dials through plainText
			}
			covered := false
			for _, o := range uses {
				if !sameScope(u.namespace, o.namespace) || !subset(o.selector, u.selector) {
					continue
				}
				covered = covered || len(o.plainTexts) > 0
			}
			if !covered {
				add(&u, &Error{Doc: u.doc, Path: b.path, Msg: fmt.Sprintf(
					"no %q cluster for these workloads: add one (applyTo CLUSTER, operation ADD, type ORIGINAL_DST, lb_policy CLUSTER_PROVIDED) in an EnvoyFilter whose workloadSelector covers this one's; without it every Breeze upstream connection fails with \"cluster not found\"", PlainTextCluster)})
			}
		}
	}
	type pt struct {
		u *istioUse
		p istioPlainText
	}
	var all []pt
	for i := range uses {
		for _, p := range uses[i].plainTexts {
			all = append(all, pt{&uses[i], p})
		}
	}
	for i, a := range all {
		for _, b := range all[i+1:] {
			if !sameScope(a.u.namespace, b.u.namespace) || disjoint(a.u.selector, b.u.selector) || proto.Equal(a.p.cluster, b.p.cluster) {
				continue
			}
			add(b.u, &Error{Doc: b.u.doc, Path: b.p.path, Msg: fmt.Sprintf(
				"a different %q cluster than %s %s may land on the same pods (istiod keeps only the first): give one pod one plainText, or make the workloadSelectors disjoint", PlainTextCluster, a.u.doc, a.p.path)})
		}
	}
	for _, u := range uses {
		for _, b := range u.breezes {
			if !b.inbound || b.goLoopback {
				continue
			}
			for _, o := range all {
				if sameScope(u.namespace, o.u.namespace) && !disjoint(u.selector, o.u.selector) && isIstioMTLS(o.p.cluster) {
					add(&u, &Error{Doc: u.doc, Path: b.path, Msg: fmt.Sprintf(
						"this inbound Breeze dials the local app at 127.0.0.1 through %q, but %s %s gives the same pods a plainText with Istio mTLS: the app would get a TLS handshake. Envoy's Go filter has one upstream cluster per pod: give this Breeze upstream_connect: GO_LOOPBACK (the Go runtime's own socket; breeze render does) and no plainText of its own", PlainTextCluster, o.u.doc, o.p.path)})
				}
			}
		}
	}
}

// pinExamples is the proxyVersion of every release Breeze is built for:
// `"^1\\.28\\." (Istio 1.28: Envoy 1.36) or ...`.
func pinExamples() string {
	s := make([]string, len(release.All))
	for i, r := range release.All {
		s[i] = fmt.Sprintf("%q (Istio %s: Envoy %s)", r.ProxyVersion(), r.Istio, r.Envoy)
	}
	return strings.Join(s, " or ")
}

// checkPins checks the proxyVersion of every Breeze patch: breeze.so is
// built for one Envoy Go API, so a patch must select the sidecars of a
// release Breeze is built for; with want, that release's (an error when it
// does not, a warning when it selects another release's sidecars too: they
// need their own build at the same library_path). An unset pin has its
// warning from checkPatch. Findings go to add, with the EnvoyFilter they
// name.
func checkPins(uses []istioUse, want *release.Release, add func(u *istioUse, e error, warning bool)) {
	for i := range uses {
		u := &uses[i]
		for _, b := range u.breezes {
			pv := b.proxyVersion
			if pv == "" {
				continue
			}
			if _, err := regexp.Compile(pv); err != nil {
				continue // checkPatch reported it
			}
			path := joinPath(b.path, "match.proxy.proxyVersion")
			var selects []release.Release
			for _, r := range release.All {
				if r.ProxyVersionMatches(pv) {
					selects = append(selects, r)
				}
			}
			switch {
			case want != nil && !want.ProxyVersionMatches(pv):
				add(u, &Error{Doc: u.doc, Path: path, Msg: fmt.Sprintf(
					"%q does not select Istio %s sidecars, which these files are checked for (--istio %s): pin %q", pv, want.Istio, want.Istio, want.ProxyVersion())}, false)
			case len(selects) == 0:
				add(u, &Error{Doc: u.doc, Path: path, Msg: fmt.Sprintf(
					"%q selects the sidecars of no Istio release Breeze is built for (%s): breeze.so works only in the Envoy it was built for; pin %s", pv, release.Names(), pinExamples())}, false)
			case want != nil && len(selects) > 1:
				var others []string
				for _, r := range selects {
					if r != *want {
						others = append(others, r.String())
					}
				}
				add(u, &Error{Doc: u.doc, Path: path, Msg: fmt.Sprintf(
					"%q also selects the sidecars of %s: each needs breeze.so built for its own Envoy at this library_path; pin %q to patch Istio %s's only", pv, strings.Join(others, ", "), want.ProxyVersion(), want.Istio)}, true)
			}
		}
	}
}

// sameScope reports whether EnvoyFilters in namespaces a and b can apply to
// the same pod.
func sameScope(a, b string) bool {
	return a == b || a == IstioRootNamespace || b == IstioRootNamespace
}

// subset reports whether every pod selector b selects is selected by a.
func subset(a, b map[string]string) bool {
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// disjoint reports whether no pod can match both selectors.
func disjoint(a, b map[string]string) bool {
	for k, v := range a {
		if bv, ok := b[k]; ok && bv != v {
			return true
		}
	}
	return false
}
