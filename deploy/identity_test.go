package deploy

import (
	"regexp"
	"strings"
	"testing"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	"github.com/breeze-mesh/breeze/filters/filter"
)

const inboundService = `host: greeter.demo.svc.cluster.local
port: 20880
protocol: dubbo
direction: inbound
selector: {app: greeter}
`

// authzFilter is an inbound_filters entry with the given policies (YAML
// flow sequence items).
func authzFilter(extra string, policies ...string) string {
	return "inbound_filters:\n- name: authz\n  typed_config:\n    '@type': type.googleapis.com/breeze.filters.authz.v1.Authz\n" + extra +
		"    policies: [" + strings.Join(policies, ", ") + "]\n"
}

const (
	callerOnlyDeny  = `{name: no-legacy, action: DENY, rules: [{from: [{source: {namespaces: [legacy]}}]}]}`
	callerOnlyAllow = `{name: billing, rules: [{from: [{source: {principals: [cluster.local/ns/pay/sa/billing]}}]}]}`
	methodOnlyDeny  = `{name: no-delete, action: DENY, rules: [{to: [{operation: {methods: ["Delete*"]}}]}]}`
	methodOnlyAllow = `{name: reads, rules: [{to: [{operation: {methods: ["Get*"]}}]}]}`
	callerAndMethod = `{name: shop-reads, rules: [{from: [{source: {namespaces: [shop]}}], to: [{operation: {methods: ["Get*"]}}]}]}`
)

// networkFilters is the name of each NETWORK_FILTER patch's filter, in
// patch order, with its operation.
func networkFilters(ef *EnvoyFilter) []string {
	var out []string
	for _, cp := range ef.Spec.GetConfigPatches() {
		if cp.GetApplyTo() != networkingv1alpha3.EnvoyFilter_NETWORK_FILTER {
			continue
		}
		name, _ := cp.GetPatch().GetValue().AsMap()["name"].(string)
		out = append(out, cp.GetPatch().GetOperation().String()+" "+name)
	}
	return out
}

// renderAndValidate renders desc for istio and runs breeze validate's
// checks on the result.
func renderAndValidate(t *testing.T, istio, desc string) ([]byte, error) {
	t.Helper()
	y, err := RenderFileFor(istio, "greeter.yaml", []byte(desc))
	if err != nil {
		return nil, err
	}
	if err := Check(File{Name: "rendered.yaml", Data: y}).Err(); err != nil {
		t.Errorf("breeze validate rejects what render made: %v\n%s", err, y)
	}
	return y, nil
}

// refusedWithoutHandshakeHook: a build with Envoy 1.36's types cannot
// check set_filter_state's on_downstream_tls_handshake, so rendering desc
// for Istio 1.31 must be refused, naming the build that can (the 1.39
// target runs the rest of the caller). It reports whether this is that
// build.
func refusedWithoutHandshakeHook(t *testing.T, desc string) bool {
	t.Helper()
	if buildKnowsHandshakeHook() {
		return false
	}
	_, err := RenderFileFor("1.31", "greeter.yaml", []byte(desc))
	if err == nil || !strings.Contains(err.Error(), "make build ENVOY=1.39") {
		t.Fatalf("built with Envoy %s's types, rendering Istio 1.31's identity: got %v, want a refusal naming the 1.39 build", builtRelease().Envoy, err)
	}
	return true
}

// On Istio 1.31 (Envoy 1.39) the inbound chain gets set_filter_state
// before Breeze, storing the peer's URI SAN once the handshake is done,
// under the key the authz filter reads. A breeze built with Envoy 1.36's
// types cannot check that field and says which build can.
func TestRenderPeerPrincipalForIstio131(t *testing.T) {
	desc := inboundService + authzFilter("    principal_filter_state_key: example.peer\n", callerAndMethod)
	if refusedWithoutHandshakeHook(t, desc) {
		return
	}
	y, err := renderAndValidate(t, "1.31", desc)
	if err != nil {
		t.Fatal(err)
	}
	efs, err := renderString(t, desc+"istio: '1.31'\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"INSERT_BEFORE " + SetFilterStateFilterName, "REPLACE " + GolangFilterName}
	if got := networkFilters(efs[0]); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("network filter patches %v, want %v (set_filter_state inserted before tcp_proxy ahead of the patch replacing it)", got, want)
	}
	for _, s := range []string{
		"on_downstream_tls_handshake:", "object_key: example.peer", "factory_key: envoy.string",
		"inline_string: '%DOWNSTREAM_PEER_URI_SAN%'", "skip_if_empty: true", "omit_empty_values: true",
		// The mark that makes a SAN-less caller one without identity.
		"on_new_connection:", "object_key: " + filter.IdentityHookKey, "inline_string: tls_handshake",
	} {
		if !strings.Contains(string(y), s) {
			t.Errorf("rendered for 1.31: no %q in\n%s", s, y)
		}
	}
	// The policy needing both caller and method stays in Breeze, whole.
	if !strings.Contains(string(y), "shop-reads") {
		t.Errorf("rendered for 1.31: the authz policy is gone from the plugin_config:\n%s", y)
	}
	if strings.Contains(string(y), NetworkRBACFilterName) {
		t.Errorf("rendered for 1.31: network RBAC, which only 1.28 needs:\n%s", y)
	}
}

// Without authz filters, 1.31 still gets set_filter_state at the default
// key: the identity is the connection's, for any filter that reads it.
func TestRenderPeerPrincipalDefaultKey(t *testing.T) {
	if refusedWithoutHandshakeHook(t, inboundService) {
		return
	}
	y, err := renderAndValidate(t, "1.31", inboundService)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "object_key: io.istio.peer_principal") {
		t.Errorf("no set_filter_state at the authz filter's default key in\n%s", y)
	}
}

// A build for Envoy 1.39 must know the field; a build for 1.36 must not
// (else the detection above tests nothing).
func TestHandshakeHookFollowsTheBuild(t *testing.T) {
	r := builtRelease()
	if got, want := buildKnowsHandshakeHook(), peerIdentityReachesGo(r); got != want {
		t.Errorf("built for %s: set_filter_state has on_downstream_tls_handshake: %v, want %v", r, got, want)
	}
}

// On Istio 1.28 (Envoy 1.36) no principal reaches Go: nothing of
// set_filter_state; caller-only policies become network RBAC in front of
// Breeze (DENY first), request-only ones stay in Breeze.
func TestRenderIstio128SplitsPolicies(t *testing.T) {
	desc := inboundService + authzFilter("", callerOnlyDeny, callerOnlyAllow, methodOnlyDeny)
	y, err := renderAndValidate(t, "1.28", desc)
	if err != nil {
		t.Fatal(err)
	}
	efs, err := renderString(t, desc+"istio: '1.28'\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"INSERT_BEFORE " + NetworkRBACFilterName, "INSERT_BEFORE " + NetworkRBACFilterName, "REPLACE " + GolangFilterName}
	if got := networkFilters(efs[0]); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("network filter patches %v, want %v", got, want)
	}
	cps := efs[0].Spec.GetConfigPatches()
	deny := cps[0].GetPatch().GetValue().AsMap()["typed_config"].(map[string]any)["rules"].(map[string]any)
	allow := cps[1].GetPatch().GetValue().AsMap()["typed_config"].(map[string]any)["rules"].(map[string]any)
	if deny["action"] != "DENY" || deny["policies"].(map[string]any)["no-legacy"] == nil {
		t.Errorf("first RBAC filter: want DENY with policy no-legacy, got %v", deny)
	}
	if _, ok := allow["action"]; ok || allow["policies"].(map[string]any)["billing"] == nil {
		t.Errorf("second RBAC filter: want ALLOW (the default) with policy billing, got %v", allow)
	}
	for _, s := range []string{"exact: spiffe://cluster.local/ns/pay/sa/billing", "regex: spiffe://[^/]+/ns/legacy/sa/[^/]+"} {
		if !strings.Contains(string(y), s) {
			t.Errorf("rendered for 1.28: no %q in\n%s", s, y)
		}
	}
	if strings.Contains(string(y), SetFilterStateFilterName) {
		t.Errorf("rendered for 1.28: set_filter_state, whose principal no 1.36 Go filter sees:\n%s", y)
	}
	pc := pluginConfig(t, efs[0])
	fs, _ := pc["filters"].([]any)
	if len(fs) != 1 {
		t.Fatalf("inbound plugin_config filters %v, want the authz filter", pc["filters"])
	}
	ps, _ := fs[0].(map[string]any)["typed_config"].(map[string]any)["policies"].([]any)
	if len(ps) != 1 || ps[0].(map[string]any)["name"] != "no-delete" {
		t.Errorf("authz policies left in Breeze: %v, want only no-delete (the caller-only ones moved to RBAC)", ps)
	}
}

// What 1.28 cannot enforce as written is refused, never weakened.
func TestRenderIstio128RefusesWhatNeedsTheIdentityInGo(t *testing.T) {
	for _, tc := range []struct {
		name, policies, want string
	}{
		{"caller and method", authzFilter("", callerAndMethod),
			`inbound_filters[0].typed_config.policies[0]: policy "shop-reads" needs both the caller's identity and the request (service, method or metadata): Istio 1.28's Envoy hands no principal to Breeze, and Envoy's network RBAC sees no request; it needs the Istio 1.31 build`},
		{"caller and metadata", authzFilter("", `{name: gold, action: DENY, rules: [{from: [{source: {not_principals: ["*"]}}], when: [{key: tier, values: [gold]}]}]}`),
			`policy "gold" needs both the caller's identity and the request`},
		{"allow split across layers", authzFilter("", callerOnlyAllow, methodOnlyAllow),
			`inbound_filters[0].typed_config.policies: ALLOW policies "billing" are on the caller's identity alone, "reads" not`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := RenderFileFor("1.28", "greeter.yaml", []byte(inboundService+tc.policies))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// breeze validate, given the description itself, says the same.
	err := Check(File{Name: "greeter.yaml", Data: []byte(inboundService + "istio: '1.28'\n" + authzFilter("", callerAndMethod))}).Err()
	if err == nil || !strings.Contains(err.Error(), "it needs the Istio 1.31 build") {
		t.Errorf("validate of a 1.28 description with a caller-and-method policy: got %v", err)
	}
	// Request-only policies need nothing of Envoy: Breeze keeps them.
	y, err := renderAndValidate(t, "1.28", inboundService+authzFilter("", methodOnlyAllow, methodOnlyDeny))
	if err != nil {
		t.Fatalf("request-only policies for 1.28: %v", err)
	}
	if strings.Contains(string(y), NetworkRBACFilterName) {
		t.Errorf("request-only policies rendered network RBAC:\n%s", y)
	}
}

func TestInboundFiltersNeedAnInboundProxy(t *testing.T) {
	_, err := renderString(t, minimalService+authzFilter("", methodOnlyDeny))
	if err == nil || !strings.Contains(err.Error(), "inbound_filters: direction outbound: there is no inbound proxy for them") {
		t.Errorf("outbound service with inbound_filters: got %v", err)
	}
}

// Errors in the inbound filters name the service file's key.
func TestInboundFiltersErrorsNameTheirKey(t *testing.T) {
	_, err := renderString(t, inboundService+authzFilter("", `{name: x, rules: [{to: [{operation: {methods: ["a*b"]}}]}]}`))
	if err == nil || !strings.HasPrefix(err.Error(), "inbound_filters[0]") {
		t.Errorf("invalid authz pattern in inbound_filters: got %v, want an error at inbound_filters[0]", err)
	}
}

// Namespace patterns match only the <ns> segment of a SPIFFE URI SAN
// (Envoy's safe_regex matches the whole value, as Go's anchored regexp).
func TestNamespacePatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		match   []string
		not     []string
	}{
		{"shop", []string{"spiffe://cluster.local/ns/shop/sa/web"}, []string{"spiffe://cluster.local/ns/shop2/sa/web", "spiffe://cluster.local/ns/x/sa/shop", "spiffe://td/ns/shop/sa/a/b"}},
		{"shop*", []string{"spiffe://td/ns/shop/sa/a", "spiffe://td/ns/shop-eu/sa/a"}, []string{"spiffe://td/ns/myshop/sa/a"}},
		{"*-eu", []string{"spiffe://td/ns/shop-eu/sa/a"}, []string{"spiffe://td/ns/shop-us/sa/a"}},
		{"*", []string{"spiffe://td/ns/a/sa/b"}, []string{"spiffe://td/other"}},
		{"a.b", []string{"spiffe://td/ns/a.b/sa/x"}, []string{"spiffe://td/ns/axb/sa/x"}},
	} {
		id, err := namespaceID(tc.pattern)
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile("^(?:" + id.GetAuthenticated().GetPrincipalName().GetSafeRegex().GetRegex() + ")$")
		for _, s := range tc.match {
			if !re.MatchString(s) {
				t.Errorf("namespace %q (%s) does not match %s", tc.pattern, re, s)
			}
		}
		for _, s := range tc.not {
			if re.MatchString(s) {
				t.Errorf("namespace %q (%s) matches %s", tc.pattern, re, s)
			}
		}
	}
}

// breeze validate refuses a hand-written inbound Breeze for Istio 1.28
// whose authz policies look at the caller's identity: its Go filter never
// gets one. The same file pinned to 1.31 passes (on a build that can check
// 1.31 files).
func TestValidateRefusesIdentityPoliciesWhereGoIsBlind(t *testing.T) {
	y, err := RenderFileFor("1.28", "greeter.yaml", []byte(inboundService+authzFilter("", methodOnlyDeny)))
	if err != nil {
		t.Fatal(err)
	}
	handWritten := strings.NewReplacer("- to:", "- from:", "- operation:", "- source:", "methods:", "namespaces:", "Delete*", "legacy").Replace(string(y))
	if !strings.Contains(handWritten, "namespaces:") {
		t.Fatalf("the rendered policy is not where the test expects it:\n%s", y)
	}
	err = Check(File{Name: "hand.yaml", Data: []byte(handWritten)}).Err()
	want := `policy "no-delete" looks at the caller's principal or namespace, which the Go filter of Istio 1.28 (Envoy 1.36) never gets`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("validate of a 1.28 inbound Breeze with a namespace policy: got %v, want %q", err, want)
	}
	if !buildKnowsHandshakeHook() {
		return
	}
	for131 := strings.ReplaceAll(handWritten, `^1\.28\.`, `^1\.31\.`)
	if err := Check(File{Name: "hand.yaml", Data: []byte(for131)}).Err(); err != nil {
		t.Errorf("the same inbound Breeze pinned to Istio 1.31: %v", err)
	}
}
