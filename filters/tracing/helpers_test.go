package tracing

import (
	"context"
	"os"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/codecs/dubbo"
	_ "github.com/breeze-mesh/breeze/codecs/thrift"
	"github.com/breeze-mesh/breeze/filters/filter"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// memoryPipeline is the real pipeline (bounded queue, batch processor)
// exporting to memory.
func memoryPipeline(t *testing.T) (*pipeline, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	p := newPipeline(exp, settingsOf(&breezev1.Tracing{Collector: "unused:1"}))
	t.Cleanup(func() { _ = p.shutdown(context.Background()) })
	return p, exp
}

// spans flushes the pipeline and returns what it exported.
func spans(t *testing.T, p *pipeline, exp *tracetest.InMemoryExporter) tracetest.SpanStubs {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.provider.ForceFlush(ctx); err != nil {
		t.Fatalf("flushing spans: %v", err)
	}
	return exp.GetSpans()
}

func newFilter(t testing.TB, codec string, cfg *breezev1.Tracing, p *pipeline) *Filter {
	t.Helper()
	f, err := New(cfg, filter.BuildContext{ProxyName: "test", Codec: codec}, nil, Options{pipeline: p})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeFrame decodes one whole frame with a fresh instance of codec.
func decodeFrame(t testing.TB, codec string, frame []byte) *codecs.Message {
	t.Helper()
	c := codecs.Instance(codec)
	m := &codecs.Message{}
	n, err := c.Decode(frame, m)
	if err != nil || n != len(frame) {
		t.Fatalf("%s: decoding a %d-byte frame: n=%d err=%v", codec, len(frame), n, err)
	}
	return m
}

// withKeys re-encodes a frame with key/values added (as a client that
// sends them would have written it) and returns the new frame.
func withKeys(t testing.TB, codec string, frame []byte, kv ...codecs.KV) []byte {
	t.Helper()
	c := codecs.Instance(codec)
	m := &codecs.Message{}
	if _, err := c.Decode(frame, m); err != nil {
		t.Fatal(err)
	}
	m.Mutations = append(m.Mutations, kv...)
	out, err := c.Encode(m)
	if err != nil {
		t.Fatalf("%s: encoding %v: %v", codec, kv, err)
	}
	return append([]byte(nil), out...)
}

// encode returns what the codec sends for m (its mutations applied).
func encode(t *testing.T, codec string, m *codecs.Message) []byte {
	t.Helper()
	out, err := codecs.Instance(codec).Encode(m)
	if err != nil {
		t.Fatalf("%s: encoding: %v", codec, err)
	}
	return out
}

func stubByKind(ss tracetest.SpanStubs, kind string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range ss {
		if s.SpanKind.String() == kind {
			out = append(out, s)
		}
	}
	return out
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return "<absent>"
}

var _ sdktrace.SpanExporter = (*tracetest.InMemoryExporter)(nil)

func durationpbOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
