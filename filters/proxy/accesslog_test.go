package proxy

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/filters/fault"
)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// accessLogLines reads the JSON lines of path, by their "case" field.
func accessLogLines(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	b, _ := os.ReadFile(path)
	out := map[string]map[string]any{}
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("access log line %q is not JSON: %v", l, err)
		}
		c, _ := m["case"].(string)
		out[c] = m
	}
	return out
}

// Requests that end each way through a proxy on the host, with real
// sockets: each gets one access log line, parsed back and matched to the
// request by its fields.
func TestAccessLogOutcomes(t *testing.T) {
	b := newBackend(t, "b")
	path := filepath.Join(t.TempDir(), "access.json")
	// A second log, in the default text format, of the failures alone.
	textPath := filepath.Join(t.TempDir(), "access.log")
	addr := startProxy(t, cfg(`
  - name: ok
    match: {metadata: [{key: method, exact: A}]}
    route: {cluster: b}
    timeout: 0.2s
  - name: limited
    match: {metadata: [{key: method, exact: L}]}
    route: {cluster: limited}
    timeout: 0.3s
  - name: faulty
    match: {metadata: [{key: method, exact: F}]}
    route: {cluster: b}
    typed_per_filter_config:
      fault: {"@type": type.googleapis.com/breeze.filters.fault.v1.Fault, delay: {fixed_delay: 0.001s}, abort: {error_kind: overloaded}}`,
		"- name: b\n  endpoints:\n"+ep(b, "")+"\n- name: limited\n  circuit_breakers: {max_requests: 1}\n  endpoints:\n"+ep(b, ""),
		`filters: [{name: fault}]`,
		fmt.Sprintf(`access_log:
- path: %s
  log_format:
    json_format:
      case: "%%REQUEST_PROPERTY(case)%%"
      start_time: "%%START_TIME%%"
      duration: "%%DURATION%%"
      code: "%%RESPONSE_CODE%%"
      flags: "%%RESPONSE_FLAGS%%"
      details: "%%RESPONSE_CODE_DETAILS%%"
      route: "%%ROUTE_NAME%%"
      cluster: "%%UPSTREAM_CLUSTER%%"
      upstream: "%%UPSTREAM_HOST%%"
      protocol: "%%PROTOCOL%%"
      service: "%%SERVICE%%"
      method: "%%METHOD%%"
      request_id: "%%REQUEST_ID%%"
      trace_id: "%%TRACE_ID%%"
      bytes_in: "%%BYTES_RECEIVED%%"
      bytes_out: "%%BYTES_SENT%%"
      downstream: "%%DOWNSTREAM_REMOTE_ADDRESS%%"
      attempts: "%%UPSTREAM_REQUEST_ATTEMPT_COUNT%%"
- path: %s
  filter: {errors_only: true}`, path, textPath)))
	c := dial(t, addr)
	call := func(id uint64, md ...string) tmsg {
		t.Helper()
		m, err := c.call(id, "hello", md...)
		if err != nil {
			t.Fatalf("request %d %v: %v", id, md, err)
		}
		return m
	}
	ok := call(11, "case", "ok", "interface", "org.example.Greeter", "method", "A", "traceparent", traceparent)
	noRoute := call(12, "case", "no_route", "method", "Z")
	timeout := call(13, "case", "timeout", "method", "A", "hang", "1")
	// The limited cluster takes one request in flight: a second one
	// while the first hangs upstream is refused (UO). The first then
	// times out.
	held := c.send(codecs.Request, 14, "hello", "case", "held", "method", "L", "hang", "1")
	eventually(t, "the held request upstream", func() bool { return b.received.Load() >= 3 })
	overload := call(15, "case", "overload", "method", "L")
	fault := call(16, "case", "fault", "method", "F")
	<-held
	for name, m := range map[string]tmsg{"no_route": noRoute, "timeout": timeout, "overload": overload, "fault": fault} {
		if m.status == 0 {
			t.Fatalf("%s: the client got a success: %+v", name, m)
		}
	}

	var lines map[string]map[string]any
	eventually(t, "six access log lines", func() bool { lines = accessLogLines(t, path); return len(lines) == 6 })
	if b, err := os.ReadFile(path); err == nil {
		t.Logf("access log:\n%s", b)
	}
	local := c.c.LocalAddr().String()
	for _, tc := range []struct {
		name string
		want map[string]any // JSON values as encoding/json parses them
	}{
		{"ok", map[string]any{"code": 0.0, "flags": "-", "details": "via_upstream", "route": "ok", "cluster": "b",
			"upstream": fmt.Sprintf("127.0.0.1:%d", b.port()), "service": "org.example.Greeter", "method": "A",
			"request_id": 11.0, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "attempts": 1.0,
			"bytes_out": float64(len(tencode(ok)))}},
		{"no_route", map[string]any{"code": nil, "flags": "NR", "route": nil, "cluster": nil, "upstream": nil,
			"service": nil, "method": "Z", "request_id": 12.0, "trace_id": nil, "attempts": 0.0,
			"bytes_out": float64(len(tencode(noRoute)))}},
		{"timeout", map[string]any{"code": nil, "flags": "UT", "route": "ok", "cluster": "b",
			"upstream": fmt.Sprintf("127.0.0.1:%d", b.port()), "request_id": 13.0, "attempts": 1.0}},
		{"held", map[string]any{"flags": "UT", "route": "limited", "cluster": "limited", "request_id": 14.0}},
		{"overload", map[string]any{"flags": "UO", "route": "limited", "cluster": "limited", "upstream": nil, "request_id": 15.0}},
		{"fault", map[string]any{"flags": "DI,FI", "route": "faulty", "cluster": nil, "upstream": nil, "request_id": 16.0,
			"attempts": 0.0}},
	} {
		l := lines[tc.name]
		if l == nil {
			t.Errorf("%s: no line (lines: %v)", tc.name, lines)
			continue
		}
		for k, want := range tc.want {
			if got := l[k]; got != want {
				t.Errorf("%s: %s = %#v, want %#v (line %v)", tc.name, k, got, want, l)
			}
		}
		// Fields every line has.
		if l["protocol"] != tframeName || l["downstream"] != local || l["bytes_in"].(float64) <= 0 {
			t.Errorf("%s: protocol %v, downstream %v (want %s), bytes_in %v", tc.name, l["protocol"], l["downstream"], local, l["bytes_in"])
		}
		if d, ok := l["duration"].(float64); !ok || d < 0 {
			t.Errorf("%s: duration %#v, want a number of ms", tc.name, l["duration"])
		}
		if s, _ := l["start_time"].(string); len(s) != len("2026-11-30T12:34:56.789Z") || !strings.HasSuffix(s, "Z") {
			t.Errorf("%s: start_time %q", tc.name, s)
		}
	}
	// The default format: Envoy's fields where Envoy has them, the five
	// failures only (errors_only), "-" for what a request has none of.
	var text []string
	eventually(t, "five lines in the default format", func() bool {
		b, _ := os.ReadFile(textPath)
		text = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		return len(text) == 5
	})
	t.Logf("default format, errors_only:\n%s", strings.Join(text, "\n"))
	for _, l := range text {
		var ts, method, service, protocol, flags, remote, rid, trace, upstream, cluster, route string
		var code string
		var in, out, ms int
		n, err := fmt.Sscanf(l, "[%s \"%s %s %s %s %s %d %d %d %s %s %s %s %s %s",
			&ts, &method, &service, &protocol, &code, &flags, &in, &out, &ms, &remote, &rid, &trace, &upstream, &cluster, &route)
		if err != nil || n != 15 || protocol != tframeName+"\"" || flags == "-" || remote != `"`+local+`"` || in <= 0 || out <= 0 {
			t.Errorf("default-format line %q: read %d fields (%v): protocol %s, flags %s, remote %s", l, n, err, protocol, flags, remote)
		}
	}
	if d := lines["timeout"]["duration"].(float64); d < 200 {
		t.Errorf("timeout: duration %vms, below the route's 200ms timeout", d)
	}
	if d := lines["timeout"]["details"].(string); strings.Contains(d, " ") || d == "" {
		t.Errorf("timeout: details %q, want Envoy's form (no spaces)", d)
	}
}

// unacceptingListener returns the port of a listening socket whose accept
// queue is full: the kernel drops further SYNs, so a connect to it stays
// "opening" until the dialer gives up (a provider too busy to accept).
func unacceptingListener(t *testing.T) uint32 {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	// Fill the accept queue: Linux drops a SYN once the queue holds more
	// than the backlog (sk_ack_backlog > sk_max_ack_backlog), which
	// TCP_INFO of a listener reports as unacked and sacked.
	for {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		if info.Unacked > info.Sacked {
			return uint32(port)
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err != nil {
			t.Fatalf("filling the accept queue (%d of %d): %v", info.Unacked, info.Sacked, err)
		}
		t.Cleanup(func() { c.Close() })
	}
}

// max_pending_requests: while a request waits for its upstream connection
// to open, a second one is refused (UO); the first ends when its route's
// timeout fires (UT). Both lines are matched to their requests.
func TestAccessLogOverloadPending(t *testing.T) {
	port := unacceptingListener(t)
	path := filepath.Join(t.TempDir(), "access.json")
	yamlCfg := cfg(`
  - name: busy
    route: {cluster: busy}
    timeout: 0.3s`,
		fmt.Sprintf("- name: busy\n  circuit_breakers: {max_pending_requests: 1}\n  endpoints:\n  - {address: 127.0.0.1, port: %d}", port),
		fmt.Sprintf(`access_log:
- path: %s
  log_format:
    json_format: {case: "%%REQ(case)%%", flags: "%%RESPONSE_FLAGS%%", details: "%%RESPONSE_CODE_DETAILS%%", upstream: "%%UPSTREAM_HOST%%", cluster: "%%UPSTREAM_CLUSTER%%", duration: "%%DURATION%%"}`, path))
	addr := startProxy(t, yamlCfg)
	c := dial(t, addr)
	waiting := c.send(codecs.Request, 1, "x", "case", "waiting")
	breaker := proxyFor(t, yamlCfg).Cluster("busy").Set("").Breaker()
	eventually(t, "one request pending on the busy cluster", func() bool { _, pending, _ := breaker.Counts(); return pending == 1 })
	refused, err := c.call(2, "x", "case", "refused")
	if err != nil || refused.status == 0 {
		t.Fatalf("second request: %+v, %v; want an overloaded reply", refused, err)
	}
	<-waiting
	var lines map[string]map[string]any
	eventually(t, "two access log lines", func() bool { lines = accessLogLines(t, path); return len(lines) == 2 })
	// The router had picked the endpoint when the breaker refused: the
	// line names it, as the endpoint the request would have waited for.
	busy := fmt.Sprintf("127.0.0.1:%d", port)
	if l := lines["refused"]; l["flags"] != "UO" || l["cluster"] != "busy" || l["upstream"] != busy ||
		!strings.Contains(fmt.Sprint(l["details"]), "max_pending_requests") {
		t.Errorf("refused: %v, want UO at the busy cluster's max_pending_requests, upstream %s", l, busy)
	}
	if l := lines["waiting"]; l["flags"] != "UT" || l["cluster"] != "busy" || l["duration"].(float64) < 300 {
		t.Errorf("waiting: %v, want UT after the route's 300ms", l)
	}
	t.Logf("lines: refused %v; waiting %v", lines["refused"], lines["waiting"])
}
