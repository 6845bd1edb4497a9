package controlplane

import (
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/localratelimit"
	"github.com/breeze-mesh/breeze/filters/route"
	localratelimitv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/local_ratelimit/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Aeraki's MetaRouter samples with localRateLimit, verbatim (license
// headers dropped), from github.com/aeraki-mesh/aeraki at 56e4de0.
var aerakiLocalRateLimit = map[string]string{
	"demo/metaprotocol-dubbo/metarouter-local-ratelimit.yaml": `---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: test-metaprotocol-dubbo-route
  namespace: meta-dubbo
spec:
  hosts:
    - org.apache.dubbo.samples.basic.api.demoservice
  localRateLimit:
    tokenBucket:
      fillInterval: 60s
      maxTokens: 10
      tokensPerFill: 10
    conditions:
    - tokenBucket:
        fillInterval: 10s
        maxTokens: 2
        tokensPerFill: 2
      match:
        attributes:
          method:
            exact: sayHello
  routes:
    - name: v1
      route:
        - destination:
            host: org.apache.dubbo.samples.basic.api.demoservice
            subset: v1
`,
	"demo/metaprotocol-dubbo-app-level/metarouter-local-ratelimit.yaml": `---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: test-metaprotocol-dubbo-route
  namespace: meta-dubbo
spec:
  hosts:
    - dubbo-sample-provider.meta-dubbo.svc.cluster.local
  localRateLimit:
    tokenBucket:
      fillInterval: 60s
      maxTokens: 10
      tokensPerFill: 10
    conditions:
    - tokenBucket:
        fillInterval: 10s
        maxTokens: 2
        tokensPerFill: 2
      match:
        attributes:
          method:
            exact: sayHello
  routes:
    - name: v1
      route:
        - destination:
            host: dubbo-sample-provider.meta-dubbo.svc.cluster.local
            subset: v1
`,
	"demo/metaprotocol-thrift/metarouter-local-ratelimit.yaml": `---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: test-metaprotocol-thrift-route
  namespace: meta-thrift
spec:
  hosts:
  - thrift-sample-server.meta-thrift.svc.cluster.local
  localRateLimit:
    tokenBucket:
      fillInterval: 60s
      maxTokens: 5
      tokensPerFill: 5
    conditions:
    - tokenBucket:
        fillInterval: 30s
        maxTokens: 2
        tokensPerFill: 2
      match:
        attributes:
          method:
            exact: sayHello
  routes:
    - name: v1
      match:
        attributes:
          method:
            exact: sayHello
      route:
        - destination:
            host: thrift-sample-server.meta-thrift.svc.cluster.local
            subset: v1
`,
	"demo/metaprotocol-qza/metarouter-rate-limit.yaml": `---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: test-metaprotocol-qza-route
  namespace: meta-qza
spec:
  hosts:
    - qza-sample-server.meta-qza.svc.cluster.local
  localRateLimit:
    tokenBucket:
      maxTokens: 5
      tokensPerFill: 5
      fillInterval: 10s
  routes:
    - name: v2
      match:
        attributes:
          cmd:
            exact: "153"
          sub_cmd:
            regex: "1|2"
      route:
        - destination:
            host: qza-sample-server.meta-qza.svc.cluster.local
            subset: v2
`,
	"test/e2e/metaprotocol/testdata/metarouter-local-ratelimit.yaml": `---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: test-metaprotocol-route
spec:
  hosts:
  - org.apache.dubbo.samples.basic.api.demoservice
  routes:
  - name: default
    match:
      attributes:
        method:
          exact: sayHello
    route:
    - destination:
        host: org.apache.dubbo.samples.basic.api.demoservice
        subset: v1
  localRateLimit:
    tokenBucket:
      fillInterval: 60s
      maxTokens: 5
      tokensPerFill: 5
    conditions:
    - tokenBucket:
        fillInterval: 60s
        maxTokens: 2
        tokensPerFill: 2
      match:
        attributes:
          method:
            exact: sayHello
`,
}

// sampleHost finds the first host of a MetaRouter.
var sampleHost = regexp.MustCompile(`hosts:\s*\n\s*-\s*(\S+)`)

// subsets is a ServiceEntry of host with endpoints labelled v1 and v2, and
// the DestinationRule defining those subsets, as Aeraki's demos deploy.
func subsets(host string, port uint32) string {
	name := strings.ReplaceAll(host, ".", "-")
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %[1]s}
spec:
  hosts: [%[2]s]
  ports: [{number: %[3]d, name: tcp}]
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: %[1]s}
spec:
  host: %[2]s
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`, name, host, port)
}

// Each of Aeraki's samples loads without a problem and puts its
// localRateLimit on every route of its host's table, with the table as the
// scope: Aeraki's filter is the listener's, its buckets shared by all
// routes.
func TestAerakiLocalRateLimitSamples(t *testing.T) {
	for file, sample := range aerakiLocalRateLimit {
		t.Run(file, func(t *testing.T) {
			host := sampleHost.FindStringSubmatch(sample)[1]
			d := dir(t, map[string]string{"mesh.yaml": subsets(host, 20880), "router.yaml": sample})
			tr, problems := read(t, d)
			for _, p := range problems {
				t.Errorf("problem: %s", strings.ReplaceAll(p.Error(), d+"/", ""))
			}
			rc := tr.Resources.Routes[host+"_20880"]
			if len(rc.GetRoutes()) == 0 {
				t.Fatalf("no routes for %s: %v", host, tr.Resources.Routes)
			}
			for _, r := range rc.GetRoutes() {
				var got localratelimitv1.LocalRateLimit
				if err := r.GetTypedPerFilterConfig()[localratelimit.Name].UnmarshalTo(&got); err != nil {
					t.Fatalf("route %q: %v", r.GetName(), err)
				}
				if got.GetScope() != host+"_20880" || got.GetTokenBucket() == nil {
					t.Errorf("route %q: %v, want scope %s_20880 and the sample's default bucket", r.GetName(), &got, host)
				}
			}
			if _, err := route.Compile(rc); err != nil {
				t.Fatalf("the proxy refuses the table: %v", err)
			}
		})
	}
}

// Aeraki's dubbo sample, translated and applied by the proxy's filter:
// sayHello takes its tokens from the condition's bucket (2), any other
// method from the default (10), as meta-protocol-proxy does.
func TestAerakiLocalRateLimitSampleApplied(t *testing.T) {
	const host = "org.apache.dubbo.samples.basic.api.demoservice"
	want := `{name: org.apache.dubbo.samples.basic.api.demoservice_20880, routes: [{name: v1,
  route: {cluster: "outbound|20880||org.apache.dubbo.samples.basic.api.demoservice", subset: {version: v1}},
  typed_per_filter_config: {local_ratelimit: {"@type": type.googleapis.com/breeze.filters.local_ratelimit.v1.LocalRateLimit,
    scope: org.apache.dubbo.samples.basic.api.demoservice_20880,
    token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 60s},
    conditions: [{match: [{key: method, exact: sayHello}], token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 10s}}]}}}]}`
	d := dir(t, map[string]string{"mesh.yaml": subsets(host, 20880), "router.yaml": aerakiLocalRateLimit["demo/metaprotocol-dubbo/metarouter-local-ratelimit.yaml"]})
	tr, problems := read(t, d)
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	rc := tr.Resources.Routes[host+"_20880"]
	var wantRC breezev1.RouteConfiguration
	fromYAML(t, want, &wantRC)
	equal(t, "route table", rc, &wantRC)

	table, err := route.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := filter.Lookup(localratelimit.Name)
	// Refused requests are logged, at the default logger of the filter's build.
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(quiet)
	inst, err := f.Build(f.Config(), filter.BuildContext{ProxyName: t.Name(), Codec: "dubbo"})
	if err != nil {
		t.Fatal(err)
	}
	chain := &filter.Chain{Filters: []filter.Filter{inst, answer{}}, Names: []string{localratelimit.Name, filter.RouterName}}
	allowed := map[string]int{}
	for _, method := range []string{"sayHello", "sayGoodbye"} {
		for range 20 {
			c := &outcomeConn{}
			md := codecs.Metadata{{Key: "interface", Value: host}, {Key: "method", Value: method}}
			s := &filter.Stream{}
			s.Init(chain, c, &codecs.Message{Type: codecs.Request, Metadata: md}, time.Now())
			s.Route = table.Match(md)
			s.Run()
			if c.o.Responded {
				allowed[method]++
			} else if c.o.LocalReply != codecs.ErrOverloaded || c.o.Flags != filter.RateLimited {
				t.Fatalf("%s: %+v, want a response or an overloaded reply with RL", method, c.o)
			}
		}
	}
	if allowed["sayHello"] != 2 || allowed["sayGoodbye"] != 10 {
		t.Fatalf("allowed of 20 each: %v, want sayHello 2 (its condition), sayGoodbye 10 (the default bucket)", allowed)
	}
}

// What Aeraki's webhook and meta-protocol-proxy refuse is an error, named
// by its field; the host's routes keep their last good version.
func TestLocalRateLimitErrors(t *testing.T) {
	const host = "org.example.Greeter"
	for _, c := range []struct{ spec, want string }{
		{`{}`, "spec.localRateLimit: at least one of tokenBucket or conditions is required"},
		{`{tokenBucket: {maxTokens: 0, fillInterval: 1s}}`, "spec.localRateLimit.tokenBucket.maxTokens: 0: must be at least 1"},
		{`{tokenBucket: {maxTokens: 1}}`, "spec.localRateLimit.tokenBucket.fillInterval: required"},
		{`{tokenBucket: {maxTokens: 1, fillInterval: 10ms}}`, "spec.localRateLimit.tokenBucket.fillInterval: 10ms: must be at least 50ms"},
		{`{tokenBucket: {maxTokens: 1, tokensPerFill: 0, fillInterval: 1s}}`, "spec.localRateLimit.tokenBucket.tokensPerFill: 0: must be at least 1 (unset: 1)"},
		{`{conditions: [{match: {attributes: {method: {exact: a}}}}]}`, "spec.localRateLimit.conditions[0].tokenBucket: required"},
		{`{conditions: [{match: {attributes: {method: {regex: "("}}}, tokenBucket: {maxTokens: 1, fillInterval: 1s}}]}`, "spec.localRateLimit.conditions[0].match.attributes[\"method\"].regex: \"(\": error parsing regexp: missing closing ): `(`"},
	} {
		router := fmt.Sprintf("apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\nmetadata: {name: r, namespace: demo}\nspec:\n  hosts: [%s]\n  localRateLimit: %s\n", host, c.spec)
		d := dir(t, map[string]string{"se.yaml": entry(host, 20880, 20881), "router.yaml": router})
		tr, problems := read(t, d)
		var msgs []string
		for _, p := range problems {
			msgs = append(msgs, strings.TrimPrefix(p.Error(), d+"/router.yaml: MetaRouter demo/r: "))
		}
		if want := []string{c.want}; !slices.Equal(msgs, want) {
			t.Errorf("%s: problems %q, want %q (once, though the host has two ports)", c.spec, msgs, want)
		}
		if !tr.FailedRoutes[host+"_20880"] || tr.Resources.Routes[host+"_20880"] != nil {
			t.Errorf("%s: the route table was served", c.spec)
		}
	}
}

// A condition without a match takes every request (Aeraki's API); one
// whose match has an attribute without operator requires its presence,
// as a route's match does.
func TestLocalRateLimitConditionMatches(t *testing.T) {
	const host = "org.example.Greeter"
	router := "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\nmetadata: {name: r, namespace: demo}\nspec:\n  hosts: [" + host + "]\n" +
		"  localRateLimit:\n    conditions:\n    - {match: {attributes: {caller: {}, method: {regex: \"*\"}}}, tokenBucket: {maxTokens: 3, fillInterval: 1s}}\n" +
		"    - tokenBucket: {maxTokens: 1, fillInterval: 1s}\n"
	d := dir(t, map[string]string{"se.yaml": entry(host, 20880), "router.yaml": router})
	tr, problems := read(t, d)
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	var got localratelimitv1.LocalRateLimit
	if err := tr.Resources.Routes[host+"_20880"].GetRoutes()[0].GetTypedPerFilterConfig()[localratelimit.Name].UnmarshalTo(&got); err != nil {
		t.Fatal(err)
	}
	want := &localratelimitv1.LocalRateLimit{}
	fromYAML(t, `{scope: org.example.Greeter_20880, conditions: [
  {match: [{key: caller, present: true}, {key: method, present: true}], token_bucket: {max_tokens: 3, fill_interval: 1s}},
  {token_bucket: {max_tokens: 1, fill_interval: 1s}}]}`, want)
	equal(t, "local_ratelimit config of the default route", &got, want)
}

// answer is the terminal filter of TestAerakiLocalRateLimitSampleApplied.
type answer struct{ filter.Base }

func (answer) OnRequest(s *filter.Stream) filter.Status {
	s.Respond(&codecs.Message{Type: codecs.Response}, answerCodec{})
	return filter.Stop
}

type answerCodec struct{}

func (answerCodec) Decode([]byte, *codecs.Message) (int, error)                 { return 0, nil }
func (answerCodec) Encode(m *codecs.Message) ([]byte, error)                    { return m.Frame, nil }
func (answerCodec) LocalReply(*codecs.Message, codecs.ErrorKind, string) []byte { return nil }
func (answerCodec) HeartbeatReply(*codecs.Message) []byte                       { return nil }

// outcomeConn is a connection that keeps how its one request ended.
type outcomeConn struct{ o filter.Outcome }

func (c *outcomeConn) LocalReply(*filter.Stream, codecs.ErrorKind, string, bool) {}
func (c *outcomeConn) Write([]byte)                                              {}
func (c *outcomeConn) Resume(s *filter.Stream)                                   { go s.Continue() }
func (c *outcomeConn) Done(s *filter.Stream)                                     { c.o = s.Outcome }
func (c *outcomeConn) Panicked(_ *filter.Stream, where string, v any, _ []byte) {
	panic(fmt.Sprint(where, v))
}
