package istiod

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	// The codecs and filters a service description may name: Render
	// validates the plugin configs with them, as breeze render does.
	_ "github.com/breeze-mesh/breeze/builtin"
	"github.com/breeze-mesh/breeze/deploy"
)

// virtualInbound is the sidecar's inbound listener.
const virtualInbound = "virtualInbound"

// Placement is where one direction of a Breeze service must be in the
// sidecars, and what must be there: the where from the service description
// (the outbound listener <vip>_<port>, the inbound chains of the target
// port, the pods its selectors pick), the what from deploy.Render's
// patches.
type Placement struct {
	Service   string
	Direction deploy.Direction
	// Namespace, Selector and ProxyVersion pick the sidecars: those of
	// Namespace (every namespace for istio-system) whose labels include
	// Selector, whose Istio version ProxyVersion matches ("": any).
	Namespace    string
	Selector     map[string]string
	ProxyVersion string
	// Listener and Chains: where tcp_proxy gives way to Before and Breeze.
	Listener string
	Chains   ChainMatch
	// Before: network filters in front of Breeze (RBAC, set_filter_state),
	// in order; Breeze: the Go filter; PlainText: the cluster it dials
	// through.
	Before    []*listenerv3.Filter
	Breeze    *listenerv3.Filter
	PlainText *clusterv3.Cluster
}

func (p Placement) String() string { return p.Service + " " + string(p.Direction) }

// AppliesTo reports whether istiod must patch w's sidecar for p: a
// gateway placement applies to gateway proxies only (context GATEWAY), a
// sidecar's to sidecars only.
func (p Placement) AppliesTo(w Workload) bool {
	if w.Router != (p.Direction == deploy.Gateway) {
		return false
	}
	if p.Namespace != w.Namespace && p.Namespace != deploy.IstioRootNamespace {
		return false
	}
	for k, v := range p.Selector {
		if got, ok := w.Labels[k]; !ok || got != v {
			return false
		}
	}
	if p.ProxyVersion == "" {
		return true
	}
	re, err := regexp.Compile(p.ProxyVersion)
	return err == nil && re.MatchString(w.istioVersion())
}

// Expect is where deploy puts each direction of each service, and what:
// the service descriptions resolved and rendered as `breeze render` does.
func Expect(services ...*deploy.Service) ([]Placement, error) {
	var out []Placement
	for _, s := range services {
		r, err := deploy.Resolve(s)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Host, err)
		}
		efs, err := deploy.Render(s)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Host, err)
		}
		for _, ef := range efs {
			p, err := placementOf(r, ef)
			if err != nil {
				return nil, fmt.Errorf("service %s: EnvoyFilter %s: %w", s.Host, ef.Name, err)
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// placementOf reads one rendered EnvoyFilter: its direction from its
// patches' context, where it goes from the description r, what it puts
// there from its patch values.
func placementOf(r *deploy.Service, ef *deploy.EnvoyFilter) (Placement, error) {
	p := Placement{
		Service: r.Name, Namespace: ef.Namespace, ProxyVersion: r.ProxyVersion,
		Selector: ef.Spec.GetWorkloadSelector().GetLabels(),
	}
	for i, cp := range ef.Spec.GetConfigPatches() {
		switch cp.GetMatch().GetContext() {
		case networkingv1alpha3.EnvoyFilter_SIDECAR_OUTBOUND:
			p.Direction = deploy.Outbound
			p.Listener = fmt.Sprintf("%s_%d", r.VIP, r.Port)
		case networkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND:
			p.Direction = deploy.Inbound
			p.Listener = virtualInbound
			p.Chains = ChainMatch{DestinationPort: r.TargetPort}
		case networkingv1alpha3.EnvoyFilter_GATEWAY:
			// istiod's name for the listener of a Gateway's TCP server
			// (bound to no address), which the patch matches by port.
			p.Direction = deploy.Gateway
			p.Listener = fmt.Sprintf("0.0.0.0_%d", r.Port)
		default:
			return p, fmt.Errorf("configPatches[%d]: context %s: not a sidecar's nor a gateway's", i, cp.GetMatch().GetContext())
		}
		op := cp.GetPatch().GetOperation()
		switch cp.GetApplyTo() {
		case networkingv1alpha3.EnvoyFilter_NETWORK_FILTER:
			f := &listenerv3.Filter{}
			if err := fromStruct(cp.GetPatch().GetValue(), f); err != nil {
				return p, fmt.Errorf("configPatches[%d]: %w", i, err)
			}
			switch op {
			case networkingv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE:
				p.Before = append(p.Before, f)
			case networkingv1alpha3.EnvoyFilter_Patch_REPLACE:
				p.Breeze = f
			default:
				return p, fmt.Errorf("configPatches[%d]: NETWORK_FILTER %s: not what deploy renders", i, op)
			}
		case networkingv1alpha3.EnvoyFilter_CLUSTER:
			c := &clusterv3.Cluster{}
			if err := fromStruct(cp.GetPatch().GetValue(), c); err != nil {
				return p, fmt.Errorf("configPatches[%d]: %w", i, err)
			}
			p.PlainText = c
		default:
			return p, fmt.Errorf("configPatches[%d]: applyTo %s: not what deploy renders", i, cp.GetApplyTo())
		}
	}
	if p.Breeze == nil {
		return p, fmt.Errorf("no patch replacing tcp_proxy")
	}
	return p, nil
}

// fromStruct reads a patch value as the Envoy message istiod builds of it.
func fromStruct(v *structpb.Struct, m proto.Message) error {
	js, err := protojson.Marshal(v)
	if err != nil {
		return err
	}
	return protojson.Unmarshal(js, m)
}

// Change is one place where istiod's config differs from the same mesh's
// without the EnvoyFilters, as it must.
type Change struct {
	Workload Workload
	// How: "push" (the generators on the PushContext) or "ads" (over an
	// ADS stream).
	How       string
	Placement string
	Listener  string
	Chain     string
	// Filters is the chain's network filters, in order, with Breeze's
	// plugin config summed up.
	Filters []string
}

func (c Change) String() string {
	return fmt.Sprintf("%s [%s] %s: %s %s: %s", c.Workload, c.How, c.Placement, c.Listener, c.Chain, strings.Join(c.Filters, " → "))
}

// CheckPlacement is the proof that EnvoyFilters put Breeze where, and only
// where, services say: istiod generates the sidecar config of each
// workload twice, from in alone (the baseline) and from in plus
// envoyFilters, push-built and over ADS; each listener and cluster of the
// second must equal the baseline's with exactly the placements of services
// applied (tcp_proxy replaced by the Before filters and Breeze on the
// chains each selects, the plainText cluster added). A placement whose
// listener or chain the baseline lacks is an error: it would prove
// nothing. Workloads nil: every Pod of in.Kubernetes (WorkloadsOf). It
// returns what changed, for the test log.
func CheckPlacement(t testing.TB, in Inputs, envoyFilters string, workloads []Workload, services []*deploy.Service) []Change {
	t.Helper()
	if workloads == nil {
		var err error
		if workloads, err = WorkloadsOf(in.Kubernetes); err != nil {
			t.Fatalf("the Pods of the Kubernetes objects: %v", err)
		}
	}
	placements, err := Expect(services...)
	if err != nil {
		t.Fatalf("rendering the expected placements: %v", err)
	}
	base := NewMesh(t, in)
	patched := NewMesh(t, Inputs{Kubernetes: in.Kubernetes, Istio: in.Istio + "\n---\n" + envoyFilters})
	var changes []Change
	for _, w := range workloads {
		var ps []Placement
		for _, p := range placements {
			if p.AppliesTo(w) {
				ps = append(ps, p)
			}
		}
		for _, how := range []string{"push", "ads"} {
			var b, g Sidecar
			if how == "push" {
				b, g = base.Sidecar(w), patched.Sidecar(w)
			} else {
				b, g = base.SidecarOverADS(t, w), patched.SidecarOverADS(t, w)
			}
			changes = append(changes, compareSidecar(t, w, how, b, g, ps)...)
		}
	}
	return changes
}

// compareSidecar checks got against base with ps applied.
func compareSidecar(t testing.TB, w Workload, how string, base, got Sidecar, ps []Placement) []Change {
	t.Helper()
	where := fmt.Sprintf("%s [%s]", w, how)
	want := Sidecar{Listeners: make([]*listenerv3.Listener, len(base.Listeners)), Clusters: base.Clusters}
	copy(want.Listeners, base.Listeners)
	var changes []Change
	var plainText *clusterv3.Cluster
	for _, p := range ps {
		i := listenerIndex(want.Listeners, p.Listener)
		if i < 0 {
			t.Errorf("%s: %s: istiod generates no listener %s for this sidecar without the EnvoyFilters, so there is nothing to patch (listeners: %s)",
				where, p, p.Listener, listenerNames(base.Listeners))
			continue
		}
		l, cs, err := apply(want.Listeners[i], p)
		if err != nil {
			t.Errorf("%s: %s: %v", where, p, err)
			continue
		}
		want.Listeners[i] = l
		for _, c := range cs {
			c.Workload, c.How = w, how
			changes = append(changes, c)
		}
		if p.PlainText != nil {
			switch {
			case plainText == nil:
				plainText = p.PlainText
			case !proto.Equal(plainText, p.PlainText):
				t.Errorf("%s: %s: its plainText cluster differs from another service's on the same sidecar, and istiod keeps only the first: deploy's checks refuse this", where, p)
			}
		}
	}
	if plainText != nil {
		if base.Cluster(deploy.PlainTextCluster) != nil {
			t.Errorf("%s: the sidecar has a %s cluster without the EnvoyFilters", where, deploy.PlainTextCluster)
		}
		want.Clusters = append(append([]*clusterv3.Cluster(nil), base.Clusters...), plainText)
	}
	compareByName(t, where+": listener", want.Listeners, got.Listeners)
	compareByName(t, where+": cluster", want.Clusters, got.Clusters)
	return changes
}

// apply returns l with p applied: on each chain p.Chains selects that has
// tcp_proxy, tcp_proxy replaced by p.Before and p.Breeze.
func apply(l *listenerv3.Listener, p Placement) (*listenerv3.Listener, []Change, error) {
	out := proto.CloneOf(l)
	var changes []Change
	for i, fc := range out.GetFilterChains() {
		if !p.Chains.matches(fc) {
			continue
		}
		at := -1
		for j, f := range fc.GetFilters() {
			if f.GetName() == deploy.TCPProxyFilterName {
				at = j
			}
		}
		if at < 0 {
			continue
		}
		var filters []*listenerv3.Filter
		filters = append(filters, fc.GetFilters()[:at]...)
		for _, b := range p.Before {
			filters = append(filters, proto.CloneOf(b))
		}
		filters = append(filters, proto.CloneOf(p.Breeze))
		filters = append(filters, fc.GetFilters()[at+1:]...)
		fc.Filters = filters
		changes = append(changes, Change{Placement: p.String(), Listener: l.GetName(), Chain: chainName(i, fc), Filters: summarize(filters)})
	}
	if len(changes) == 0 {
		return nil, nil, fmt.Errorf("listener %s has no chain with %s for %s: the EnvoyFilter's patch would match nothing (chains: %s)",
			l.GetName(), deploy.TCPProxyFilterName, p.Chains, chainsSummary(l))
	}
	return out, changes, nil
}

// summarize names each filter; Breeze's with its stat prefix and codec,
// RBAC's with its stat prefix and policies.
func summarize(fs []*listenerv3.Filter) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.GetName()
		switch f.GetName() {
		case deploy.GolangFilterName:
			if _, pc, err := decodeBreeze(f); err == nil {
				out[i] += fmt.Sprintf("(breeze %s, %s)", pc.GetStatPrefix(), pc.GetCodec())
			}
		case deploy.NetworkRBACFilterName:
			if r, err := NetworkRBAC(f); err == nil {
				out[i] += fmt.Sprintf("(%s %s %v)", r.GetStatPrefix(), r.GetRules().GetAction(), sortedKeys(r.GetRules().GetPolicies()))
			}
		}
	}
	return out
}

func chainsSummary(l *listenerv3.Listener) string {
	var parts []string
	for i, fc := range l.GetFilterChains() {
		parts = append(parts, chainName(i, fc)+": "+strings.Join(NetworkFilterNames(fc), ", "))
	}
	return strings.Join(parts, "; ")
}

func listenerIndex(ls []*listenerv3.Listener, name string) int {
	for i, l := range ls {
		if l.GetName() == name {
			return i
		}
	}
	return -1
}

func listenerNames(ls []*listenerv3.Listener) string {
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = l.GetName()
	}
	return strings.Join(names, ", ")
}

// named is a listener or a cluster.
type named interface {
	proto.Message
	GetName() string
}

// compareByName checks that got has exactly want's resources, each equal
// to want's of its name (compared in protojson form: Any contents decoded,
// so that map order in their bytes does not count).
func compareByName[M named](t testing.TB, what string, want, got []M) {
	t.Helper()
	wantBy, err := byName(want)
	if err != nil {
		t.Errorf("%s (expected): %v", what, err)
		return
	}
	gotBy, err := byName(got)
	if err != nil {
		t.Errorf("%s (istiod's): %v", what, err)
		return
	}
	for _, name := range sortedKeys(wantBy) {
		g, ok := gotBy[name]
		if !ok {
			t.Errorf("%s %s: missing from istiod's config", what, name)
			continue
		}
		if d := cmp.Diff(wantBy[name], g); d != "" {
			t.Errorf("%s %s: istiod's differs from the baseline with the placements applied (-want +got):\n%s", what, name, d)
		}
	}
	for _, name := range sortedKeys(gotBy) {
		if _, ok := wantBy[name]; !ok {
			t.Errorf("%s %s: in istiod's config, not in the baseline with the placements applied", what, name)
		}
	}
}

// byName is each resource in protojson form, by name; an error for a
// duplicate name.
func byName[M named](ms []M) (map[string]any, error) {
	out := map[string]any{}
	for _, m := range ms {
		if _, dup := out[m.GetName()]; dup {
			return nil, fmt.Errorf("%s: twice", m.GetName())
		}
		js, err := protojson.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.GetName(), err)
		}
		var v any
		if err := json.Unmarshal(js, &v); err != nil {
			return nil, err
		}
		out[m.GetName()] = v
	}
	return out, nil
}
