package controlplane

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// entry is a ServiceEntry for host with the given ports and one endpoint.
func entry(host string, ports ...uint32) string {
	var ps []string
	for _, p := range ports {
		ps = append(ps, fmt.Sprintf("{number: %d, name: p%d}", p, p))
	}
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %s}
spec:
  hosts: [%s]
  ports: [%s]
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}]
`, strings.ReplaceAll(host, ".", "-"), host, strings.Join(ps, ", "))
}

// rule is a DestinationRule for org.example.Greeter with the given spec
// (after host).
func rule(spec string) string {
	return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: greeter, namespace: demo}\nspec:\n  host: org.example.Greeter\n" + spec
}

// Each DestinationRule loadBalancer setting becomes the cluster's policy
// (or a subset's), as the proxy reads it.
func TestTranslateClusters(t *testing.T) {
	const greeter = "org.example.Greeter"
	cases := []struct {
		name  string
		files map[string]string
		// want: by cluster name, the proxy's view of it beyond its name,
		// type and EDS service name, as YAML.
		want     map[string]string
		warnings []string
	}{
		{name: "no DestinationRule", files: map[string]string{"se.yaml": entry(greeter, 20880)},
			want: map[string]string{"outbound|20880||org.example.Greeter": `{}`}},
		{name: "simple ROUND_ROBIN", files: map[string]string{"dr.yaml": rule("  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n")},
			want: map[string]string{"outbound|20880||org.example.Greeter": `{lb_policy: ROUND_ROBIN}`}},
		{name: "simple LEAST_REQUEST", files: map[string]string{"dr.yaml": rule("  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n")},
			want: map[string]string{"outbound|20880||org.example.Greeter": `{lb_policy: LEAST_REQUEST}`}},
		{name: "simple LEAST_CONN", files: map[string]string{"dr.yaml": rule("  trafficPolicy: {loadBalancer: {simple: LEAST_CONN}}\n")},
			want: map[string]string{"outbound|20880||org.example.Greeter": `{lb_policy: LEAST_REQUEST}`}},
		{name: "simple RANDOM", files: map[string]string{"dr.yaml": rule("  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n")},
			want: map[string]string{"outbound|20880||org.example.Greeter": `{lb_policy: RANDOM}`}},
		{name: "simple UNSPECIFIED", files: map[string]string{"dr.yaml": rule("  trafficPolicy: {loadBalancer: {simple: UNSPECIFIED}}\n")},
			want: map[string]string{"outbound|20880||org.example.Greeter": `{lb_policy: ROUND_ROBIN}`}},
		{name: "simple PASSTHROUGH", files: map[string]string{"dr.yaml": rule("  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}\n")},
			want:     map[string]string{"outbound|20880||org.example.Greeter": `{lb_policy: ROUND_ROBIN}`},
			warnings: []string{"dr.yaml: DestinationRule demo/greeter: spec.trafficPolicy.loadBalancer.simple: PASSTHROUGH: Breeze always balances over the endpoints; round robin is used"}},
		{name: "consistentHash rule-wide", files: map[string]string{"se.yaml": entry(greeter, 20880, 20990),
			"dr.yaml": rule("  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: user}}}\n")},
			want: map[string]string{
				"outbound|20880||org.example.Greeter": `{lb_policy: RING_HASH, hash_key: user}`,
				"outbound|20990||org.example.Greeter": `{lb_policy: RING_HASH, hash_key: user}`,
			}},
		{name: "consistentHash maglev", files: map[string]string{"dr.yaml": rule("  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: user, maglev: {tableSize: 65537}}}}\n")},
			want:     map[string]string{"outbound|20880||org.example.Greeter": `{lb_policy: MAGLEV, hash_key: user}`},
			warnings: []string{"dr.yaml: DestinationRule demo/greeter: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: Breeze's tables have a fixed size; ignored"}},
		{name: "consistentHash on the source IP", files: map[string]string{"dr.yaml": rule("  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}\n")},
			want:     map[string]string{"outbound|20880||org.example.Greeter": `{lb_policy: ROUND_ROBIN}`},
			warnings: []string{"dr.yaml: DestinationRule demo/greeter: spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp: only httpHeaderName (a request metadata key) is supported; ignored, round robin is used"}},
		{name: "port-level over rule-wide", files: map[string]string{"se.yaml": entry(greeter, 20880, 20990),
			"dr.yaml": rule(`  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    portLevelSettings:
    - {port: {number: 20990}, loadBalancer: {consistentHash: {httpHeaderName: tenant}}}
    - {port: {number: 20880}, connectionPool: {tcp: {maxConnections: 10}}}
`)},
			want: map[string]string{
				"outbound|20880||org.example.Greeter": `{lb_policy: RANDOM, circuit_breakers: {max_connections: 10}}`,
				"outbound|20990||org.example.Greeter": `{lb_policy: RING_HASH, hash_key: tenant}`,
			}},
		{name: "parts not applied are named", files: map[string]string{"dr.yaml": rule(`  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3}
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {tcp: {maxConnections: 1, connectTimeout: 5s}}}}
`)},
			want: map[string]string{"outbound|20880||org.example.Greeter": `
outlier_detection: {consecutive_errors: 3}
subsets: [{name: v1, labels: {version: v1}, circuit_breakers: {max_connections: 1}}]`},
			warnings: []string{
				"dr.yaml: DestinationRule demo/greeter: spec.trafficPolicy.tls: not applied by Breeze: the sidecar's own TLS settings carry its upstream connections; ignored",
				"dr.yaml: DestinationRule demo/greeter: spec.subsets[0].trafficPolicy.connectionPool.tcp.connectTimeout: not applied by Breeze: Envoy's plainText cluster dials its upstream connections, with its own settings; ignored",
			}},
		{name: "subsets with a policy of their own", files: map[string]string{"dr.yaml": rule(`  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}}
  - {name: v3, labels: {version: v3, zone: a}, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: user}}}}
  - {name: v4, labels: {version: v4}, trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}}
  - {name: egress}
`)},
			want: map[string]string{"outbound|20880||org.example.Greeter": `
lb_policy: RANDOM
subsets:
- {name: v2, labels: {version: v2}, lb_policy: LEAST_REQUEST}
- {name: v3, labels: {version: v3, zone: a}, lb_policy: RING_HASH, hash_key: user}
- {name: v4, labels: {version: v4}, lb_policy: ROUND_ROBIN}`},
			warnings: []string{"dr.yaml: DestinationRule demo/greeter: spec.subsets[3].trafficPolicy.loadBalancer.simple: PASSTHROUGH: Breeze always balances over the endpoints; round robin is used"}},
		{name: "subset port-level consistentHash", files: map[string]string{"se.yaml": entry(greeter, 20880, 20990), "dr.yaml": rule(`  subsets:
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      portLevelSettings: [{port: {number: 20990}, loadBalancer: {consistentHash: {httpHeaderName: user, maglev: {}}}}]
`)},
			want: map[string]string{
				"outbound|20880||org.example.Greeter": `{}`,
				"outbound|20990||org.example.Greeter": `{subsets: [{name: v2, labels: {version: v2}, lb_policy: MAGLEV, hash_key: user}]}`,
			}},

		// Istio's examples (istio.io/api networking/v1alpha3/destination_rule.proto, v1.28.3).
		{name: "Istio bookinfo-ratings with a subset", files: map[string]string{"se.yaml": entry("ratings.prod.svc.cluster.local", 9080), "dr.yaml": `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: bookinfo-ratings
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
  subsets:
  - name: testversion
    labels:
      version: v3
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
`},
			want: map[string]string{"outbound|9080||ratings.prod.svc.cluster.local": `
lb_policy: LEAST_REQUEST
subsets: [{name: testversion, labels: {version: v3}, lb_policy: ROUND_ROBIN}]`}},
		{name: "Istio bookinfo-ratings-port", files: map[string]string{"se.yaml": entry("ratings.prod.svc.cluster.local", 80, 9080, 8080), "dr.yaml": `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: bookinfo-ratings-port
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy: # Apply to all ports
    portLevelSettings:
    - port:
        number: 80
      loadBalancer:
        simple: LEAST_REQUEST
    - port:
        number: 9080
      loadBalancer:
        simple: ROUND_ROBIN
`},
			want: map[string]string{
				"outbound|80||ratings.prod.svc.cluster.local":   `{lb_policy: LEAST_REQUEST}`,
				"outbound|9080||ratings.prod.svc.cluster.local": `{lb_policy: ROUND_ROBIN}`,
				"outbound|8080||ratings.prod.svc.cluster.local": `{}`,
			}},
		{name: "Istio sticky sessions on a cookie", files: map[string]string{"se.yaml": entry("ratings.prod.svc.cluster.local", 9080), "dr.yaml": `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: bookinfo-ratings
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          ttl: 0s
`},
			want:     map[string]string{"outbound|9080||ratings.prod.svc.cluster.local": `{}`},
			warnings: []string{"dr.yaml: DestinationRule default/bookinfo-ratings: spec.trafficPolicy.loadBalancer.consistentHash.httpCookie: only httpHeaderName (a request metadata key) is supported; ignored, round robin is used"}},

		// Aeraki's samples (github.com/aeraki-mesh/aeraki at 56e4de0).
		{name: "Aeraki demo/metaprotocol-dubbo/consistent-hash-lb", files: map[string]string{"se.yaml": entry("org.apache.dubbo.samples.basic.api.demoservice", 20880), "dr.yaml": `
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: dubbo-sample-provider
  namespace: meta-dubbo
spec:
  host: org.apache.dubbo.samples.basic.api.demoservice
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: method
`},
			want: map[string]string{"outbound|20880||org.apache.dubbo.samples.basic.api.demoservice": `{lb_policy: RING_HASH, hash_key: method}`}},
		{name: "Aeraki test/e2e/metaprotocol/testdata/consistent-hash-lb", files: map[string]string{"se.yaml": entry("org.apache.dubbo.samples.basic.api.demoservice", 20880), "dr.yaml": `
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: dubbo-sample-provider
spec:
  host: org.apache.dubbo.samples.basic.api.demoservice
  subsets:
  - name: sample
    labels:
      app: dubbo-sample-provider
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpHeaderName: method
`},
			want: map[string]string{"outbound|20880||org.apache.dubbo.samples.basic.api.demoservice": `
subsets: [{name: sample, labels: {app: dubbo-sample-provider}, lb_policy: RING_HASH, hash_key: method}]`}},
		{name: "Aeraki demo/metaprotocol-dubbo subsets", files: map[string]string{"se.yaml": entry("org.apache.dubbo.samples.basic.api.demoservice", 20880), "dr.yaml": `
---
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
`},
			want: map[string]string{"outbound|20880||org.apache.dubbo.samples.basic.api.demoservice": `{}`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := maps.Clone(tc.files)
			if files["se.yaml"] == "" {
				files["se.yaml"] = entry(greeter, 20880)
			}
			d := dir(t, files)
			tr, problems := read(t, d)
			var warnings []string
			for _, p := range problems {
				msg := strings.ReplaceAll(p.Error(), d+"/", "")
				if !p.Warning {
					t.Fatalf("error: %s", msg)
				}
				warnings = append(warnings, msg)
			}
			if !slices.Equal(warnings, tc.warnings) {
				t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(warnings, "\n"), strings.Join(tc.warnings, "\n"))
			}
			if got := slices.Sorted(maps.Keys(tr.Resources.Clusters)); !slices.Equal(got, slices.Sorted(maps.Keys(tc.want))) {
				t.Fatalf("clusters %v, want %v", got, slices.Sorted(maps.Keys(tc.want)))
			}
			for name, y := range tc.want {
				var want breezev1.Cluster
				fromYAML(t, y, &want)
				want.Name, want.Type, want.EdsServiceName = name, breezev1.Cluster_EDS, name
				equal(t, name, proxyView(t, tr.Resources.Clusters[name]), &want)
			}
		})
	}
}

// A DestinationRule with errors is reported with its file and field and
// left out: the clusters and routes of its host fail (their last good
// version stays), with no error blamed on the MetaRouter that routes
// there; other hosts are untouched.
func TestTranslateClusterErrors(t *testing.T) {
	cases := []struct {
		name string
		dr   string
		want []string
	}{
		{"unknown simple policy", strings.Replace(destinationRule, "simple: ROUND_ROBIN", "simple: 9", 1),
			[]string{`x.yaml: DestinationRule demo/greeter: spec.trafficPolicy.loadBalancer.simple: 9: not a policy (ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM or PASSTHROUGH)`}},
		{"empty hash header", strings.Replace(destinationRule, "httpHeaderName: user", `httpHeaderName: ""`, 1),
			[]string{`x.yaml: DestinationRule demo/greeter: spec.subsets[1].trafficPolicy.loadBalancer.consistentHash.httpHeaderName: required: the request metadata key to hash on`}},
		{"subset policy without labels", destinationRule + "  - {name: v3, trafficPolicy: {loadBalancer: {simple: RANDOM}}}\n",
			[]string{`x.yaml: DestinationRule demo/greeter: spec.subsets[2].labels: required for a subset with a policy of its own (loadBalancer, connectionPool, outlierDetection or retryBudget)`}},
		{"subset limits without labels", destinationRule + "  - {name: v3, trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}}\n",
			[]string{`x.yaml: DestinationRule demo/greeter: spec.subsets[2].labels: required for a subset with a policy of its own`}},
		{"subset policies for the same labels", destinationRule + "  - {name: v2b, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}\n",
			[]string{`x.yaml: DestinationRule demo/greeter: spec.subsets[2].labels: {version: v2}: same labels as spec.subsets[1], and both have a policy of their own`}},
		{"duplicate subset name", destinationRule + "  - {name: v1, labels: {version: v3}}\n",
			[]string{`x.yaml: DestinationRule demo/greeter: spec.subsets[2].name: "v1": also the name of spec.subsets[0]`}},
		{"nameless subset", destinationRule + "  - {labels: {version: v3}}\n",
			[]string{`x.yaml: DestinationRule demo/greeter: spec.subsets[2].name: required`}},
		{"port-level settings without a port", strings.Replace(destinationRule, "{loadBalancer: {simple: ROUND_ROBIN}}", "{portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}", 1),
			[]string{`x.yaml: DestinationRule demo/greeter: spec.trafficPolicy.portLevelSettings[0].port.number: 0: must be 1–65535`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := dir(t, map[string]string{"greeter.yaml": serviceEntry, "x.yaml": tc.dr, "router.yaml": metaRouter, "y.yaml": otherService})
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
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Fatalf("problem %d:\n got %s\nwant %s", i, got[i], tc.want[i])
				}
			}
			const cname, rname = "outbound|20880||org.example.Greeter", "org.example.Greeter_20880"
			if !tr.FailedClusters[cname] || tr.Resources.Clusters[cname] != nil {
				t.Fatalf("cluster %s not failed: failed %v", cname, tr.FailedClusters)
			}
			if !tr.FailedRoutes[rname] || tr.Resources.Routes[rname] != nil {
				t.Fatalf("routes %s not failed: failed %v", rname, tr.FailedRoutes)
			}
			if len(tr.FailedClusters) != 1 || len(tr.FailedRoutes) != 1 || len(tr.FailedEndpoints) != 0 {
				t.Fatalf("failed: %v %v %v", tr.FailedClusters, tr.FailedRoutes, tr.FailedEndpoints)
			}
			if tr.Resources.Clusters["outbound|20880||org.example.Other"] == nil || tr.Resources.Endpoints[cname] == nil {
				t.Fatalf("other resources lost: %v", slices.Sorted(maps.Keys(tr.Resources.Clusters)))
			}
		})
	}

	// Without a MetaRouter the host's default route fails too: it would
	// lose the rule's hash key.
	d := dir(t, map[string]string{"greeter.yaml": serviceEntry, "x.yaml": strings.Replace(destinationRule, "simple: ROUND_ROBIN", "simple: 9", 1)})
	if tr, _ := read(t, d); !tr.FailedRoutes["org.example.Greeter_20880"] {
		t.Fatalf("default route not failed: %v", tr.FailedRoutes)
	}
}

// Run serves the last good cluster while its DestinationRule is broken,
// and follows the rule as it changes and goes.
func TestRunKeepsLastGoodCluster(t *testing.T) {
	const cname = "outbound|20880||org.example.Greeter"
	d := dir(t, map[string]string{"greeter.yaml": serviceEntry, "dr.yaml": rule("  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: user}}}\n")})
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
	policy := func(u update) string {
		t.Helper()
		c := proxyView(t, u.res.Clusters[cname])
		return c.GetLbPolicy().String() + " " + c.GetHashKey()
	}
	u := next()
	if got := policy(u); got != "RING_HASH user" {
		t.Fatalf("first: %s", got)
	}
	good := u.res.Clusters[cname]

	write(t, d, "dr.yaml", rule("  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: tenant}}}\n  subsets: [{name: v9, trafficPolicy: {loadBalancer: {simple: RANDOM}}}]\n"))
	u = next()
	if !proto.Equal(u.res.Clusters[cname], good) {
		t.Fatalf("broken DestinationRule replaced the cluster: %v", u.res.Clusters[cname])
	}
	if key := u.res.Routes["org.example.Greeter_20880"].GetRoutes()[0].GetRoute().GetHashKey(); key != "user" {
		t.Fatalf("broken DestinationRule changed the default route's hash key to %q", key)
	}
	if msgs := strings.Join(problemStrings(u.problems), "\n"); !strings.Contains(msgs, "dr.yaml: DestinationRule demo/greeter: spec.subsets[0].labels: required") {
		t.Fatalf("problems: %s", msgs)
	}

	write(t, d, "dr.yaml", rule("  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n"))
	if got := policy(next()); got != "LEAST_REQUEST " {
		t.Fatalf("fixed: %s", got)
	}
	if err := os.Remove(filepath.Join(d, "dr.yaml")); err != nil {
		t.Fatal(err)
	}
	if got := policy(next()); got != "ROUND_ROBIN " {
		t.Fatalf("without a DestinationRule: %s", got)
	}
}
