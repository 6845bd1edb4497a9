package controlplane

import (
	"context"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/config"
	_ "github.com/breeze-mesh/breeze/filters/mutation" // the routes' per-filter configs
	"github.com/breeze-mesh/breeze/filters/route"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

var quiet = slog.New(slog.DiscardHandler)

const serviceEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter, namespace: demo}
spec:
  hosts: [org.example.Greeter]
  ports: [{number: 20880, name: tcp-dubbo, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}, locality: eu/eu-1, weight: 2}
  - {address: 10.0.0.2, ports: {tcp-dubbo: 20881}, labels: {version: v2}}
`

const destinationRule = `apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: greeter, namespace: demo}
spec:
  host: org.example.Greeter
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: user}}}
`

const metaRouter = `apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: greeter, namespace: demo}
spec:
  hosts: [org.example.Greeter]
  routes:
  - name: gold
    match: {attributes: {tenant: {exact: gold}, method: {prefix: Say}}}
    route: [{destination: {host: org.example.Greeter, subset: v2}}]
    requestMutation: [{key: env, value: prod}]
    responseMutation: [{key: served-by, value: breeze}]
  - name: split
    route:
    - {destination: {host: org.example.Greeter, subset: v1}, weight: 30}
    - {destination: {host: org.example.Greeter, subset: v2, port: {number: 20880}}, weight: 70}
    mirror: {host: org.example.Greeter, subset: v2}
`

const otherService = `apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: other}
spec:
  hosts: [org.example.Other, org.example.Alias]
  ports: [{number: 20880, name: tcp-dubbo}, {number: 20990, name: admin, targetPort: 9000}]
  endpoints:
  - {address: 10.0.1.1}
`

// dir writes files into a fresh directory.
func dir(t *testing.T, files map[string]string) string {
	t.Helper()
	d := t.TempDir()
	for name, content := range files {
		write(t, d, name, content)
	}
	return d
}

func write(t *testing.T, d, name, content string) {
	t.Helper()
	// Written aside and renamed, as editors and kubelet do: a reader never
	// sees half a file.
	tmp := filepath.Join(d, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(d, name)); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, d string) (Translation, []Problem) {
	t.Helper()
	src := &DirSource{Dir: d, Log: quiet}
	snap := src.Read()
	tr := Translate(snap.Objects)
	return tr, append(snap.Problems, tr.Problems...)
}

func fromYAML(t *testing.T, y string, m proto.Message) {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		t.Fatal(err)
	}
}

func equal(t *testing.T, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("%s:\n got %v\nwant %v", what, protojson.Format(got), protojson.Format(want))
	}
}

// proxyView is what a proxy makes of a served cluster: it reads it with
// client.Cluster and checks it with config.ValidateCluster, as for one
// that arrives over xDS.
func proxyView(t *testing.T, c *clusterv3.Cluster) *breezev1.Cluster {
	t.Helper()
	bc, err := client.Cluster(c)
	if err != nil {
		t.Fatalf("client.Cluster(%q): %v", c.GetName(), err)
	}
	if err := config.ValidateCluster(bc); err != nil {
		t.Fatalf("config.ValidateCluster(%q): %v", c.GetName(), err)
	}
	return bc
}

func problemStrings(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Error())
	}
	return out
}

func TestTranslate(t *testing.T) {
	d := dir(t, map[string]string{
		"greeter.yaml": serviceEntry + "---\n" + destinationRule + "--- # the router\n" + metaRouter,
		"other.yml":    otherService,
		"notes.txt":    "not read",
	})
	tr, problems := read(t, d)

	var want breezev1.RouteConfiguration
	fromYAML(t, `
name: org.example.Greeter_20880
routes:
- name: gold
  match: {metadata: [{key: method, prefix: Say}, {key: tenant, exact: gold}]}
  route: {cluster: "outbound|20880||org.example.Greeter", subset: {version: v2}, hash_key: user}
  request_mutation: [{key: env, value: prod}]
  typed_per_filter_config:
    mutation: {"@type": type.googleapis.com/breeze.filters.mutation.v1.Mutations, response: [{key: served-by, value: breeze}]}
- name: split
  route:
    hash_key: user
    weighted_clusters:
      clusters:
      - {name: "outbound|20880||org.example.Greeter", weight: 30, subset: {version: v1}}
      - {name: "outbound|20880||org.example.Greeter", weight: 70, subset: {version: v2}}
    request_mirror_policies: [{cluster: "outbound|20880||org.example.Greeter", subset: {version: v2}}]
`, &want)
	equal(t, "greeter routes", tr.Resources.Routes["org.example.Greeter_20880"], &want)

	var wantDefault breezev1.RouteConfiguration
	fromYAML(t, `{name: org.example.Alias_20990, routes: [{name: default, route: {cluster: "outbound|20990||org.example.Alias"}}]}`, &wantDefault)
	equal(t, "default route", tr.Resources.Routes["org.example.Alias_20990"], &wantDefault)
	if n := len(tr.Resources.Routes); n != 5 {
		t.Fatalf("%d route tables, want 5 (greeter, other and alias × 2 ports): %v", n, slices.Sorted(maps.Keys(tr.Resources.Routes)))
	}

	var wantEDS endpointv3.ClusterLoadAssignment
	fromYAML(t, `
cluster_name: "outbound|20880||org.example.Greeter"
endpoints:
- locality: {region: eu, zone: eu-1}
  lb_endpoints:
  - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 20880}}}
    load_balancing_weight: 2
    metadata: {filter_metadata: {envoy.lb: {version: v1}}}
- lb_endpoints:
  - endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 20881}}}
    metadata: {filter_metadata: {envoy.lb: {version: v2}}}
`, &wantEDS)
	equal(t, "greeter endpoints", tr.Resources.Endpoints["outbound|20880||org.example.Greeter"], &wantEDS)
	// What the proxy's client makes of it.
	eps, err := client.Endpoints(tr.Resources.Endpoints["outbound|20880||org.example.Greeter"])
	if err != nil || len(eps) != 2 || eps[0].Weight != 2 || eps[0].Labels["version"] != "v1" || eps[0].Labels[client.ZoneLabel] != "eu-1" {
		t.Fatalf("client reads %+v %v", eps, err)
	}
	admin := tr.Resources.Endpoints["outbound|20990||org.example.Other"]
	if port := admin.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue(); port != 9000 {
		t.Fatalf("targetPort: endpoint port %d, want 9000", port)
	}

	var wantCluster clusterv3.Cluster
	fromYAML(t, `
name: "outbound|20880||org.example.Greeter"
type: EDS
eds_cluster_config:
  eds_config: {ads: {}, resource_api_version: V3}
  service_name: "outbound|20880||org.example.Greeter"
lb_policy: ROUND_ROBIN
typed_extension_protocol_options:
  breeze:
    "@type": type.googleapis.com/breeze.v1.ClusterOptions
    subsets: [{name: v2, labels: {version: v2}, lb_policy: RING_HASH, hash_key: user}]
`, &wantCluster)
	equal(t, "greeter cluster", tr.Resources.Clusters["outbound|20880||org.example.Greeter"], &wantCluster)
	var wantProxyCluster breezev1.Cluster
	fromYAML(t, `
name: "outbound|20880||org.example.Greeter"
type: EDS
eds_service_name: "outbound|20880||org.example.Greeter"
subsets: [{name: v2, labels: {version: v2}, lb_policy: RING_HASH, hash_key: user}]
`, &wantProxyCluster)
	equal(t, "greeter cluster as the proxy reads it", proxyView(t, tr.Resources.Clusters["outbound|20880||org.example.Greeter"]), &wantProxyCluster)
	if n := len(tr.Resources.Clusters); n != 5 {
		t.Fatalf("%d clusters, want 5: %v", n, slices.Sorted(maps.Keys(tr.Resources.Clusters)))
	}
	for _, c := range tr.Resources.Clusters {
		proxyView(t, c)
	}

	if got := problemStrings(problems); len(got) != 0 {
		t.Fatalf("problems:\n%s\nwant none", strings.Join(got, "\n"))
	}
	if len(tr.FailedRoutes)+len(tr.FailedClusters)+len(tr.FailedEndpoints) != 0 {
		t.Fatalf("failed: %v %v %v", tr.FailedRoutes, tr.FailedClusters, tr.FailedEndpoints)
	}
}

// An attribute with no operator is a presence check, as Aeraki's API
// says ("If the value is empty and only the name of attribute is
// specified, presence of the attribute is checked"); so is regex "*",
// Aeraki's (and Istio's) catch-all.
func TestTranslateAttributePresence(t *testing.T) {
	router := strings.Replace(metaRouter, "{tenant: {exact: gold}, method: {prefix: Say}}", `{tenant: {}, method: {regex: "*"}, version: {exact: v1}}`, 1)
	d := dir(t, map[string]string{"greeter.yaml": serviceEntry + "---\n" + destinationRule, "router.yaml": router})
	tr, problems := read(t, d)
	for _, p := range problems {
		if !p.Warning {
			t.Errorf("error: %s", p.Error())
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	var want breezev1.RouteMatch
	fromYAML(t, `{metadata: [{key: method, present: true}, {key: tenant, present: true}, {key: version, exact: v1}]}`, &want)
	rc := tr.Resources.Routes["org.example.Greeter_20880"]
	equal(t, "match", rc.GetRoutes()[0].GetMatch(), &want)
	// As the proxy's router matches it.
	table, err := route.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		md   codecs.Metadata
		want string
	}{
		{codecs.Metadata{{Key: "tenant", Value: ""}, {Key: "method", Value: "SayHello"}, {Key: "version", Value: "v1"}}, "gold"},
		{codecs.Metadata{{Key: "method", Value: "SayHello"}, {Key: "version", Value: "v1"}}, "split"},
		{codecs.Metadata{{Key: "tenant", Value: "gold"}, {Key: "version", Value: "v1"}}, "split"},
	} {
		if got := table.Match(tc.md).RouteName(); got != tc.want {
			t.Errorf("%v: matched %q, want %q", tc.md, got, tc.want)
		}
	}
}

// Each broken object is reported with its file and field; the others
// still translate.
func TestTranslateErrors(t *testing.T) {
	cases := []struct {
		name        string
		file        string
		want        []string
		failedRoute bool
		failedEDS   bool
	}{
		{"unknown subset", strings.Replace(metaRouter, "subset: v2}}]", "subset: v3}}]", 1),
			[]string{`x.yaml: MetaRouter demo/greeter: spec.routes[0].route[0].destination.subset: "v3": greeter.yaml#2: DestinationRule demo/greeter defines no such subset`}, true, false},
		{"subset without a DestinationRule", strings.Replace(metaRouter, "route: [{destination: {host: org.example.Greeter, subset: v2}}]", "route: [{destination: {host: org.example.Alias, subset: v2}}]", 1),
			[]string{`x.yaml: MetaRouter demo/greeter: spec.routes[0].route[0].destination.subset: "v2": no DestinationRule has host org.example.Alias, so it has no subsets: add one that defines this subset`}, true, false},
		{"unknown host", strings.Replace(metaRouter, "route: [{destination: {host: org.example.Greeter", "route: [{destination: {host: org.example.Nope", 1),
			[]string{`x.yaml: MetaRouter demo/greeter: spec.routes[0].route[0].destination.host: "org.example.Nope": no ServiceEntry has this host`}, true, false},
		{"unknown port", strings.Replace(metaRouter, "port: {number: 20880}", "port: {number: 1234}", 1),
			[]string{`x.yaml: MetaRouter demo/greeter: spec.routes[1].route[1].destination.port.number: 1234: greeter.yaml#1: ServiceEntry demo/greeter has no such port`}, true, false},
		{"bad regex", strings.Replace(metaRouter, "{prefix: Say}", "{regex: \"(\"}", 1),
			[]string{"x.yaml: MetaRouter demo/greeter: spec.routes[0].match.attributes[\"method\"].regex: \"(\": error parsing regexp: missing closing ): `(`"}, true, false},
		{"zero weights", strings.NewReplacer("weight: 30", "weight: 0", "weight: 70", "weight: 0").Replace(metaRouter),
			[]string{`x.yaml: MetaRouter demo/greeter: spec.routes[1].route: the weights of 2 destinations add up to 0`}, true, false},
		{"no destination", strings.Replace(metaRouter, "    route: [{destination: {host: org.example.Greeter, subset: v2}}]\n", "", 1),
			[]string{`x.yaml: MetaRouter demo/greeter: spec.routes[0].route: at least one destination is required`}, true, false},
		{"unknown field", strings.Replace(metaRouter, "requestMutation", "requestMutations", 1),
			[]string{`x.yaml: MetaRouter demo/greeter: spec.routes[0].requestMutations: unknown field`}, false, false},
		{"wrong type", strings.Replace(metaRouter, "weight: 30", "weight: lots", 1),
			[]string{`x.yaml: MetaRouter demo/greeter: spec.routes[1].route[0].weight: invalid value for uint32 field weight: "lots"`}, false, false},
		{"host claimed twice", metaRouter + "---\n" + strings.Replace(metaRouter, "name: greeter,", "name: greeter2,", 1),
			[]string{`x.yaml#2: MetaRouter demo/greeter2: spec.hosts[0]: "org.example.Greeter" is already taken by x.yaml#1: MetaRouter demo/greeter`}, false, false},
		{"endpoint host name", strings.Replace(strings.Replace(serviceEntry, "name: greeter,", "name: greeter2,", 1), "org.example.Greeter", "org.example.Two", 1) + "  - {address: provider.local}\n",
			[]string{`x.yaml: ServiceEntry demo/greeter2: spec.endpoints[2].address: "provider.local": not an IP address`}, false, true},
		{"not yaml", "a: [", []string{`x.yaml: line 1, column 5: YAML syntax error: did not find expected node content; keeping what it held before`}, false, false},
		{"not yaml in a later document", serviceEntry + "---\n# two\nkind: [\n", []string{`x.yaml: line 14, column 1: YAML syntax error: did not find expected node content; keeping what it held before`}, false, false},
		{"nameless", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nspec: {}\n", []string{`x.yaml: ServiceEntry default/: metadata.name: required`}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := dir(t, map[string]string{"greeter.yaml": serviceEntry + "---\n" + destinationRule, "x.yaml": tc.file, "y.yaml": otherService})
			tr, problems := read(t, d)
			var got []string
			for _, p := range problems {
				if !p.Warning {
					got = append(got, strings.ReplaceAll(p.Error(), d+"/", ""))
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Fatalf("problem %d:\n got %s\nwant %s", i, got[i], tc.want[i])
				}
			}
			if tc.failedRoute != tr.FailedRoutes["org.example.Greeter_20880"] {
				t.Fatalf("failed routes %v", tr.FailedRoutes)
			}
			if tc.failedEDS != tr.FailedEndpoints["outbound|20880||org.example.Two"] {
				t.Fatalf("failed endpoints %v", tr.FailedEndpoints)
			}
			// Other objects are untouched.
			if tr.Resources.Routes["org.example.Other_20880"] == nil || tr.Resources.Endpoints["outbound|20880||org.example.Greeter"] == nil {
				t.Fatalf("other resources lost: %v", slices.Sorted(maps.Keys(tr.Resources.Routes)))
			}
		})
	}
}

// Run serves the last good version of what a broken object fed, and
// follows the directory as it changes.
func TestRunFollowsDirectoryAndKeepsLastGood(t *testing.T) {
	d := dir(t, map[string]string{"greeter.yaml": serviceEntry + "---\n" + destinationRule})
	srv := NewServer(quiet)
	type update struct {
		res      Resources
		problems []Problem
	}
	updates := make(chan update, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, &DirSource{Dir: d, Debounce: 10 * time.Millisecond, Log: quiet}, srv, quiet, func(r Resources, p []Problem) {
			updates <- update{r, p}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	next := func() update {
		t.Helper()
		select {
		case u := <-updates:
			return u
		case <-time.After(10 * time.Second):
			t.Fatal("no update within 10s")
			return update{}
		}
	}
	const rname = "org.example.Greeter_20880"
	if u := next(); u.res.Routes[rname].GetRoutes()[0].GetName() != "default" {
		t.Fatalf("without a MetaRouter: %v", u.res.Routes[rname])
	}
	write(t, d, "router.yaml", metaRouter)
	u := next()
	if u.res.Routes[rname].GetRoutes()[0].GetName() != "gold" {
		t.Fatalf("with the MetaRouter: %v", u.res.Routes[rname])
	}
	good := u.res.Routes[rname]

	// Broken: reported, and the last good table stays (not the default).
	write(t, d, "router.yaml", strings.Replace(metaRouter, "subset: v2}}]", "subset: v9}}]", 1))
	u = next()
	if !proto.Equal(u.res.Routes[rname], good) {
		t.Fatalf("broken MetaRouter replaced the table: %v", u.res.Routes[rname])
	}
	if msgs := strings.Join(problemStrings(u.problems), "\n"); !strings.Contains(msgs, `router.yaml: MetaRouter demo/greeter: spec.routes[0].route[0].destination.subset: "v9"`) {
		t.Fatalf("problems: %s", msgs)
	}
	// Unreadable: same.
	write(t, d, "router.yaml", "routes: [")
	if u = next(); !proto.Equal(u.res.Routes[rname], good) {
		t.Fatalf("unreadable file replaced the table: %v", u.res.Routes[rname])
	}
	// Deleted: back to the default route.
	if err := os.Remove(filepath.Join(d, "router.yaml")); err != nil {
		t.Fatal(err)
	}
	if u = next(); u.res.Routes[rname].GetRoutes()[0].GetName() != "default" {
		t.Fatalf("after delete: %v", u.res.Routes[rname])
	}
}

// A MetaRouter's routes are translated once per port of its host: a
// warning about them is reported once, not once per port.
func TestRouteWarningsOncePerObject(t *testing.T) {
	twoPorts := strings.Replace(serviceEntry, "ports: [{number: 20880, name: tcp-dubbo, protocol: TCP}]", "ports: [{number: 20880, name: tcp-dubbo, protocol: TCP}, {number: 20881, name: tcp-admin}]", 1)
	// v1 hashes on another key than v2: the route's key is v1's.
	rule := strings.Replace(destinationRule, "- {name: v1, labels: {version: v1}}", "- {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: tenant}}}}", 1)
	router := strings.Replace(metaRouter, "weight: 70", "weight: 80", 1)
	d := dir(t, map[string]string{"se.yaml": twoPorts, "dr.yaml": rule, "router.yaml": router})
	_, problems := read(t, d)
	var got []string
	for _, p := range problems {
		if p.Warning {
			got = append(got, strings.ReplaceAll(p.Error(), d+"/", ""))
		}
	}
	want := []string{
		`router.yaml: MetaRouter demo/greeter: spec.routes[1].route[1].destination: DestinationRule hash key "user" differs from "tenant" of an earlier destination; "tenant" applies to the route`,
		`router.yaml: MetaRouter demo/greeter: spec.routes[1].route: the weights add up to 110, not 100: Breeze takes them as relative and splits traffic 27.3% / 72.7%; make them add up to 100`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
