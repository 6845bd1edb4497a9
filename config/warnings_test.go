package config

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

const connectTimeoutWarning = "deprecated and ignored: Envoy's plainText cluster sets the connect timeout of every upstream connection Breeze opens (breeze run: 5s); set connect_timeout on the plainText cluster instead, and remove this field"

func TestWarningsNone(t *testing.T) {
	if ws := Warnings(validConfig()); ws != nil {
		t.Errorf("Warnings = %q, want none", ws)
	}
	if ws := Warnings(nil); ws != nil {
		t.Errorf("Warnings(nil) = %q, want none", ws)
	}
	if ws := RunnerWarnings(readmeRunner()); ws != nil {
		t.Errorf("RunnerWarnings = %q, want none", ws)
	}
}

// An old config that sets connect_timeout still validates, and says once
// that the field has no effect and where the timeout is set instead.
func TestWarningsConnectTimeout(t *testing.T) {
	c := validConfig()
	c.Clusters[1].ConnectTimeout = durationpb.New(1500 * time.Millisecond)
	if err := Validate(c); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	want := []string{"clusters[1].connect_timeout: 1.5s: " + connectTimeoutWarning}
	if ws := Warnings(c); !slices.Equal(ws, want) {
		t.Errorf("Warnings =\n%q\nwant\n%q", ws, want)
	}

	// Zero is set too: the field is there, and just as ignored.
	c.Clusters[0].ConnectTimeout = durationpb.New(0)
	r := &breezev1.Runner{Listeners: []*breezev1.Listener{{Name: "a", Address: ":0", Proxy: validConfig()}, {Name: "b", Address: ":0", Proxy: c}}}
	want = []string{
		"listeners[1].proxy.clusters[0].connect_timeout: 0s: " + connectTimeoutWarning,
		"listeners[1].proxy.clusters[1].connect_timeout: 1.5s: " + connectTimeoutWarning,
	}
	if ws := RunnerWarnings(r); !slices.Equal(ws, want) {
		t.Errorf("RunnerWarnings =\n%q\nwant\n%q", ws, want)
	}
}

func proxyFromYAML(t *testing.T, y string) *breezev1.ProxyConfig {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	c := &breezev1.ProxyConfig{}
	if err := DecodeJSON(js, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// A hash_key does not choose the balancer: on a cluster, subset or route
// whose balancer does not hash it is ignored, and said so.
func TestWarningsHashKeyWithoutHashPolicy(t *testing.T) {
	const clusters = `
clusters:
- name: rr
  endpoints: [{address: 10.0.0.1, port: 1, labels: {v: "1"}}, {address: 10.0.0.2, port: 1, labels: {v: "2"}}]
  subsets:
  - {name: ring, labels: {v: "2"}, lb_policy: RING_HASH, hash_key: user}
- name: ring
  lb_policy: MAGLEV
  hash_key: user
  endpoints: [{address: 10.0.0.3, port: 1}]
`
	const head = "stat_prefix: s\ncodec: " + testCodec + "\nxds: {address: 'x:1', route_config_name: r}\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"route to a round robin cluster", head + clusters + "route_config: {routes: [{route: {cluster: rr, hash_key: tenant}}]}\n",
			[]string{`route_config.routes[0].route.hash_key: "tenant": ignored: no cluster the route targets hashes ("rr" ROUND_ROBIN); set lb_policy RING_HASH or MAGLEV on the cluster (or its subset) to balance on it`}},
		{"route to a ring hash subset", head + clusters + "route_config: {routes: [{route: {cluster: rr, subset: {v: \"2\"}, hash_key: tenant}}]}\n", nil},
		{"route to a round robin subset", head + clusters + "route_config: {routes: [{route: {cluster: rr, subset: {v: \"1\"}, hash_key: tenant}}]}\n",
			[]string{`route_config.routes[0].route.hash_key: "tenant": ignored: no cluster the route targets hashes ("rr" ROUND_ROBIN)`}},
		{"weighted, one hashes", head + clusters + "route_config: {routes: [{route: {weighted_clusters: {clusters: [{name: rr, weight: 1}, {name: ring, weight: 1}]}, hash_key: tenant}}]}\n", nil},
		{"weighted, none hashes", head + clusters + "route_config: {routes: [{route: {weighted_clusters: {clusters: [{name: rr, weight: 1}, {name: rr, subset: {v: \"1\"}, weight: 1}]}, hash_key: tenant}}]}\n",
			[]string{`route_config.routes[0].route.hash_key: "tenant": ignored: no cluster the route targets hashes ("rr" ROUND_ROBIN)`}},
		{"route to a cluster over xDS", head + clusters + "route_config: {routes: [{route: {cluster: fetched, hash_key: tenant}}]}\n", nil},
		{"cluster key, no hash policy", head + "clusters: [{name: c, lb_policy: LEAST_REQUEST, hash_key: user, endpoints: [{address: 10.0.0.1, port: 1}]}]\n",
			[]string{`clusters[0].hash_key: "user": ignored: lb_policy LEAST_REQUEST does not hash (nor does any subset); set lb_policy RING_HASH or MAGLEV to balance on it`}},
		{"cluster key used by a subset", head + "clusters: [{name: c, hash_key: user, subsets: [{name: s, labels: {v: \"1\"}, lb_policy: RING_HASH}], endpoints: [{address: 10.0.0.1, port: 1, labels: {v: \"1\"}}]}]\n", nil},
		{"subset key, no hash policy", head + "clusters: [{name: c, lb_policy: RING_HASH, hash_key: user, subsets: [{name: s, labels: {v: \"1\"}, lb_policy: RANDOM, hash_key: tenant}], endpoints: [{address: 10.0.0.1, port: 1, labels: {v: \"1\"}}]}]\n",
			[]string{`clusters[0].subsets[0].hash_key: "tenant": ignored: the subset balances with RANDOM, which does not hash; set its lb_policy RING_HASH or MAGLEV to balance on it`}},
		{"subset key, cluster's hash policy", head + "clusters: [{name: c, lb_policy: RING_HASH, hash_key: user, subsets: [{name: s, labels: {v: \"1\"}, hash_key: tenant}], endpoints: [{address: 10.0.0.1, port: 1, labels: {v: \"1\"}}]}]\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := proxyFromYAML(t, tc.yaml)
			if err := Validate(c); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			ws := Warnings(c)
			if len(ws) != len(tc.want) {
				t.Fatalf("Warnings =\n%q\nwant\n%q", ws, tc.want)
			}
			for i := range ws {
				if !strings.HasPrefix(ws[i], tc.want[i]) {
					t.Fatalf("Warnings =\n%q\nwant\n%q", ws, tc.want)
				}
			}
		})
	}

	// A route table over xDS, against the proxy's own clusters.
	c := proxyFromYAML(t, head+clusters)
	rc := &breezev1.RouteConfiguration{Routes: []*breezev1.Route{{Route: &breezev1.RouteAction{
		ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "rr"}, HashKey: "method"}}}}
	want := []string{`routes[0].route.hash_key: "method": ignored: no cluster the route targets hashes ("rr" ROUND_ROBIN); set lb_policy RING_HASH or MAGLEV on the cluster (or its subset) to balance on it`}
	if ws := RouteWarnings(rc, c.GetClusters()); !slices.Equal(ws, want) {
		t.Fatalf("RouteWarnings =\n%q\nwant\n%q", ws, want)
	}
}
