package zookeeper

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/breeze-mesh/breeze/internal/testwait"
	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/zookeeper/zktest"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: testLogLevel()})))
	os.Exit(m.Run())
}

const greeter = "org.apache.dubbo.samples.api.GreetingsService"

// providerURL is a provider URL in the form Dubbo 3.3 Java writes (see
// registry/testdata for those captured from the real providers), for
// address and version.
func providerURL(addr, version string) string {
	return "dubbo://" + addr + "/" + greeter + "?anyhost=true&application=greeter&deprecated=false&dubbo=2.0.2" +
		"&dynamic=true&generic=false&interface=" + greeter + "&methods=sayHi&release=3.3.0&revision=" + version +
		"&side=provider&timestamp=1764500000000&version=" + version
}

// provider registers under its own ZooKeeper session, as a Dubbo provider
// does: an ephemeral node that lives as long as the session.
type provider struct {
	conn *zk.Conn
	node string
}

func register(t *testing.T, servers []string, sessionTimeout time.Duration, rawURL string) *provider {
	t.Helper()
	conn, _, err := zk.Connect(servers, sessionTimeout, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	dir := "/dubbo/" + greeter + "/providers"
	for _, p := range []string{"/dubbo", "/dubbo/" + greeter, dir} {
		if _, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			t.Fatalf("create %s: %v", p, err)
		}
	}
	node := dir + "/" + url.QueryEscape(rawURL)
	if _, err := conn.Create(node, nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatalf("create %s: %v", node, err)
	}
	return &provider{conn: conn, node: node}
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// follow runs a Registry on servers and keeps its last update.
type follower struct {
	mu      sync.Mutex
	last    registry.Update
	updates int
}

func follow(t *testing.T, servers []string) *follower {
	t.Helper()
	return followWith(t, &Registry{Servers: servers, SessionTimeout: 30 * time.Second, RetryInterval: 50 * time.Millisecond})
}

func followWith(t *testing.T, r *Registry) *follower {
	t.Helper()
	f := &follower{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(u registry.Update) {
			f.mu.Lock()
			f.last, f.updates = u, f.updates+1
			f.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return f
}

// state describes the last update: "stale" or "fresh", and the endpoints.
func (f *follower) state() (stale bool, endpoints []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, in := range f.last.Instances {
		endpoints = append(endpoints, fmt.Sprintf("%s:%d/%s", in.Address, in.Port, in.Params["version"]))
	}
	slices.Sort(endpoints)
	return f.last.Stale, endpoints
}

func (f *follower) String() string {
	stale, eps := f.state()
	return fmt.Sprintf("stale=%v endpoints=%v", stale, eps)
}

// waitFor waits until the last update is want ("stale=false endpoints=[...]").
func (f *follower) waitFor(t *testing.T, want string) {
	t.Helper()
	testwait.For(t, fmt.Sprintf("the registry's update %q", want), 30*time.Second, func() (bool, string) {
		got := f.String()
		return got == want, got
	})
}

func TestProvidersComeAndGo(t *testing.T) {
	zs := zktest.Start(t)
	servers := []string{zs.Addr}
	a := register(t, servers, 10*time.Second, providerURL("10.0.0.1:20880", "1.0.0"))
	f := follow(t, servers)
	f.waitFor(t, "stale=false endpoints=[10.0.0.1:20880/1.0.0]")

	b := register(t, servers, 10*time.Second, providerURL("10.0.0.2:20881", "2.0.0"))
	f.waitFor(t, "stale=false endpoints=[10.0.0.1:20880/1.0.0 10.0.0.2:20881/2.0.0]")

	// A provider that stops cleanly closes its session: its node goes.
	a.conn.Close()
	f.waitFor(t, "stale=false endpoints=[10.0.0.2:20881/2.0.0]")

	// A provider disabled by governance (dubbo-admin rewrites its URL).
	if err := b.conn.Delete(b.node, -1); err != nil {
		t.Fatal(err)
	}
	disabled := strings.Replace(providerURL("10.0.0.2:20881", "2.0.0"), "anyhost=true", "anyhost=true&enabled=false", 1)
	if _, err := b.conn.Create("/dubbo/"+greeter+"/providers/"+url.QueryEscape(disabled), nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	// Its endpoint string is the same as before the delete: wait for the
	// update that carries the disabled URL itself.
	testwait.For(t, "the disabled provider's URL published", 30*time.Second, func() (bool, string) {
		f.mu.Lock()
		seen := len(f.last.Instances) == 1 && f.last.Instances[0].Params["enabled"] == "false"
		f.mu.Unlock()
		return seen, "last update " + f.String()
	})
	f.mu.Lock()
	entries := registry.ServiceEntries(f.last.Instances, "default")
	f.mu.Unlock()
	if len(entries) != 0 {
		t.Errorf("a disabled provider's interface has ServiceEntries %v, want none", entries)
	}
}

// A provider whose process dies (its connection cut, no clean close)
// loses its ephemeral node when ZooKeeper expires its session.
func TestProviderSessionExpiry(t *testing.T) {
	zs := zktest.Start(t)
	cut := newCuttableProxy(t, zs.Addr)
	register(t, []string{zs.Addr}, 10*time.Second, providerURL("10.0.0.1:20880", "1.0.0"))
	register(t, []string{cut.addr()}, 4*zktest.TickTime, providerURL("10.0.0.9:20880", "1.0.0"))
	f := follow(t, []string{zs.Addr})
	f.waitFor(t, "stale=false endpoints=[10.0.0.1:20880/1.0.0 10.0.0.9:20880/1.0.0]")
	cut.cut()
	f.waitFor(t, "stale=false endpoints=[10.0.0.1:20880/1.0.0]")
}

// ZooKeeper down: the last known set is kept and marked stale. Up again:
// the watches are back (a provider added afterwards is seen) and no
// provider was lost.
func TestZooKeeperRestart(t *testing.T) {
	zs := zktest.Start(t)
	servers := []string{zs.Addr}
	// Sessions outlive the restart (ZooKeeper keeps them in its data).
	register(t, servers, 60*time.Second, providerURL("10.0.0.1:20880", "1.0.0"))
	f := follow(t, servers)
	f.waitFor(t, "stale=false endpoints=[10.0.0.1:20880/1.0.0]")

	zs.Stop()
	f.waitFor(t, "stale=true endpoints=[10.0.0.1:20880/1.0.0]")

	zs.Restart()
	f.waitFor(t, "stale=false endpoints=[10.0.0.1:20880/1.0.0]")
	register(t, servers, 60*time.Second, providerURL("10.0.0.2:20880", "2.0.0"))
	f.waitFor(t, "stale=false endpoints=[10.0.0.1:20880/1.0.0 10.0.0.2:20880/2.0.0]")
}

// Nodes Dubbo 3 keeps under the root besides interfaces, and an
// interface with no providers node yet, publish no endpoints; a providers
// node created later is followed.
func TestNotInterfacesAndLateProviders(t *testing.T) {
	zs := zktest.Start(t)
	conn, _, err := zk.Connect([]string{zs.Addr}, 10*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, p := range []string{"/dubbo", "/dubbo/mapping", "/dubbo/mapping/" + greeter, "/dubbo/metadata", "/dubbo/config", "/dubbo/" + greeter, "/dubbo/" + greeter + "/consumers"} {
		if _, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("create %s: %v", p, err)
		}
	}
	f := follow(t, []string{zs.Addr})
	f.waitFor(t, "stale=false endpoints=[]")
	register(t, []string{zs.Addr}, 10*time.Second, providerURL("10.0.0.3:20880", "1.0.0"))
	f.waitFor(t, "stale=false endpoints=[10.0.0.3:20880/1.0.0]")
}

// cuttableProxy forwards TCP to a server until cut, then refuses and
// drops every connection: a provider host that vanished.
type cuttableProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	dead  bool
}

func newCuttableProxy(t *testing.T, target string) *cuttableProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttableProxy{ln: ln}
	t.Cleanup(p.cut)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			p.mu.Lock()
			if err != nil || p.dead {
				p.mu.Unlock()
				c.Close()
				if s != nil {
					s.Close()
				}
				continue
			}
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	return p
}

func (p *cuttableProxy) addr() string { return p.ln.Addr().String() }

func (p *cuttableProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dead = true
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
}

// capture reads a file captured from a real dubbo-go provider (see
// e2e/registry.TestCaptureDubboGoRegistrations).
func capture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/dubbo-go-3.3.0/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.TrimSpace(string(b)))
}

// Application-level discovery with what dubbo-go 3.3 writes: the instance
// under /services, its MetadataInfo (by revision) from the metadata
// report under the root. The MetadataInfo may come after the instance.
func TestApplicationLevel(t *testing.T) {
	zs := zktest.Start(t)
	conn, _, err := zk.Connect([]string{zs.Addr}, 10*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	create := func(p string, data []byte, flags int32) {
		t.Helper()
		parts := strings.Split(strings.Trim(p, "/"), "/")
		for i := 1; i < len(parts); i++ {
			if _, err := conn.Create("/"+strings.Join(parts[:i], "/"), nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
				t.Fatal(err)
			}
		}
		if _, err := conn.Create(p, data, flags, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("create %s: %v", p, err)
		}
	}
	// As captured: instance 127.0.0.1:37627 of greeter-app, revision
	// 19263519102, one service org.breeze.Greeter version 2.0.0.
	f := follow(t, []string{zs.Addr})
	f.waitFor(t, "stale=false endpoints=[]")
	create("/services/greeter-app/127.0.0.1:37627", capture(t, "instance.json"), zk.FlagEphemeral)
	// No MetadataInfo yet: nothing to serve for it.
	f.waitFor(t, "stale=false endpoints=[]")
	create("/dubbo/greeter-app/19263519102", capture(t, "metadata-info.json"), 0)
	f.waitFor(t, "stale=false endpoints=[127.0.0.1:37627/2.0.0]")

	f.mu.Lock()
	entries := registry.ServiceEntries(f.last.Instances, "default")
	f.mu.Unlock()
	if len(entries) != 1 || len(entries[0].Spec.Endpoints) != 1 {
		t.Fatalf("ServiceEntries %v, want one with one endpoint", entries)
	}
	labels := entries[0].Spec.Endpoints[0].Labels
	for k, want := range map[string]string{"version": "2.0.0", "application": "greeter-app", "dubbo.metadata.revision": "19263519102", "serialization": "hessian2"} {
		if labels[k] != want {
			t.Errorf("label %s = %q, want %q (labels %v)", k, labels[k], want, labels)
		}
	}
	if entries[0].Spec.Hosts[0] != "org.breeze.Greeter" || entries[0].Spec.Endpoints[0].Ports[registry.PortName] != 37627 {
		t.Errorf("ServiceEntry %v, want host org.breeze.Greeter, port 37627", entries[0].Spec)
	}

	// The same provider also registered interface-level (registry-type
	// all): one endpoint, not two.
	f.mu.Lock()
	before := f.updates
	f.mu.Unlock()
	node := "/dubbo/org.breeze.Greeter/providers/" + url.QueryEscape("dubbo://127.0.0.1:37627/org.breeze.Greeter?application=greeter-app&version=2.0.0&side=provider")
	create(node, nil, zk.FlagEphemeral)
	// The node's arrival is an update (of equal endpoints).
	testwait.For(t, "an update for an interface-level node of the same provider", 30*time.Second, func() (bool, string) {
		f.mu.Lock()
		n, updates := len(f.last.Instances), f.updates
		f.mu.Unlock()
		return updates > before, fmt.Sprintf("%d updates, %d instances", updates, n)
	})
	f.mu.Lock()
	n := len(f.last.Instances)
	f.mu.Unlock()
	if n != 1 {
		t.Errorf("%d instances for a provider registered both ways, want 1", n)
	}

	// The instance goes: so does its endpoint.
	if err := conn.Delete(node, -1); err != nil {
		t.Fatal(err)
	}
	if err := conn.Delete("/services/greeter-app/127.0.0.1:37627", -1); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "stale=false endpoints=[]")
}

// capturedTree reads the ZooKeeper nodes captured from real Dubbo Java
// providers ("path = data" lines, see e2e/javainterop).
func capturedTree(t *testing.T, name string) map[string][]byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string][]byte{}
	for _, line := range strings.Split(string(b), "\n") {
		if p, data, ok := strings.Cut(line, " = "); ok {
			nodes[p] = []byte(data)
		}
	}
	return nodes
}

// Application-level discovery with what Dubbo Java 3.3.6 writes: the
// instance under /services, its MetadataInfo in the metadata report under
// /dubbo/metadata/<application>/<revision>.
func TestApplicationLevelJava(t *testing.T) {
	tree := capturedTree(t, "dubbo-java-3.3.6/tree.txt")
	zs := zktest.Start(t)
	conn, _, err := zk.Connect([]string{zs.Addr}, 10*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	f := follow(t, []string{zs.Addr})
	f.waitFor(t, "stale=false endpoints=[]")
	// Parents first, as the capture lists them; the instance ephemeral.
	var paths []string
	for p := range tree {
		if strings.HasPrefix(p, "/services/") || strings.HasPrefix(p, "/dubbo/metadata/java-app") {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	for _, p := range []string{"/services", "/dubbo", "/dubbo/metadata"} {
		if _, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			t.Fatal(err)
		}
	}
	for _, p := range paths {
		var flags int32
		if strings.Count(p, "/") == 3 && strings.HasPrefix(p, "/services/") {
			flags = zk.FlagEphemeral
		}
		if _, err := conn.Create(p, tree[p], flags, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("create %s: %v", p, err)
		}
	}
	// As captured: instance 127.0.0.1:44257 of java-app, version 2.0.0.
	f.waitFor(t, "stale=false endpoints=[127.0.0.1:44257/2.0.0]")
}

// metadataService answers getMetadataInfo on a loopback port with the
// answer a real Dubbo Java 3.3.6 provider gave (registry/metadataservice's
// testdata: java-local, org.breeze.Greeter 3.0.0 on port 42880), its id
// set to the request's; while down, it closes each connection unanswered.
type metadataService struct {
	addr  string
	port  string
	calls atomic.Int32
	down  atomic.Bool
}

func startMetadataService(t *testing.T, ip string) *metadataService {
	t.Helper()
	answer, err := os.ReadFile("../metadataservice/testdata/java-3.3.6-response.bin")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	m := &metadataService{addr: ln.Addr().String()}
	_, m.port, _ = net.SplitHostPort(m.addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				m.calls.Add(1)
				if m.down.Load() {
					return
				}
				req := make([]byte, 16)
				if _, err := io.ReadFull(c, req); err != nil {
					return
				}
				out := append([]byte(nil), answer...)
				copy(out[4:12], req[4:12])
				_, _ = c.Write(out)
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return m
}

// Application-level discovery of providers that keep their metadata local
// (Dubbo Java's default): the instance node as a real Java 3.3.6 provider
// wrote it, pointing at a MetadataService that answers as that provider
// did. Its interfaces are served; a second instance of the same revision
// needs no second call; an application whose MetadataService does not
// answer is left out without holding back the rest, and served once a
// retry gets an answer.
func TestApplicationLevelLocalMetadata(t *testing.T) {
	zs := zktest.Start(t)
	conn, _, err := zk.Connect([]string{zs.Addr}, 10*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Each on its instance's address, where a consumer calls it.
	good, bad := startMetadataService(t, "127.0.0.1"), startMetadataService(t, "127.0.0.3")
	bad.down.Store(true)
	instance, err := os.ReadFile("../testdata/dubbo-java-3.3.6/local-instance.json")
	if err != nil {
		t.Fatal(err)
	}
	// The captured node, its MetadataService's port (url-params) moved to
	// ms, its address to ip, its application to app.
	node := func(ms *metadataService, ip, app string) []byte {
		s := strings.ReplaceAll(string(bytes.TrimSpace(instance)), `\"port\":\"42880\"`, `\"port\":\"`+ms.port+`\"`)
		s = strings.ReplaceAll(s, `"address":"127.0.0.1"`, `"address":"`+ip+`"`)
		return []byte(strings.ReplaceAll(s, `"java-local"`, `"`+app+`"`))
	}
	for _, p := range []string{"/services", "/services/java-local", "/services/java-down"} {
		if _, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	for p, data := range map[string][]byte{
		"/services/java-local/127.0.0.1:42880": node(good, "127.0.0.1", "java-local"),
		"/services/java-down/127.0.0.3:42880":  node(bad, "127.0.0.3", "java-down"),
	} {
		if _, err := conn.Create(p, data, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("create %s: %v", p, err)
		}
	}
	// The endpoint's port is the one the MetadataInfo names (42880).
	f := followWith(t, &Registry{Servers: []string{zs.Addr}, SessionTimeout: 30 * time.Second,
		RetryInterval: 50 * time.Millisecond, MetadataRetry: 20 * time.Millisecond})
	f.waitFor(t, "stale=false endpoints=[127.0.0.1:42880/3.0.0]")
	f.mu.Lock()
	in := f.last.Instances[0]
	f.mu.Unlock()
	if in.Interface != "org.breeze.Greeter" || in.Params["application"] != "java-local" || in.Params["dubbo.metadata.storage-type"] != "local" {
		t.Errorf("instance %+v: want org.breeze.Greeter of java-local with the instance's metadata as params", in)
	}
	if n := bad.calls.Load(); n == 0 {
		t.Errorf("the MetadataService that does not answer was called %d times before the first set, want at least once", n)
	}

	// Same revision, another address: served without another call.
	if _, err := conn.Create("/services/java-local/127.0.0.2:42880", node(good, "127.0.0.2", "java-local"), zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "stale=false endpoints=[127.0.0.1:42880/3.0.0 127.0.0.2:42880/3.0.0]")
	if n := good.calls.Load(); n != 1 {
		t.Errorf("two instances of one revision: their MetadataService was called %d times, want once", n)
	}

	// The silent one answers at last: a retry serves it.
	bad.down.Store(false)
	f.waitFor(t, "stale=false endpoints=[127.0.0.1:42880/3.0.0 127.0.0.2:42880/3.0.0 127.0.0.3:42880/3.0.0]")
}

// testLogLevel: errors only, unless BREEZE_TEST_LOG=debug (or info, warn).
func testLogLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("BREEZE_TEST_LOG"))); err != nil {
		return slog.LevelError
	}
	return l
}

// A ZooKeeper that comes back with less than its clients saw (restored
// from a backup, or on an empty volume) refuses their sessions for good
// ("client has seen zxid ... our last zxid is ..."): go-zookeeper would
// ask again forever. The registry gives that session up once it has been
// away longer than its timeout and opens a new one.
func TestZooKeeperBackWithLessData(t *testing.T) {
	zs := zktest.Start(t)
	servers := []string{zs.Addr}
	register(t, servers, 60*time.Second, providerURL("10.0.0.1:20880", "1.0.0"))
	f := followWith(t, &Registry{Servers: servers, SessionTimeout: time.Second, RetryInterval: 50 * time.Millisecond})
	f.waitFor(t, "stale=false endpoints=[10.0.0.1:20880/1.0.0]")
	// Providers come and go, and the registry reads each change: it sees
	// zxids (some 7 a provider) well past the few the ZooKeeper coming
	// back empty has when the registry asks it for its session again.
	for i := range 5 {
		q := register(t, servers, 60*time.Second, providerURL(fmt.Sprintf("10.0.1.%d:20880", i), "1.0.0"))
		f.waitFor(t, fmt.Sprintf("stale=false endpoints=[10.0.0.1:20880/1.0.0 10.0.1.%d:20880/1.0.0]", i))
		q.conn.Close()
		f.waitFor(t, "stale=false endpoints=[10.0.0.1:20880/1.0.0]")
	}

	zs.Stop()
	f.waitFor(t, "stale=true endpoints=[10.0.0.1:20880/1.0.0]")
	zs.Wipe()
	zs.Restart()
	register(t, servers, 60*time.Second, providerURL("10.0.0.2:20880", "2.0.0"))
	f.waitFor(t, "stale=false endpoints=[10.0.0.2:20880/2.0.0]")
}
