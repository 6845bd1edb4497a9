package xds

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

const (
	// other is the second ServiceEntry host: the same Dubbo interface
	// (dubbo-go clients call org.breeze.Greeter through the proxy) served
	// by other providers. A MetaRouter destination names a host, and so
	// its cluster.
	other        = "org.breeze.Other"
	otherCluster = "outbound|20880||" + other
	// userKey is the attachment every call carries, one of users; the
	// other host's DestinationRule hashes on it.
	userKey = "user"
)

var users = []string{"u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"}

// whoamiTo says where a MetaRouter version sends Whoami; Greet always goes
// to the greeter host.
type whoamiTo int

const (
	toGreeter whoamiTo = iota
	toOther            // the other host, balanced as its cluster is
	toSubset           // the other host's subset b, balanced by its own policy
)

func (w whoamiTo) String() string {
	return [...]string{"greeter host", "other host", "other host's subset b"}[w]
}

// providers that may answer Whoami under each kind of MetaRouter.
var whoamiFrom = map[whoamiTo][]string{
	toGreeter: {"v1", "v2"},
	toOther:   {"v3", "v4", "v5"},
	toSubset:  {"v4", "v5"},
}

// clustersRouter is MetaRouter version v of the greeter host; every route
// adds the attachment x-breeze-table=v, which the providers echo.
func clustersRouter(v int, to whoamiTo) string {
	tag := fmt.Sprintf("requestMutation: [{key: %s, value: %q}]", tableKey, strconv.Itoa(v))
	var routes string
	switch to {
	case toOther:
		routes = "  - {name: whoami, match: {attributes: {method: {exact: Whoami}}}, route: [{destination: {host: " + other + "}}], " + tag + "}\n"
	case toSubset:
		routes = "  - {name: whoami, match: {attributes: {method: {exact: Whoami}}}, route: [{destination: {host: " + other + ", subset: b}}], " + tag + "}\n"
	}
	routes += "  - {name: rest, route: [{destination: {host: " + host + "}}], " + tag + "}\n"
	return "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\nmetadata: {name: greeter}\nspec:\n  hosts: [" + host + "]\n  routes:\n" + routes
}

// otherEntry is the other host's ServiceEntry: v3 in tier a, v4 and v5 in
// tier b.
func otherEntry(v3, v4, v5 *harness.Provider) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: other}
spec:
  hosts: [%s]
  ports: [{number: 20880, name: tcp-dubbo, protocol: TCP}]
  resolution: STATIC
  endpoints:
`, other)
	for _, e := range []struct {
		p    *harness.Provider
		tier string
	}{{v3, "a"}, {v4, "b"}, {v5, "b"}} {
		fmt.Fprintf(&b, "  - {address: 127.0.0.1, ports: {tcp-dubbo: %d}, labels: {version: %s, tier: %s}}\n", e.p.Port, e.p.Name, e.tier)
	}
	return b.String()
}

// otherRule is the other host's DestinationRule: consistent hashing on the
// user attachment (a ring, or Maglev); with subsetPolicy, subset b (tier b)
// balanced by that simple policy of its own.
func otherRule(maglev bool, subsetPolicy string) string {
	hash := "{httpHeaderName: " + userKey + "}"
	if maglev {
		hash = "{httpHeaderName: " + userKey + ", maglev: {}}"
	}
	s := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: other}
spec:
  host: ` + other + `
  trafficPolicy: {loadBalancer: {consistentHash: ` + hash + `}}
`
	if subsetPolicy != "" {
		s += "  subsets:\n  - {name: b, labels: {tier: b}, trafficPolicy: {loadBalancer: {simple: " + subsetPolicy + "}}}\n"
	}
	return s
}

func startProviders(t *testing.T, names ...string) map[string]*harness.Provider {
	t.Helper()
	provs := map[string]*harness.Provider{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := harness.StartProvider(t, harness.ProviderSpec{Name: name})
			mu.Lock()
			provs[name] = p
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return provs
}

// waitServing waits until the control plane's last snapshot line says
// counts ("clusters=2 endpoint_sets=2 problems=0").
func (cp *controlPlane) waitServing(l *load, counts string) {
	l.t.Helper()
	l.waitFor("the control plane to serve "+counts, 10*time.Second, func() bool {
		out := cp.Proc.Output()
		i := strings.LastIndex(out, "msg=serving ")
		if i < 0 {
			return false
		}
		line, _, _ := strings.Cut(out[i:], "\n")
		return strings.Contains(line, counts)
	})
}

// whoamiLog is what the Whoami replies under each MetaRouter version said.
type whoamiLog struct {
	mu    sync.Mutex
	kinds map[int]whoamiTo                  // MetaRouter version → where it sends Whoami
	seen  map[int]map[string]map[string]int // version → user → provider → replies
	win   *window                           // open stickiness window, if any
	wrong string                            // the first misrouted reply
}

// window collects the Whoami replies under one MetaRouter version to calls
// started from a load epoch on.
type window struct {
	version int
	from    int64
	byUser  map[string]map[string]int // user → provider → replies
}

func (w *whoamiLog) fail(format string, args ...any) {
	if w.wrong == "" {
		w.wrong = fmt.Sprintf(format, args...)
	}
}

func (w *whoamiLog) onReply(method string, r greeter.Reply, epoch int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	v, err := strconv.Atoi(r.Attachments[tableKey])
	if err != nil {
		w.fail("%s reply without %s: %+v", method, tableKey, r)
		return
	}
	to, ok := w.kinds[v]
	if !ok {
		w.fail("%s reply tagged by MetaRouter %d, which was never written: %+v", method, v, r)
		return
	}
	if method != "Whoami" {
		if !slices.Contains(whoamiFrom[toGreeter], r.Provider) {
			w.fail("MetaRouter %d sent %s to %s, want the greeter host", v, method, r.Provider)
		}
		return
	}
	if !slices.Contains(whoamiFrom[to], r.Provider) {
		w.fail("MetaRouter %d sent Whoami to %s, want the %s (%v)", v, r.Provider, to, whoamiFrom[to])
	}
	user := r.Attachments[userKey]
	count := func(m map[string]map[string]int) {
		if m[user] == nil {
			m[user] = map[string]int{}
		}
		m[user][r.Provider]++
	}
	if w.seen[v] == nil {
		w.seen[v] = map[string]map[string]int{}
	}
	count(w.seen[v])
	if win := w.win; win != nil && win.version == v && epoch >= win.from {
		count(win.byUser)
	}
}

// check runs f on the log, locked.
func (w *whoamiLog) check(f func() bool) func() bool {
	return func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return f()
	}
}

// served reports whether under version v every one of providers answered
// Whoami, and some user was answered by two or more of them (no consistent
// hashing).
func (w *whoamiLog) served(v int, providers ...string) bool {
	answered, spread := map[string]bool{}, false
	for _, byProvider := range w.seen[v] {
		n := 0
		for p := range byProvider {
			answered[p] = true
			if slices.Contains(providers, p) {
				n++
			}
		}
		spread = spread || n >= 2
	}
	for _, p := range providers {
		if !answered[p] {
			return false
		}
	}
	return spread
}

// Clusters over xDS under load: a second ServiceEntry host is added, routed
// to, switched to consistent hashing, given subsets with their own policy,
// routed away from and deleted, ten times over, while two dubbo-go clients
// call through the proxy on one long-lived connection each.
func TestXDSClusters(t *testing.T) {
	harness.BreezeBin(t)
	provs := startProviders(t, "v1", "v2", "v3", "v4", "v5")
	v1, v2, v3, v4, v5 := provs["v1"], provs["v2"], provs["v3"], provs["v4"], provs["v5"]

	log := &whoamiLog{kinds: map[int]whoamiTo{0: toGreeter}, seen: map[int]map[string]map[string]int{}}
	cp := startControlPlane(t, t.TempDir(), "")
	cp.Write("greeter-se.yaml", serviceEntry(v1, v2))
	cp.Write("greeter-router.yaml", clustersRouter(0, toGreeter))

	proxy := harness.StartProxyVars(t, runnerConfig, map[string]interface{}{"xds": cp.Addr}, nil)
	var clients []*harness.Client
	for range 2 {
		clients = append(clients, harness.StartClient(t, proxy.Addr, harness.ClientSpec{Heartbeat: time.Second}))
	}
	attach := func() map[string]string { return map[string]string{userKey: users[rand.IntN(len(users))]} }
	l := startLoad(t, clients, 4, attach, log.onReply)
	defer l.halt()
	l.waitFor("MetaRouter 0", 30*time.Second, log.check(func() bool { return len(log.seen[0]) > 0 }))
	// Every client connection is open now; the count must not move (the
	// proxy also counted the harness's readiness probe).
	l.barrier()
	metric := func(name string, labels ...string) float64 {
		return proxy.Metric(t, name, append([]string{`proxy="xds"`}, labels...)...)
	}
	accepted := metric("breeze_downstream_connections_total")
	clustersAccepted := func() float64 { return metric("breeze_xds_updates_total", `type="clusters"`, `result="accepted"`) }
	routesAccepted := func() float64 { return metric("breeze_xds_updates_total", `type="routes"`, `result="accepted"`) }
	clustersBefore := clustersAccepted()
	upstream := func(event string) float64 {
		return metric("breeze_upstream_connection_events_total", `cluster="`+otherCluster+`"`, `event="`+event+`"`)
	}

	const cycles = 10
	changes, writes, version := 0, 0, 0
	write := func(name, content string) {
		t.Helper()
		cp.Write(name, content)
		writes++
	}
	// route writes the next MetaRouter version and waits for its first
	// Whoami reply.
	route := func(to whoamiTo) int {
		t.Helper()
		version++
		v := version
		log.mu.Lock()
		log.kinds[v] = to
		log.mu.Unlock()
		write("greeter-router.yaml", clustersRouter(v, to))
		l.waitFor(fmt.Sprintf("MetaRouter %d (Whoami to the %s)", v, to), 10*time.Second, log.check(func() bool { return len(log.seen[v]) > 0 }))
		return v
	}
	policies := []string{"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"}
	start := time.Now()
	for cycle := range cycles {
		maglev := cycle%2 == 1
		subsetPolicy := policies[cycle%len(policies)]
		step := func(s string) string { return fmt.Sprintf("cycle %d, %s", cycle, s) }

		// (a) A new host, so a new cluster. The proxy does not fetch it
		// yet: no route names it.
		write("other.yaml", otherEntry(v3, v4, v5))
		cp.waitServing(l, "clusters=2 endpoint_sets=2 problems=0")
		changes++

		// (b) Whoami to it: the new route table waits until the cluster
		// and its endpoints have arrived, then every provider of the host
		// answers, round robin.
		v := route(toOther)
		l.waitFor(step("v3, v4 and v5 answering Whoami round robin"), 10*time.Second,
			log.check(func() bool { return log.served(v, "v3", "v4", "v5") }))
		changes++

		// (c) Consistent hashing on the user attachment: the cluster and
		// the route (its hash_key) change; the cluster goes first. Then
		// each user is answered by one provider only.
		nc, nr := clustersAccepted(), routesAccepted()
		write("other.yaml", otherEntry(v3, v4, v5)+"---\n"+otherRule(maglev, ""))
		l.waitFor(step("the hashing cluster and route applied"), 10*time.Second, func() bool {
			return clustersAccepted() > nc && routesAccepted() > nr
		})
		l.barrier()
		win := &window{version: v, from: l.epoch.Add(1), byUser: map[string]map[string]int{}}
		log.mu.Lock()
		log.win = win
		log.mu.Unlock()
		l.waitFor(step("5 Whoami replies per user under consistent hashing"), 10*time.Second, log.check(func() bool {
			for _, u := range users {
				n := 0
				for _, c := range win.byUser[u] {
					n += c
				}
				if n < 5 {
					return false
				}
			}
			return true
		}))
		log.mu.Lock()
		log.win = nil // replies to calls routed before the next change only
		for _, u := range users {
			if len(win.byUser[u]) != 1 {
				log.fail("%s: consistent hashing (maglev %v) on %s sent user %s to %v", step("(c)"), maglev, userKey, u, win.byUser[u])
			}
		}
		log.mu.Unlock()
		changes++

		// (d) Subset b with a policy of its own, then Whoami to it: only
		// its providers answer, and the same user reaches both (the
		// subset's policy, not the cluster's hashing).
		nc = clustersAccepted()
		write("other.yaml", otherEntry(v3, v4, v5)+"---\n"+otherRule(maglev, subsetPolicy))
		l.waitFor(step("the cluster with subset b applied"), 10*time.Second, func() bool { return clustersAccepted() > nc })
		v = route(toSubset)
		l.waitFor(step("v4 and v5 answering Whoami, by "+subsetPolicy), 10*time.Second,
			log.check(func() bool { return log.served(v, "v4", "v5") }))
		changes++

		// (e) Whoami back to the greeter host; the proxy drops the other
		// cluster (no table names it) and its upstream connections close.
		// Only then is the host deleted.
		route(toGreeter)
		l.waitFor(step("the other cluster's upstream connections closed"), 10*time.Second, func() bool {
			return upstream("close") == upstream("connect")
		})
		if err := os.Remove(filepath.Join(cp.Dir, "other.yaml")); err != nil {
			t.Fatal(err)
		}
		writes++
		cp.waitServing(l, "clusters=1 endpoint_sets=1 problems=0")
		changes++

		log.mu.Lock()
		wrong := log.wrong
		log.mu.Unlock()
		if wrong != "" {
			t.Fatal(wrong)
		}
	}
	elapsed := time.Since(start)
	l.barrier()
	l.halt()

	calls, failed := l.calls.Load(), l.failures.Load()
	reconnects := metric("breeze_downstream_connections_total") - accepted
	closed := metric("breeze_downstream_closes_total") + reconnects
	t.Logf("%d changes (%d file writes, %d cycles) in %s: %d calls, %d failed, %d connections closed",
		changes, writes, cycles, elapsed.Round(time.Millisecond), calls, failed, int(closed))
	if failed > 0 {
		t.Errorf("%d of %d calls failed; first: %v", failed, calls, l.first())
	}
	if closed != 0 {
		t.Errorf("client connections lost: the proxy closed %v, the clients opened %v more", closed-reconnects, reconnects)
	}
	if n := metric("breeze_downstream_connections_active"); n != float64(len(clients)) {
		t.Errorf("%v client connections open at the end, want %d", n, len(clients))
	}
	if n := metric("breeze_cluster_missing_total"); n != 0 {
		t.Errorf("%v requests were routed to a cluster the proxy did not have", n)
	}
	if n := metric("breeze_xds_updates_total", `result="rejected"`); n != 0 {
		t.Errorf("the proxy rejected %v xDS updates", n)
	}
	// Per cycle at least: the cluster added (b), hashing (c), subset (d).
	if n := clustersAccepted() - clustersBefore; n < 3*cycles {
		t.Errorf("the proxy accepted %v cluster versions, want at least %d", n, 3*cycles)
	}
	if n := upstream("connect"); n == 0 || upstream("close") != n {
		t.Errorf("upstream connections to %s: %v opened, %v closed", otherCluster, n, upstream("close"))
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if log.wrong != "" {
		t.Error(log.wrong)
	}
	// Every MetaRouter version served Whoami.
	for _, v := range slices.Sorted(maps.Keys(log.kinds)) {
		if len(log.seen[v]) == 0 {
			t.Errorf("no Whoami reply under MetaRouter %d", v)
		}
	}
}
