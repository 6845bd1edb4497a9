package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/breeze-mesh/breeze/filters/logs"
	"github.com/breeze-mesh/breeze/filters/metrics"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Defaults of the export settings (the SDK's own).
const (
	DefaultServiceName    = "breeze"
	DefaultMaxQueueSize   = 2048
	DefaultMaxExportBatch = 512
	DefaultBatchTimeout   = 5 * time.Second
	DefaultExportTimeout  = 10 * time.Second
)

// pipeline is one exporter with its tracer: finished spans go through a
// bounded queue of ours into the SDK's BatchSpanProcessor, then over
// OTLP/gRPC to the collector.
//
// Why a queue in front of the SDK's: the BatchSpanProcessor drops a span
// when its queue is full without saying so (no count a proxy could
// export). Ours never blocks either (a full queue drops the span and
// counts it, breeze_tracing_spans_dropped_total); one goroutine feeds the
// SDK's processor, which blocks it when its own queue (one batch) is
// full. Memory is then bounded by max_queue_size spans plus two batches
// (the one filling and the one exporting), whatever the collector does.
type pipeline struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	queue    *boundedProcessor
}

// exportSettings are the settings that make pipelines distinct: configs
// that agree on them share one (Envoy keeps every config version it
// parsed; a new version must not open another collector connection).
type exportSettings struct {
	collector, service string
	queue, batch       int
	batchTimeout       time.Duration
	exportTimeout      time.Duration
}

func settingsOf(cfg *breezev1.Tracing) exportSettings {
	s := exportSettings{
		collector: cfg.GetCollector(), service: cfg.GetServiceName(),
		queue: int(cfg.GetMaxQueueSize()), batch: int(cfg.GetMaxExportBatchSize()),
		batchTimeout: cfg.GetBatchTimeout().AsDuration(), exportTimeout: cfg.GetExportTimeout().AsDuration(),
	}
	if s.service == "" {
		s.service = DefaultServiceName
	}
	if s.queue <= 0 {
		s.queue = DefaultMaxQueueSize
	}
	if s.batch <= 0 {
		s.batch = DefaultMaxExportBatch
	}
	s.batch = min(s.batch, s.queue)
	if s.batchTimeout <= 0 {
		s.batchTimeout = DefaultBatchTimeout
	}
	if s.exportTimeout <= 0 {
		s.exportTimeout = DefaultExportTimeout
	}
	return s
}

var (
	pipelinesMu sync.Mutex
	pipelines   = map[exportSettings]*pipeline{}
)

// sharedPipeline returns the process's pipeline for these settings,
// making it on first use. Making one opens nothing yet: the gRPC
// connection is dialled on the first export.
func sharedPipeline(cfg *breezev1.Tracing, log *slog.Logger) (*pipeline, error) {
	s := settingsOf(cfg)
	pipelinesMu.Lock()
	defer pipelinesMu.Unlock()
	if p := pipelines[s]; p != nil {
		return p, nil
	}
	exp, err := otlptracegrpc.New(context.Background(),
		otlptracegrpc.WithEndpoint(s.collector),
		otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithTimeout(s.exportTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing.collector: %w", err)
	}
	installErrorHandler(log)
	p := newPipeline(exp, s)
	pipelines[s] = p
	return p, nil
}

func newPipeline(exp sdktrace.SpanExporter, s exportSettings) *pipeline {
	bsp := sdktrace.NewBatchSpanProcessor(exp,
		sdktrace.WithMaxQueueSize(s.batch),
		sdktrace.WithMaxExportBatchSize(s.batch),
		sdktrace.WithBatchTimeout(s.batchTimeout),
		sdktrace.WithExportTimeout(s.exportTimeout),
		sdktrace.WithBlocking(),
	)
	q := newBoundedProcessor(bsp, s.queue)
	provider := sdktrace.NewTracerProvider(
		// The filter decides which requests are traced (sampler.go);
		// every span it starts is recorded.
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithSpanProcessor(q),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", s.service))),
	)
	return &pipeline{provider: provider, tracer: provider.Tracer("github.com/breeze-mesh/breeze/filters/tracing"), queue: q}
}

// shutdown flushes and stops the pipeline (tests and the standalone
// runner; Envoy never frees a config).
func (p *pipeline) shutdown(ctx context.Context) error { return p.provider.Shutdown(ctx) }

// boundedProcessor is the queue in front of the SDK's batch processor.
type boundedProcessor struct {
	next  sdktrace.SpanProcessor
	queue chan queued
	// stopped: Shutdown was called; later spans are dropped. The queue is
	// never closed, so that a span ending meanwhile cannot panic.
	stopped atomic.Bool
	dropped func()
}

// queued is a finished span, or a marker: the feeder closes flushed when
// it reaches it, every span queued before it handed on, and ends there
// if stop is set.
type queued struct {
	span    sdktrace.ReadOnlySpan
	flushed chan struct{}
	stop    bool
}

func newBoundedProcessor(next sdktrace.SpanProcessor, size int) *boundedProcessor {
	p := &boundedProcessor{next: next, queue: make(chan queued, size), dropped: metrics.TracingSpansDropped.Inc}
	go p.feed()
	return p
}

func (p *boundedProcessor) feed() {
	for q := range p.queue {
		if q.flushed != nil {
			close(q.flushed)
			if q.stop {
				return
			}
			continue
		}
		p.next.OnEnd(q.span)
	}
}

func (p *boundedProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a finished span, or drops and counts it when the queue is
// full: it runs on the request's path and never waits.
func (p *boundedProcessor) OnEnd(s sdktrace.ReadOnlySpan) {
	if p.stopped.Load() {
		return
	}
	select {
	case p.queue <- queued{span: s}:
	default:
		p.dropped()
	}
}

// Shutdown stops taking spans, lets the queue drain into the SDK's
// processor and shuts that down (which exports what it holds).
func (p *boundedProcessor) Shutdown(ctx context.Context) error {
	if p.stopped.Swap(true) {
		return nil
	}
	if err := p.mark(ctx, true); err != nil {
		return err
	}
	return p.next.Shutdown(ctx)
}

// mark queues a marker behind the spans queued so far (waiting for room,
// unlike a span: it is never on a request's path) and waits until the
// feeder has handed them all on.
func (p *boundedProcessor) mark(ctx context.Context, stop bool) error {
	flushed := make(chan struct{})
	select {
	case p.queue <- queued{flushed: flushed, stop: stop}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-flushed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ForceFlush exports what was queued before the call: once the feeder
// has handed those spans on, the SDK's processor is flushed.
func (p *boundedProcessor) ForceFlush(ctx context.Context) error {
	if p.stopped.Load() {
		return nil
	}
	if err := p.mark(ctx, false); err != nil {
		return err
	}
	return p.next.ForceFlush(ctx)
}

var errorHandlerOnce sync.Once

// installErrorHandler routes the SDK's errors (failed exports: the
// collector is down or slow) to a counter and a rate-limited log line,
// instead of the SDK's default, an unlimited line on stderr per failure.
// The handler is process-wide: the plugin is the only user of the SDK in
// Envoy's process.
func installErrorHandler(log *slog.Logger) {
	errorHandlerOnce.Do(func() {
		l := logs.New(log, logs.Options{})
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			metrics.TracingExportErrors.Inc()
			if err == nil {
				err = errors.New("unknown")
			}
			l.Warn("tracing_export", "tracing: the OpenTelemetry SDK reported an error; spans may be lost", "err", err.Error())
		}))
	})
}
