package controlplane

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/filters/authz"
	"github.com/breeze-mesh/breeze/filters/route"
	authzv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/authz/v1"
)

// Breeze's protocol-neutral AuthorizationPolicy: a shop namespace with two
// Thrift hosts, another namespace with one.
const (
	shopCatalog = "shop.Catalog"
	shopOrders  = "shop.Orders"
	otherHost   = "other.Greeter"
)

func meshEntries() string {
	return nsEntry("shop", shopCatalog, 9090) + "---\n" + nsEntry("shop", shopOrders, 9090) + "---\n" + nsEntry("other", otherHost, 9090)
}

// meshPolicy is an AuthorizationPolicy of security.breeze.io with spec.
func meshPolicy(ns, name, spec string) string {
	return "apiVersion: security.breeze.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n" + spec
}

// routeAuthz is the authz config on every route of a served table (they
// must all carry the same), nil when they carry none.
func routeAuthz(t *testing.T, tr Translation, host string) *authzv1.Authz {
	t.Helper()
	rc := tr.Resources.Routes[host+"_9090"]
	if len(rc.GetRoutes()) == 0 {
		t.Fatalf("no routes served for %s (failed: %v)", host, tr.FailedRoutes)
	}
	if _, err := route.Compile(rc); err != nil {
		t.Fatalf("the proxy refuses %s's table: %v", host, err)
	}
	var first *authzv1.Authz
	for i, r := range rc.GetRoutes() {
		a := r.GetTypedPerFilterConfig()[authz.Name]
		var got *authzv1.Authz
		if a != nil {
			got = &authzv1.Authz{}
			if err := a.UnmarshalTo(got); err != nil {
				t.Fatalf("%s route %q: %v", host, r.GetName(), err)
			}
		}
		if i > 0 && !slices.Equal(policyNames(got), policyNames(first)) {
			t.Fatalf("%s: route %q has policies %v, route 0 %v", host, r.GetName(), policyNames(got), policyNames(first))
		}
		first = got
	}
	return first
}

func policyNames(a *authzv1.Authz) []string {
	var names []string
	for _, p := range a.GetPolicies() {
		names = append(names, p.GetName())
	}
	return names
}

// Every field reaches the filter's config as written; hosts scope a
// policy to those hosts, no hosts to its namespace, the root namespace's
// to every host; the order is namespace/name.
func TestMeshAuthzPolicy(t *testing.T) {
	d := dir(t, map[string]string{
		"se.yaml": meshEntries(),
		"deny-delete.yaml": meshPolicy("shop", "deny-delete", `  hosts: [shop.Catalog]
  action: DENY
  rules:
  - from: [{source: {notNamespaces: [shop], ipBlocks: [10.0.0.0/8], notIpBlocks: [10.9.0.0/16]}}]
    to: [{operation: {services: ["*.Catalog"], notServices: [Internal], methods: ["Delete*"], notMethods: [DeleteDraft]}}]
    when: [{key: tier, values: [free], notValues: [free-trial]}]
`),
		"tenants.yaml": meshPolicy("shop", "tenants", `  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/web], notPrincipals: ["*/sa/test"], namespaces: [shop]}}]
  - when: [{key: tenant, values: [gold, silver]}]
`),
		"root.yaml": meshPolicy(RootNamespace, "deny-scanners", `  action: DENY
  rules: [{from: [{source: {ipBlocks: [192.0.2.0/24]}}]}]
`),
	})
	tr, problems := read(t, d)
	for _, p := range problems {
		t.Errorf("problem: %s", strings.ReplaceAll(p.Error(), d+"/", ""))
	}
	const root = `{name: istio-system/deny-scanners, action: DENY, rules: [{from: [{source: {ip_blocks: [192.0.2.0/24]}}]}]}`
	const deleteDeny = `{name: shop/deny-delete, action: DENY, rules: [{
  from: [{source: {not_namespaces: [shop], ip_blocks: [10.0.0.0/8], not_ip_blocks: [10.9.0.0/16]}}],
  to: [{operation: {services: ["*.Catalog"], not_services: [Internal], methods: ["Delete*"], not_methods: [DeleteDraft]}}],
  when: [{key: tier, values: [free], not_values: [free-trial]}]}]}`
	const tenants = `{name: shop/tenants, rules: [
  {from: [{source: {principals: [cluster.local/ns/shop/sa/web], not_principals: ["*/sa/test"], namespaces: [shop]}}]},
  {when: [{key: tenant, values: [gold, silver]}]}]}`
	for host, want := range map[string]string{
		shopCatalog: "{policies: [" + root + ", " + deleteDeny + ", " + tenants + "]}",
		shopOrders:  "{policies: [" + root + ", " + tenants + "]}",
		otherHost:   "{policies: [" + root + "]}",
	} {
		var wantCfg authzv1.Authz
		fromYAML(t, want, &wantCfg)
		equal(t, host+" authz config", routeAuthz(t, tr, host), &wantCfg)
	}
}

// A policy naming only a host no ServiceEntry declares applies nowhere,
// with a warning: never to the rest of its namespace.
func TestMeshAuthzUnknownHost(t *testing.T) {
	d := dir(t, map[string]string{
		"se.yaml":     meshEntries(),
		"policy.yaml": meshPolicy("shop", "typo", "  hosts: [shop.Catalogue]\n  rules: [{}]\n"),
	})
	tr, problems := read(t, d)
	var msgs []string
	for _, p := range problems {
		msgs = append(msgs, strings.ReplaceAll(p.Error(), d+"/", ""))
	}
	const want = `policy.yaml: AuthorizationPolicy shop/typo: spec.hosts[0]: "shop.Catalogue": no ServiceEntry or Service declares this host: the policy applies to nothing there; did you mean shop.Catalog?`
	if len(msgs) != 1 || msgs[0] != want || !problems[0].Warning {
		t.Errorf("problems %q, want the warning %q", msgs, want)
	}
	for _, h := range []string{shopCatalog, shopOrders} {
		if a := routeAuthz(t, tr, h); a != nil {
			t.Errorf("%s carries %v, want no policy", h, policyNames(a))
		}
	}
}

// Each error is reported at its field as the file writes it. The tables
// of the policy's namespace keep their last good version (none here: not
// served), another namespace's are served. A spec that does not decode
// (an unknown field or action) is an object that cannot be read: like any
// such object it keeps its own last good version (TestMeshAuthzKeepsLastGood),
// and without one is left out.
func TestMeshAuthzErrors(t *testing.T) {
	for _, c := range []struct {
		spec, want string
		decode     bool
	}{
		{"  rules: [{to: [{operation: {methods: [\"Get*Item\"]}}]}]\n", `spec.rules[0].to[0].operation.methods[0]: "Get*Item"`, false},
		{"  rules: [{to: [{operation: {notServices: [\"a*b\"]}}]}]\n", `spec.rules[0].to[0].operation.notServices[0]: "a*b"`, false},
		{"  rules: [{from: [{source: {ipBlocks: [10.0.0.300/8]}}]}]\n", `spec.rules[0].from[0].source.ipBlocks[0]: "10.0.0.300/8"`, false},
		{"  rules: [{when: [{key: tier}]}]\n", `spec.rules[0].when[0]: needs values or not_values`, false},
		{"  rules: [{when: [{values: [gold]}]}]\n", `spec.rules[0].when[0].key: "": must not be empty`, false},
		{"  rules: [{from: [{}]}]\n", `spec.rules[0].from[0].source: must be set`, false},
		{"  action: AUDIT\n  rules: [{}]\n", `spec.action: `, true},
		{"  rules: [{to: [{operation: {interfaces: [x]}}]}]\n", `spec.rules[0].to[0].operation.interfaces: unknown field`, true},
		{"  hosts: [other.Greeter]\n  rules: [{}]\n", `spec.hosts[0]: "other.Greeter": a host of namespace other`, false},
		{"  hosts: [\"\"]\n  rules: [{}]\n", `spec.hosts[0]: "": must not be empty`, false},
	} {
		d := dir(t, map[string]string{"se.yaml": meshEntries(), "policy.yaml": meshPolicy("shop", "p", c.spec)})
		tr, problems := read(t, d)
		var msgs []string
		for _, p := range problems {
			msgs = append(msgs, strings.TrimPrefix(p.Error(), d+"/policy.yaml: AuthorizationPolicy shop/p: "))
		}
		if len(msgs) != 1 || !strings.HasPrefix(msgs[0], c.want) || problems[0].Warning {
			t.Errorf("%s: problems %q, want one error starting %q", c.spec, msgs, c.want)
		}
		for _, h := range []string{shopCatalog, shopOrders} {
			if !c.decode && tr.Resources.Routes[h+"_9090"] != nil {
				t.Errorf("%s: %s's table was served without the policy", c.spec, h)
			}
		}
		if tr.Resources.Routes[otherHost+"_9090"] == nil {
			t.Errorf("%s: another namespace's table was not served", c.spec)
		}
	}
}

// A good policy made wrong: the tables it scopes keep their last good
// version, the policy included; `breeze validate` (Lint) reports the same
// error. Fixed, the new version is served.
func TestMeshAuthzKeepsLastGood(t *testing.T) {
	good := meshPolicy("shop", "deny-delete", "  hosts: [shop.Catalog]\n  action: DENY\n  rules: [{to: [{operation: {methods: [\"Delete*\"]}}]}]\n")
	d := dir(t, map[string]string{"se.yaml": meshEntries(), "policy.yaml": good})
	step := runSteps(t, d)
	first := step()
	table := first.res.Routes[shopCatalog+"_9090"]
	if table.GetRoutes()[0].GetTypedPerFilterConfig()[authz.Name] == nil {
		t.Fatalf("first table has no authz config: %v; problems %v", table, first.problems)
	}
	write(t, d, "policy.yaml", strings.Replace(good, `"Delete*"`, `"Del*ete"`, 1))
	next := step()
	const want = `policy.yaml: AuthorizationPolicy shop/deny-delete: spec.rules[0].to[0].operation.methods[0]: "Del*ete"`
	if !hasProblem(next, want) {
		t.Errorf("problems %q, want one with %q", next.problems, want)
	}
	if got := next.res.Routes[shopCatalog+"_9090"]; got != table {
		t.Errorf("served table %v, want the last good one %v", got, table)
	}
	var lint []string
	for _, p := range Lint(readFiles(t, d)...) {
		lint = append(lint, strings.ReplaceAll(p.Error(), d+"/", ""))
	}
	if !slices.ContainsFunc(lint, func(s string) bool { return strings.HasPrefix(s, want) }) {
		t.Errorf("Lint: %q, want a problem starting %q", lint, want)
	}
	if err := os.Remove(filepath.Join(d, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	if gone := step(); gone.res.Routes[shopCatalog+"_9090"].GetRoutes()[0].GetTypedPerFilterConfig()[authz.Name] != nil {
		t.Errorf("policy deleted: the table still carries it; problems %v", gone.problems)
	}
}
