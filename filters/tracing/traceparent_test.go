package tracing

import (
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestTraceparentRoundTrip(t *testing.T) {
	const v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tid, sid, flags, ok := parseTraceparent(v)
	if !ok || tid.String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sid.String() != "00f067aa0ba902b7" || !flags.IsSampled() {
		t.Fatalf("parse(%q) = %s %s %v %v", v, tid, sid, flags, ok)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags})
	if got := formatTraceparent(sc); got != v {
		t.Errorf("format = %q, want %q", got, v)
	}
}

func TestTraceparentRejects(t *testing.T) {
	for _, v := range []string{
		"",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",        // short
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // version 00 with more
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",       // version ff
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",       // zero trace id
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",       // zero span id
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",       // upper case
		"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",       // separator
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",      // later version, no dash after flags
	} {
		if _, _, _, ok := parseTraceparent(v); ok {
			t.Errorf("parse(%q) accepted it", v)
		}
	}
	// A later version's first four fields are read, as the spec asks.
	if _, _, _, ok := parseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"); !ok {
		t.Errorf("parse of a version-01 traceparent with an extra field refused it")
	}
}

func TestParseAllocatesNothing(t *testing.T) {
	const v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if n := testing.AllocsPerRun(100, func() { parseTraceparent(v) }); n != 0 {
		t.Errorf("parseTraceparent allocates %v times per call", n)
	}
}
