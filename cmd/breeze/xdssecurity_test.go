package main

import (
	"bufio"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/breeze-mesh/breeze/internal/testpki"
	"github.com/breeze-mesh/breeze/internal/testwait"
	"github.com/breeze-mesh/breeze/xds/client"
)

const greeterEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter, namespace: demo}
spec:
  hosts: [org.breeze.Greeter]
  ports: [{number: 20880, name: tcp-dubbo, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
`

// `breeze xds` with -xds-tls-cert/-xds-tls-key and -xds-auth token serves a
// client that trusts its CA and sends the token of -xds-token-file, refuses
// one with another token (logged and counted with its cause), and exports
// the count on /metrics.
func TestXDSServesTLSWithToken(t *testing.T) {
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh")
	os.Mkdir(mesh, 0o755)
	if err := os.WriteFile(filepath.Join(mesh, "greeter.yaml"), []byte(greeterEntry), 0o644); err != nil {
		t.Fatal(err)
	}
	ca := testpki.New(t, dir, "xds")
	serverToken := filepath.Join(dir, "server-token")
	os.WriteFile(serverToken, []byte("right"), 0o600)

	cmd := exec.Command(breezeBin(t), "xds", "-dir", mesh, "-listen", "127.0.0.1:0", "-metrics", "127.0.0.1:0",
		"-xds-tls-cert", ca.CertFile, "-xds-tls-key", ca.KeyFile, "-xds-auth", "token", "-xds-token-file", serverToken)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addrs := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for len(addrs) < 2 && sc.Scan() {
		f := strings.Fields(sc.Text())
		switch f[0] {
		case "LISTENING":
			addrs["xds"] = f[2]
		case "METRICS":
			addrs["metrics"] = f[1]
		}
	}
	if len(addrs) < 2 {
		t.Fatalf("breeze xds printed %v before it stopped; stderr:\n%s", addrs, stderr)
	}
	go io.Copy(io.Discard, stdout)

	connect := func(token string) (<-chan *clusterv3.Cluster, *lockedBuffer) {
		tokenFile := filepath.Join(t.TempDir(), "token")
		os.WriteFile(tokenFile, []byte(token), 0o600)
		log := &lockedBuffer{}
		c, err := client.New(client.Options{Address: addrs["xds"], NodeID: "n",
			TLS: &client.TLS{CAFile: ca.CAFile, ServerName: testpki.ServerName}, TokenFile: tokenFile,
			Log: slog.New(slog.NewTextHandler(log, nil)), MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		got := make(chan *clusterv3.Cluster, 10)
		c.WatchClusters("outbound|20880||org.breeze.Greeter", func(cl *clusterv3.Cluster) error { got <- cl; return nil })
		return got, log
	}

	good, goodLog := connect("right")
	select {
	case cl := <-good:
		if cl == nil {
			t.Fatal("served, but without the greeter's cluster")
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the client with the right token was not served; its log:\n%s\nserver:\n%s", goodLog, stderr)
	}

	bad, badLog := connect("wrong")
	testwait.For(t, "the refusal", 20*time.Second, func() (bool, string) {
		metrics := get(t, "http://"+addrs["metrics"]+"/metrics")
		return strings.Contains(badLog.String(), "invalid_token") && strings.Contains(metrics, `breeze_xds_refused_streams_total{cause="invalid_token"}`),
			"client log:\n" + badLog.String() + "\nmetrics:\n" + metrics
	})
	if !strings.Contains(stderr.String(), "cause=invalid_token") {
		t.Errorf("breeze xds did not log the refusal's cause; stderr:\n%s", stderr)
	}
	select {
	case cl := <-bad:
		t.Fatalf("a client with a wrong token was served %v", cl)
	default:
	}
	if m := get(t, "http://"+addrs["metrics"]+"/metrics"); strings.Contains(m, `breeze_xds_refused_streams_total{cause="invalid_token"} 0`) {
		t.Errorf("refusal counter still 0:\n%s", m)
	}
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
