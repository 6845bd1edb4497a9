package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// accessLogConfig: Greet and Slow are routed (Slow with a 200ms
// timeout), Whoami is not; calls with test-fault: yes are answered by the
// fault filter. Every request gets a JSON line in {{index .Extra "log"}},
// and a line in the default text format in {{index .Extra "text"}}.
const accessLogConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    filters:
    - name: fault
      typed_config:
        "@type": type.googleapis.com/breeze.filters.fault.v1.Fault
        match: [{key: test-fault, exact: "yes"}]
        abort: {error_kind: overloaded}
    access_log:
    - path: "{{index .Extra "log"}}"
      log_format:
        json_format:
          case: "%REQUEST_PROPERTY(case)%"
          start_time: "%START_TIME%"
          duration: "%DURATION%"
          code: "%RESPONSE_CODE%"
          flags: "%RESPONSE_FLAGS%"
          service: "%SERVICE%"
          method: "%METHOD%"
          protocol: "%PROTOCOL%"
          request_id: "%REQUEST_ID%"
          trace_id: "%TRACE_ID%"
          route: "%ROUTE_NAME%"
          cluster: "%UPSTREAM_CLUSTER%"
          upstream: "%UPSTREAM_HOST%"
          downstream: "%DOWNSTREAM_REMOTE_ADDRESS%"
          bytes_in: "%BYTES_RECEIVED%"
          bytes_out: "%BYTES_SENT%"
    - path: "{{index .Extra "text"}}"
    route_config:
      routes:
      - name: greet
        match: {metadata: [{key: method, exact: Greet}]}
        route: {cluster: greeter}
      - name: slow
        match: {metadata: [{key: method, exact: Slow}]}
        route: {cluster: greeter}
        timeout: 0.2s
    clusters:
    - name: greeter
      endpoints: [{address: 127.0.0.1, port: {{port "logged"}}}]
`

// TestAccessLog: a real dubbo-go client calls a real dubbo-go provider
// through the runner; each call ends one way (answered, no route, upstream
// timeout, fault injected) and its JSON line, read back from the file, is
// matched to it by the call's own attachment and checked field by field.
func TestAccessLog(t *testing.T) {
	harness.BreezeBin(t)
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "logged"})
	logPath := filepath.Join(t.TempDir(), "access.json")
	textPath := filepath.Join(t.TempDir(), "access.log")
	proxy := harness.StartProxyVars(t, accessLogConfig, map[string]interface{}{"log": logPath, "text": textPath}, ports(p))
	c := newClient(t, proxy.Addr, harness.ClientSpec{Connections: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	calls := []struct {
		name, method, arg string
		attachments       map[string]string
		wantErr           string // in the client's error; "" for a reply
	}{
		{"ok", "Greet", "alice", map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}, ""},
		{"no_route", "Whoami", "", nil, "no route"},
		{"timeout", "Slow", "1000", nil, "timeout"},
		{"fault", "Greet", "bob", map[string]string{"test-fault": "yes"}, "fault injected"},
	}
	for _, call := range calls {
		att := map[string]string{"case": call.name}
		for k, v := range call.attachments {
			att[k] = v
		}
		_, err := c.Call(ctx, call.method, call.arg, att)
		switch {
		case call.wantErr == "" && err != nil:
			t.Fatalf("%s: %v, want a reply", call.name, err)
		case call.wantErr != "" && (err == nil || !strings.Contains(err.Error(), call.wantErr)):
			t.Fatalf("%s: %v, want an error saying %q", call.name, err, call.wantErr)
		}
	}

	// Lines are written after the calls ended, by the sinks' writers: wait
	// for them, polling the files.
	lines := map[string]map[string]any{}
	var raw, text []byte
	deadline := time.Now().Add(10 * time.Second)
	for len(lines) < len(calls) || strings.Count(string(text), "\n") < len(calls) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, %d JSON lines, want %d:\n%s\ntext:\n%s", len(lines), len(calls), raw, text)
		}
		time.Sleep(10 * time.Millisecond)
		text, _ = os.ReadFile(textPath)
		raw, _ = os.ReadFile(logPath)
		for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil {
				if c, ok := m["case"].(string); ok {
					lines[c] = m
				}
			}
		}
	}
	t.Logf("access log:\n%s", raw)

	upstream := fmt.Sprintf("127.0.0.1:%d", p.Port)
	for _, tc := range []struct {
		name string
		want map[string]any
	}{
		// Dubbo's statuses: 20 OK, and those of Breeze's replies: 60 no
		// route (SERVICE_NOT_FOUND), 31 timeout, 100 overloaded.
		{"ok", map[string]any{"code": 20.0, "flags": "-", "method": "Greet", "route": "greet", "cluster": "greeter",
			"upstream": upstream, "trace_id": traceID}},
		{"no_route", map[string]any{"code": 60.0, "flags": "NR", "method": "Whoami", "route": nil, "cluster": nil,
			"upstream": nil, "trace_id": nil}},
		{"timeout", map[string]any{"code": 31.0, "flags": "UT", "method": "Slow", "route": "slow", "cluster": "greeter",
			"upstream": upstream}},
		{"fault", map[string]any{"code": 100.0, "flags": "FI", "method": "Greet", "route": "greet", "cluster": nil,
			"upstream": nil}},
	} {
		l := lines[tc.name]
		for k, want := range tc.want {
			if got := l[k]; got != want {
				t.Errorf("%s: %s = %#v, want %#v (line %v)", tc.name, k, got, want, l)
			}
		}
		if l["service"] != greeter.Interface || l["protocol"] != "dubbo" {
			t.Errorf("%s: service %v, protocol %v; want %s, dubbo", tc.name, l["service"], l["protocol"], greeter.Interface)
		}
		if d, _ := l["downstream"].(string); !strings.HasPrefix(d, "127.0.0.1:") {
			t.Errorf("%s: downstream %v, want the client's 127.0.0.1:port", tc.name, l["downstream"])
		}
		if in, _ := l["bytes_in"].(float64); in <= 16 {
			t.Errorf("%s: bytes_in %v, want more than a Dubbo header", tc.name, l["bytes_in"])
		}
		if out, _ := l["bytes_out"].(float64); out <= 16 {
			t.Errorf("%s: bytes_out %v, want the reply's size", tc.name, l["bytes_out"])
		}
		if id, _ := l["request_id"].(float64); id <= 0 {
			t.Errorf("%s: request_id %v, want the client's request id", tc.name, l["request_id"])
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", fmt.Sprint(l["start_time"])); err != nil {
			t.Errorf("%s: start_time %v: %v", tc.name, l["start_time"], err)
		}
	}
	// The default format: one line per call, in the calls' order, each
	// with the call's method and Dubbo status where Envoy's has the HTTP
	// method and status.
	t.Logf("default format:\n%s", text)
	tl := strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
	if len(tl) != len(calls) {
		t.Fatalf("%d default-format lines, want %d", len(tl), len(calls))
	}
	for i, want := range []string{`"Greet org.breeze.Greeter dubbo" 20 - `, `"Whoami org.breeze.Greeter dubbo" 60 NR `,
		`"Slow org.breeze.Greeter dubbo" 31 UT `, `"Greet org.breeze.Greeter dubbo" 100 FI `} {
		if !strings.Contains(tl[i], want) {
			t.Errorf("default-format line %d: %q, want it to hold %q", i, tl[i], want)
		}
	}
	if d, _ := lines["timeout"]["duration"].(float64); d < 200 {
		t.Errorf("timeout: duration %vms, want at least the route's 200ms", lines["timeout"]["duration"])
	}
}
