// Package controller holds the end-to-end test of `breeze controller`: a
// real kube-apiserver and etcd (controller-runtime's envtest), the
// controller as a process against them, `breeze run` taking its routes
// and endpoints from the controller's xDS server, real dubbo-go providers
// and clients. Its own module, so that the Kubernetes client libraries
// stay out of the e2e module's dependencies (and of the dubbo-go peers').
//
// Run from e2e/controller: go test -race .
package controller

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const (
	ns       = "e2e"
	seHost   = greeter.Interface // a ServiceEntry host: Aeraki's Dubbo convention
	svcHost  = "greeter." + ns + ".svc.cluster.local"
	tableKey = "x-breeze-table" // attachment each MetaRouter version adds
)

// apiServer starts kube-apiserver and etcd with Istio's and Aeraki's CRDs
// and returns a client and a kubeconfig file for them.
func apiServer(t *testing.T) (client.Client, string) {
	t.Helper()
	repo := harness.RepoDir()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		out, err := exec.Command("bash", filepath.Join(repo, "scripts", "kube-peer.sh"), "assets").Output()
		if err != nil {
			t.Fatalf("scripts/kube-peer.sh assets: %v", err)
		}
		assets = strings.TrimSpace(string(out))
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		t.Fatalf("no kube-apiserver: %v (bash scripts/kube-peer.sh install)", err)
	}
	var crds []string
	for _, mod := range []string{"istio.io/api", "github.com/aeraki-mesh/api"} {
		cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", mod)
		cmd.Dir = repo
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -m %s: %v", mod, err)
		}
		crds = append(crds, filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml"))
	}
	te := &envtest.Environment{BinaryAssetsDirectory: assets, CRDDirectoryPaths: crds, ErrorIfCRDPathMissing: true}
	cfg, err := te.Start()
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	t.Cleanup(func() { _ = te.Stop() })
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, te.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	return c, kc
}

// applier creates or updates objects from manifests.
type applier struct {
	t *testing.T
	c client.Client
}

func (a applier) apply(manifest string) {
	a.t.Helper()
	js, err := yaml.YAMLToJSON([]byte(manifest))
	if err != nil {
		a.t.Fatalf("manifest: %v\n%s", err, manifest)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		a.t.Fatalf("manifest: %v\n%s", err, manifest)
	}
	ctx := context.Background()
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(u.GroupVersionKind())
	if err := a.c.Get(ctx, client.ObjectKeyFromObject(u), cur); err == nil {
		// The controller writes MetaRouter statuses: another version may
		// come between the read and the write.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := a.c.Get(ctx, client.ObjectKeyFromObject(u), cur); err != nil {
				return err
			}
			u.SetResourceVersion(cur.GetResourceVersion())
			return a.c.Update(ctx, u)
		})
		if err != nil {
			a.t.Fatalf("updating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		return
	}
	if err := a.c.Create(ctx, u); err != nil {
		a.t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

func (a applier) delete(apiVersion, kind, name string) {
	a.t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	if err := a.c.Delete(context.Background(), u); err != nil {
		a.t.Fatalf("deleting %s %s: %v", kind, name, err)
	}
}

func serviceEntry(ps ...*harness.Provider) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter, namespace: %s}
spec:
  hosts: [%s]
  ports: [{number: 20880, name: tcp-dubbo, protocol: TCP}]
  resolution: STATIC
  endpoints:
`, ns, seHost)
	for _, p := range ps {
		fmt.Fprintf(&b, "  - {address: 127.0.0.1, ports: {tcp-dubbo: %d}, labels: {version: %s}}\n", p.Port, p.Name)
	}
	return b.String()
}

const destinationRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter, namespace: ` + ns + `}
spec:
  host: ` + seHost + `
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

// metaRouter is MetaRouter version i: everything to v1, everything to v2,
// Whoami to v1 and the rest to v2, in turn. Every route adds the
// attachment x-breeze-table=i, which the providers echo: every reply says
// which version routed it.
func metaRouter(i int) string {
	dest := func(subset string) string {
		return fmt.Sprintf("{destination: {host: %s, subset: %s}}", seHost, subset)
	}
	tag := fmt.Sprintf("requestMutation: [{key: %s, value: %q}]", tableKey, strconv.Itoa(i))
	var routes string
	switch i % 3 {
	case 0:
		routes = "  - {name: all-v1, route: [" + dest("v1") + "], " + tag + "}\n"
	case 1:
		routes = "  - {name: all-v2, route: [" + dest("v2") + "], " + tag + "}\n"
	case 2:
		routes = "  - {name: whoami-v1, match: {attributes: {method: {exact: Whoami}}}, route: [" + dest("v1") + "], " + tag + "}\n" +
			"  - {name: rest-v2, route: [" + dest("v2") + "], " + tag + "}\n"
	}
	return "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\nmetadata: {name: greeter, namespace: " + ns + "}\nspec:\n  hosts: [" + seHost + "]\n  routes:\n" + routes
}

// expected is the provider MetaRouter version i sends a call of method to.
func expected(i int, method string) string {
	switch i % 3 {
	case 0:
		return "v1"
	case 1:
		return "v2"
	}
	if method == "Whoami" {
		return "v1"
	}
	return "v2"
}

// hostIP is an address of this machine other than loopback: the API
// server refuses loopback addresses in EndpointSlices, as it would a pod
// IP of 127.0.0.1.
func hostIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatalf("no IPv4 address but loopback on this machine (%v): EndpointSlices need one", addrs)
	return ""
}

// podAddr stands for a provider's pod: a relay on ip (the providers
// listen on 127.0.0.1 only) to the provider, as its pod IP would reach it.
type podAddr struct {
	name string
	ip   string
	port int
}

func relay(t *testing.T, ip string, p *harness.Provider) podAddr {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", p.Addr)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(u, c); done <- struct{}{} }()
				go func() { io.Copy(c, u); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return podAddr{name: p.Name, ip: ip, port: ln.Addr().(*net.TCPAddr).Port}
}

// endpointSlice is what the endpoint controller writes for one pod of
// Service greeter: a slice of its own, since each has a port of its own.
func endpointSlice(p podAddr) string {
	return fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: greeter-%s
  namespace: %s
  labels: {kubernetes.io/service-name: greeter, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
addressType: IPv4
ports: [{name: tcp-metaprotocol-dubbo-greeter, port: %d, protocol: TCP}]
endpoints:
- addresses: [%s]
  conditions: {ready: true}
`, p.name, ns, p.port, p.ip)
}

const service = `apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: ` + ns + `}
spec:
  ports: [{name: tcp-metaprotocol-dubbo-greeter, port: 20880}]
`

// runnerConfig: a listener whose routes, clusters and endpoints all come
// from the controller's xDS server.
const runnerConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: ctl
    codec: dubbo
    xds:
      address: "{{index .Extra "xds"}}"
      node_id: e2e
      route_config_name: "{{index .Extra "route"}}"
      initial_fetch_timeout: 20s
`

// load keeps clients busy, one call after another per worker, and counts.
type load struct {
	stopped  chan struct{}
	wg       sync.WaitGroup
	epoch    atomic.Int64
	calls    atomic.Int64
	failures atomic.Int64
	mu       sync.Mutex
	firstErr error
	notify   chan struct{}
}

func startLoad(clients []*harness.Client, perClient int, onReply func(method string, r greeter.Reply, epoch int64)) *load {
	l := &load{stopped: make(chan struct{}), notify: make(chan struct{}, 1)}
	for w := range len(clients) * perClient {
		c := clients[w%len(clients)]
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stopped:
					return
				default:
				}
				e := l.epoch.Load()
				method := [...]string{"Greet", "Whoami"}[(i+w)%2]
				arg := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				r, err := c.Call(ctx, method, arg, nil)
				cancel()
				if err == nil && method == "Greet" && r.Arg != arg {
					err = fmt.Errorf("Greet(%q) got the answer to %q", arg, r.Arg)
				}
				l.calls.Add(1)
				if err != nil {
					l.failures.Add(1)
					l.mu.Lock()
					if l.firstErr == nil {
						l.firstErr = err
					}
					l.mu.Unlock()
				} else {
					onReply(method, r, e)
				}
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
func (l *load) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for !cond() {
		select {
		case <-l.notify:
		case <-timeout:
			t.Fatalf("timed out waiting for %s (%d calls, %d failed; first: %v)", what, l.calls.Load(), l.failures.Load(), l.firstErr)
		}
	}
}

func (l *load) stop(t *testing.T) {
	t.Helper()
	close(l.stopped)
	l.wg.Wait()
	if n := l.failures.Load(); n > 0 {
		t.Fatalf("%d of %d calls failed; first: %v", n, l.calls.Load(), l.firstErr)
	}
}

// TestControllerToTraffic: MetaRouters applied through the API server
// steer live traffic through the controller's xDS server, 50 changes
// without a failed call; an EndpointSlice change moves a Service's traffic
// to the new set of endpoints.
func TestControllerToTraffic(t *testing.T) {
	harness.BuildAll(t)
	c, kubeconfig := apiServer(t)
	a := applier{t: t, c: c}
	a.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + "}\n")

	provs := map[string]*harness.Provider{}
	for _, name := range []string{"v1", "v2", "v3"} {
		provs[name] = harness.StartProvider(t, harness.ProviderSpec{Name: name})
	}
	v1, v2 := provs["v1"], provs["v2"]
	ip := hostIP(t)
	pod1, pod2, pod3 := relay(t, ip, v1), relay(t, ip, v2), relay(t, ip, provs["v3"])

	a.apply(serviceEntry(v1, v2))
	a.apply(destinationRule)
	a.apply(metaRouter(0))
	a.apply(service)
	a.apply(endpointSlice(pod1))

	xds := harness.Addr(harness.FreePort(t))
	ctl := harness.Start(t, "breeze controller", harness.BreezeBin(t), "controller", "-kubeconfig", kubeconfig,
		"-xds-listen", xds, "-xds-address", xds, "-health", "0", "-metrics", "0")
	if _, err := ctl.WaitOutput("LISTENING xds", 60*time.Second); err != nil {
		t.Fatalf("breeze controller: %v:\n%s", err, ctl.Output())
	}

	t.Run("MetaRouterChanges", func(t *testing.T) {
		a := applier{t: t, c: c}
		proxy := harness.StartProxyVars(t, runnerConfig, map[string]interface{}{"xds": xds, "route": seHost + "_20880"}, nil)
		var clients []*harness.Client
		for range 2 {
			clients = append(clients, harness.StartClient(t, proxy.Addr, harness.ClientSpec{Heartbeat: time.Second}))
		}
		var latest, wrong atomic.Int64
		latest.Store(-1) // the newest MetaRouter version a reply was routed by
		var firstWrong atomic.Value
		l := startLoad(clients, 2, func(method string, r greeter.Reply, _ int64) {
			table, err := strconv.Atoi(r.Attachments[tableKey])
			if err != nil {
				wrong.Add(1)
				firstWrong.CompareAndSwap(nil, fmt.Sprintf("a reply without %s: %+v", tableKey, r))
				return
			}
			for {
				cur := latest.Load()
				if int64(table) <= cur || latest.CompareAndSwap(cur, int64(table)) {
					break
				}
			}
			if want := expected(table, method); r.Provider != want {
				wrong.Add(1)
				firstWrong.CompareAndSwap(nil, fmt.Sprintf("%s routed by MetaRouter version %d reached %s, want %s", method, table, r.Provider, want))
			}
		})
		l.waitFor(t, "replies routed by MetaRouter version 0", func() bool { return latest.Load() >= 0 })
		const changes = 50
		for i := 1; i <= changes; i++ {
			a.apply(metaRouter(i))
			l.waitFor(t, fmt.Sprintf("replies routed by MetaRouter version %d", i), func() bool { return latest.Load() >= int64(i) })
		}
		l.stop(t)
		if n := wrong.Load(); n > 0 {
			t.Fatalf("%d replies went where their MetaRouter version does not send them; first: %v", n, firstWrong.Load())
		}
		t.Logf("%d MetaRouter changes through the API server: %d calls, none failed, every reply where its version routes it", changes, l.calls.Load())
	})

	t.Run("EndpointSliceChange", func(t *testing.T) {
		a := applier{t: t, c: c}
		proxy := harness.StartProxyVars(t, runnerConfig, map[string]interface{}{"xds": xds, "route": svcHost + "_20880"}, nil)
		var clients []*harness.Client
		for range 2 {
			clients = append(clients, harness.StartClient(t, proxy.Addr, harness.ClientSpec{Heartbeat: time.Second}))
		}
		var mu sync.Mutex
		byEpoch := map[int64]map[string]int{}
		count := func(epoch int64) map[string]int {
			mu.Lock()
			defer mu.Unlock()
			out := map[string]int{}
			for e, m := range byEpoch {
				if e >= epoch {
					for k, v := range m {
						out[k] += v
					}
				}
			}
			return out
		}
		l := startLoad(clients, 2, func(_ string, r greeter.Reply, epoch int64) {
			mu.Lock()
			defer mu.Unlock()
			if byEpoch[epoch] == nil {
				byEpoch[epoch] = map[string]int{}
			}
			byEpoch[epoch][r.Provider]++
		})
		l.waitFor(t, "replies from v1, the one endpoint", func() bool { return count(0)["v1"] >= 20 })
		if got := count(0); len(got) != 1 {
			t.Fatalf("with one endpoint (v1): replies from %v", got)
		}
		// The endpoint controller's next writes: v1 gone, v2 and v3 new.
		a.apply(endpointSlice(pod2))
		a.apply(endpointSlice(pod3))
		a.delete("discovery.k8s.io/v1", "EndpointSlice", "greeter-v1")
		// Until the change has reached the proxy: 30 replies in a row,
		// of calls started after a mark, none from v1.
		total := func(m map[string]int) (n int) {
			for _, v := range m {
				n += v
			}
			return n
		}
		mark := l.epoch.Add(1)
		l.waitFor(t, "replies from v2 and v3 only", func() bool {
			got := count(mark)
			if got["v1"] > 0 {
				mark = l.epoch.Add(1)
				return false
			}
			return total(got) >= 30
		})
		// Calls started from now on: only the new set, both of it.
		e := l.epoch.Add(1)
		l.waitFor(t, "200 replies after the change", func() bool { return total(count(e)) >= 200 })
		l.stop(t)
		got := count(e)
		if got["v1"] != 0 || got["v2"] < 40 || got["v3"] < 40 {
			t.Fatalf("after the EndpointSlice change: replies %v, want v2 and v3 only, each a fair share (round robin)", got)
		}
		t.Logf("after the EndpointSlice change: replies %v; %d calls in all, none failed", got, l.calls.Load())
	})
}
