package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/breeze-mesh/breeze/internal/testwait"
	"github.com/breeze-mesh/breeze/registry/zookeeper/zktest"
)

type quietZK struct{}

func (quietZK) Printf(string, ...any) {}

// registerProvider creates a provider node as Dubbo does (ephemeral, under
// conn's session).
func registerProvider(t *testing.T, conn *zk.Conn, iface, addr string) {
	t.Helper()
	for _, p := range []string{"/dubbo", "/dubbo/" + iface, "/dubbo/" + iface + "/providers"} {
		if _, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			t.Fatal(err)
		}
	}
	u := "dubbo://" + addr + "/" + iface + "?application=a&side=provider&version=1.0.0&methods=x,y"
	if _, err := conn.Create("/dubbo/"+iface+"/providers/"+url.QueryEscape(u), nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
}

// breeze registry export: once to standard output, once into a directory
// (replacing what is gone), and with -watch.
func TestRegistryExport(t *testing.T) {
	zs := zktest.Start(t)
	conn, _, err := zk.Connect([]string{zs.Addr}, 10*time.Second, zk.WithLogger(quietZK{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	registerProvider(t, conn, "org.breeze.Greeter", "10.0.0.1:20880")

	stdout, stderr, code := breeze(t, "registry", "export", "-zookeeper", zs.Addr, "-namespace", "dubbo", "-log-level", "error")
	want := `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: dubbo-org.breeze.greeter
  namespace: dubbo
spec:
  endpoints:
  - address: 10.0.0.1
    labels:
      application: a
      methods: x_y
      side: provider
      version: 1.0.0
    ports:
      tcp-dubbo: 20880
    weight: 100
  hosts:
  - org.breeze.Greeter
  location: MESH_INTERNAL
  ports:
  - name: tcp-dubbo
    number: 20880
    protocol: TCP
  resolution: STATIC
`
	if code != 0 || stdout != want {
		t.Errorf("breeze registry export: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}

	dir := t.TempDir()
	for _, name := range []string{"dubbo-org.breeze.gone.yaml", "mine.yaml"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, stderr, code := breeze(t, "registry", "export", "-zookeeper", zs.Addr, "-namespace", "dubbo", "-o", dir, "-log-level", "error"); code != 0 {
		t.Fatalf("breeze registry export -o: exit %d: %s", code, stderr)
	}
	if got := files(t, dir); !slices.Equal(got, []string{"dubbo-org.breeze.greeter.yaml", "mine.yaml"}) {
		t.Errorf("-o %s holds %v, want the interface's file and mine.yaml (an interface gone is removed, other files kept)", dir, got)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "dubbo-org.breeze.greeter.yaml")); "---\n"+string(b) != want {
		t.Errorf("dubbo-org.breeze.greeter.yaml:\n%s\nwant:\n%s", b, strings.TrimPrefix(want, "---\n"))
	}

	// -watch: a new interface's file appears.
	watchDir := t.TempDir()
	cmd := exec.Command(breezeBin(t), "registry", "export", "-watch", "-zookeeper", zs.Addr, "-o", watchDir, "-log-level", "error")
	var errOut lockedBuffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitFiles := func(want ...string) {
		t.Helper()
		testwait.For(t, fmt.Sprintf("-watch -o %s to hold %v", watchDir, want), 30*time.Second, func() (bool, string) {
			got := files(t, watchDir)
			return slices.Equal(got, want), fmt.Sprintf("%v (stderr: %s)", got, errOut.String())
		})
	}
	waitFiles("dubbo-org.breeze.greeter.yaml")
	registerProvider(t, conn, "org.breeze.Other", "10.0.0.2:20880")
	waitFiles("dubbo-org.breeze.greeter.yaml", "dubbo-org.breeze.other.yaml")
}

// files lists a directory's names, dot-files left out.
func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

// breeze xds -metrics: the registry's series follow a real ZooKeeper that
// stops (stale 1, its last providers still counted) and comes back
// (stale 0); the control plane's own series count its updates and
// resources.
func TestXDSRegistryMetrics(t *testing.T) {
	zs := zktest.Start(t)
	// The provider's session outlives the restart (ZooKeeper keeps it in
	// its data), as a real provider's would.
	conn, _, err := zk.Connect([]string{zs.Addr}, 60*time.Second, zk.WithLogger(quietZK{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	registerProvider(t, conn, "org.breeze.Greeter", "10.0.0.1:20880")

	cmd := exec.Command(breezeBin(t), "xds", "-zookeeper", zs.Addr, "-listen", "127.0.0.1:0", "-metrics", "127.0.0.1:0", "-log-level", "info")
	var errOut lockedBuffer
	cmd.Stderr = &errOut
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var metricsAddr string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "METRICS" {
			metricsAddr = f[1]
		}
		if len(f) == 3 && f[0] == "LISTENING" {
			break
		}
	}
	if metricsAddr == "" {
		t.Fatalf("breeze xds -metrics printed no METRICS line before LISTENING (stderr: %s)", errOut.String())
	}
	go io.Copy(io.Discard, stdout)

	reg := `registry="zookeeper ` + zs.Addr + `"`
	var last string
	waitMetrics := func(want ...string) {
		t.Helper()
		// A guard, not a bound: ZooKeeper (a JVM) restarting on a loaded
		// machine and the client's reconnect backoff can take tens of seconds.
		testwait.For(t, "the metrics "+strings.Join(want, ", "), 3*time.Minute, func() (bool, string) {
			last = scrape(t, "http://"+metricsAddr+"/metrics")
			for _, w := range want {
				if !strings.Contains(last, "\n"+w+"\n") {
					return false, fmt.Sprintf("no line %q; its breeze_ lines:\n%s\nstderr: %s", w, breezeLines(last), errOut.String())
				}
			}
			return true, ""
		})
	}
	waitMetrics("breeze_registry_stale{"+reg+"} 0", "breeze_registry_instances{"+reg+"} 1",
		"breeze_registry_updates_total{"+reg+"} 1", "breeze_xds_updates_total 1",
		`breeze_xds_resources{type="clusters"} 1`, `breeze_xds_problems{severity="rejected"} 0`)

	zs.Stop()
	waitMetrics("breeze_registry_stale{"+reg+"} 1", "breeze_registry_instances{"+reg+"} 1")
	zs.Restart()
	waitMetrics("breeze_registry_stale{"+reg+"} 0", "breeze_registry_instances{"+reg+"} 1")
	// The first set, then stale, then fresh: at least 3 (a read failing
	// right after the reconnect may add a stale/fresh turn).
	_, after, _ := strings.Cut(last, "\nbreeze_registry_updates_total{"+reg+"} ")
	if n, err := strconv.Atoi(strings.SplitN(after, "\n", 2)[0]); err != nil || n < 3 {
		t.Errorf("after stale and fresh again, want breeze_registry_updates_total of 3 or more (first set, stale, fresh); got:\n%s", breezeLines(last))
	}
}

func scrape(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return "\n" + string(b)
}

// breezeLines keeps the breeze_* samples of a scrape.
func breezeLines(scrape string) string {
	var out []string
	for _, l := range strings.Split(scrape, "\n") {
		if strings.HasPrefix(l, "breeze_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
