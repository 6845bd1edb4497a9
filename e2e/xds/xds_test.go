// Package xds holds the end-to-end tests of dynamic routes and endpoints:
// `breeze xds` watching a directory of Istio/Aeraki YAML, `breeze run`
// taking its routes and endpoints from it, real dubbo-go providers and
// clients on long-lived connections.
//
// Run from e2e/: go test -race ./xds/
package xds

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const (
	host      = greeter.Interface // the ServiceEntry host: Aeraki's Dubbo convention
	routeName = host + "_20880"
	cluster   = "outbound|20880||" + host
	tableKey  = "x-breeze-table" // attachment each MetaRouter version adds
)

// controlPlane is a `breeze xds` process watching its directory
// (harness.ControlPlane), with this package's helpers.
type controlPlane struct{ *harness.ControlPlane }

func startControlPlane(t *testing.T, dir, addr string) *controlPlane {
	t.Helper()
	return &controlPlane{harness.StartControlPlane(t, dir, addr)}
}

func serviceEntry(ps ...*harness.Provider) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter}
spec:
  hosts: [%s]
  ports: [{number: 20880, name: tcp-dubbo, protocol: TCP}]
  resolution: STATIC
  endpoints:
`, host)
	for _, p := range ps {
		fmt.Fprintf(&b, "  - {address: 127.0.0.1, ports: {tcp-dubbo: %d}, labels: {version: %s}}\n", p.Port, p.Name)
	}
	return b.String()
}

const destinationRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: ` + host + `
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
`

// metaRouter is MetaRouter version i, of four kinds in turn: everything to
// v1, everything to v2, a 30/70 split, Whoami to v1 and the rest to v2.
// Every route adds the attachment x-breeze-table=i, which the providers
// echo, so every reply says which version routed it.
func metaRouter(i int) string {
	dest := func(subset string, weight int) string {
		return fmt.Sprintf("{destination: {host: %s, subset: %s}, weight: %d}", host, subset, weight)
	}
	tag := fmt.Sprintf("requestMutation: [{key: %s, value: %q}]", tableKey, strconv.Itoa(i))
	var routes string
	switch i % 4 {
	case 0:
		routes = "  - {name: all-v1, route: [" + dest("v1", 100) + "], " + tag + "}\n"
	case 1:
		routes = "  - {name: all-v2, route: [" + dest("v2", 100) + "], " + tag + "}\n"
	case 2:
		routes = "  - {name: canary, route: [" + dest("v1", 30) + ", " + dest("v2", 70) + "], " + tag + "}\n"
	case 3:
		routes = "  - {name: whoami-v1, match: {attributes: {method: {exact: Whoami}}}, route: [" + dest("v1", 100) + "], " + tag + "}\n" +
			"  - {name: rest-v2, route: [" + dest("v2", 100) + "], " + tag + "}\n"
	}
	return "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\nmetadata: {name: greeter}\nspec:\n  hosts: [" + host + "]\n  routes:\n" + routes
}

// expected is the provider MetaRouter version i sends a call of method to
// ("" for the split).
func expected(i int, method string) string {
	switch i % 4 {
	case 0:
		return "v1"
	case 1:
		return "v2"
	case 3:
		if method == "Whoami" {
			return "v1"
		}
		return "v2"
	}
	return ""
}

// runnerConfig names only the xDS server and the route table: the
// clusters the routes name, and their endpoints, come from `breeze xds`.
const runnerConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: xds
    codec: dubbo
    xds:
      address: "{{index .Extra "xds"}}"
      node_id: e2e
      route_config_name: ` + routeName + `
      initial_fetch_timeout: 20s
`

// load keeps dubbo-go clients busy: each worker makes one call after
// another (Greet and Whoami in turn), with the attachments attach returns
// (nil: none), and hands every reply to onReply with the load's epoch when
// the call started (see barrier). A Greet answered with another call's
// argument counts as failed.
type load struct {
	t        *testing.T
	done     []atomic.Int64 // per worker: the epoch of its last completed call
	epoch    atomic.Int64
	notify   chan struct{}
	stopped  chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
	calls    atomic.Int64
	failures atomic.Int64
	firstErr atomic.Value // a failure: one type, whatever the error's
}

type failure struct{ err error }

// first is the error of the first failed call, nil if none failed.
func (l *load) first() error {
	if f, ok := l.firstErr.Load().(failure); ok {
		return f.err
	}
	return nil
}

func startLoad(t *testing.T, clients []*harness.Client, perClient int, attach func() map[string]string, onReply func(method string, r greeter.Reply, epoch int64)) *load {
	n := len(clients) * perClient
	l := &load{t: t, done: make([]atomic.Int64, n), notify: make(chan struct{}, 1), stopped: make(chan struct{})}
	deadline := time.Now().Add(5 * time.Minute) // a bound, should the test hang
	for w := range n {
		c := clients[w%len(clients)]
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
				var att map[string]string
				if attach != nil {
					att = attach()
				}
				arg := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				r, err := c.Call(ctx, method, arg, att)
				cancel()
				if err == nil && method != "Whoami" && r.Arg != arg {
					err = fmt.Errorf("%s(%q) got the answer to %q", method, arg, r.Arg)
				}
				l.calls.Add(1)
				if err != nil {
					l.failures.Add(1)
					l.firstErr.CompareAndSwap(nil, failure{err})
				} else {
					onReply(method, r, e)
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

// waitFor waits until cond holds, re-checking after every reply.
func (l *load) waitFor(what string, within time.Duration, cond func() bool) {
	l.t.Helper()
	timeout := time.After(within)
	for !cond() {
		select {
		case <-l.notify:
		case <-timeout:
			l.t.Fatalf("timed out after %s waiting for %s (%d calls, %d failed; first: %v)", within, what, l.calls.Load(), l.failures.Load(), l.first())
		}
	}
}

// barrier returns once every worker has completed a call it started after
// the barrier was called.
func (l *load) barrier() {
	l.t.Helper()
	e := l.epoch.Add(1)
	l.waitFor("every worker to complete a call", 30*time.Second, func() bool {
		for i := range l.done {
			if l.done[i].Load() < e {
				return false
			}
		}
		return true
	})
}

// halt stops the workers and waits for them.
func (l *load) halt() {
	l.once.Do(func() { close(l.stopped) })
	l.wg.Wait()
}

// stop halts the load and fails the test if any call failed.
func (l *load) stop() {
	l.t.Helper()
	l.halt()
	if n := l.failures.Load(); n > 0 {
		l.t.Fatalf("%d of %d calls failed; first: %v", n, l.calls.Load(), l.first())
	}
	l.t.Logf("%d calls, none failed", l.calls.Load())
}

func percentiles(ds []time.Duration) string {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	over := 0
	for _, d := range ds {
		if d > time.Second {
			over++
		}
	}
	return fmt.Sprintf("min %v, median %v, p90 %v, max %v; %d of %d over 1s", ds[0].Round(time.Millisecond),
		at(0.5).Round(time.Millisecond), at(0.9).Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond), over, len(ds))
}

// One setup, the scenarios in turn, under continuous load on two
// dubbo-go clients with one long-lived connection each.
func TestXDS(t *testing.T) {
	harness.BreezeBin(t)
	provs := map[string]*harness.Provider{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range []string{"v1", "v2", "v3"} {
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
	v1, v2, v3 := provs["v1"], provs["v2"], provs["v3"]

	cp := startControlPlane(t, t.TempDir(), "")
	cp.Write("greeter-se.yaml", serviceEntry(v1, v2))
	cp.Write("greeter-dr.yaml", destinationRule)
	cp.Write("greeter-router.yaml", metaRouter(0))

	proxy := harness.StartProxyVars(t, runnerConfig, map[string]interface{}{"xds": cp.Addr}, nil)
	var clients []*harness.Client
	for range 2 {
		clients = append(clients, harness.StartClient(t, proxy.Addr, harness.ClientSpec{Heartbeat: time.Second}))
	}

	// Every reply is checked against the MetaRouter version that tagged it.
	var (
		seen        sync.Map // table → *atomic.Int64
		wrong       atomic.Value
		split, toV1 atomic.Int64
		served      sync.Map // provider → *atomic.Int64
		checkTables atomic.Bool
	)
	counter := func(m *sync.Map, k any) *atomic.Int64 {
		v, _ := m.LoadOrStore(k, new(atomic.Int64))
		return v.(*atomic.Int64)
	}
	checkTables.Store(true)
	l := startLoad(t, clients, 4, nil, func(method string, r greeter.Reply, _ int64) {
		counter(&served, r.Provider).Add(1)
		i, err := strconv.Atoi(r.Attachments[tableKey])
		if err != nil {
			if checkTables.Load() {
				wrong.CompareAndSwap(nil, fmt.Sprintf("reply without %s: %+v", tableKey, r))
			}
			return
		}
		counter(&seen, i).Add(1)
		if want := expected(i, method); want == "" {
			split.Add(1)
			if r.Provider == "v1" {
				toV1.Add(1)
			}
		} else if r.Provider != want {
			wrong.CompareAndSwap(nil, fmt.Sprintf("MetaRouter %d sent %s to %s, want %s", i, method, r.Provider, want))
		}
	})
	defer l.halt()
	l.waitFor("MetaRouter 0", 30*time.Second, func() bool { return counter(&seen, 0).Load() > 0 })
	// Every client connection is open now; the count must not move (the
	// proxy also counts the harness's readiness probe).
	l.barrier()
	accepted := proxy.Metric(t, "breeze_downstream_connections_total", `proxy="xds"`)

	t.Run("routes change 100 times", func(t *testing.T) {
		var prop []time.Duration
		for i := 1; i <= 100; i++ {
			start := time.Now()
			cp.Write("greeter-router.yaml", metaRouter(i))
			l.waitFor(fmt.Sprintf("MetaRouter %d", i), 10*time.Second, func() bool { return counter(&seen, i).Load() > 0 })
			prop = append(prop, time.Since(start))
			l.waitFor(fmt.Sprintf("10 replies under MetaRouter %d", i), 10*time.Second, func() bool { return counter(&seen, i).Load() >= 10 })
		}
		if w := wrong.Load(); w != nil {
			t.Fatal(w)
		}
		if n, k := split.Load(), toV1.Load(); n < 100 || float64(k) < 0.15*float64(n) || float64(k) > 0.45*float64(n) {
			t.Fatalf("30/70 versions sent %d of %d calls to v1", k, n)
		}
		t.Logf("propagation, MetaRouter file written → first reply routed by it: %s", percentiles(prop))
	})

	t.Run("invalid MetaRouter rejected, last good kept", func(t *testing.T) {
		last := 100
		bad := strings.Replace(metaRouter(101), "subset: v2}", "subset: v9}", 1)
		cp.Write("greeter-router.yaml", bad)
		msg := regexp.MustCompile(`rejected: \S*greeter-router.yaml: MetaRouter default/greeter: spec.routes\[0\].route\[0\].destination.subset: \\?"v9\\?": \S*greeter-dr.yaml: DestinationRule default/greeter defines no such subset`)
		l.waitFor("the control plane to reject the MetaRouter", 10*time.Second, func() bool { return msg.MatchString(cp.Proc.Output()) })
		before := counter(&seen, last).Load()
		l.barrier()
		l.barrier()
		if counter(&seen, last).Load() == before {
			t.Fatalf("traffic stopped following MetaRouter %d", last)
		}
		if w := wrong.Load(); w != nil {
			t.Fatal(w)
		}
	})

	t.Run("endpoints added and removed", func(t *testing.T) {
		// No MetaRouter: the default route to every endpoint.
		if err := os.Remove(filepath.Join(cp.Dir, "greeter-router.yaml")); err != nil {
			t.Fatal(err)
		}
		checkTables.Store(false)
		applied := func() float64 {
			return proxy.Metric(t, "breeze_xds_updates_total", `proxy="xds"`, `result="accepted"`, `type="endpoints"`)
		}
		steps := [][]*harness.Provider{{v1, v2, v3}, {v2, v3}, {v3}, {v1, v3}, {v1, v2}}
		for _, step := range steps {
			n := applied()
			cp.Write("greeter-se.yaml", serviceEntry(step...))
			l.waitFor("the endpoints applied", 10*time.Second, func() bool { return applied() > n })
			base := map[string]int64{}
			for _, p := range step {
				base[p.Name] = counter(&served, p.Name).Load()
			}
			l.waitFor(fmt.Sprintf("every endpoint of %v to serve", names(step)), 10*time.Second, func() bool {
				for _, p := range step {
					if counter(&served, p.Name).Load() == base[p.Name] {
						return false
					}
				}
				return true
			})
			l.barrier()
			gone := map[string]int64{}
			for _, p := range []*harness.Provider{v1, v2, v3} {
				if !slices.Contains(step, p) {
					gone[p.Name] = counter(&served, p.Name).Load()
				}
			}
			l.barrier()
			for name, n := range gone {
				if got := counter(&served, name).Load(); got != n {
					t.Fatalf("step %v: removed endpoint %s served %d calls", names(step), name, got-n)
				}
			}
		}
	})

	test := t
	t.Run("control plane restarted", func(t *testing.T) {
		for round := range 2 {
			cp.Proc.KillAndWait(t)
			l.barrier()
			l.barrier() // traffic flows meanwhile
			// Started for the whole test: the proxy stays connected to it
			// until the end, and its output is logged if a later check
			// fails. The new process answers nobody before it has read
			// the directory: an empty cluster set would make the proxy
			// drop its cluster (full state), and calls would fail.
			cp = startControlPlane(test, cp.Dir, cp.Addr)
			i := 200 + round
			cp.Write("greeter-router.yaml", metaRouter(i))
			l.waitFor(fmt.Sprintf("MetaRouter %d from the restarted control plane", i), 20*time.Second, func() bool { return counter(&seen, i).Load() > 0 })
		}
	})

	l.stop()
	if w := wrong.Load(); w != nil {
		t.Fatal(w)
	}
	// Zero closed client connections: the proxy accepted exactly one per
	// client and closed none.
	if n := proxy.Metric(t, "breeze_downstream_connections_total", `proxy="xds"`); n != accepted {
		t.Fatalf("the proxy accepted %v connections, %v before the load (a client reconnected)", n, accepted)
	}
	if n := proxy.Metric(t, "breeze_downstream_closes_total"); n != 0 {
		t.Fatalf("the proxy closed %v client connections", n)
	}
	if n := proxy.Metric(t, "breeze_downstream_connections_active", `proxy="xds"`); n != float64(len(clients)) {
		t.Fatalf("%v client connections open at the end, want %d", n, len(clients))
	}
}

func names(ps []*harness.Provider) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}
