package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// tracingConfig: one Dubbo proxy tracing to the test's collector
// ({{index .Extra "collector"}}), sampling {{index .Extra "percent"}}% of
// requests its client did not sample.
const tracingConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: {{index .Extra "prefix"}}
    codec: dubbo
    tracing:
      collector: "{{index .Extra "collector"}}"
      service_name: breeze-e2e
      random_sampling_percentage: {{index .Extra "percent"}}
      batch_timeout: 0.2s
      max_queue_size: {{index .Extra "queue"}}
      max_export_batch_size: 64
      export_timeout: 1s
    route_config:
      routes:
      - route: {cluster: greeter}
    clusters:
    - name: greeter
      endpoints: [{address: 127.0.0.1, port: {{port "traced"}}}]
`

func startTracingProxy(t *testing.T, p *harness.Provider, prefix, collector string, percent float64, queue int) *harness.Proxy {
	t.Helper()
	return harness.StartProxyVars(t, tracingConfig, map[string]interface{}{
		"prefix": prefix, "collector": collector, "percent": percent, "queue": queue,
	}, ports(p))
}

// TestTracingDubboGo: a dubbo-go consumer and provider, both with
// dubbo-go's own OpenTelemetry filter (W3C context in attachments),
// around Breeze, all exporting to the real collector. Every call's trace
// is one chain: consumer client span → Breeze server span → Breeze
// client span, and the provider received the Breeze client span's
// traceparent.
func TestTracingDubboGo(t *testing.T) {
	col := harness.StartCollector(t)
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "traced", OTLP: col.Addr})
	proxy := startTracingProxy(t, p, "e2e_tracing", col.Addr, 0, 2048)
	c := newClient(t, proxy.Addr, harness.ClientSpec{OTLP: col.Addr})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 20
	seen := map[string]string{} // provider's traceparent attachment, by call arg
	for i := range n {
		arg := fmt.Sprintf("trace-%d", i)
		r, err := c.Greet(ctx, arg, nil)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		seen[arg] = r.Attachments["traceparent"]
	}

	// Wait for every process's batches to reach the file: n spans of
	// each of the four kinds.
	var spans []harness.Span
	var counts map[string]int
	err := waitFor(ctx, "the spans of every process in the collector's file", func() bool {
		spans = col.Spans(t)
		counts = countSpans(spans)
		return counts["breeze-e2e-consumer/client"] >= n && counts["breeze-e2e/server"] >= n &&
			counts["breeze-e2e/client"] >= n && counts["breeze-e2e-provider/server"] >= n
	})
	if err != nil {
		t.Fatalf("%v: %d spans there: %v; want %d consumer client, Breeze server and client, provider server spans", err, len(spans), counts, n)
	}
	t.Logf("collector file: %d spans: %v", len(spans), counts)
	byID := map[string]harness.Span{}
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	chains, providerChild := 0, 0
	var sample []string
	for _, bc := range spans {
		if bc.Service != "breeze-e2e" || bc.Kind != harness.SpanKindClient {
			continue
		}
		bs, ok := byID[bc.ParentID]
		if !ok || bs.Service != "breeze-e2e" || bs.Kind != harness.SpanKindServer {
			t.Errorf("Breeze client span %s: parent %q is not a Breeze server span", bc.SpanID, bc.ParentID)
			continue
		}
		cc, ok := byID[bs.ParentID]
		if !ok || cc.Service != "breeze-e2e-consumer" || cc.Kind != harness.SpanKindClient || cc.TraceID != bc.TraceID {
			t.Errorf("Breeze server span %s: parent %q is not the consumer's client span (trace %s)", bs.SpanID, bs.ParentID, bs.TraceID)
			continue
		}
		for _, key := range []string{"rpc.system", "rpc.service", "rpc.method"} {
			if bs.Attributes[key] == "" || bc.Attributes[key] != bs.Attributes[key] {
				t.Errorf("Breeze spans %s/%s: %s = %q/%q", bs.SpanID, bc.SpanID, key, bs.Attributes[key], bc.Attributes[key])
			}
		}
		if bs.Attributes["rpc.system"] != "apache_dubbo" || bs.Attributes["rpc.method"] != "Greet" || bs.Attributes["rpc.response.status_code"] != "20" ||
			bc.Attributes["server.port"] != fmt.Sprint(p.Port) || bs.Attributes["breeze.trace_context"] != "traceparent" {
			t.Errorf("Breeze server span attributes %v, client span attributes %v", bs.Attributes, bc.Attributes)
		}
		chains++
		// The provider's server span: a child of Breeze's client span,
		// if the provider read the context Breeze sent.
		for _, ps := range spans {
			if ps.Service == "breeze-e2e-provider" && ps.ParentID == bc.SpanID {
				providerChild++
			}
		}
		if len(sample) == 0 {
			sample = append(sample, fmt.Sprintf("trace %s: consumer client %s (%s) → Breeze server %s (%s) → Breeze client %s (%s)",
				cc.TraceID, cc.SpanID, cc.Name, bs.SpanID, bs.Name, bc.SpanID, bc.Name),
				fmt.Sprintf("Breeze server span attributes: %v", bs.Attributes),
				fmt.Sprintf("Breeze client span attributes: %v", bc.Attributes))
		}
	}
	t.Log(strings.Join(sample, "\n"))
	if chains < n {
		t.Errorf("%d complete consumer → Breeze server → Breeze client chains, want %d", chains, n)
	}
	// What the provider received: the traceparent of a Breeze client span.
	fromBreeze := 0
	for arg, tp := range seen {
		parts := strings.Split(tp, "-")
		if len(parts) != 4 {
			t.Errorf("call %s: the provider received traceparent %q", arg, tp)
			continue
		}
		if s, ok := byID[parts[2]]; ok && s.Service == "breeze-e2e" && s.Kind == harness.SpanKindClient && s.TraceID == parts[1] {
			fromBreeze++
		}
	}
	t.Logf("%d of %d calls: the provider received a Breeze client span's traceparent; %d provider server spans are children of Breeze client spans", fromBreeze, n, providerChild)
	if fromBreeze != n {
		t.Errorf("%d of %d calls reached the provider with a Breeze client span's traceparent", fromBreeze, n)
	}
	// dubbo-go v3.3.0's server filter reads the context only from an
	// attachment held as a []string (filter/otel/trace/attachment.go);
	// over the dubbo protocol attachments arrive as strings, so its server
	// span is a new root, whoever called. A provider span with any other
	// parent than a Breeze client span, or none, is wrong.
	roots := 0
	for _, ps := range spans {
		if ps.Service != "breeze-e2e-provider" {
			continue
		}
		if ps.ParentID == "" {
			roots++
		} else if parent, ok := byID[ps.ParentID]; !ok || parent.Service != "breeze-e2e" || parent.Kind != harness.SpanKindClient {
			t.Errorf("provider span %s has parent %s, not a Breeze client span", ps.SpanID, ps.ParentID)
		}
	}
	// The same provider called directly by the same kind of client: its
	// spans are roots too, so that is dubbo-go's doing, not Breeze's.
	direct := newClient(t, p.Addr, harness.ClientSpec{OTLP: col.Addr})
	if _, err := direct.Greet(ctx, "direct", nil); err != nil {
		t.Fatal(err)
	}
	var directSpan harness.Span
	err = waitFor(ctx, "the provider's span of the direct call", func() bool {
		for _, s := range col.Spans(t) {
			if s.Service == "breeze-e2e-provider" && s.StartUnixNano > 0 && byID[s.SpanID].SpanID == "" {
				directSpan = s
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("provider server spans through Breeze: %d children of Breeze client spans, %d roots; called directly by dubbo-go: parent %q",
		providerChild, roots, directSpan.ParentID)
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, what string, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func countSpans(spans []harness.Span) map[string]int {
	counts := map[string]int{}
	for _, s := range spans {
		kind := map[int]string{harness.SpanKindServer: "server", harness.SpanKindClient: "client"}[s.Kind]
		counts[s.Service+"/"+kind]++
	}
	return counts
}

// TestTracingSampling: an uninstrumented client (no trace context),
// Breeze sampling 25%: of 400 calls, the number traced is within 5σ of
// 100, each with its client span.
func TestTracingSampling(t *testing.T) {
	col := harness.StartCollector(t)
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "traced"})
	proxy := startTracingProxy(t, p, "e2e_tracing_sampling", col.Addr, 25, 2048)
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 400
	outs := c.RunCalls(ctx, n, 8, 10*time.Second, greets("s", nil))
	for _, o := range outs {
		if o.Err != nil {
			t.Fatalf("call %v: %v", o.Call, o.Err)
		}
	}
	// Every span Breeze started reaches the file (none is dropped: the
	// queue holds far more than 400 calls' worth).
	var servers, clients int
	err := waitFor(ctx, "every span Breeze started in the collector's file", func() bool {
		counts := countSpans(col.Spans(t))
		servers, clients = counts["breeze-e2e/server"], counts["breeze-e2e/client"]
		return servers > 0 && float64(servers) == proxy.Metric(t, "breeze_tracing_spans_total", `kind="server"`) &&
			float64(clients) == proxy.Metric(t, "breeze_tracing_spans_total", `kind="client"`)
	})
	if err != nil {
		t.Fatalf("%v: %d server and %d client spans there", err, servers, clients)
	}
	ok, lo, hi := harness.WithinSigmas(servers, n, 0.25, 5)
	t.Logf("25%% of %d calls: %d traced (5σ bounds %.0f–%.0f), %d client spans", n, servers, lo, hi, clients)
	if !ok {
		t.Errorf("%d of %d calls traced at 25%%, outside 5σ bounds %.0f–%.0f", servers, n, lo, hi)
	}
}

// TestTracingCollectorDown: Breeze traces every call to a collector
// address where nothing listens. Every call succeeds; the spans that do
// not fit the queue are dropped and counted; the proxy's resident memory
// grows by less than 16 MiB over 20,000 traced calls (some 40,000 spans).
func TestTracingCollectorDown(t *testing.T) {
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "traced"})
	dead := harness.Addr(harness.FreePort(t))
	proxy := startTracingProxy(t, p, "e2e_tracing_down", dead, 100, 256)
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	warm := c.RunCalls(ctx, 500, 8, 10*time.Second, greets("w", nil))
	for _, o := range warm {
		if o.Err != nil {
			t.Fatalf("warm-up call %v: %v", o.Call, o.Err)
		}
	}
	before := proxy.Proc.RSS(t)
	const n = 20000
	outs := c.RunCalls(ctx, n, 8, 10*time.Second, greets("d", nil))
	failed := 0
	for _, o := range outs {
		if o.Err != nil {
			failed++
		}
	}
	dropped := proxy.Metric(t, "breeze_tracing_spans_dropped_total")
	after := proxy.Proc.RSS(t)
	t.Logf("%d calls with the collector down: %d failed; %v spans dropped of %v started; RSS %.1f MiB before, %.1f MiB after",
		n, failed, dropped, proxy.Metric(t, "breeze_tracing_spans_total"), float64(before)/(1<<20), float64(after)/(1<<20))
	if failed != 0 {
		t.Errorf("%d of %d calls failed with the collector down", failed, n)
	}
	// 8,000 spans (a server and a client span per call) would be held
	// without the bound; the queue holds 256 and two batches of 64.
	if dropped < 2*n-256-2*64-1 {
		t.Errorf("%v spans dropped of %d, want all but what the queue holds (256 + 2×64)", dropped, 2*n)
	}
	if after-before > 16<<20 {
		t.Errorf("RSS grew by %.1f MiB over %d traced calls with the collector down", float64(after-before)/(1<<20), n)
	}
}
