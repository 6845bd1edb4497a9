package proxy

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/metrics"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	xdsclient "github.com/breeze-mesh/breeze/xds/client"
)

// edsCluster is an Envoy cluster as a control plane serves it to Breeze:
// EDS over ADS, with Breeze's options when given.
func edsCluster(t *testing.T, name string, policy clusterv3.Cluster_LbPolicy, opts *breezev1.ClusterOptions) *clusterv3.Cluster {
	t.Helper()
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig:   &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
			ServiceName: name,
		},
		LbPolicy: policy,
	}
	if opts != nil {
		a, err := anypb.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{xdsclient.OptionsKey: a}
	}
	return c
}

func (s *xdsServer) set(mutate func(r *resources)) {
	s.t.Helper()
	r := &resources{s: s}
	mutate(r)
	if err := s.srv.Set(s.res); err != nil {
		s.t.Fatal(err)
	}
}

// resources edits the server's resources in one Set.
type resources struct{ s *xdsServer }

func (r *resources) cluster(c *clusterv3.Cluster) {
	if r.s.res.Clusters == nil {
		r.s.res.Clusters = map[string]*clusterv3.Cluster{}
	}
	r.s.res.Clusters[c.GetName()] = c
}

func (r *resources) endpoints(service string, bs ...*backend) {
	if r.s.res.Endpoints == nil {
		r.s.res.Endpoints = map[string]*endpointv3.ClusterLoadAssignment{}
	}
	r.s.res.Endpoints[service] = cla(service, bs...)
}

func (r *resources) routes(rc *breezev1.RouteConfiguration) {
	r.s.res.Routes = map[string]*breezev1.RouteConfiguration{rc.GetName(): rc}
}

func (r *resources) remove(cluster string) {
	delete(r.s.res.Clusters, cluster)
	delete(r.s.res.Endpoints, cluster)
}

// tagged is a route table whose routes tag requests with table=i; whoami,
// when set, takes Whoami calls (cluster and subset).
func tagged(i int, whoami *breezev1.RouteAction) *breezev1.RouteConfiguration {
	tag := []*breezev1.KeyValue{{Key: "table", Value: fmt.Sprint(i)}}
	var routes []*breezev1.Route
	if whoami != nil {
		routes = append(routes, &breezev1.Route{Name: "whoami", Match: &breezev1.RouteMatch{Metadata: []*breezev1.MetadataMatcher{
			{Key: "method", Match: &breezev1.MetadataMatcher_Exact{Exact: "Whoami"}}}}, Route: whoami, RequestMutation: tag})
	}
	routes = append(routes, &breezev1.Route{Name: "rest", Route: toCluster("base", nil), RequestMutation: tag})
	return &breezev1.RouteConfiguration{Name: "r", Routes: routes}
}

// The plugin_config names only the xDS server and the route table; every
// cluster arrives over xDS. Under continuous load on long-lived
// connections, 50 changes: a cluster is added and then a route to it, its
// policy changes (round robin → ring hash), it gets subsets with their own
// policy, the route leaves it (the proxy drops it), the server removes it.
// No request fails, no connection closes, and each state routes as it
// says.
func TestXDSClustersChangeUnderLoad(t *testing.T) {
	bs := []*backend{newBackend(t, "b0"), newBackend(t, "b1"), newBackend(t, "b2"), newBackend(t, "b3")}
	drainServed(t, bs...)
	s := startXDSServer(t, "")
	s.set(func(r *resources) {
		r.cluster(edsCluster(t, "base", clusterv3.Cluster_ROUND_ROBIN, nil))
		r.endpoints("base", bs[0], bs[1])
		r.routes(tagged(0, nil))
	})
	addr, p := startXDSProxy(t, "stat_prefix: t\ncodec: tframe\nxds: {initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: r}\n")

	// Answers to Whoami under each table, by backend.
	var mu sync.Mutex
	whoami := map[int]map[string]int{}
	var wrong []string
	l := startLoad(t, addr, func(method string, m tmsg) {
		mu.Lock()
		defer mu.Unlock()
		table, server := tableOf(m), md(m, "server")
		if method != "Whoami" || table%5 == 0 || table%5 == 4 {
			if server != "b0" && server != "b1" {
				wrong = append(wrong, fmt.Sprintf("%s under table %d answered by %s", method, table, server))
			}
			return
		}
		if whoami[table] == nil {
			whoami[table] = map[string]int{}
		}
		whoami[table][server]++
	})
	servedUnder := func(table int) map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range whoami[table] {
			out[k] = v
		}
		return out
	}
	total := func(m map[string]int) (n int) {
		for _, v := range m {
			n += v
		}
		return n
	}
	l.waitFor("traffic", func() bool { return l.requests.Load() > 0 })

	const cycles = 10 // 5 changes each
	changes := 0
	for c := range cycles {
		base := 5 * c
		// 1. Add cluster x (b2, b3, round robin); 2. route Whoami to it.
		s.set(func(r *resources) {
			r.cluster(edsCluster(t, "x", clusterv3.Cluster_ROUND_ROBIN, nil))
			r.endpoints("x", bs[2], bs[3])
		})
		s.set(func(r *resources) { r.routes(tagged(base+1, toCluster("x", nil))) })
		changes += 2
		l.waitFor("Whoami balanced over b2 and b3", func() bool {
			got := servedUnder(base + 1)
			return got["b2"] > 0 && got["b3"] > 0
		})
		if got := servedUnder(base + 1); got["b0"]+got["b1"] > 0 {
			t.Fatalf("cycle %d: Whoami to x answered by base: %v", c, got)
		}

		// 3. x hashes on the method: every Whoami goes to one endpoint.
		s.set(func(r *resources) {
			r.cluster(edsCluster(t, "x", clusterv3.Cluster_RING_HASH, &breezev1.ClusterOptions{HashKey: "method"}))
			r.routes(tagged(base+2, toCluster("x", nil)))
		})
		changes++
		l.waitFor("Whoami under the ring-hash table", func() bool { return total(servedUnder(base+2)) >= 20 })
		if got := servedUnder(base + 2); len(got) != 1 || got["b0"]+got["b1"] > 0 {
			t.Fatalf("cycle %d: ring hash on the method spread Whoami over %v", c, got)
		}

		// 4. Subsets with their own policy: the b2 subset, round robin
		// over its one endpoint, while the cluster hashes.
		s.set(func(r *resources) {
			rr := breezev1.Cluster_ROUND_ROBIN
			r.cluster(edsCluster(t, "x", clusterv3.Cluster_RING_HASH, &breezev1.ClusterOptions{HashKey: "method",
				Subsets: []*breezev1.ClusterSubset{{Name: "two", Labels: map[string]string{"name": "b2"}, LbPolicy: &rr}}}))
			r.routes(tagged(base+3, &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "x"}, Subset: map[string]string{"name": "b2"}}))
		})
		changes++
		l.waitFor("Whoami under the subset table", func() bool { return total(servedUnder(base+3)) >= 20 })
		if got := servedUnder(base + 3); len(got) != 1 || got["b2"] == 0 {
			t.Fatalf("cycle %d: Whoami to subset name=b2 answered by %v", c, got)
		}

		// 5. The route leaves x (the proxy drops it), then the server
		// removes it.
		s.set(func(r *resources) { r.routes(tagged(base+4, nil)) })
		l.waitFor("x dropped by the proxy", func() bool { return p.Cluster("x") == nil })
		s.set(func(r *resources) { r.remove("x") })
		changes++
		l.barrier()
	}
	l.stop()
	mu.Lock()
	defer mu.Unlock()
	if len(wrong) > 0 {
		t.Fatalf("%d answers from the wrong cluster, first: %s", len(wrong), wrong[0])
	}
	t.Logf("%d cluster and route changes under load: %d requests, 0 failed, 0 connections closed", changes, l.requests.Load())
}

// A route naming a cluster the server does not have is accepted; its
// requests get "no healthy upstream", counted, until the cluster arrives.
// The server removing a cluster the routes still name does the same.
func TestXDSClusterMissingThenAddedThenRemoved(t *testing.T) {
	b := newBackend(t, "b")
	drainServed(t, b)
	s := startXDSServer(t, "")
	s.set(func(r *resources) {
		r.routes(&breezev1.RouteConfiguration{Name: "r", Routes: []*breezev1.Route{{Route: toCluster("later", nil)}}})
	})
	// A cluster the server leaves out of its answers is not trusted to be
	// missing until initial_fetch_timeout (an answer may predate the
	// subscription): the table applies then.
	addr, p := startXDSProxy(t, "stat_prefix: miss\ncodec: tframe\nxds: {initial_fetch_timeout: 1s, address: "+s.addr+", route_config_name: r}\n")
	c := dial(t, addr)
	missing := func() float64 { return testutil.ToFloat64(metrics.ClusterMissing.WithLabelValues("miss", "later")) }
	before := missing()
	var m tmsg
	var err error
	id := uint64(0)
	eventually(t, "the table naming the missing cluster applied", func() bool {
		id++
		m, err = c.call(id, "x")
		return err != nil || md(m, "error") != "no_route"
	})
	if err != nil || md(m, "error") != codecs.ErrNoHealthyUpstream.String() || !strings.Contains(m.body, `"later"`) {
		t.Fatalf("request to a missing cluster: %+v %v", m, err)
	}
	if missing()-before != 1 {
		t.Fatalf("breeze_cluster_missing_total rose by %v, want 1", missing()-before)
	}

	s.set(func(r *resources) {
		r.cluster(edsCluster(t, "later", clusterv3.Cluster_ROUND_ROBIN, nil))
		r.endpoints("later", b)
	})
	eventually(t, "cluster later arrived", func() bool { return p.Cluster("later") != nil })
	if m, err := c.call(id+1, "x"); err != nil || md(m, "server") != "b" {
		t.Fatalf("after the cluster arrived: %+v %v", m, err)
	}

	s.set(func(r *resources) { r.remove("later") })
	eventually(t, "cluster later removed", func() bool { return p.Cluster("later") == nil })
	if m, err := c.call(id+2, "x"); err != nil || md(m, "error") != codecs.ErrNoHealthyUpstream.String() {
		t.Fatalf("after the server removed the cluster: %+v %v", m, err)
	}
	eventually(t, "the removed cluster's upstream connection closed", func() bool { return b.open.Load() == 0 })
}

// A new route table waits for the clusters it names: an EDS cluster is
// not usable before its endpoints arrive, and meanwhile the previous
// table serves.
func TestXDSRouteTableWaitsForWarmingCluster(t *testing.T) {
	old, next := newBackend(t, "old"), newBackend(t, "next")
	drainServed(t, old, next)
	s := startXDSServer(t, "")
	s.set(func(r *resources) {
		r.cluster(edsCluster(t, "base", clusterv3.Cluster_ROUND_ROBIN, nil))
		r.endpoints("base", old)
		r.routes(&breezev1.RouteConfiguration{Name: "r", Routes: []*breezev1.Route{{Route: toCluster("base", nil)}}})
	})
	addr, p := startXDSProxy(t, "stat_prefix: warm\ncodec: tframe\nxds: {initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: r}\n")
	c := dial(t, addr)
	// The cluster arrives without endpoints, and the table naming it.
	s.set(func(r *resources) {
		r.cluster(edsCluster(t, "warming", clusterv3.Cluster_ROUND_ROBIN, nil))
		r.routes(&breezev1.RouteConfiguration{Name: "r", Routes: []*breezev1.Route{{Route: toCluster("warming", nil)}}})
	})
	eventually(t, "the new table waiting for its cluster", func() bool {
		d := p.xdsClusters()
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.pending != nil && d.pending.rc != nil && d.m["warming"] != nil && d.m["warming"].cfg != nil
	})
	for i := range 5 {
		if m, err := c.call(uint64(i), "x"); err != nil || md(m, "server") != "old" {
			t.Fatalf("while the cluster warms: %+v %v", m, err)
		}
	}
	s.set(func(r *resources) { r.endpoints("warming", next) })
	eventually(t, "the new table applied", func() bool {
		m, err := c.call(9, "x")
		return err == nil && md(m, "server") == "next"
	})
	eventually(t, "base dropped: no table names it", func() bool { return p.Cluster("base") == nil })
}

// An invalid cluster is NACKed with what is wrong, and the proxy keeps the
// version it had.
func TestXDSInvalidClusterNACKed(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	drainServed(t, a, b)
	s := startXDSServer(t, "")
	s.set(func(r *resources) {
		r.cluster(edsCluster(t, "c", clusterv3.Cluster_ROUND_ROBIN, nil))
		r.endpoints("c", a, b)
		r.routes(&breezev1.RouteConfiguration{Name: "r", Routes: []*breezev1.Route{{Route: toCluster("c", nil)}}})
	})
	addr, p := startXDSProxy(t, "stat_prefix: nack\ncodec: tframe\nxds: {initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: r}\n")
	c := dial(t, addr)
	if m, err := c.call(1, "x"); err != nil || m.status != codecs.StatusOK {
		t.Fatalf("%+v %v", m, err)
	}
	bad := edsCluster(t, "c", clusterv3.Cluster_RING_HASH, nil)
	bad.HealthChecks = []*corev3.HealthCheck{{}}
	s.set(func(r *resources) { r.cluster(bad) })
	s.nack(t, `Cluster "c": health_checks: not supported by Breeze; remove it`)
	badSubset := edsCluster(t, "c", clusterv3.Cluster_ROUND_ROBIN, &breezev1.ClusterOptions{Subsets: []*breezev1.ClusterSubset{{Name: "empty"}}})
	s.set(func(r *resources) { r.cluster(badSubset) })
	s.nack(t, `Cluster "c": subsets[0].labels: {}: a subset needs at least one label`)
	if got := p.Cluster("c").Policy; got != breezev1.Cluster_ROUND_ROBIN {
		t.Fatalf("policy %v after refused versions, want the previous ROUND_ROBIN", got)
	}
	// Round robin still: both endpoints answer.
	seen := map[string]bool{}
	for i := range 10 {
		m, err := c.call(uint64(10+i), "x")
		if err != nil {
			t.Fatal(err)
		}
		seen[md(m, "server")] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("answers from %v, want a and b", seen)
	}
}

func (p *Proxy) xdsClusters() *xdsClusters {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	return p.xds.clusters
}

// A new version of a cluster changes its connection settings for the pools
// it keeps: more connections per endpoint open on the next requests.
func TestXDSClusterConnectionSettingsChange(t *testing.T) {
	b := newBackend(t, "b")
	drainServed(t, b)
	s := startXDSServer(t, "")
	s.set(func(r *resources) {
		r.cluster(edsCluster(t, "c", clusterv3.Cluster_ROUND_ROBIN, &breezev1.ClusterOptions{ConnectionsPerEndpoint: 1}))
		r.endpoints("c", b)
		r.routes(&breezev1.RouteConfiguration{Name: "r", Routes: []*breezev1.Route{{Route: toCluster("c", nil)}}})
	})
	addr, p := startXDSProxy(t, "stat_prefix: conns\ncodec: tframe\nxds: {initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: r}\n")
	c := dial(t, addr)
	for i := range 6 {
		if m, err := c.call(uint64(i), "x"); err != nil || md(m, "server") != "b" {
			t.Fatalf("%+v %v", m, err)
		}
	}
	if n := b.open.Load(); n != 1 {
		t.Fatalf("%d upstream connections, want 1", n)
	}
	s.set(func(r *resources) {
		r.cluster(edsCluster(t, "c", clusterv3.Cluster_ROUND_ROBIN, &breezev1.ClusterOptions{ConnectionsPerEndpoint: 3}))
	})
	eventually(t, "the new version applied", func() bool { return p.Cluster("c").ConnsPerHost == 3 })
	for i := range 6 {
		if m, err := c.call(uint64(10+i), "x"); err != nil || md(m, "server") != "b" {
			t.Fatalf("%+v %v", m, err)
		}
	}
	eventually(t, "3 upstream connections", func() bool { return b.open.Load() == 3 })
	if n := p.up.Pools(); n != 1 {
		t.Fatalf("%d pools, want the one kept across versions", n)
	}
}

// A config's own routes (no route_config_name) may name clusters that the
// config does not define: they are fetched, and the new proxy waits for
// them within initial_fetch_timeout.
func TestXDSInlineRoutesFetchClusters(t *testing.T) {
	b := newBackend(t, "b")
	s := startXDSServer(t, "")
	s.set(func(r *resources) {
		r.cluster(edsCluster(t, "remote", clusterv3.Cluster_ROUND_ROBIN, nil))
		r.endpoints("remote", b)
	})
	addr, p := startXDSProxy(t, "stat_prefix: inline\ncodec: tframe\nxds: {initial_fetch_timeout: 10s, address: "+s.addr+"}\n"+
		"route_config:\n  routes:\n  - route: {cluster: remote}\n")
	if p.Cluster("remote") == nil {
		t.Fatal("the proxy started before the cluster its routes name arrived")
	}
	c := dial(t, addr)
	if m, err := c.call(1, "x"); err != nil || md(m, "server") != "b" {
		t.Fatalf("%+v %v", m, err)
	}
}
