package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/internal/testpki"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// xdsServer is the control plane's ADS server on a loopback port.
type xdsServer struct {
	t     *testing.T
	addr  string
	srv   *controlplane.Server
	res   controlplane.Resources
	nacks chan controlplane.NACK
}

func startXDSServer(t *testing.T, addr string) *xdsServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &xdsServer{t: t, addr: ln.Addr().String(), nacks: make(chan controlplane.NACK, 100),
		srv: controlplane.NewServer(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))),
		res: controlplane.Resources{Routes: map[string]*breezev1.RouteConfiguration{}, Endpoints: map[string]*endpointv3.ClusterLoadAssignment{}}}
	s.srv.OnNACK = func(n controlplane.NACK) { s.nacks <- n }
	go s.srv.Serve(ln)
	t.Cleanup(s.srv.Stop)
	return s
}

func (s *xdsServer) setRoutes(rc *breezev1.RouteConfiguration) {
	s.t.Helper()
	s.res.Routes = map[string]*breezev1.RouteConfiguration{rc.GetName(): rc}
	if err := s.srv.Set(s.res); err != nil {
		s.t.Fatal(err)
	}
}

func (s *xdsServer) setEndpoints(service string, bs ...*backend) {
	s.t.Helper()
	s.res.Endpoints = map[string]*endpointv3.ClusterLoadAssignment{service: cla(service, bs...)}
	if err := s.srv.Set(s.res); err != nil {
		s.t.Fatal(err)
	}
}

func (s *xdsServer) nack(t *testing.T, want string) {
	t.Helper()
	select {
	case n := <-s.nacks:
		if !strings.Contains(n.Detail, want) {
			t.Fatalf("NACK %q, want it to contain %q", n.Detail, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no NACK within 10s (want %q)", want)
	}
}

func cla(service string, bs ...*backend) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, b := range bs {
		labels, _ := structpb.NewStruct(map[string]any{"name": b.name})
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: b.port()}}}}}},
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.lb": labels}},
		})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: service, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

// startXDSProxy serves a proxy config through the host and closes its
// Proxy (and so its xDS watches) when the test ends.
func startXDSProxy(t *testing.T, yml string) (string, *Proxy) {
	t.Helper()
	addr := startProxy(t, yml)
	p := proxyFor(t, yml)
	t.Cleanup(p.Close)
	return addr, p
}

// drainServed keeps a backend's served channel from filling up under
// sustained load.
func drainServed(t *testing.T, bs ...*backend) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	for _, b := range bs {
		go func() {
			for {
				select {
				case <-b.served:
				case <-done:
					return
				}
			}
		}()
	}
}

// load keeps long-lived client connections busy: each worker sends one
// request after another on its own connection, alternating the methods
// Greet and Whoami, and hands every answer to onReply. Any failure (an
// error reply, a lost request, a closed connection) is counted.
type load struct {
	t        *testing.T
	conns    []*client
	done     []atomic.Int64 // per worker: the epoch of its last completed request
	epoch    atomic.Int64
	notify   chan struct{}
	stopped  chan struct{}
	wg       sync.WaitGroup
	requests atomic.Int64
	failures atomic.Int64
	firstErr atomic.Value
}

const loadWorkers = 8

func startLoad(t *testing.T, addr string, onReply func(method string, m tmsg)) *load {
	l := &load{t: t, done: make([]atomic.Int64, loadWorkers), notify: make(chan struct{}, 1), stopped: make(chan struct{})}
	deadline := time.Now().Add(90 * time.Second) // a bound, should the test hang
	for w := range loadWorkers {
		c := dial(t, addr)
		l.conns = append(l.conns, c)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				select {
				case <-l.stopped:
					return
				default:
				}
				e := l.epoch.Load()
				method := [...]string{"Greet", "Whoami"}[(i+w)%2]
				m, err := c.call(0, "x", "method", method)
				l.requests.Add(1)
				switch {
				case err != nil:
					l.fail(fmt.Errorf("worker %d: %v", w, err))
				case m.status != codecs.StatusOK:
					l.fail(fmt.Errorf("worker %d: error reply %q: %s", w, md(m, "error"), m.body))
				default:
					onReply(method, m)
				}
				l.done[w].Store(e)
				select {
				case l.notify <- struct{}{}:
				default:
				}
			}
		}()
	}
	return l
}

func (l *load) fail(err error) {
	l.failures.Add(1)
	l.firstErr.CompareAndSwap(nil, err)
}

// waitFor waits until cond holds, re-checking after each answer.
func (l *load) waitFor(what string, cond func() bool) {
	l.t.Helper()
	timeout := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-l.notify:
		case <-timeout:
			l.t.Fatalf("timed out waiting for %s (%d requests, %d failed)", what, l.requests.Load(), l.failures.Load())
		}
	}
}

// barrier returns once every worker has completed a request it sent
// after the call: from then on, what any earlier request did is over.
func (l *load) barrier() {
	l.t.Helper()
	e := l.epoch.Add(1)
	l.waitFor("every worker to complete a request", func() bool {
		for i := range l.done {
			if l.done[i].Load() < e {
				return false
			}
		}
		return true
	})
}

// stop ends the load and checks that nothing failed and no client
// connection was closed.
func (l *load) stop() {
	l.t.Helper()
	close(l.stopped)
	l.wg.Wait()
	if n := l.failures.Load(); n > 0 {
		l.t.Fatalf("%d of %d requests failed; first: %v", n, l.requests.Load(), l.firstErr.Load())
	}
	for i, c := range l.conns {
		select {
		case <-c.closed:
			l.t.Fatalf("client connection %d was closed", i)
		default:
		}
	}
	l.t.Logf("%d requests on %d long-lived connections, none failed", l.requests.Load(), len(l.conns))
}

func toCluster(c string, subset map[string]string) *breezev1.RouteAction {
	return &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: c}, Subset: subset}
}

func v(version string) map[string]string { return map[string]string{"version": version} }

// routeTable i is one of four kinds, in turn: everything to v1,
// everything to v2, a 30/70 split, Whoami to v1 and the rest to v2. Every
// route tags its requests with table=i, which the backends echo.
func routeTable(i int) *breezev1.RouteConfiguration {
	tag := []*breezev1.KeyValue{{Key: "table", Value: strconv.Itoa(i)}}
	var routes []*breezev1.Route
	switch i % 4 {
	case 0:
		routes = []*breezev1.Route{{Name: "all-v1", Route: toCluster("c", v("v1"))}}
	case 1:
		routes = []*breezev1.Route{{Name: "all-v2", Route: toCluster("c", v("v2"))}}
	case 2:
		routes = []*breezev1.Route{{Name: "split", Route: &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_WeightedClusters{
			WeightedClusters: &breezev1.WeightedClusters{Clusters: []*breezev1.ClusterWeight{
				{Name: "c", Weight: 30, Subset: v("v1")}, {Name: "c", Weight: 70, Subset: v("v2")}}}}}}}
	case 3:
		routes = []*breezev1.Route{
			{Name: "whoami-v1", Match: &breezev1.RouteMatch{Metadata: []*breezev1.MetadataMatcher{
				{Key: "method", Match: &breezev1.MetadataMatcher_Exact{Exact: "Whoami"}}}}, Route: toCluster("c", v("v1"))},
			{Name: "rest-v2", Route: toCluster("c", v("v2"))},
		}
	}
	for _, r := range routes {
		r.RequestMutation = tag
	}
	return &breezev1.RouteConfiguration{Name: "r", Routes: routes}
}

// tableOf reads the table tag a backend echoed.
func tableOf(m tmsg) int {
	for _, kv := range strings.Split(md(m, "seen"), ";") {
		if v, ok := strings.CutPrefix(kv, "table="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return -1
}

func xdsCfg(xds, clusters string) string {
	return "stat_prefix: t\ncodec: tframe\nxds: {" + xds + "}\nclusters:\n" + clusters + "\n"
}

func percentiles(ds []time.Duration) string {
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return fmt.Sprintf("min %v, median %v, p90 %v, p99 %v, max %v", ds[0], at(0.5), at(0.9), at(0.99), ds[len(ds)-1])
}

// Routes change 100 times under continuous load on long-lived connections:
// no request fails, no connection closes, and every answer was routed by
// the rules of the table that tagged it. The propagation time (server
// update → first answer routed by the new table) is reported.
func TestXDSRoutesChangeUnderLoad(t *testing.T) {
	v1, v2 := newBackend(t, "v1"), newBackend(t, "v2")
	drainServed(t, v1, v2)
	s := startXDSServer(t, "")
	s.setRoutes(routeTable(0))
	addr, _ := startXDSProxy(t, xdsCfg("initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: r",
		"- name: c\n  endpoints:\n"+ep(v1, "version: v1")+"\n"+ep(v2, "version: v2")))

	const changes = 100
	var (
		seen       [changes + 1]atomic.Int64 // answers per table
		latest     atomic.Int64              // newest table seen
		splitV1    atomic.Int64
		splitTotal atomic.Int64
		wrong      atomic.Value
	)
	l := startLoad(t, addr, func(method string, m tmsg) {
		i, server := tableOf(m), md(m, "server")
		if i < 0 || i > changes {
			wrong.CompareAndSwap(nil, fmt.Sprintf("answer without a table tag: %+v", m))
			return
		}
		seen[i].Add(1)
		for {
			cur := latest.Load()
			if int64(i) <= cur || latest.CompareAndSwap(cur, int64(i)) {
				break
			}
		}
		want := ""
		switch i % 4 {
		case 0:
			want = "v1"
		case 1:
			want = "v2"
		case 2:
			splitTotal.Add(1)
			if server == "v1" {
				splitV1.Add(1)
			}
			return
		case 3:
			want = "v2"
			if method == "Whoami" {
				want = "v1"
			}
		}
		if server != want {
			wrong.CompareAndSwap(nil, fmt.Sprintf("table %d sent %s to %s, want %s", i, method, server, want))
		}
	})
	l.waitFor("the first table", func() bool { return seen[0].Load() > 0 })

	var prop []time.Duration
	for i := 1; i <= changes; i++ {
		start := time.Now()
		s.setRoutes(routeTable(i))
		l.waitFor(fmt.Sprintf("table %d", i), func() bool { return seen[i].Load() > 0 })
		prop = append(prop, time.Since(start))
		// Some traffic under each table, so that each is checked.
		l.waitFor(fmt.Sprintf("40 answers under table %d", i), func() bool { return seen[i].Load() >= 40 })
	}
	l.barrier()
	// Once a table was seen, later requests never used an older one: the
	// swap is atomic. (Answers of older tables after the barrier would show.)
	before := seen[changes-1].Load()
	l.barrier()
	if seen[changes-1].Load() != before {
		t.Fatalf("table %d still used after table %d was applied", changes-1, changes)
	}
	l.stop()
	if w := wrong.Load(); w != nil {
		t.Fatal(w)
	}
	if frac := float64(splitV1.Load()) / float64(splitTotal.Load()); frac < 0.2 || frac > 0.4 {
		t.Fatalf("30/70 tables sent %.2f of %d requests to v1", frac, splitTotal.Load())
	}
	t.Logf("route propagation (server update → first answer routed by it), %d changes: %s", changes, percentiles(prop))
}

// Endpoints are added and removed over EDS under load: no request fails,
// new endpoints get traffic, removed ones get none, and the pools of
// removed endpoints are retired.
func TestXDSEndpointsChangeUnderLoad(t *testing.T) {
	bs := []*backend{newBackend(t, "b0"), newBackend(t, "b1"), newBackend(t, "b2"), newBackend(t, "b3")}
	drainServed(t, bs...)
	s := startXDSServer(t, "")
	s.setEndpoints("svc", bs[0], bs[1])
	addr, p := startXDSProxy(t, xdsCfg("initial_fetch_timeout: 10s, address: "+s.addr,
		"- name: c\n  type: EDS\n  eds_service_name: svc\n  lb_policy: LEAST_REQUEST")+
		"route_config:\n  routes:\n  - route: {cluster: c}\n")

	var mu sync.Mutex
	served := map[string]int{}
	l := startLoad(t, addr, func(_ string, m tmsg) {
		mu.Lock()
		served[md(m, "server")]++
		mu.Unlock()
	})
	got := func(name string) int {
		mu.Lock()
		defer mu.Unlock()
		return served[name]
	}
	steps := [][]int{{0, 1, 2}, {1, 2}, {1, 2, 3}, {3}, {0, 3}, {0}, {0, 1, 2, 3}, {2}}
	for round := range 3 {
		for _, step := range steps {
			var set []*backend
			for _, i := range step {
				set = append(set, bs[i])
			}
			s.setEndpoints("svc", set...)
			l.waitFor(fmt.Sprintf("round %d: endpoints %v applied", round, step), func() bool {
				eps := p.Cluster("c").Endpoints()
				if len(eps) != len(set) {
					return false
				}
				for _, b := range set {
					if !slices.ContainsFunc(eps, func(e *cluster.Endpoint) bool { return e.Addr == fmt.Sprint("127.0.0.1:", b.port()) }) {
						return false
					}
				}
				return true
			})
			// Every endpoint of the step gets traffic.
			base := map[string]int{}
			for _, b := range set {
				base[b.name] = got(b.name)
			}
			l.waitFor(fmt.Sprintf("round %d: traffic on %v", round, step), func() bool {
				for _, b := range set {
					if got(b.name) == base[b.name] {
						return false
					}
				}
				return true
			})
			l.barrier()
			// Nothing reaches the endpoints that left.
			var out []*backend
			counts := map[*backend]int64{}
			for i, b := range bs {
				if !slices.Contains(step, i) {
					out = append(out, b)
					counts[b] = b.received.Load()
				}
			}
			l.barrier()
			for _, b := range out {
				if n := b.received.Load(); n != counts[b] {
					t.Fatalf("round %d step %v: removed endpoint %s received %d requests", round, step, b.name, n-counts[b])
				}
			}
			pools := p.up.Pools()
			if pools > len(step) {
				t.Fatalf("round %d step %v: %d upstream pools for %d endpoints", round, step, pools, len(step))
			}
		}
	}
	l.stop()
}

// The xDS server goes away and comes back under load: traffic goes on,
// on the routes it had, and follows the restarted server's updates.
func TestXDSServerRestartUnderLoad(t *testing.T) {
	v1, v2 := newBackend(t, "v1"), newBackend(t, "v2")
	drainServed(t, v1, v2)
	s := startXDSServer(t, "")
	s.setRoutes(routeTable(0))
	addr, _ := startXDSProxy(t, xdsCfg("initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: r",
		"- name: c\n  endpoints:\n"+ep(v1, "version: v1")+"\n"+ep(v2, "version: v2")))
	var latest atomic.Int64
	latest.Store(-1)
	var wrong atomic.Value
	l := startLoad(t, addr, func(_ string, m tmsg) {
		i := tableOf(m)
		latest.Store(int64(i))
		if want := []string{"v1", "v2"}[i%2]; md(m, "server") != want {
			wrong.CompareAndSwap(nil, fmt.Sprintf("table %d answered by %s", i, md(m, "server")))
		}
	})
	l.waitFor("table 0", func() bool { return latest.Load() == 0 })
	for round := 1; round <= 3; round++ {
		s.srv.Stop()
		l.barrier()
		l.barrier() // traffic flows, on the last table
		s = startXDSServer(t, s.addr)
		s.setRoutes(routeTable(round % 2))
		l.waitFor(fmt.Sprintf("table %d from the restarted server", round%2), func() bool { return latest.Load() == int64(round%2) })
	}
	l.stop()
	if w := wrong.Load(); w != nil {
		t.Fatal(w)
	}
}

// The proxy starts while the xDS server is down: its inline routes serve
// until the server appears, then the server's routes take over.
func TestXDSServerStartsLater(t *testing.T) {
	v1, v2 := newBackend(t, "v1"), newBackend(t, "v2")
	drainServed(t, v1, v2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	xdsAddr := ln.Addr().String()
	ln.Close()
	addr, _ := startXDSProxy(t, xdsCfg("initial_fetch_timeout: 0s, address: "+xdsAddr+", route_config_name: r",
		"- name: c\n  endpoints:\n"+ep(v1, "version: v1")+"\n"+ep(v2, "version: v2"))+
		"route_config:\n  routes:\n  - route: {cluster: c, subset: {version: v1}}\n")
	c := dial(t, addr)
	for range 10 {
		if m, err := c.call(0, "x"); err != nil || md(m, "server") != "v1" {
			t.Fatalf("inline routes: %+v %v", m, err)
		}
	}
	s := startXDSServer(t, xdsAddr)
	s.setRoutes(routeTable(1))
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := c.call(0, "x")
		if err != nil || m.status != codecs.StatusOK {
			t.Fatalf("%+v %v", m, err)
		}
		if md(m, "server") == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("routes from the late server never applied")
		}
	}
}

// An invalid route table or endpoint set is NACKed with what is wrong, and
// traffic stays on the last good one.
func TestXDSInvalidResourcesNACKed(t *testing.T) {
	v1, v2 := newBackend(t, "v1"), newBackend(t, "v2")
	drainServed(t, v1, v2)
	s := startXDSServer(t, "")
	s.setRoutes(routeTable(0))
	s.setEndpoints("svc", v1)
	addr, _ := startXDSProxy(t, xdsCfg("initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: r",
		"- name: c\n  endpoints:\n"+ep(v1, "version: v1")+"\n"+ep(v2, "version: v2")+
			"\n- name: e\n  type: EDS\n  eds_service_name: svc"))
	var wrong atomic.Value
	var answers atomic.Int64
	l := startLoad(t, addr, func(_ string, m tmsg) {
		answers.Add(1)
		if tableOf(m) != 0 || md(m, "server") != "v1" {
			wrong.CompareAndSwap(nil, fmt.Sprintf("answered by %s under table %d", md(m, "server"), tableOf(m)))
		}
	})
	l.waitFor("traffic", func() bool { return answers.Load() > 0 })

	bad := routeTable(1)
	bad.Routes[0].Route = toCluster("nope", nil)
	bad.Routes = append(bad.Routes, &breezev1.Route{Match: &breezev1.RouteMatch{Metadata: []*breezev1.MetadataMatcher{
		{Key: "method", Match: &breezev1.MetadataMatcher_Regex{Regex: "("}}}}, Route: toCluster("c", nil)})
	s.setRoutes(bad)
	// Only the regex is wrong: "nope" would be fetched as an xDS cluster.
	s.nack(t, `RouteConfiguration "r": routes[1].match.metadata[0].regex: "(": error parsing regexp`)
	l.barrier()
	l.barrier()

	badEDS := cla("svc", v2)
	badEDS.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "provider.local"
	s.res.Endpoints["svc"] = badEDS
	if err := s.srv.Set(s.res); err != nil {
		t.Fatal(err)
	}
	s.nack(t, `ClusterLoadAssignment "svc": endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: "provider.local": not a literal IP address`)
	l.stop()
	if w := wrong.Load(); w != nil {
		t.Fatal(w)
	}
}

// Proxies of a process that name the same xDS server share one client.
func TestXDSOneStreamPerProcess(t *testing.T) {
	b := newBackend(t, "b")
	s := startXDSServer(t, "")
	s.setRoutes(&breezev1.RouteConfiguration{Name: "r", Routes: []*breezev1.Route{{Route: toCluster("c", nil)}}})
	cl := "- name: c\n  endpoints:\n" + ep(b, "")
	_, p1 := startXDSProxy(t, xdsCfg("initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: r, node_id: shared", cl))
	_, p2 := startXDSProxy(t, strings.Replace(xdsCfg("initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: r, node_id: shared", cl), "stat_prefix: t", "stat_prefix: t2", 1))
	xdsClients.mu.Lock()
	sc := xdsClients.m[xdsKey{address: s.addr, node: "shared"}]
	refs := 0
	if sc != nil {
		refs = sc.refs
	}
	xdsClients.mu.Unlock()
	if refs != 2 {
		t.Fatalf("client refs %d, want 2", refs)
	}
	p1.Close()
	p2.Close()
	xdsClients.mu.Lock()
	defer xdsClients.mu.Unlock()
	if xdsClients.m[xdsKey{address: s.addr, node: "shared"}] != nil {
		t.Fatal("client not released after its last proxy closed")
	}
}

// metaRouterYAML is MetaRouter i of four kinds in turn (as routeTable), for
// host svc; every route tags its requests with table=i.
func metaRouterYAML(i int) string {
	dest := func(subset string, weight int) string {
		return fmt.Sprintf("{destination: {host: svc, subset: %s}, weight: %d}", subset, weight)
	}
	tag := fmt.Sprintf("requestMutation: [{key: table, value: %q}]", strconv.Itoa(i))
	var routes string
	switch i % 4 {
	case 0:
		routes = "  - {name: all-v1, route: [" + dest("v1", 100) + "], " + tag + "}\n"
	case 1:
		routes = "  - {name: all-v2, route: [" + dest("v2", 100) + "], " + tag + "}\n"
	case 2:
		routes = "  - {name: split, route: [" + dest("v1", 30) + ", " + dest("v2", 70) + "], " + tag + "}\n"
	case 3:
		routes = "  - {name: whoami-v1, match: {attributes: {method: {exact: Whoami}}}, route: [" + dest("v1", 100) + "], " + tag + "}\n" +
			"  - {name: rest-v2, route: [" + dest("v2", 100) + "], " + tag + "}\n"
	}
	return "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  routes:\n" + routes
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	tmp := dir + "/." + name
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir+"/"+name); err != nil {
		t.Fatal(err)
	}
}

// writeTwoVersions writes svc.yaml: a ServiceEntry svc (port 20880,
// tframe) with v1 and v2 as its endpoints, labelled version v1 and v2, and
// a DestinationRule with those two subsets.
func writeTwoVersions(t *testing.T, dir string, v1, v2 *backend) {
	t.Helper()
	writeFile(t, dir, "svc.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc}
spec:
  hosts: [svc]
  ports: [{number: 20880, name: tframe}]
  endpoints:
  - {address: 127.0.0.1, ports: {tframe: %d}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {tframe: %d}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc}
spec:
  host: svc
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`, v1.port(), v2.port()))
}

// The whole path: a MetaRouter file changes, `breeze xds`'s control plane
// (directory watch, translation, ADS server) pushes, the proxy applies, and
// traffic follows. The propagation time (file written → first answer
// routed by the new rules) is reported.
func TestXDSFileChangeToTraffic(t *testing.T) {
	v1, v2 := newBackend(t, "v1"), newBackend(t, "v2")
	drainServed(t, v1, v2)
	dir := t.TempDir()
	writeTwoVersions(t, dir, v1, v2)
	writeFile(t, dir, "router.yaml", metaRouterYAML(0))

	s := startXDSServer(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, &controlplane.DirSource{Dir: dir, Log: slog.New(slog.DiscardHandler)}, s.srv, slog.New(slog.DiscardHandler), nil)
	}()
	t.Cleanup(func() { cancel(); <-done })

	addr, _ := startXDSProxy(t, xdsCfg("initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: svc_20880",
		"- {name: \"outbound|20880||svc\", type: EDS}"))
	const changes = 20
	var seen [changes + 1]atomic.Int64
	var wrong atomic.Value
	l := startLoad(t, addr, func(method string, m tmsg) {
		i, server := tableOf(m), md(m, "server")
		if i < 0 || i > changes {
			wrong.CompareAndSwap(nil, fmt.Sprintf("answer without a table tag: %+v", m))
			return
		}
		seen[i].Add(1)
		want := map[int]string{0: "v1", 1: "v2", 3: "v2"}[i%4]
		if i%4 == 3 && method == "Whoami" {
			want = "v1"
		}
		if want != "" && server != want {
			wrong.CompareAndSwap(nil, fmt.Sprintf("MetaRouter %d sent %s to %s, want %s", i, method, server, want))
		}
	})
	l.waitFor("the first MetaRouter", func() bool { return seen[0].Load() > 0 })
	var prop []time.Duration
	for i := 1; i <= changes; i++ {
		start := time.Now()
		writeFile(t, dir, "router.yaml", metaRouterYAML(i))
		l.waitFor(fmt.Sprintf("MetaRouter %d", i), func() bool { return seen[i].Load() > 0 })
		prop = append(prop, time.Since(start))
		l.waitFor(fmt.Sprintf("20 answers under MetaRouter %d", i), func() bool { return seen[i].Load() >= 20 })
	}
	l.stop()
	if w := wrong.Load(); w != nil {
		t.Fatal(w)
	}
	t.Logf("propagation (MetaRouter file written → first answer routed by it; includes the 50ms debounce), %d changes: %s", changes, percentiles(prop))
}

// A proxy whose xds block names a CA bundle and a token file fetches its
// routes from a server that serves TLS and checks the token.
func TestXDSOverTLSWithToken(t *testing.T) {
	b := newBackend(t, "b")
	dir := t.TempDir()
	ca := testpki.New(t, dir, "xds")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("proxy-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &xdsServer{t: t, nacks: make(chan controlplane.NACK, 100),
		srv: controlplane.NewServer(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		res: controlplane.Resources{Routes: map[string]*breezev1.RouteConfiguration{}}}
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server}, MinVersion: tls.VersionTLS12}
	s.srv.Auth = controlplane.StaticToken{File: tokenFile} // the same file: the token the server expects
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go s.srv.Serve(ln)
	t.Cleanup(s.srv.Stop)
	s.setRoutes(&breezev1.RouteConfiguration{Name: "r", Routes: []*breezev1.Route{{Route: toCluster("c", nil)}}})

	addr, _ := startXDSProxy(t, xdsCfg("initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: r, token_file: "+tokenFile+
		", tls: {ca_file: "+ca.CAFile+", server_name: "+testpki.ServerName+"}", "- name: c\n  endpoints:\n"+ep(b, "")))
	if m, err := dial(t, addr).call(1, "x"); err != nil || md(m, "server") != "b" {
		t.Fatalf("with routes from the TLS server: got %+v, err %v; want an answer from b", m, err)
	}
	for _, cause := range []string{controlplane.RefusedNoToken, controlplane.RefusedInvalidToken, controlplane.RefusedReviewFailed} {
		if n := s.srv.Refused(cause); n != 0 {
			t.Errorf("server refused %d streams (%s)", n, cause)
		}
	}
}
