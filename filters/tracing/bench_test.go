package tracing

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// discard is a collector that takes every batch at once.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkRequest is the filter's cost per request (a Dubbo request from
// a client that sampled it, one upstream attempt, through the real
// pipeline to a collector that takes everything): "off" is the router's
// check of a request with no watcher, what every request pays when
// ProxyConfig.tracing is unset (the filter is then not in the chain at
// all); "untraced" a request the sampler does not draw; "traced" one it
// does.
func BenchmarkRequest(b *testing.B) {
	frame := withKeys(b, "dubbo", readFile(b, "../../codecs/dubbo/testdata/request.bin"), codecs.KV{Key: TraceparentKey, Value: clientParent})
	m := decodeFrame(b, "dubbo", frame)
	b.Run("off", func(b *testing.B) {
		s := &filter.Stream{Request: *m}
		b.ReportAllocs()
		for b.Loop() {
			if w := s.AttemptWatcher; w != nil {
				w.StartAttempt(s, &s.Request)
			}
		}
	})
	for _, tc := range []struct {
		name string
		cfg  *breezev1.Tracing
	}{
		{"untraced", &breezev1.Tracing{IgnoreClientSampled: true}},
		{"traced", &breezev1.Tracing{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := newPipeline(discard{}, settingsOf(&breezev1.Tracing{Collector: "unused:1"}))
			defer p.shutdown(context.Background())
			f := newFilter(b, "dubbo", tc.cfg, p)
			s := &filter.Stream{Request: *m, Upstream: "10.0.0.7:20880", Cluster: "provider"}
			b.ReportAllocs()
			for b.Loop() {
				// A new request: no watcher, the frame's own keys.
				s.AttemptWatcher = nil
				s.Request.Mutations = s.Request.Mutations[:0]
				s.Start = time.Now()
				f.OnRequest(s)
				if w := s.AttemptWatcher; w != nil {
					w.StartAttempt(s, &s.Request)
					w.EndAttempt(s, filter.AttemptEnd{Response: &codecs.Message{Type: codecs.Response, Code: 20}})
				}
				s.Outcome = filter.Outcome{Responded: true, Code: 20}
				f.OnDone(s)
			}
		})
	}
}
