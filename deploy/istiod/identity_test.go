package istiod

import (
	"slices"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/deploy"
	"github.com/breeze-mesh/breeze/filters/authz"
	authzv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/authz/v1"
)

// greeterWithAuthz is greeter's inbound side on Istio 1.28 with an authz
// filter: a DENY on the caller's namespace and an ALLOW on its principal
// (caller-only: rendered as Envoy's network RBAC, Go sees no principal on
// Envoy 1.36), and a DENY on the method (kept in Breeze).
const greeterWithAuthz = `host: greeter.demo.svc.cluster.local
istio: "1.28"
port: 20880
protocol: dubbo
direction: inbound
selector: {app: greeter}
inbound_filters:
- name: authz
  typed_config:
    '@type': type.googleapis.com/breeze.filters.authz.v1.Authz
    policies:
    - {name: no-legacy, action: DENY, rules: [{from: [{source: {namespaces: [legacy]}}]}]}
    - {name: billing, rules: [{from: [{source: {principals: [cluster.local/ns/pay/sa/billing]}}]}]}
    - {name: no-delete, action: DENY, rules: [{to: [{operation: {methods: ["Delete*"]}}]}]}
`

// istioAuthorizationPolicy is an AuthorizationPolicy of Istio's own on the
// same pods: istiod puts its own network RBAC on their TCP chains.
const istioAuthorizationPolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: greeter-from-demo, namespace: demo}
spec:
  selector: {matchLabels: {app: greeter}}
  action: ALLOW
  rules:
  - from: [{source: {namespaces: [demo, pay]}}]
`

// Issue 19's identity on Istio 1.28.3: the RBAC filters deploy renders for
// caller-only policies stand in front of Breeze on both inbound chains of
// the port (mTLS and plain text), DENY then ALLOW, after Istio's own RBAC,
// which is left as istiod made it (one, with the AuthorizationPolicy's
// rules only, not doubled nor merged with ours); Breeze keeps the policy on
// the method only.
func TestIdentityFiltersInFrontOfBreezeOnIstio128(t *testing.T) {
	s, err := deploy.ParseService([]byte(greeterWithAuthz))
	if err != nil {
		t.Fatal(err)
	}
	in := Inputs{Kubernetes: readFile(t, "testdata/mesh.yaml"), Istio: istioAuthorizationPolicy}
	efs := render(t, s)
	changes := CheckPlacement(t, in, efs, []Workload{greeterPod, consumer}, []*deploy.Service{s})
	logChanges(t, changes)
	if got := changedPlacements(changes); !slices.Equal(got[greeterPod.Name], []string{"greeter inbound"}) || len(got[consumer.Name]) > 0 {
		t.Errorf("Breeze placed %v, want greeter inbound on greeter-0 only", got)
	}

	m := NewMesh(t, Inputs{Kubernetes: in.Kubernetes, Istio: in.Istio + "\n---\n" + efs})
	vi := m.SidecarOverADS(t, greeterPod).Listener(virtualInbound)
	bs, err := BreezeFilterOn(vi, ChainMatch{DestinationPort: 20880})
	if err != nil {
		t.Fatal(err)
	}
	var transports []string
	for _, b := range bs {
		fc := vi.GetFilterChains()[b.Chain]
		transports = append(transports, fc.GetFilterChainMatch().GetTransportProtocol())
		filters := fc.GetFilters()
		t.Logf("greeter-0 virtualInbound %s: %s", b.ChainName, strings.Join(summarize(filters), " → "))

		// Which RBAC filter holds what: istiod's holds the
		// AuthorizationPolicy, ours the description's caller-only
		// policies, each in one filter.
		var order []string
		for _, f := range filters {
			if f.GetName() != deploy.NetworkRBACFilterName {
				continue
			}
			r, err := NetworkRBAC(f)
			if err != nil {
				t.Fatal(err)
			}
			policies := sortedKeys(r.GetRules().GetPolicies())
			switch {
			case strings.HasPrefix(r.GetStatPrefix(), "breeze_authz_deny."):
				order = append(order, "breeze deny "+strings.Join(policies, ","))
			case strings.HasPrefix(r.GetStatPrefix(), "breeze_authz_allow."):
				order = append(order, "breeze allow "+strings.Join(policies, ","))
			case len(policies) == 1 && strings.Contains(policies[0], "greeter-from-demo"):
				order = append(order, "istio "+r.GetRules().GetAction().String())
			default:
				order = append(order, "unknown rbac "+r.GetStatPrefix()+" "+strings.Join(policies, ","))
			}
		}
		want := []string{"istio ALLOW", "breeze deny no-legacy", "breeze allow billing"}
		if !slices.Equal(order, want) {
			t.Errorf("greeter-0 %s: RBAC filters %q, want %q", b.ChainName, order, want)
		}
		if last := filters[len(filters)-1].GetName(); last != deploy.GolangFilterName || len(b.Before) != len(filters)-1 {
			t.Errorf("greeter-0 %s: Breeze at %d of %d filters (last %s), want it last", b.ChainName, len(b.Before), len(filters), last)
		}
		// Ours right in front of Breeze: nothing of Istio's between them.
		if n := len(filters); n < 3 || !strings.HasPrefix(summarize(filters[n-3 : n-2])[0], deploy.NetworkRBACFilterName+"(breeze_authz_deny.") ||
			!strings.HasPrefix(summarize(filters[n-2 : n-1])[0], deploy.NetworkRBACFilterName+"(breeze_authz_allow.") {
			t.Errorf("greeter-0 %s: want Breeze's deny and allow RBAC right before Breeze, got %v", b.ChainName, summarize(filters))
		}

		// Breeze keeps the policy on the method, and only it.
		var kept []string
		for _, f := range b.Proxy.GetFilters() {
			if f.GetName() != authz.Name {
				continue
			}
			c := &authzv1.Authz{}
			if err := config.UnpackFilterConfig(f.GetTypedConfig(), c); err != nil {
				t.Fatalf("greeter-0 %s: authz config: %v", b.ChainName, err)
			}
			for _, p := range c.GetPolicies() {
				kept = append(kept, p.GetName())
			}
		}
		if !slices.Equal(kept, []string{"no-delete"}) {
			t.Errorf("greeter-0 %s: Breeze's authz holds policies %v, want [no-delete]", b.ChainName, kept)
		}
	}
	slices.Sort(transports)
	if transports = slices.Compact(transports); !slices.Equal(transports, []string{"raw_buffer", "tls"}) {
		t.Errorf("greeter-0: Breeze on chains of transports %v, want both of PERMISSIVE mode's (raw_buffer, tls)", transports)
	}
}
