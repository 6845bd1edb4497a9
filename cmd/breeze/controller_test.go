package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/breeze-mesh/breeze/internal/kubetest"
	"github.com/breeze-mesh/breeze/internal/testwait"
)

// kubeAPIServer starts a real kube-apiserver and etcd (envtest) with
// Istio's and Aeraki's CRDs and returns a client and a kubeconfig file.
// It fails when scripts/kube-peer.sh has not built them (make test does).
func kubeAPIServer(t *testing.T) (client.Client, string) {
	t.Helper()
	assets, err := kubetest.Assets()
	if err != nil {
		t.Fatalf("no kube-apiserver: %v", err)
	}
	crds, err := kubetest.MeshCRDFiles()
	if err != nil {
		t.Fatal(err)
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

// freeAddr is a loopback address no one listens on now. The controller
// prints no address for /healthz and /metrics, so the test picks them.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// controllerProcess is one `breeze controller` replica.
type controllerProcess struct {
	cmd                   *exec.Cmd
	stderr                *lockedBuffer
	listening             chan string // the xDS address, once printed
	exited                chan struct{}
	health, metrics, name string
	xds                   string // the address it printed
}

// startController starts a replica with -leader-elect; extra flags come
// last, so they override the defaults here (the flag package keeps the
// last value).
func startController(t *testing.T, name, kubeconfig string, extra ...string) *controllerProcess {
	t.Helper()
	p := &controllerProcess{
		stderr: &lockedBuffer{}, listening: make(chan string, 1), exited: make(chan struct{}),
		health: freeAddr(t), metrics: freeAddr(t), name: name,
	}
	xds := freeAddr(t)
	p.cmd = exec.Command(breezeBin(t), "controller", "-kubeconfig", kubeconfig,
		"-xds-listen", xds, "-xds-address", xds, "-health", p.health, "-metrics", p.metrics,
		"-leader-elect", "-leader-election-namespace", "default", "-log-level", "info")
	p.cmd.Args = append(p.cmd.Args, extra...)
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "LISTENING" && f[1] == "xds" {
				p.listening <- f[2]
			}
		}
		io.Copy(io.Discard, stdout)
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	select {
	case p.xds = <-p.listening:
	case <-p.exited:
		t.Fatalf("%s exited before printing LISTENING xds (%v):\n%s", name, p.cmd.ProcessState, p.stderr.String())
	}
	return p
}

// status GETs a URL and returns its status code and body; code 0 when
// nothing answers.
func status(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond until it holds; the test's own timeout bounds it, and
// the failure says what cond last saw.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testwait.For(t, what, 60*time.Second, cond)
}

// leaseHolder is the holder of the controller's Lease ("" when none).
func leaseHolder(c client.Client) (string, error) {
	var l coordinationv1.Lease
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "breeze-controller"}, &l); err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *l.Spec.HolderIdentity, nil
}

// `breeze controller` as a process against a real API server: it answers
// /healthz and /readyz, serves its own and controller-runtime's series on
// /metrics, takes the Lease; a second replica serves xDS but leaves the
// Lease alone while the first holds it; SIGTERM makes the first exit 0 and
// give up the Lease, which the second then takes.
func TestControllerProcess(t *testing.T) {
	c, kubeconfig := kubeAPIServer(t)
	first := startController(t, "first replica", kubeconfig)

	for _, path := range []string{"/healthz", "/readyz"} {
		code, body := status("http://" + first.health + path)
		if code != http.StatusOK {
			t.Errorf("GET %s after LISTENING: %d %q", path, code, body)
		}
	}
	var holder string
	waitFor(t, "the first replica to take the Lease", func() (bool, string) {
		h, err := leaseHolder(c)
		holder = h
		if err != nil {
			return false, err.Error()
		}
		return h != "", fmt.Sprintf("holder %q", h)
	})
	waitFor(t, "/metrics to show leadership and the controller's series", func() (bool, string) {
		code, body := status("http://" + first.metrics + "/metrics")
		for _, want := range []string{"\nbreeze_controller_snapshots_total ", "\ncontroller_runtime_", `leader_election_master_status{name="breeze-controller"} 1`} {
			if !strings.Contains("\n"+body, want) {
				return false, fmt.Sprintf("status %d, no %q in:\n%s", code, want, body)
			}
		}
		return true, ""
	})

	second := startController(t, "second replica", kubeconfig)
	if code, body := status("http://" + second.health + "/readyz"); code != http.StatusOK {
		t.Errorf("second replica's /readyz after LISTENING: %d %q", code, body)
	}
	// The second replica has tried the Lease at least once when its
	// metrics say it is not the leader.
	waitFor(t, "the second replica's leader_election_master_status 0", func() (bool, string) {
		_, body := status("http://" + second.metrics + "/metrics")
		return strings.Contains(body, `leader_election_master_status{name="breeze-controller"} 0`), body
	})
	if h, err := leaseHolder(c); err != nil || h != holder {
		t.Fatalf("Lease holder with the first replica running: %q (%v), want %q", h, err, holder)
	}

	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	<-first.exited
	if code := first.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("first replica after SIGTERM: exit status %d\n%s", code, first.stderr.String())
	}
	t.Logf("first replica exited 0 %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	// Released, not left to expire: had the first replica kept the Lease,
	// its identity would stay the holder for the Lease's whole duration
	// (15 s) after its exit, and this read comes right after it.
	if h, err := leaseHolder(c); err != nil || h == holder {
		t.Fatalf("Lease holder right after the first replica exited: %q (%v); it should have given the Lease up", h, err)
	}
	waitFor(t, "the second replica to take the Lease the first gave up", func() (bool, string) {
		h, err := leaseHolder(c)
		if err != nil {
			return false, err.Error()
		}
		return h != "" && h != holder, fmt.Sprintf("holder %q (the first was %q)", h, holder)
	})
	if !strings.Contains(first.stderr.String(), "shut down") {
		t.Errorf("first replica logged no \"shut down\":\n%s", first.stderr.String())
	}
}
