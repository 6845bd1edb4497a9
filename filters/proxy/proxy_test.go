package proxy

import (
	"fmt"
	"math"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/upstream"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func cfg(routes, clusters string, extra ...string) string {
	return fmt.Sprintf("stat_prefix: t\ncodec: tframe\n%s\nroute_config:\n  routes:\n%s\nclusters:\n%s\n", strings.Join(extra, "\n"), routes, clusters)
}

func ep(b *backend, labels string) string {
	return fmt.Sprintf("  - {address: 127.0.0.1, port: %d, labels: {%s}}", b.port(), labels)
}

func TestRoutesByMetadataAndSubset(t *testing.T) {
	a1, a2, b1 := newBackend(t, "a-v1"), newBackend(t, "a-v2"), newBackend(t, "b")
	addr := startProxy(t, cfg(`
  - {match: {metadata: [{key: method, exact: Whoami}]}, route: {cluster: b}}
  - {match: {metadata: [{key: tenant, exact: gold}]}, route: {cluster: a, subset: {version: v2}}}
  - {match: {metadata: [{key: method, prefix: Get}]}, route: {cluster: a, subset: {version: v1}}}`,
		"- name: a\n  endpoints:\n"+ep(a1, "version: v1")+"\n"+ep(a2, "version: v2")+
			"\n- name: b\n  endpoints:\n"+ep(b1, "")))
	c := dial(t, addr)
	for _, tc := range []struct {
		md   []string
		want string
	}{
		{[]string{"method", "Whoami"}, "b"},
		{[]string{"method", "Greet", "tenant", "gold"}, "a-v2"},
		{[]string{"method", "GetUser"}, "a-v1"},
		{[]string{"method", "GetUser", "tenant", "gold"}, "a-v2"},
	} {
		for range 4 {
			m, err := c.call(0, "x", tc.md...)
			if err != nil {
				t.Fatal(err)
			}
			if got := md(m, "server"); got != tc.want {
				t.Fatalf("%v went to %q, want %q", tc.md, got, tc.want)
			}
		}
	}
}

func TestNoRouteGetsProtocolError(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, cfg(`  - {match: {metadata: [{key: method, exact: A}]}, route: {cluster: b}}`,
		"- name: b\n  endpoints:\n"+ep(b, "")))
	c := dial(t, addr)
	m, err := c.call(7, "x", "method", "B", "interface", "svc")
	if err != nil {
		t.Fatal(err)
	}
	if m.status != codecs.StatusError || md(m, "error") != "no_route" || !strings.Contains(m.body, `"B"`) {
		t.Fatalf("got %+v", m)
	}
	// The connection stays usable.
	if m, err := c.call(8, "y", "method", "A"); err != nil || md(m, "server") != "b" {
		t.Fatalf("after no route: %+v %v", m, err)
	}
}

func TestWeightedSplit(t *testing.T) {
	v1, v2 := newBackend(t, "v1"), newBackend(t, "v2")
	addr := startProxy(t, cfg(`  - route: {weighted_clusters: {clusters: [{name: c, weight: 20, subset: {version: v1}}, {name: c, weight: 80, subset: {version: v2}}]}}`,
		"- name: c\n  endpoints:\n"+ep(v1, "version: v1")+"\n"+ep(v2, "version: v2")))
	c := dial(t, addr)
	const n = 2000
	counts := map[string]int{}
	for range n {
		m, err := c.call(0, "x")
		if err != nil {
			t.Fatal(err)
		}
		counts[md(m, "server")]++
	}
	sigma := math.Sqrt(n * 0.2 * 0.8)
	if d := math.Abs(float64(counts["v1"]) - 0.2*n); d > 5*sigma {
		t.Fatalf("20/80 split gave %v", counts)
	}
}

func TestOneConnectionSpreadsAcrossEndpoints(t *testing.T) {
	bs := []*backend{newBackend(t, "p1"), newBackend(t, "p2"), newBackend(t, "p3")}
	addr := startProxy(t, cfg(`  - route: {cluster: c}`,
		"- name: c\n  endpoints:\n"+ep(bs[0], "")+"\n"+ep(bs[1], "")+"\n"+ep(bs[2], "")))
	c := dial(t, addr)
	counts := map[string]int{}
	for range 300 {
		m, err := c.call(0, "x")
		if err != nil {
			t.Fatal(err)
		}
		counts[md(m, "server")]++
	}
	for _, b := range bs {
		if counts[b.name] != 100 {
			t.Fatalf("round robin over one client connection: %v", counts)
		}
	}
}

func TestConsistentHashSticky(t *testing.T) {
	bs := []*backend{newBackend(t, "h1"), newBackend(t, "h2"), newBackend(t, "h3")}
	addr := startProxy(t, cfg(`  - route: {cluster: c, hash_key: user}`,
		"- name: c\n  lb_policy: MAGLEV\n  endpoints:\n"+ep(bs[0], "")+"\n"+ep(bs[1], "")+"\n"+ep(bs[2], "")))
	c := dial(t, addr)
	owner := map[string]string{}
	for round := range 3 {
		for u := range 30 {
			user := fmt.Sprint("user-", u)
			m, err := c.call(0, "x", "user", user)
			if err != nil {
				t.Fatal(err)
			}
			if round == 0 {
				owner[user] = md(m, "server")
			} else if got := md(m, "server"); got != owner[user] {
				t.Fatalf("%s moved from %s to %s", user, owner[user], got)
			}
		}
	}
	used := map[string]bool{}
	for _, s := range owner {
		used[s] = true
	}
	if len(used) < 2 {
		t.Fatalf("30 users all on %v", used)
	}
}

// A request without the hash key of a consistent-hash cluster (or subset
// with a policy of its own) is balanced like any other: answered by the
// upstream, spread over the endpoints, on a connection that stays open.
func TestConsistentHashWithoutTheKey(t *testing.T) {
	bs := []*backend{newBackend(t, "k1"), newBackend(t, "k2"), newBackend(t, "k3")}
	for _, policy := range []string{"RING_HASH", "MAGLEV"} {
		t.Run(policy, func(t *testing.T) {
			addr := startProxy(t, cfg(`
  - {match: {metadata: [{key: method, exact: Sub}]}, route: {cluster: c, subset: {zone: a}}}
  - route: {cluster: c}`,
				"- name: c\n  lb_policy: "+policy+"\n  hash_key: tenant\n"+
					"  subsets: [{name: a, labels: {zone: a}, lb_policy: "+policy+", hash_key: user}]\n  endpoints:\n"+
					ep(bs[0], "zone: a")+"\n"+ep(bs[1], "zone: a")+"\n"+ep(bs[2], "zone: b")))
			c := dial(t, addr)
			for _, tc := range []struct {
				name string
				md   []string
				want int // endpoints the requests should spread over
			}{
				{"cluster", nil, 3},
				{"cluster, other key", []string{"user", "u1"}, 3},
				{"subset", []string{"method", "Sub"}, 2},
				{"subset, cluster's key only", []string{"method", "Sub", "tenant", "t1"}, 2},
			} {
				used := map[string]bool{}
				for range 60 {
					m, err := c.call(0, "x", tc.md...)
					if err != nil {
						t.Fatalf("%s: %v", tc.name, err)
					}
					if m.status != codecs.StatusOK {
						t.Fatalf("%s: a request without the hash key got %q: %s", tc.name, md(m, "error"), m.body)
					}
					used[md(m, "server")] = true
				}
				if len(used) != tc.want {
					t.Fatalf("%s: 60 requests without the hash key went to %v, want %d endpoints", tc.name, used, tc.want)
				}
			}
			// The key still sticks.
			first, err := c.call(0, "x", "tenant", "gold")
			if err != nil {
				t.Fatal(err)
			}
			for range 10 {
				if m, err := c.call(0, "x", "tenant", "gold"); err != nil || md(m, "server") != md(first, "server") {
					t.Fatalf("tenant gold moved from %s: %+v %v", md(first, "server"), m, err)
				}
			}
		})
	}
}

// Many clients use the same request ids at the same time over shared
// upstream connections: each must get its own answer, with its own id.
func TestRequestIDsRewrittenAndRestored(t *testing.T) {
	b1, b2 := newBackend(t, "b1"), newBackend(t, "b2")
	addr := startProxy(t, cfg(`  - route: {cluster: c}`,
		"- name: c\n  endpoints:\n"+ep(b1, "")+"\n"+ep(b2, "")))
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for ci := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(t, addr)
			var inner sync.WaitGroup
			for id := uint64(1); id <= 50; id++ {
				inner.Add(1)
				go func() {
					defer inner.Done()
					body := fmt.Sprintf("client %d request %d", ci, id)
					m, err := c.call(id, body, "sleep", fmt.Sprint(id%3))
					if err != nil {
						errs <- err
						return
					}
					if m.body != body || m.id != id {
						errs <- fmt.Errorf("client %d id %d got id %d body %q", ci, id, m.id, m.body)
					}
				}()
			}
			inner.Wait()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRequestTimeout(t *testing.T) {
	b := newBackend(t, "slow")
	addr := startProxy(t, cfg(`  - route: {cluster: c}
    timeout: 0.2s`, "- name: c\n  endpoints:\n"+ep(b, "")))
	c := dial(t, addr)
	late := testutil.ToFloat64(metrics.Dropped.WithLabelValues("t", "late_response"))
	start := time.Now()
	m, err := c.call(3, "x", "sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	if md(m, "error") != "timeout" || m.id != 3 {
		t.Fatalf("got %+v", m)
	}
	if el := time.Since(start); el > 900*time.Millisecond {
		t.Fatalf("timeout reply after %v", el)
	}
	// The late answer is dropped, not delivered as a second response.
	eventually(t, "late response dropped", func() bool {
		return testutil.ToFloat64(metrics.Dropped.WithLabelValues("t", "late_response")) > late
	})
	if m, err := c.call(4, "y"); err != nil || md(m, "server") != "slow" {
		t.Fatalf("after timeout: %+v %v", m, err)
	}
	select {
	case x := <-c.extra:
		t.Fatalf("unexpected frame %+v", x)
	default:
	}
}

// A provider killed with requests in flight: each of them gets an error
// reply at once, none hangs, and later requests go to the live provider.
func TestProviderKilledUnderLoad(t *testing.T) {
	live, doomed := newBackend(t, "live"), newBackend(t, "doomed")
	doomed.hangAll.Store(true)
	addr := startProxy(t, cfg(`  - route: {cluster: c}`,
		"- name: c\n  endpoints:\n"+ep(live, "")+"\n"+ep(doomed, ""), "request_timeout: 30s"))
	c := dial(t, addr)
	var chans []chan tmsg
	for range 20 {
		chans = append(chans, c.send(codecs.Request, 0, "x"))
	}
	eventually(t, "the doomed provider holding 10 requests", func() bool { return doomed.received.Load() == 10 })
	doomed.kill()
	ok, failed := 0, 0
	for i, ch := range chans {
		select {
		case m := <-ch:
			switch {
			case m.status == codecs.StatusOK && md(m, "server") == "live":
				ok++
			case m.status == codecs.StatusError && md(m, "error") == "no_healthy_upstream":
				failed++
			default:
				t.Fatalf("request %d: %+v", i, m)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("request %d hangs after its provider died", i)
		}
	}
	if ok != 10 || failed != 10 {
		t.Fatalf("ok %d, failed %d; want 10 and 10", ok, failed)
	}
	for range 50 {
		m, err := c.call(0, "y")
		if err != nil || m.status != codecs.StatusOK || md(m, "server") != "live" {
			t.Fatalf("after kill: %+v %v", m, err)
		}
	}
}

func TestConnectFailureIsRetriedElsewhere(t *testing.T) {
	live := newBackend(t, "live")
	dead := newBackend(t, "dead")
	dead.kill() // its port now refuses connections
	addr := startProxy(t, cfg(`  - route: {cluster: c}`,
		"- name: c\n  endpoints:\n"+ep(live, "")+"\n"+ep(dead, "")))
	c := dial(t, addr)
	for range 40 {
		m, err := c.call(0, "x")
		if err != nil || md(m, "server") != "live" {
			t.Fatalf("%+v %v", m, err)
		}
	}
}

func TestHeartbeats(t *testing.T) {
	b := newBackend(t, "b")
	b.mu.Lock()
	b.onConnect = func(c net.Conn) { c.Write(tencode(tmsg{typ: codecs.Heartbeat, id: 99})) }
	b.mu.Unlock()
	addr := startProxy(t, cfg(`  - route: {cluster: c}`, "- name: c\n  endpoints:\n"+ep(b, "")))
	c := dial(t, addr)
	c.send(codecs.Heartbeat, 42, "")
	select {
	case m := <-c.extra:
		if m.typ != codecs.HeartbeatReply || m.id != 42 {
			t.Fatalf("got %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat reply")
	}
	// The upstream's heartbeat is answered by the proxy on the upstream connection.
	if _, err := c.call(0, "x"); err != nil {
		t.Fatal(err)
	}
	for s := range b.served {
		if s == "heartbeat_reply" {
			break
		}
	}
}

func TestGoAwayDrains(t *testing.T) {
	leaving, staying := newBackend(t, "leaving"), newBackend(t, "staying")
	addr := startProxy(t, cfg(`  - route: {cluster: c}`,
		"- name: c\n  endpoints:\n"+ep(leaving, "")+"\n"+ep(staying, "")))
	c := dial(t, addr)
	for range 4 {
		if _, err := c.call(0, "warm"); err != nil {
			t.Fatal(err)
		}
	}
	// In flight on "leaving" when it announces shutdown: still answered.
	slow := c.send(codecs.Request, 0, "slow", "sleep", "300")
	slow2 := c.send(codecs.Request, 0, "slow", "sleep", "300")
	leaving.mu.Lock()
	for conn := range leaving.conns {
		conn.Write(tencode(tmsg{typ: codecs.GoAway}))
	}
	leaving.mu.Unlock()
	eventually(t, "goaway seen", func() bool {
		return testutil.ToFloat64(metrics.UpstreamEvents.WithLabelValues("t", "c", "goaway")) >= 1
	})
	for _, ch := range []chan tmsg{slow, slow2} {
		if m := <-ch; m.status != codecs.StatusOK {
			t.Fatalf("in-flight request on a draining upstream: %+v", m)
		}
	}
	for range 20 {
		m, err := c.call(0, "x")
		if err != nil || md(m, "server") != "staying" {
			t.Fatalf("after goaway: %+v %v", m, err)
		}
	}
}

func TestMutationsReachUpstream(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, cfg(`  - route: {cluster: c}
    request_mutation: [{key: x-env, value: canary}, {key: tenant, value: overwritten}]`, "- name: c\n  endpoints:\n"+ep(b, "")))
	c := dial(t, addr)
	m, err := c.call(0, "x", "tenant", "gold")
	if err != nil {
		t.Fatal(err)
	}
	if seen := md(m, "seen"); !strings.Contains(seen, "x-env=canary;") || !strings.Contains(seen, "tenant=overwritten;") {
		t.Fatalf("upstream saw %q", seen)
	}
}

func TestOneway(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, cfg(`  - route: {cluster: c}`, "- name: c\n  endpoints:\n"+ep(b, "")))
	c := dial(t, addr)
	for i := range 5 {
		c.send(codecs.Oneway, uint64(i+1), fmt.Sprint("fire ", i))
	}
	for range 5 {
		if s := <-b.served; s != "oneway" {
			t.Fatalf("got %s", s)
		}
	}
	select {
	case m := <-c.extra:
		t.Fatalf("oneway got an answer: %+v", m)
	default:
	}
}

func TestBadFrameClosesOnlyThatConnection(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, cfg(`  - route: {cluster: c}`, "- name: c\n  endpoints:\n"+ep(b, "")))
	good := dial(t, addr)
	for name, frame := range map[string][]byte{
		"garbage":   []byte("\x00\x00\x00\x0dGET / HTTP/1.1"),
		"oversized": {0x7f, 0xff, 0xff, 0xff},
		"too short": {0, 0, 0, 1, 1},
	} {
		bad := dial(t, addr)
		bad.c.Write(frame)
		select {
		case <-bad.closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: connection not closed", name)
		}
		if m, err := good.call(0, "still here"); err != nil || m.body != "still here" {
			t.Fatalf("%s disturbed another connection: %v", name, err)
		}
	}
	if testutil.ToFloat64(metrics.ProtocolErrors.WithLabelValues("t", "downstream", "frame_too_large")) < 1 {
		t.Fatal("oversized frame not counted")
	}
}

func TestPanicClosesOnlyThatConnection(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, cfg(`  - route: {cluster: c}`, "- name: c\n  endpoints:\n"+ep(b, "")))
	good := dial(t, addr)
	before := testutil.ToFloat64(metrics.Panics.WithLabelValues("OnData"))
	bad := dial(t, addr)
	bad.send(codecs.Request, 1, "x", "panic", "decode")
	<-bad.closed
	if testutil.ToFloat64(metrics.Panics.WithLabelValues("OnData")) != before+1 {
		t.Fatal("panic not counted")
	}
	if _, err := good.call(0, "x"); err != nil {
		t.Fatal(err)
	}
}

func TestIdleTimeout(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, cfg(`  - route: {cluster: c}`, "- name: c\n  endpoints:\n"+ep(b, ""), "idle_timeout: 0.2s"))
	c := dial(t, addr)
	if _, err := c.call(0, "x"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("idle connection not closed")
	}
}

func TestOverloaded(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, cfg(`  - route: {cluster: c}`, "- name: c\n  max_requests_per_endpoint: 2\n  endpoints:\n"+ep(b, "")))
	c := dial(t, addr)
	c.send(codecs.Request, 1, "x", "hang", "1")
	c.send(codecs.Request, 2, "x", "hang", "1")
	eventually(t, "two in flight", func() bool {
		m, err := c.call(3, "x")
		return err == nil && md(m, "error") == "overloaded"
	})
}

func TestInvalidConfigRefusesConnections(t *testing.T) {
	addr := startProxy(t, "stat_prefix: bad\ncodec: no-such-codec\nroute_config: {}\n")
	c := dial(t, addr)
	select {
	case <-c.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("connection with a rejected config was not refused")
	}
}

// Every downstream connection's filter must become garbage once closed, so
// that Envoy's per-connection state is freed by the shim's finalizer.
func TestClosedConnectionsAreFinalized(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, cfg(`  - route: {cluster: c}`, "- name: c\n  endpoints:\n"+ep(b, ""), "idle_timeout: 60s"))
	for range 20 {
		c := dial(t, addr)
		if _, err := c.call(0, "x"); err != nil {
			t.Fatal(err)
		}
		c.c.Close()
		<-c.closed
	}
	eventually(t, "every closed connection finalized", func() bool {
		runtime.GC()
		s := testHost.Stats()
		return s.DownstreamOpen == 0 && s.DownstreamAccepted == s.DownstreamFinalized+s.DownstreamFilterless+s.DownstreamUnfinalizable
	})
}

// A new route table applies to the next request on a live connection,
// with no reconnect.
func TestUpdateRoutesOnLiveConnection(t *testing.T) {
	v1, v2 := newBackend(t, "v1"), newBackend(t, "v2")
	yml := cfg(`  - route: {cluster: c, subset: {version: v1}}`, "- name: c\n  endpoints:\n"+ep(v1, "version: v1")+"\n"+ep(v2, "version: v2"))
	addr := startProxy(t, yml)
	c := dial(t, addr)
	if m, _ := c.call(0, "x"); md(m, "server") != "v1" {
		t.Fatalf("before: %+v", m)
	}
	p := proxyFor(t, yml)
	rc := &breezev1.RouteConfiguration{Routes: []*breezev1.Route{{Route: &breezev1.RouteAction{
		ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "c"}, Subset: map[string]string{"version": "v2"}}}}}
	if err := p.UpdateRoutes(rc); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if m, err := c.call(0, "x"); err != nil || md(m, "server") != "v2" {
			t.Fatalf("after: %+v %v", m, err)
		}
	}
	bad := &breezev1.RouteConfiguration{Routes: []*breezev1.Route{{Match: &breezev1.RouteMatch{Metadata: []*breezev1.MetadataMatcher{
		{Key: "method", Match: &breezev1.MetadataMatcher_Regex{Regex: "("}}}}, Route: rc.Routes[0].Route}}}
	if err := p.UpdateRoutes(bad); err == nil {
		t.Fatal("route with an invalid regex accepted")
	}
	if m, err := c.call(0, "x"); err != nil || md(m, "server") != "v2" {
		t.Fatalf("a rejected update changed routing: %+v %v", m, err)
	}
	// A cluster the proxy does not have (it would come over xDS) is no
	// reason to refuse a table: its requests get "no healthy upstream",
	// counted, and the connection stays.
	missing := &breezev1.RouteConfiguration{Routes: []*breezev1.Route{{Route: &breezev1.RouteAction{
		ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "nope"}}}}}
	if err := p.UpdateRoutes(missing); err != nil {
		t.Fatal(err)
	}
	before := testutil.ToFloat64(metrics.ClusterMissing.WithLabelValues("t", "nope"))
	m, err := c.call(0, "x")
	if err != nil || md(m, "error") != codecs.ErrNoHealthyUpstream.String() || !strings.Contains(m.body, `cluster "nope" has not arrived`) {
		t.Fatalf("route to a missing cluster: %+v %v", m, err)
	}
	if got := testutil.ToFloat64(metrics.ClusterMissing.WithLabelValues("t", "nope")) - before; got != 1 {
		t.Fatalf("breeze_cluster_missing_total rose by %v, want 1", got)
	}
	if err := p.UpdateRoutes(rc); err != nil {
		t.Fatal(err)
	}
	if m, err := c.call(0, "x"); err != nil || md(m, "server") != "v2" {
		t.Fatalf("connection unusable after a missing cluster: %+v %v", m, err)
	}
}

// An idle upstream connection gets heartbeats, so that a provider which
// closes silent connections keeps it; a busy one gets none.
func TestUpstreamKeepalive(t *testing.T) {
	old := upstream.Keepalive.Swap(int64(50 * time.Millisecond))
	defer upstream.Keepalive.Store(old)
	b := newBackend(t, "b")
	addr := startProxy(t, cfg(`  - route: {cluster: c}`, "- name: c\n  endpoints:\n"+ep(b, "")))
	c := dial(t, addr)
	if _, err := c.call(0, "x"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "heartbeats on the idle upstream connection", func() bool { return b.heartbeats.Load() >= 3 })
	// Heartbeat replies are consumed by the proxy; the connection still serves.
	if m, err := c.call(0, "y"); err != nil || m.body != "y" {
		t.Fatalf("after heartbeats: %+v %v", m, err)
	}
	b.mu.Lock()
	conns := len(b.conns)
	b.mu.Unlock()
	if conns != 1 {
		t.Fatalf("backend saw %d connections, want the one kept alive", conns)
	}
}

// A provider that closes connections silent for less than the keep-alive
// period: once two connections were closed after the same silence, the
// proxy takes it for the provider's idle timeout and keeps the next
// connection alive within it. One close is no evidence (a provider may
// just have died): the second connection gets no heartbeat.
func TestUpstreamKeepaliveLearnsIdleTimeout(t *testing.T) {
	oldKeepalive := upstream.Keepalive.Swap(int64(time.Hour))
	defer upstream.Keepalive.Store(oldKeepalive)
	oldFloor := upstream.MinIdleTimeout.Swap(int64(100 * time.Millisecond))
	defer upstream.MinIdleTimeout.Store(oldFloor)
	b := newBackend(t, "b")
	b.idleTimeout.Store(int64(600 * time.Millisecond))
	// A cluster of its own: the close counter is shared by every proxy "t".
	addr := startProxy(t, cfg(`  - route: {cluster: idle}`, "- name: idle\n  endpoints:\n"+ep(b, "")))
	c := dial(t, addr)
	closes := metrics.UpstreamEvents.WithLabelValues("t", "idle", "close")
	for i := range 2 {
		before := testutil.ToFloat64(closes)
		if _, err := c.call(0, "x"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the provider closing the idle connection, or a heartbeat", func() bool {
			return testutil.ToFloat64(closes) > before || b.heartbeats.Load() > 0
		})
		if n := b.heartbeats.Load(); n != 0 {
			t.Fatalf("connection %d got %d heartbeats before the idle timeout was seen twice", i+1, n)
		}
	}
	before := testutil.ToFloat64(closes)
	if _, err := c.call(0, "y"); err != nil {
		t.Fatal(err)
	}
	// About every 300ms: three heartbeats outlast the provider's 600ms.
	eventually(t, "heartbeats at the learned period", func() bool { return b.heartbeats.Load() >= 3 })
	if got := testutil.ToFloat64(closes); got != before {
		t.Fatalf("the heartbeated connection was closed (%v closes)", got-before)
	}
	if m, err := c.call(0, "z"); err != nil || m.body != "z" {
		t.Fatalf("after heartbeats: %+v %v", m, err)
	}
}

// A provider that dies right after replying has no idle timeout to learn:
// once it is back, the proxy heartbeats it at the usual period, not every
// few milliseconds. Three crashes after the same short silence are no
// evidence either: the silence is below any idle timeout a provider has.
func TestUpstreamCrashIsNotAnIdleTimeout(t *testing.T) {
	old := upstream.Keepalive.Swap(int64(time.Hour))
	defer upstream.Keepalive.Store(old)
	b := newBackend(t, "b")
	// A cluster of its own: the close counter is shared by every proxy "t".
	addr := startProxy(t, cfg(`  - route: {cluster: crash}`, "- name: crash\n  endpoints:\n"+ep(b, "")))
	c := dial(t, addr)
	closes := metrics.UpstreamEvents.WithLabelValues("t", "crash", "close")
	for range 3 {
		before := testutil.ToFloat64(closes)
		if _, err := c.call(0, "x"); err != nil {
			t.Fatal(err)
		}
		b.kill()
		eventually(t, "the proxy sees the dead provider's close", func() bool { return testutil.ToFloat64(closes) > before })
		b = newBackendAt(t, "b", b.ln.Addr().String())
	}
	// The provider is back. A request it holds for 200ms keeps the
	// connection silent that long: a proxy that took the crashes for an
	// idle timeout of a few milliseconds heartbeats through it.
	if _, err := c.call(0, "y", "sleep", "200"); err != nil {
		t.Fatal(err)
	}
	if n := b.heartbeats.Load(); n != 0 {
		t.Fatalf("the returned provider got %d heartbeats during 200ms of silence (keep-alive is 1h)", n)
	}
}

// A oneway that cannot be sent gets no reply: it is counted once, as
// dropped, not as a local reply nobody received.
func TestDroppedOnewayIsNotALocalReply(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, fmt.Sprintf(`stat_prefix: ow_drop
codec: tframe
route_config:
  routes:
  - {match: {metadata: [{key: method, exact: Known}]}, route: {cluster: c}}
clusters:
- name: c
  endpoints:
%s
`, ep(b, "")))
	c := dial(t, addr)
	c.send(codecs.Oneway, 1, "lost", "method", "Unknown")
	dropped := metrics.Dropped.WithLabelValues("ow_drop", "oneway_no_route")
	eventually(t, "the oneway dropped", func() bool { return testutil.ToFloat64(dropped) == 1 })
	if n := testutil.ToFloat64(metrics.LocalReplies.WithLabelValues("ow_drop", "no_route")); n != 0 {
		t.Fatalf("breeze_local_replies_total{reason=no_route} = %v for a dropped oneway, want 0", n)
	}
	// A request answered locally is still a local reply.
	if m, err := c.call(2, "x", "method", "Unknown"); err != nil || m.status == codecs.StatusOK {
		t.Fatalf("no-route request: %+v %v", m, err)
	}
	// The reply is written before the request is counted done.
	eventually(t, "the local reply counted", func() bool {
		return testutil.ToFloat64(metrics.LocalReplies.WithLabelValues("ow_drop", "no_route")) == 1
	})
}
