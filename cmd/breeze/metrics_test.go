package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/internal/testwait"
)

// `breeze run` with the istio_stats filter and the plugin's metrics server,
// in a sidecar's environment: a Dubbo request that cannot be routed to its
// (dead) endpoint is answered, and both the admin address and the metrics
// address serve breeze_* and istio_* series, the local labels read from
// the environment.
func TestRunServesIstioSeries(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "runner.yaml")
	if err := os.WriteFile(cfg, []byte(`admin_address: 127.0.0.1:0
listeners:
- name: orders
  address: 127.0.0.1:0
  proxy:
    stat_prefix: orders
    codec: dubbo
    metrics: {address: 127.0.0.1:0}
    filters:
    - name: istio_stats
      typed_config: {"@type": type.googleapis.com/breeze.filters.istiostats.v1.IstioStats, reporter: SOURCE}
    route_config: {routes: [{route: {cluster: "outbound|20880||greeter.demo.svc.cluster.local"}}]}
    clusters:
    - name: "outbound|20880||greeter.demo.svc.cluster.local"
      endpoints: [{address: 127.0.0.1, port: 1, labels: {app: greeter, version: v1}}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(breezeBin(t), "run", "-c", cfg, "-log-level", "error")
	cmd.Env = append(os.Environ(),
		"ISTIO_META_WORKLOAD_NAME=reviews-v2", "POD_NAMESPACE=bookinfo", "ISTIO_META_CLUSTER_ID=Kubernetes",
		`ISTIO_METAJSON_LABELS={"app":"reviews","version":"v2"}`)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addrs := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for len(addrs) < 3 && sc.Scan() {
		f := strings.Fields(sc.Text())
		switch f[0] {
		case "LISTENING":
			addrs["listener"] = f[2]
		case "ADMIN", "METRICS":
			addrs[f[0]] = f[1]
		}
	}
	if len(addrs) < 3 {
		t.Fatalf("breeze run printed %v before it stopped; want LISTENING, ADMIN and METRICS", addrs)
	}
	go io.Copy(io.Discard, stdout)

	// A request whose endpoint refuses the connection: answered locally.
	req, err := os.ReadFile("../../codecs/dubbo/testdata/request.bin")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addrs["listener"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 16)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("no answer: %v", err)
	}

	for _, which := range []string{"ADMIN", "METRICS"} {
		// The request is recorded at its end (OnDone), which may come
		// after the client has read the reply: scrape until it is there.
		var body string
		var found []string
		recorded := func() bool {
			body = get(t, "http://"+addrs[which]+"/metrics")
			found = found[:0]
			for _, l := range strings.Split(body, "\n") {
				if strings.HasPrefix(l, "istio_requests_total{") {
					found = append(found, l)
				}
			}
			return len(found) == 1 && strings.HasSuffix(found[0], " 1")
		}
		// Not fatal if it never comes: the checks below say what is wrong.
		testwait.Poll(10*time.Second, recorded)
		want := []string{`reporter="source"`, `source_workload="reviews-v2"`, `source_workload_namespace="bookinfo"`, `source_app="reviews"`,
			`source_version="v2"`, `source_canonical_service="reviews"`, `source_canonical_revision="v2"`, `source_cluster="Kubernetes"`,
			`destination_service="greeter.demo.svc.cluster.local"`, `request_protocol="dubbo"`, `response_code="80"`}
		ok := len(found) == 1
		for _, w := range want {
			ok = ok && strings.Contains(found[0], w)
		}
		if !ok || !strings.HasSuffix(found[0], " 1") {
			t.Errorf("%s /metrics: istio_requests_total %q; want one series with one request and %v", which, found, want)
		}
		if !strings.Contains(body, `breeze_local_replies_total{proxy="orders",reason="no_healthy_upstream"} 1`) {
			t.Errorf("%s /metrics lacks the breeze_* local reply:\n%s", which, body)
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
