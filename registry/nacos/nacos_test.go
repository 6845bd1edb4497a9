package nacos

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/config_client"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/breeze-mesh/breeze/internal/testwait"
	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/nacos/nacostest"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	os.Exit(m.Run())
}

const greeter = "org.breeze.Greeter"

// providerMetadata is what dubbo-go 3.3's Nacos registry writes as an
// interface-level instance's metadata (see testdata/dubbo-go-3.3.0-nacos).
func providerMetadata(version string) map[string]string {
	return map[string]string{
		"anyhost": "true", "application": "greeter", "category": "providers", "dubbo": "2.0.2",
		"interface": greeter, "methods": "Greet,Whoami", "path": greeter, "protocol": "dubbo",
		"release": "dubbo-golang-3.2.0", "side": "provider", "version": version,
	}
}

func serviceName(version string) string { return "providers:" + greeter + ":" + version + ":" }

// client is a Nacos client of the test's own, registering instances as a
// dubbo-go provider does (ephemeral: they live as long as its connection).
type client struct {
	naming naming_client.INamingClient
	config config_client.IConfigClient
}

func newClient(t *testing.T, addr string) *client {
	t.Helper()
	host, portText, _ := net.SplitHostPort(addr)
	port, _ := strconv.ParseUint(portText, 10, 16)
	dir := t.TempDir()
	param := vo.NacosClientParam{
		ClientConfig: constant.NewClientConfig(constant.WithTimeoutMs(5000), constant.WithLogDir(dir), constant.WithCacheDir(dir),
			constant.WithNotLoadCacheAtStart(true), constant.WithLogLevel("error")),
		ServerConfigs: []constant.ServerConfig{*constant.NewServerConfig(host, port)},
	}
	naming, err := clients.NewNamingClient(param)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(naming.CloseClient)
	config, err := clients.NewConfigClient(param)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(config.CloseClient)
	return &client{naming: naming, config: config}
}

// The SDK's bool results are not checked: the Go SDK reads a reply's
// "success" field, which rnacos 0.8.8 does not send (Nacos' Java server
// derives it from resultCode 200, which rnacos does send), so they are
// false though the server did it. The tests check what the server holds.
func (c *client) register(t *testing.T, service string, port uint64, weight float64, enabled bool, md map[string]string) {
	t.Helper()
	if _, err := c.naming.RegisterInstance(vo.RegisterInstanceParam{Ip: "127.0.0.1", Port: port, ServiceName: service,
		Weight: weight, Enable: enabled, Healthy: true, Ephemeral: true, Metadata: md}); err != nil {
		t.Fatalf("register %s :%d: %v", service, port, err)
	}
}

func (c *client) registerAt(t *testing.T, ip, service string, port uint64, weight float64, md map[string]string) {
	t.Helper()
	if _, err := c.naming.RegisterInstance(vo.RegisterInstanceParam{Ip: ip, Port: port, ServiceName: service,
		Weight: weight, Enable: true, Healthy: true, Ephemeral: true, Metadata: md}); err != nil {
		t.Fatalf("register %s %s:%d: %v", service, ip, port, err)
	}
}

func (c *client) deregister(t *testing.T, service string, port uint64) {
	t.Helper()
	if _, err := c.naming.DeregisterInstance(vo.DeregisterInstanceParam{Ip: "127.0.0.1", Port: port, ServiceName: service, Ephemeral: true}); err != nil {
		t.Fatalf("deregister %s :%d: %v", service, port, err)
	}
}

// follower runs a Registry and keeps its last update.
type follower struct {
	mu      sync.Mutex
	last    registry.Update
	updates int
	// history: every update published, described (String).
	history []string
	// lines: set when the updates come from a child process (described
	// there); String is the last one.
	lines []string
}

func follow(t *testing.T, r *Registry) *follower {
	t.Helper()
	f := &follower{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(u registry.Update) {
			f.mu.Lock()
			f.last, f.updates = u, f.updates+1
			f.history = append(f.history, describe(u))
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

// String describes the last update: stale or not, and each endpoint as
// interface address:port version weight.
func (f *follower) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.lines) > 0 {
		return f.lines[len(f.lines)-1]
	}
	return describe(f.last)
}

func (f *follower) since(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.history[n:])
}

func (f *follower) published() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.history)
}

func describe(u registry.Update) string {
	var eps []string
	for _, in := range u.Instances {
		eps = append(eps, fmt.Sprintf("%s %s:%d v%s w%d", in.Interface, in.Address, in.Port, in.Params["version"], in.Weight()))
	}
	slices.Sort(eps)
	return fmt.Sprintf("stale=%v endpoints=[%s]", u.Stale, strings.Join(eps, ", "))
}

func (f *follower) waitFor(t *testing.T, want string) {
	t.Helper()
	testwait.For(t, "the registry to publish "+want, 30*time.Second, func() (bool, string) {
		got := f.String()
		return got == want, got
	})
}

func ep(port uint64, version string, weight int) string {
	return fmt.Sprintf("%s 127.0.0.1:%d v%s w%d", greeter, port, version, weight)
}

func fresh(eps ...string) string { return "stale=false endpoints=[" + strings.Join(eps, ", ") + "]" }

// Each provider registers through a client of its own, as separate
// processes do: Nacos 2 ties an ephemeral instance to its client's
// connection, one instance per service and client.
func TestProvidersFollowed(t *testing.T) {
	srv := nacostest.Start(t)
	p1 := newClient(t, srv.Addr)
	p1.register(t, serviceName("1.0.0"), 20001, 1, true, providerMetadata("1.0.0"))
	f := follow(t, &Registry{Servers: []string{srv.Addr}, ListInterval: 100 * time.Millisecond})
	f.waitFor(t, fresh(ep(20001, "1.0.0", 100)))

	// A second provider of the same service: pushed.
	newClient(t, srv.Addr).register(t, serviceName("1.0.0"), 20002, 1, true, providerMetadata("1.0.0"))
	f.waitFor(t, fresh(ep(20001, "1.0.0", 100), ep(20002, "1.0.0", 100)))

	// A new service (version 2.0.0) appears on the next list.
	p3 := newClient(t, srv.Addr)
	p3.register(t, serviceName("2.0.0"), 20003, 1, true, providerMetadata("2.0.0"))
	f.waitFor(t, fresh(ep(20001, "1.0.0", 100), ep(20002, "1.0.0", 100), ep(20003, "2.0.0", 100)))

	// Deregistered: gone, the last of a service too.
	p1.deregister(t, serviceName("1.0.0"), 20001)
	f.waitFor(t, fresh(ep(20002, "1.0.0", 100), ep(20003, "2.0.0", 100)))
	p3.deregister(t, serviceName("2.0.0"), 20003)
	f.waitFor(t, fresh(ep(20002, "1.0.0", 100)))
}

func TestDisabledAndWeight(t *testing.T) {
	srv := nacostest.Start(t)
	newClient(t, srv.Addr).register(t, serviceName("1.0.0"), 20001, 1, true, providerMetadata("1.0.0"))
	c := newClient(t, srv.Addr)
	c.register(t, serviceName("1.0.0"), 20002, 1, false, providerMetadata("1.0.0")) // disabled in Nacos
	weighted := providerMetadata("1.0.0")
	weighted["weight"] = "200" // Dubbo's weight
	newClient(t, srv.Addr).register(t, serviceName("1.0.0"), 20003, 0.5, true, weighted)
	newClient(t, srv.Addr).register(t, serviceName("1.0.0"), 20004, 2, true, providerMetadata("1.0.0"))
	f := follow(t, &Registry{Servers: []string{srv.Addr}, ListInterval: 100 * time.Millisecond})
	f.waitFor(t, fresh(ep(20001, "1.0.0", 100), ep(20003, "1.0.0", 100), ep(20004, "1.0.0", 200)))

	// The provider exports again, enabled now and weighed 3. Deregistered
	// first: rnacos 0.8.8 keeps a registered instance's "enabled" when the
	// same ip:port registers again (a registration may disable it, not
	// enable it: src/grpc/handler/naming_instance.rs, update_tag.enabled =
	// !instance.enabled). Registering again in place passed only while
	// every idle SDK client reconnected (healthcheck.go), rnacos dropping
	// the instance and taking the re-registration as new.
	c.deregister(t, serviceName("1.0.0"), 20002)
	c.register(t, serviceName("1.0.0"), 20002, 3, true, providerMetadata("1.0.0"))
	f.waitFor(t, fresh(ep(20001, "1.0.0", 100), ep(20002, "1.0.0", 300), ep(20003, "1.0.0", 100), ep(20004, "1.0.0", 200)))
}

// The registering client goes (a provider that dies): its ephemeral
// instances go with its connection.
func TestClientGone(t *testing.T) {
	srv := nacostest.Start(t)
	stays := newClient(t, srv.Addr)
	stays.register(t, serviceName("1.0.0"), 20001, 1, true, providerMetadata("1.0.0"))
	dies := newClient(t, srv.Addr)
	dies.register(t, serviceName("1.0.0"), 20002, 1, true, providerMetadata("1.0.0"))
	f := follow(t, &Registry{Servers: []string{srv.Addr}, ListInterval: 100 * time.Millisecond})
	f.waitFor(t, fresh(ep(20001, "1.0.0", 100), ep(20002, "1.0.0", 100)))
	closed := time.Now()
	dies.naming.CloseClient()
	f.waitFor(t, fresh(ep(20001, "1.0.0", 100)))
	t.Logf("a closed client's instance unpublished %s after the close", time.Since(closed).Round(time.Millisecond))
}

// rnacos stops: the last known set is kept, published stale; it comes
// back (empty: ephemeral instances live in memory), the providers' clients
// register again, and the set is fresh again, no endpoint lost meanwhile
// (RestartGrace).
//
// The Registry runs in a child process (this test binary, TestFollowChild):
// nacos-sdk-go v2.2.2 (and v2.3.2) reads its connection without a lock
// while reconnecting (RpcClient.Request vs. its reconnect), a data race
// the race detector reports in whichever process reconnects. The child's
// race reports go to a file (GORACE log_path, exitcode 0), logged here.
func TestServerRestart(t *testing.T) {
	srv := nacostest.Start(t)
	c := newClient(t, srv.Addr)
	c.register(t, serviceName("1.0.0"), 20001, 1, true, providerMetadata("1.0.0"))
	f := followChild(t, srv.Addr)
	f.waitFor(t, fresh(ep(20001, "1.0.0", 100)))

	srv.Stop()
	f.waitFor(t, "stale=true endpoints=["+ep(20001, "1.0.0", 100)+"]")
	before := f.published()
	restarted := time.Now()
	srv.Restart()
	f.waitFor(t, fresh(ep(20001, "1.0.0", 100)))
	meanwhile := f.since(before)
	t.Logf("fresh again %s after rnacos answered; published meanwhile: %v", time.Since(restarted).Round(time.Millisecond), meanwhile)
	for _, u := range meanwhile {
		if !strings.Contains(u, ep(20001, "1.0.0", 100)) {
			t.Errorf("across the restart, published %s: the provider was lost (all: %v)", u, meanwhile)
		}
	}
	newClient(t, srv.Addr).register(t, serviceName("1.0.0"), 20002, 1, true, providerMetadata("1.0.0"))
	f.waitFor(t, fresh(ep(20001, "1.0.0", 100), ep(20002, "1.0.0", 100)))
}

const childEnv = "BREEZE_NACOS_FOLLOW"

// TestFollowChild is TestServerRestart's child: it follows the Nacos
// named by $BREEZE_NACOS_FOLLOW and prints every update as a line.
func TestFollowChild(t *testing.T) {
	addr := os.Getenv(childEnv)
	if addr == "" {
		return // run by TestServerRestart as its child process only (Go's helper-process pattern)
	}
	r := &Registry{Servers: []string{addr}, ListInterval: 100 * time.Millisecond, Timeout: time.Second}
	r.Run(context.Background(), func(u registry.Update) { fmt.Println("UPDATE " + describe(u)) })
}

func followChild(t *testing.T, addr string) *follower {
	t.Helper()
	races := filepath.Join(t.TempDir(), "race")
	cmd := exec.Command(os.Args[0], "-test.run=^TestFollowChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+addr, "GORACE=exitcode=0 log_path="+races)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &follower{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "UPDATE "); ok {
				f.mu.Lock()
				f.lines, f.history = append(f.lines, line), append(f.history, line)
				f.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		<-done
		reports, _ := filepath.Glob(races + "*")
		for _, r := range reports {
			b, _ := os.ReadFile(r)
			t.Logf("the child's race detector reported (%s), first lines: %s", r, firstLines(string(b), 6))
		}
	})
	return f
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], " | ")
}

// Application-level: an instance of the application's service, its
// revision's MetadataInfo a Nacos configuration (dataId application,
// group revision), as dubbo-go 3.3's metadata report publishes it.
func TestApplicationLevel(t *testing.T) {
	srv := nacostest.Start(t)
	c := newClient(t, srv.Addr)
	metadataInfo, err := os.ReadFile("../testdata/dubbo-go-3.3.0/metadata-info.json")
	if err != nil {
		t.Fatal(err)
	}
	f := follow(t, &Registry{Servers: []string{srv.Addr}, ListInterval: 100 * time.Millisecond})
	f.waitFor(t, fresh())
	// The instance first, its MetadataInfo a moment later: served once
	// the MetadataInfo is there.
	c.register(t, "greeter-app", 20005, 1, true, map[string]string{
		"dubbo.endpoints": `[{"port":20005,"protocol":"dubbo"}]`, "dubbo.metadata.revision": "19263519102",
		"dubbo.metadata.storage-type": "remote", "meta-v": "2.0.0",
	})
	if _, err := c.config.PublishConfig(vo.ConfigParam{DataId: "greeter-app", Group: "19263519102", Content: string(metadataInfo)}); err != nil {
		t.Fatalf("publish MetadataInfo: %v", err)
	}
	// The MetadataInfo says port 37627 (the captured provider's); the
	// service's port wins over the instance's, as in dubbo-go.
	f.waitFor(t, fresh(fmt.Sprintf("%s 127.0.0.1:37627 v2.0.0 w100", greeter)))
}
