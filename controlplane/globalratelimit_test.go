package controlplane

import (
	"slices"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/globalratelimit"
	globalratelimitv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/global_ratelimit/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// aerakiGlobalRateLimitConfig is the global_ratelimit config (JSON fields)
// of Aeraki's sample, aerakiGlobalRateLimit.
const aerakiGlobalRateLimitConfig = `domain: production,
  match: [{key: method, exact: sayHello}],
  rate_limit_service: "rate-limit-server.meta-dubbo.svc.cluster.local:8081",
  request_timeout: 0.100s, deny_on_fail: true,
  descriptors: [{entries: [{key: method, metadata_key: method}]}]`

// globalRateLimitOf returns the global_ratelimit config of each route of a
// table, as the proxy's filter reads it (validated by the filter itself).
func globalRateLimitOf(t *testing.T, rc *breezev1.RouteConfiguration) []*globalratelimitv1.GlobalRateLimit {
	t.Helper()
	factory, _ := filter.Lookup(globalratelimit.Name)
	var out []*globalratelimitv1.GlobalRateLimit
	for _, r := range rc.GetRoutes() {
		a := r.GetTypedPerFilterConfig()[globalratelimit.Name]
		if a == nil {
			out = append(out, nil)
			continue
		}
		msg, err := config.FilterRouteConfig(factory, a)
		if err != nil {
			t.Fatalf("route %q: the filter refuses its config: %v", r.GetName(), err)
		}
		out = append(out, msg.(*globalratelimitv1.GlobalRateLimit))
	}
	return out
}

// The filter's name in the translation is the one it registers.
func TestGlobalRateLimitFilterName(t *testing.T) {
	if globalRateLimitFilter != globalratelimit.Name {
		t.Fatalf("translation writes %q, the filter registers %q", globalRateLimitFilter, globalratelimit.Name)
	}
}

// A globalRateLimit applies to every route of its host's tables, next to
// the routes' own per-filter configs; a host without one gets none.
func TestTranslateGlobalRateLimit(t *testing.T) {
	d := dir(t, map[string]string{
		"se.yaml": serviceEntry + "---\n" + otherService,
		"dr.yaml": destinationRule,
		"mr.yaml": metaRouter + `  globalRateLimit:
    domain: greeter
    match: {attributes: {tenant: {prefix: g}, method: {}}}
    rateLimitService: rls.infra.svc.cluster.local:8081
    descriptors:
    - {property: tenant, descriptorKey: tenant}
    - {property: method, descriptorKey: m}
`,
	})
	tr, problems := read(t, d)
	for _, p := range problems {
		if !p.Warning {
			t.Errorf("error: %s", p.Error())
		}
	}
	var want globalratelimitv1.GlobalRateLimit
	fromYAML(t, `{domain: greeter,
  match: [{key: method, present: true}, {key: tenant, prefix: g}],
  rate_limit_service: "rls.infra.svc.cluster.local:8081",
  descriptors: [{entries: [{key: tenant, metadata_key: tenant}]}, {entries: [{key: m, metadata_key: method}]}]}`, &want)
	rc := tr.Resources.Routes["org.example.Greeter_20880"]
	got := globalRateLimitOf(t, rc)
	if len(got) != 2 {
		t.Fatalf("%d routes, want 2", len(got))
	}
	for i, g := range got {
		equal(t, "route "+rc.GetRoutes()[i].GetName()+" global_ratelimit", g, &want)
	}
	if rc.GetRoutes()[0].GetTypedPerFilterConfig()["mutation"] == nil {
		t.Error("route gold lost its mutation config")
	}
	for _, name := range []string{"org.example.Other_20880", "org.example.Alias_20990"} {
		if g := globalRateLimitOf(t, tr.Resources.Routes[name]); slices.ContainsFunc(g, func(c *globalratelimitv1.GlobalRateLimit) bool { return c != nil }) {
			t.Errorf("%s: a global_ratelimit config on a host without globalRateLimit", name)
		}
	}
}

// rateLimitService: an Istio cluster name as Aeraki's samples write it, or
// host:port; a subset is not applied (warned).
func TestRateLimitAddress(t *testing.T) {
	for _, tc := range []struct{ in, addr, warning, err string }{
		{in: "outbound|8081||rate-limit-server.meta-dubbo.svc.cluster.local", addr: "rate-limit-server.meta-dubbo.svc.cluster.local:8081"},
		{in: "rls.infra:8081", addr: "rls.infra:8081"},
		{in: "10.0.0.7:8081", addr: "10.0.0.7:8081"},
		{in: "outbound|8081|v2|rls.infra", addr: "rls.infra:8081", warning: `subset "v2" not applied: Breeze calls rls.infra:8081, all the endpoints its name resolves to`},
		{in: "", err: "required"},
		{in: "inbound|8081||", err: "an Istio cluster name must be an outbound one (outbound|PORT||HOST): Breeze dials its host and port"},
		{in: "outbound|8081||", err: "no host in the cluster name (outbound|PORT||HOST)"},
		{in: "rls.infra", err: "want an Istio cluster name (outbound|8081||rate-limit.ns.svc.cluster.local) or host:port"},
		{in: "outbound|http||rls.infra", err: `port "http": must be 1–65535`},
	} {
		addr, warning, err := rateLimitAddress(tc.in)
		var gotErr string
		if err != nil {
			gotErr = err.Error()
		}
		if addr != tc.addr || warning != tc.warning || gotErr != tc.err {
			t.Errorf("%q: got (%q, %q, %q), want (%q, %q, %q)", tc.in, addr, warning, gotErr, tc.addr, tc.warning, tc.err)
		}
	}
}

// What is wrong with a globalRateLimit is an error on its field (once,
// whatever the ports), and its host's table is not served: the last good
// one stays (FailedRoutes), since a table without the limit would lift it.
func TestTranslateGlobalRateLimitErrors(t *testing.T) {
	d := dir(t, map[string]string{
		"se.yaml": entry("org.example.Limited", 20880, 20881),
		"mr.yaml": `apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: limited, namespace: demo}
spec:
  hosts: [org.example.Limited]
  globalRateLimit:
    match: {attributes: {method: {regex: "("}}}
    rateLimitService: outbound|8081|blue|rls.infra
    requestTimeout: 0s
    descriptors:
    - {property: tenant}
    - {descriptorKey: m}
`,
	})
	tr, problems := read(t, d)
	got := problemStrings(problems)
	for i := range got {
		got[i] = strings.ReplaceAll(got[i], d+"/", "")
	}
	const obj = "mr.yaml: MetaRouter demo/limited: spec.globalRateLimit"
	want := []string{
		obj + `.domain: required`,
		obj + ".match.attributes[\"method\"].regex: \"(\": error parsing regexp: missing closing ): `(`",
		obj + `.rateLimitService: "outbound|8081|blue|rls.infra": subset "blue" not applied: Breeze calls rls.infra:8081, all the endpoints its name resolves to`,
		obj + `.requestTimeout: 0s: must be positive`,
		obj + `.descriptors[0].descriptorKey: required`,
		obj + `.descriptors[1].property: required`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, name := range []string{"org.example.Limited_20880", "org.example.Limited_20881"} {
		if !tr.FailedRoutes[name] || tr.Resources.Routes[name] != nil {
			t.Errorf("%s: served %v, failed %v; want not served, failed", name, tr.Resources.Routes[name] != nil, tr.FailedRoutes[name])
		}
	}

	// Without descriptors nothing would be checked: Aeraki refuses it too.
	write(t, d, "mr.yaml", `apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: limited, namespace: demo}
spec:
  hosts: [org.example.Limited]
  globalRateLimit: {domain: d, rateLimitService: "rls:8081"}
`)
	_, problems = read(t, d)
	got = problemStrings(problems)
	if want := "mr.yaml: MetaRouter demo/limited: spec.globalRateLimit.descriptors: at least one descriptor is required"; len(got) != 1 || !strings.HasSuffix(got[0], want) {
		t.Errorf("problems %q, want one ending %q", got, want)
	}
}

// `breeze validate` (Lint) reports a globalRateLimit's errors with its file.
func TestLintGlobalRateLimit(t *testing.T) {
	problems := Lint(File{Name: "mesh.yaml", Data: []byte(entry("org.example.Limited", 20880) + `---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: limited, namespace: demo}
spec:
  hosts: [org.example.Limited]
  globalRateLimit: {domain: d, rateLimitService: "rls", descriptors: [{property: method, descriptorKey: method}]}
`)})
	got := problemStrings(problems)
	want := []string{`mesh.yaml#2: MetaRouter demo/limited: spec.globalRateLimit.rateLimitService: "rls": want an Istio cluster name (outbound|8081||rate-limit.ns.svc.cluster.local) or host:port`}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
