package controlplane

import (
	"slices"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/route"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Aeraki's mirroring samples, verbatim (license headers dropped), at the
// commit samples_test.go names.

// demo/metaprotocol-dubbo/traffic-mirroring.yaml
const aerakiTrafficMirroring = `---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: test-metaprotocol-dubbo-route
  namespace: meta-dubbo
spec:
  hosts:
    - org.apache.dubbo.samples.basic.api.demoservice
  routes:
    - name: traffic-mirroring
      route:
        - destination:
            host: org.apache.dubbo.samples.basic.api.demoservice
            subset: v1
      mirror:
        host: org.apache.dubbo.samples.basic.api.demoservice
        subset: v2
      mirrorPercentage:
        value: 100.0
`

// test/e2e/metaprotocol/testdata/traffic-mirroring.yaml
const aerakiTrafficMirroringHalf = `---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: test-metaprotocol-route
spec:
  hosts:
    - org.apache.dubbo.samples.basic.api.demoservice
  routes:
    - name: traffic-mirroring
      route:
        - destination:
            host: org.apache.dubbo.samples.basic.api.demoservice
            subset: v1
      mirror:
        host: org.apache.dubbo.samples.basic.api.demoservice
        subset: v2
      mirrorPercentage:
        value: 50.0
`

// demo/metaprotocol-dubbo/destinationrule.yaml
const aerakiDubboSubsets = `---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: dubbo-sample-provider
  namespace: meta-dubbo
spec:
  host: org.apache.dubbo.samples.basic.api.demoservice
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
`

// demoService is the samples' host with a v1 and a v2 endpoint (Aeraki's
// own ServiceEntry selects workloads, which Breeze does not read).
const demoService = `apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: dubbo-demoservice, namespace: meta-dubbo}
spec:
  hosts: [org.apache.dubbo.samples.basic.api.demoservice]
  ports: [{number: 20880, name: tcp-metaprotocol-dubbo, protocol: TCP}, {number: 20881, name: tcp-shadow}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
`

// Aeraki's samples mirror v1's traffic to v2: the route keeps v1, its
// mirror policy names v2 with the sample's percentage, the proxy accepts
// the table and its router draws that share (millionths, as Aeraki
// writes them for Envoy).
func TestAerakiMirrorSamples(t *testing.T) {
	for _, tc := range []struct {
		name, router string
		pct          float64
		perMillion   uint32
	}{
		{"demo", aerakiTrafficMirroring, 100, 1_000_000},
		{"e2e", aerakiTrafficMirroringHalf, 50, 500_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := dir(t, map[string]string{"se.yaml": demoService, "dr.yaml": aerakiDubboSubsets, "router.yaml": tc.router})
			tr, problems := read(t, d)
			if got := problemStrings(problems); len(got) != 0 {
				t.Fatalf("problems:\n%s", strings.Join(got, "\n"))
			}
			const cluster = "outbound|20880||org.apache.dubbo.samples.basic.api.demoservice"
			want := &breezev1.RouteConfiguration{Name: "org.apache.dubbo.samples.basic.api.demoservice_20880", Routes: []*breezev1.Route{{
				Name: "traffic-mirroring",
				Route: &breezev1.RouteAction{
					ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: cluster},
					Subset:           map[string]string{"version": "v1"},
					RequestMirrorPolicies: []*breezev1.RequestMirrorPolicy{{
						Cluster: cluster, Subset: map[string]string{"version": "v2"}, Percentage: &tc.pct,
					}},
				},
			}}}
			rc := tr.Resources.Routes["org.apache.dubbo.samples.basic.api.demoservice_20880"]
			equal(t, "routes", rc, want)
			if err := config.ValidateRoutes(rc, nil); err != nil {
				t.Fatalf("the proxy refuses the table: %v", err)
			}
			table, err := route.Compile(rc)
			if err != nil {
				t.Fatal(err)
			}
			m := table.Routes[0].Mirrors
			if len(m) != 1 || m[0].Cluster != cluster || m[0].Subset != "version=v2" || m[0].PerMillion != tc.perMillion {
				t.Fatalf("router's mirrors %+v; want %s subset version=v2 at %d per million", m, cluster, tc.perMillion)
			}
		})
	}
}

// What Aeraki's webhook refuses, and mirror destinations that lead
// nowhere, are errors naming the field: the table keeps its last good
// version; breeze validate (Lint) reports the same. A mirror without
// mirrorPercentage mirrors everything; one with a port of its own
// mirrors to that port's cluster.
func TestMirrorTranslation(t *testing.T) {
	const mr = "router.yaml#2: MetaRouter meta-dubbo/test-metaprotocol-dubbo-route: spec.routes[0]."
	for _, tc := range []struct {
		name, from, to string
		want           string // an error, or "" for a good table
		policy         *breezev1.RequestMirrorPolicy
	}{
		{name: "percentage unset", from: "      mirrorPercentage:\n        value: 100.0\n", to: "",
			policy: &breezev1.RequestMirrorPolicy{Cluster: "outbound|20880||org.apache.dubbo.samples.basic.api.demoservice", Subset: map[string]string{"version": "v2"}}},
		{name: "own port", from: "        subset: v2\n", to: "        subset: v2\n        port: {number: 20881}\n",
			policy: &breezev1.RequestMirrorPolicy{Cluster: "outbound|20881||org.apache.dubbo.samples.basic.api.demoservice", Subset: map[string]string{"version": "v2"}, Percentage: new(float64(100))}},
		{name: "percentage without mirror", from: "      mirror:\n        host: org.apache.dubbo.samples.basic.api.demoservice\n        subset: v2\n", to: "",
			want: mr + "mirrorPercentage: set without mirror: mirror and mirrorPercentage go together"},
		{name: "percentage 0", from: "value: 100.0", to: "value: 0",
			want: mr + "mirrorPercentage.value: 0: must be more than 0 and at most 100"},
		{name: "percentage over 100", from: "value: 100.0", to: "value: 100.5",
			want: mr + "mirrorPercentage.value: 100.5: must be more than 0 and at most 100"},
		{name: "unknown host", from: "        host: org.apache.dubbo.samples.basic.api.demoservice\n        subset: v2", to: "        host: org.apache.dubbo.samples.basic.api.demoservic\n        subset: v2",
			want: mr + `mirror.host: "org.apache.dubbo.samples.basic.api.demoservic": no ServiceEntry has this host; did you mean org.apache.dubbo.samples.basic.api.demoservice?`},
		{name: "unknown subset", from: "        subset: v2\n", to: "        subset: v3\n",
			want: mr + `mirror.subset: "v3": dr.yaml#2: DestinationRule meta-dubbo/dubbo-sample-provider defines no such subset (only v1, v2)`},
		{name: "unknown port", from: "        subset: v2\n", to: "        subset: v2\n        port: {number: 9999}\n",
			want: mr + "mirror.port.number: 9999: se.yaml: ServiceEntry meta-dubbo/dubbo-demoservice has no such port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(aerakiTrafficMirroring, tc.from) {
				t.Fatalf("the sample has no %q", tc.from)
			}
			router := strings.Replace(aerakiTrafficMirroring, tc.from, tc.to, 1)
			files := map[string]string{"se.yaml": demoService, "dr.yaml": aerakiDubboSubsets, "router.yaml": router}
			d := dir(t, files)
			tr, problems := read(t, d)
			got := problemStrings(problems)
			for i := range got {
				got[i] = strings.ReplaceAll(got[i], d+"/", "")
			}
			const table = "org.apache.dubbo.samples.basic.api.demoservice_20880"
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("problems:\n%s", strings.Join(got, "\n"))
				}
				equal(t, "mirror policy", tr.Resources.Routes[table].GetRoutes()[0].GetRoute().GetRequestMirrorPolicies()[0], tc.policy)
				return
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("problems:\n%s\nwant one: %s", strings.Join(got, "\n"), tc.want)
			}
			if !tr.FailedRoutes[table] || tr.Resources.Routes[table] != nil {
				t.Fatalf("the table is served (%v), not kept at its last good version", tr.Resources.Routes[table])
			}
			var lint []string
			for _, p := range Lint(File{Name: "se.yaml", Data: []byte(demoService)}, File{Name: "dr.yaml", Data: []byte(aerakiDubboSubsets)}, File{Name: "router.yaml", Data: []byte(router)}) {
				lint = append(lint, p.Error())
			}
			if !slices.Contains(lint, tc.want) {
				t.Fatalf("Lint (breeze validate) says:\n%s\nwant %s", strings.Join(lint, "\n"), tc.want)
			}
		})
	}
}
