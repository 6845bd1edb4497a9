package proxy

import (
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/tracing"
)

// TestTracingRetries: through the proxy (Envoy's shim, real upstream
// connections), a request a client sampled whose first attempt is reset
// and retried gets one server span, child of the client's span, and two
// client spans, children of the server span; the provider that answered
// received the second client span's traceparent.
func TestTracingRetries(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	old := tracingOptions
	tracingOptions = tracing.Options{Exporter: exp}
	t.Cleanup(func() { tracingOptions = old })

	good, bad := newBackend(t, "good"), newBackend(t, "bad")
	bad.dropAll.Store(true)
	config := strings.Replace(cfg(`  - {route: {cluster: c}, retry_policy: {retry_on: reset, num_retries: 1, retry_back_off: {base_interval: 0.001s}}}`,
		"- name: c\n  lb_policy: ROUND_ROBIN\n  endpoints:\n"+ep(bad, "")+"\n"+ep(good, ""),
		"tracing: {collector: '127.0.0.1:1', batch_timeout: 0.01s}"), "stat_prefix: t", "stat_prefix: tracing_retry", 1)
	addr := startProxy(t, config)

	const trace = "0af7651916cd43dd8448eb211c80319c"
	c := dial(t, addr)
	// Round robin from the first endpoint: the first call's first attempt
	// goes to bad, which resets it; the retry goes to good.
	var answer tmsg
	for i := range 4 {
		ch := c.send(codecs.Request, 0, "x", tracing.TraceparentKey, "00-"+trace+"-b7ad6b7169203331-01")
		m := <-ch
		if m.status != codecs.StatusOK || md(m, "server") != "good" {
			t.Fatalf("call %d: %+v; want an answer from good", i, m)
		}
		if bad.received.Load() > 0 {
			answer = m
			break
		}
	}
	if bad.received.Load() == 0 {
		t.Fatalf("bad received no request in 4 calls: no retry to trace")
	}
	// The spans of a call that went to good first may be exported before
	// those of the retried call: wait for the server span with two
	// client spans, the retried call's.
	var got tracetest.SpanStubs
	var srv tracetest.SpanStub
	eventually(t, "the spans of the retried call", func() bool {
		got = exp.GetSpans()
		for _, s := range servers(got, trace) {
			if len(children(got, s)) == 2 {
				srv = s
				return true
			}
		}
		return false
	})
	if srv.Parent.SpanID().String() != "b7ad6b7169203331" {
		t.Errorf("server span's parent %s, want the client's b7ad6b7169203331", srv.Parent.SpanID())
	}
	kids := children(got, srv)
	seen := md(answer, "seen")
	want := tracing.TraceparentKey + "=00-" + trace + "-" + kids[1].SpanContext.SpanID().String() + "-01;"
	t.Logf("server span %s; client spans %s (%s) and %s (%s); good saw %q", srv.SpanContext.SpanID(),
		kids[0].SpanContext.SpanID(), kids[0].Status.Description, kids[1].SpanContext.SpanID(), kids[1].Status.Code, seen)
	if kids[0].Status.Description != "reset" {
		t.Errorf("first attempt's span status %v, want an error: reset", kids[0].Status)
	}
	if !strings.Contains(seen, want) {
		t.Errorf("good saw %q, want it to contain %q (the second attempt's span)", seen, want)
	}
}

func servers(ss tracetest.SpanStubs, trace string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range ss {
		if s.SpanKind.String() == "server" && s.SpanContext.TraceID().String() == trace {
			out = append(out, s)
		}
	}
	return out
}

func clients(ss tracetest.SpanStubs, trace string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range ss {
		if s.SpanKind.String() == "client" && s.SpanContext.TraceID().String() == trace {
			out = append(out, s)
		}
	}
	return out
}

// children are the spans whose parent is p, in the order they started.
func children(ss tracetest.SpanStubs, p tracetest.SpanStub) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range ss {
		if s.Parent.SpanID() == p.SpanContext.SpanID() {
			out = append(out, s)
		}
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].StartTime.Before(out[j-1].StartTime); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// TestTracingMirror: a traced request mirrored elsewhere gets a client
// span for its shadow too (breeze.mirror), child of the server span, and
// the shadow carries a traceparent.
func TestTracingMirror(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	old := tracingOptions
	tracingOptions = tracing.Options{Exporter: exp}
	t.Cleanup(func() { tracingOptions = old })

	primary, mirror := newBackend(t, "primary"), newBackend(t, "mirror")
	addr := startProxy(t, strings.Replace(cfg(`  - {route: {cluster: c, request_mirror_policies: [{cluster: shadow}]}}`,
		"- name: c\n  endpoints:\n"+ep(primary, "")+"\n- name: shadow\n  endpoints:\n"+ep(mirror, ""),
		"tracing: {collector: '127.0.0.1:1', random_sampling_percentage: 100, batch_timeout: 0.01s}"), "stat_prefix: t", "stat_prefix: tracing_mirror", 1))
	c := dial(t, addr)
	m := <-c.send(codecs.Request, 0, "x")
	if m.status != codecs.StatusOK || md(m, "server") != "primary" {
		t.Fatalf("call: %+v; want an answer from primary", m)
	}
	var got tracetest.SpanStubs
	eventually(t, "a server span and its two client spans", func() bool {
		got = exp.GetSpans()
		return len(got) == 3
	})
	var srv tracetest.SpanStub
	for _, s := range got {
		if s.SpanKind.String() == "server" {
			srv = s
		}
	}
	kids := children(got, srv)
	mirrors := 0
	for _, k := range kids {
		for _, a := range k.Attributes {
			if a.Key == "breeze.mirror" && a.Value.AsBool() {
				mirrors++
			}
		}
	}
	eventually(t, "the mirror to receive the shadow", func() bool { return mirror.received.Load() == 1 })
	mirror.mu.Lock()
	withParent := mirror.withKey[tracing.TraceparentKey]
	mirror.mu.Unlock()
	t.Logf("server span %s: %d client spans, %d of them the mirror's; the mirror received %d request with a traceparent; primary saw %q",
		srv.SpanContext.SpanID(), len(kids), mirrors, withParent, md(m, "seen"))
	if len(kids) != 2 || mirrors != 1 || withParent != 1 {
		t.Errorf("want 2 client spans, 1 of them the mirror's, and the shadow carrying a traceparent")
	}
	if !strings.Contains(md(m, "seen"), tracing.TraceparentKey+"=00-"+srv.SpanContext.TraceID().String()) {
		t.Errorf("primary saw %q, want a traceparent of trace %s", md(m, "seen"), srv.SpanContext.TraceID())
	}
}
