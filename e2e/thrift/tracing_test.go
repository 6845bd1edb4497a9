package thrift

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// TestTracingKitex: a Kitex client and server, both with
// kitex-contrib/obs-opentelemetry's suites (W3C context in Kitex's
// metainfo, RPC_TRANSIT_traceparent in TTHeader), around Breeze, all
// exporting to the real collector. Every call is one chain: Kitex client
// span → Breeze server span → Breeze client span → Kitex server span.
func TestTracingKitex(t *testing.T) {
	t.Parallel()
	col := harness.StartCollector(t)
	srv := server(t, "kitex-traced", "-impl", "kitex", "-otlp", col.Addr, "-echo-header", "traceparent")
	p := harness.StartProxyVars(t, `
admin_address: {{.Admin}}
listeners:
- name: thrift
  address: {{.Listen}}
  proxy:
    stat_prefix: thrift_tracing
    codec: thrift
    tracing:
      collector: "{{index .Extra "collector"}}"
      service_name: breeze-e2e
      batch_timeout: 0.2s
    route_config:
      routes:
      - route: {cluster: kitex}
    clusters:
    - name: kitex
      endpoints: [{address: 127.0.0.1, port: {{port "kitex"}}}]
`, map[string]interface{}{"collector": col.Addr}, map[string]int{"kitex": srv})
	const n = 20
	s := call(t, "-impl", "kitex", "-transport", "ttheader", "-addr", p.Addr, "-n", fmt.Sprint(n), "-method", "greet", "-arg", "kit", "-otlp", col.Addr)
	if s.OK != n {
		t.Fatalf("calls: %+v, want %d answered", s, n)
	}
	// The server's answers end with the traceparent its metainfo held.
	seen := map[string]bool{}
	for res := range s.Results {
		if i := strings.LastIndex(res, "["); i >= 0 {
			seen[strings.TrimSuffix(res[i+1:], "]")] = true
		}
	}

	var spans []harness.Span
	counts := map[string]int{}
	four := func() bool {
		spans = col.Spans(t)
		counts = map[string]int{}
		for _, sp := range spans {
			counts[fmt.Sprintf("%s/%d", sp.Service, sp.Kind)]++
		}
		return counts[fmt.Sprintf("kitex-e2e-client/%d", harness.SpanKindClient)] >= n && counts[fmt.Sprintf("breeze-e2e/%d", harness.SpanKindServer)] >= n &&
			counts[fmt.Sprintf("breeze-e2e/%d", harness.SpanKindClient)] >= n && counts[fmt.Sprintf("kitex-e2e-server/%d", harness.SpanKindServer)] >= n
	}
	// The server's batches leave every 5s (the SDK's default).
	for deadline := time.Now().Add(60 * time.Second); !four(); {
		if time.Now().After(deadline) {
			t.Fatalf("after 60s the collector has %d spans (service/kind: %v); want %d of each of the four", len(spans), counts, n)
		}
		<-time.After(50 * time.Millisecond)
	}
	t.Logf("collector file: %d spans (service/kind, 2 server, 3 client): %v", len(spans), counts)
	byID := map[string]harness.Span{}
	for _, sp := range spans {
		byID[sp.SpanID] = sp
	}
	chains := 0
	for _, ks := range spans {
		if ks.Service != "kitex-e2e-server" {
			continue
		}
		bc, ok := byID[ks.ParentID]
		if !ok || bc.Service != "breeze-e2e" || bc.Kind != harness.SpanKindClient {
			t.Errorf("Kitex server span %s: parent %q is not a Breeze client span", ks.SpanID, ks.ParentID)
			continue
		}
		bs, ok := byID[bc.ParentID]
		if !ok || bs.Kind != harness.SpanKindServer || bs.Service != "breeze-e2e" {
			t.Errorf("Breeze client span %s: parent %q is not a Breeze server span", bc.SpanID, bc.ParentID)
			continue
		}
		kc, ok := byID[bs.ParentID]
		if !ok || kc.Service != "kitex-e2e-client" || kc.Kind != harness.SpanKindClient || kc.TraceID != ks.TraceID {
			t.Errorf("Breeze server span %s: parent %q is not the Kitex client's span", bs.SpanID, bs.ParentID)
			continue
		}
		if bs.Attributes["rpc.system"] != "apache_thrift" || bs.Attributes["rpc.method"] != "Greet" ||
			bs.Attributes["breeze.trace_context"] != "RPC_TRANSIT_traceparent" || bc.Attributes["rpc.response.status_code"] != "0" {
			t.Errorf("Breeze server span attributes %v, client span attributes %v", bs.Attributes, bc.Attributes)
		}
		if !seen["00-"+ks.TraceID+"-"+bc.SpanID+"-01"] {
			t.Errorf("no Kitex server answer echoed the traceparent of Breeze client span %s", bc.SpanID)
		}
		if chains == 0 {
			t.Logf("trace %s: Kitex client %s (%s) → Breeze server %s (%s) → Breeze client %s → Kitex server %s (%s)",
				kc.TraceID, kc.SpanID, kc.Name, bs.SpanID, bs.Name, bc.SpanID, ks.SpanID, ks.Name)
		}
		chains++
	}
	if chains != n {
		t.Errorf("%d complete Kitex client → Breeze → Kitex server chains, want %d", chains, n)
	}
}
