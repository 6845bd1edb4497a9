package controlplane

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/codecs/dubbo" // names the interface and method keys
	"github.com/breeze-mesh/breeze/filters/authz"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/route"
	authzv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/authz/v1"
)

// Aeraki's published DubboAuthorizationPolicy samples, verbatim, in
// testdata/aeraki-authz (README.md there says where they come from; the
// e2e tests apply the same files to dubbo-go peers).
var (
	aerakiAuthzAllow = sample("allow.yaml")
	aerakiAuthzDeny  = sample("deny.yaml")
)

func sample(name string) string {
	b, err := os.ReadFile(filepath.Join("testdata", "aeraki-authz", name))
	if err != nil {
		panic(err)
	}
	return string(b)
}

const dubboDemoService = "org.apache.dubbo.samples.basic.api.DemoService"

// nsEntry is a ServiceEntry of namespace ns: a policy's scope.
func nsEntry(ns, host string, port uint32) string {
	return strings.Replace(entry(host, port), "metadata: {name: ", "metadata: {namespace: "+ns+", name: ", 1)
}

// Both samples load without a problem and land, unchanged in meaning, on
// every route of the tables they scope: the root namespace's on every
// host, the dubbo namespace's on its hosts only.
func TestAerakiDubboAuthzSamples(t *testing.T) {
	d := dir(t, map[string]string{
		"se.yaml":    nsEntry("dubbo", dubboDemoService, 20880) + "---\n" + nsEntry("other", "org.example.Greeter", 20880),
		"allow.yaml": aerakiAuthzAllow,
		"deny.yaml":  aerakiAuthzDeny,
	})
	tr, problems := read(t, d)
	for _, p := range problems {
		t.Errorf("problem: %s", strings.ReplaceAll(p.Error(), d+"/", ""))
	}
	const allow = `{name: istio-system/demo, action: ALLOW, rules: [{
  from: [{source: {principals: [cluster.local/ns/dubbo/sa/dubbo-consumer]}}],
  to: [{operation: {services: [org.apache.dubbo.samples.basic.api.DemoService], methods: [sayHello]}}]}]}`
	const deny = `{name: dubbo/demo, action: DENY, rules: [{
  from: [{source: {namespaces: [dev]}}],
  to: [{operation: {services: ["*"], methods: ["*"]}}]}]}`
	for host, want := range map[string]string{
		dubboDemoService:      "{policies: [" + allow + ", " + deny + "]}",
		"org.example.Greeter": "{policies: [" + allow + "]}",
	} {
		rc := tr.Resources.Routes[host+"_20880"]
		if len(rc.GetRoutes()) == 0 {
			t.Fatalf("no routes for %s: %v", host, tr.Resources.Routes)
		}
		var wantCfg authzv1.Authz
		fromYAML(t, want, &wantCfg)
		for _, r := range rc.GetRoutes() {
			var got authzv1.Authz
			if err := r.GetTypedPerFilterConfig()[authz.Name].UnmarshalTo(&got); err != nil {
				t.Fatalf("%s route %q: no authz config: %v", host, r.GetName(), err)
			}
			equal(t, host+" route "+r.GetName()+" authz config", &got, &wantCfg)
		}
		if _, err := route.Compile(rc); err != nil {
			t.Fatalf("the proxy refuses %s's table: %v", host, err)
		}
	}
}

// The samples' table, applied by the authz filter as a proxy builds it
// implicitly (empty config): the consumer may call sayHello and nothing
// else; another caller nothing; a caller from dev is denied by the DENY
// policy even for what the ALLOW policy would let through, and so is a
// caller whose identity is unknown.
func TestAerakiDubboAuthzSamplesApplied(t *testing.T) {
	d := dir(t, map[string]string{"se.yaml": nsEntry("dubbo", dubboDemoService, 20880), "allow.yaml": aerakiAuthzAllow, "deny.yaml": aerakiAuthzDeny})
	tr, problems := read(t, d)
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	table, err := route.Compile(tr.Resources.Routes[dubboDemoService+"_20880"])
	if err != nil {
		t.Fatal(err)
	}
	f, _ := filter.Lookup(authz.Name)
	inst, err := f.Build(f.Config(), filter.BuildContext{ProxyName: t.Name(), Codec: "dubbo"})
	if err != nil {
		t.Fatal(err)
	}
	chain := &filter.Chain{Filters: []filter.Filter{inst, answer{}}, Names: []string{authz.Name, filter.RouterName}}
	consumer := &filter.Peer{Principal: "cluster.local/ns/dubbo/sa/dubbo-consumer", Namespace: "dubbo", IdentityKnown: true}
	devConsumer := &filter.Peer{Principal: "cluster.local/ns/dev/sa/dubbo-consumer", Namespace: "dev", IdentityKnown: true}
	for _, c := range []struct {
		peer    *filter.Peer
		method  string
		allowed bool
		detail  string
	}{
		{consumer, "sayHello", true, ""},
		{consumer, "sayGoodbye", false, "RBAC: access denied: no ALLOW policy matched"},
		{&filter.Peer{IdentityKnown: true}, "sayHello", false, "RBAC: access denied: no ALLOW policy matched"},
		// Where nothing hands Breeze the caller's certificate (an Istio
		// 1.28 sidecar) the DENY on callers denies: never fail open.
		{&filter.Peer{}, "sayHello", false, `RBAC: access denied: DENY policy "dubbo/demo" matched`},
		{devConsumer, "sayHello", false, `RBAC: access denied: DENY policy "dubbo/demo" matched`},
	} {
		conn := &outcomeConn{}
		md := codecs.Metadata{{Key: "interface", Value: dubboDemoService}, {Key: "method", Value: c.method}}
		s := &filter.Stream{}
		s.Init(chain, conn, &codecs.Message{Type: codecs.Request, Metadata: md}, time.Now())
		s.Peer = c.peer
		s.Route = table.Match(md)
		s.Run()
		switch {
		case c.allowed && !conn.o.Responded:
			t.Errorf("%q calling %s: %+v, want allowed", c.peer.Principal, c.method, conn.o)
		case !c.allowed && (conn.o.Responded || conn.o.LocalReply != authz.DenyKind || conn.o.Flags != filter.UnauthorizedExternalService || conn.o.Detail != c.detail):
			t.Errorf("%q calling %s: %+v, want denied (UAEX) with %q", c.peer.Principal, c.method, conn.o, c.detail)
		}
	}
}

// A policy the filter would refuse is an error at its field, as the file
// names it; the tables of its namespace's hosts are not served (their
// last good version stays), the other namespaces' are.
func TestDubboAuthzErrors(t *testing.T) {
	for _, c := range []struct{ rules, want string }{
		{`[{to: [{operation: {methods: ["say*Hello"]}}]}]`, `spec.rules[0].to[0].operation.methods[0]: "say*Hello"`},
		{`[{to: [{operation: {notInterfaces: ["a*b"]}}]}]`, `spec.rules[0].to[0].operation.notInterfaces[0]: "a*b"`},
		{`[{from: [{source: {notPrincipals: [""]}}]}]`, `spec.rules[0].from[0].source.notPrincipals[0]: ""`},
		{`[{from: [{}]}]`, `spec.rules[0].from[0].source: must be set`},
	} {
		policy := "apiVersion: dubbo.aeraki.io/v1alpha1\nkind: DubboAuthorizationPolicy\nmetadata: {name: p, namespace: dubbo}\nspec:\n  rules: " + c.rules + "\n"
		d := dir(t, map[string]string{
			"se.yaml":     nsEntry("dubbo", dubboDemoService, 20880) + "---\n" + nsEntry("other", "org.example.Greeter", 20880),
			"policy.yaml": policy,
		})
		tr, problems := read(t, d)
		var msgs []string
		for _, p := range problems {
			msgs = append(msgs, strings.TrimPrefix(p.Error(), d+"/policy.yaml: DubboAuthorizationPolicy dubbo/p: "))
		}
		if len(msgs) != 1 || !strings.HasPrefix(msgs[0], c.want) {
			t.Errorf("%s: problems %q, want one starting %q", c.rules, msgs, c.want)
		}
		if !tr.FailedRoutes[dubboDemoService+"_20880"] || tr.Resources.Routes[dubboDemoService+"_20880"] != nil {
			t.Errorf("%s: the policy's host's table was served", c.rules)
		}
		if tr.Resources.Routes["org.example.Greeter_20880"] == nil {
			t.Errorf("%s: another namespace's table was not served", c.rules)
		}
	}
}

// A good policy made wrong: the host's table keeps its last good version,
// the policy included; `breeze validate` (Lint) reports the same error.
func TestDubboAuthzKeepsLastGood(t *testing.T) {
	d := dir(t, map[string]string{"se.yaml": nsEntry("dubbo", dubboDemoService, 20880), "deny.yaml": aerakiAuthzDeny})
	step := runSteps(t, d)
	first := step()
	good := first.res.Routes[dubboDemoService+"_20880"]
	if good.GetRoutes()[0].GetTypedPerFilterConfig()[authz.Name] == nil {
		t.Fatalf("first table has no authz config: %v; problems %v", good, first.problems)
	}
	broken := strings.Replace(aerakiAuthzDeny, `methods: ["*"]`, `methods: ["say*Hello"]`, 1)
	if err := os.WriteFile(filepath.Join(d, "deny.yaml"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	next := step()
	const want = `spec.rules[0].to[0].operation.methods[0]: "say*Hello"`
	if !hasProblem(next, want) {
		t.Errorf("problems %q, want one with %q", next.problems, want)
	}
	if got := next.res.Routes[dubboDemoService+"_20880"]; got != good {
		t.Errorf("served table %v, want the last good one %v", got, good)
	}
	var lint []string
	for _, p := range Lint(readFiles(t, d)...) {
		lint = append(lint, p.Error())
	}
	if !slices.ContainsFunc(lint, func(s string) bool { return strings.Contains(s, want) }) {
		t.Errorf("Lint: %q, want a problem with %q", lint, want)
	}
}
