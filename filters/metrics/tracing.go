package metrics

import "github.com/prometheus/client_golang/prometheus"

var (
	// TracingSpans counts spans started, by kind: server (one per traced
	// request) and client (one per upstream attempt of one).
	TracingSpans = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_tracing_spans_total",
		Help: "Spans started, by kind: server (one per traced request), client (one per upstream attempt of a traced request).",
	}, []string{"kind"})
	// TracingSpansDropped counts finished spans that were not exported
	// because the export queue was full (a slow or absent collector):
	// tracing sheds spans, never requests.
	TracingSpansDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "breeze_tracing_spans_dropped_total",
		Help: "Finished spans dropped because the tracing export queue (tracing.max_queue_size) was full; requests are never held for a span.",
	})
	// TracingExportErrors counts errors the OpenTelemetry SDK reported
	// (failed exports to the collector, mostly).
	TracingExportErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "breeze_tracing_export_errors_total",
		Help: "Errors the OpenTelemetry SDK reported, mostly failed span exports to the collector (each failed export drops its batch).",
	})
)

func init() { Registry.MustRegister(TracingSpans, TracingSpansDropped, TracingExportErrors) }
