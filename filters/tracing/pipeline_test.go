package tracing

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// stuckExporter is a collector that never answers: its first export
// blocks until the test ends.
type stuckExporter struct {
	mu       sync.Mutex
	received int
	release  chan struct{}
}

func (e *stuckExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	e.received += len(spans)
	e.mu.Unlock()
	<-e.release
	return nil
}

func (e *stuckExporter) Shutdown(context.Context) error { return nil }

// TestQueueBound: with the collector stuck, 10,000 traced requests all
// finish (ending a span never waits), and what the pipeline holds is
// bounded by max_queue_size plus two batches: the rest is dropped and
// counted.
func TestQueueBound(t *testing.T) {
	exp := &stuckExporter{release: make(chan struct{})}
	const queue, batch, n = 100, 10, 10000
	p := newPipeline(exp, settingsOf(&breezev1.Tracing{Collector: "unused:1", MaxQueueSize: queue, MaxExportBatchSize: batch,
		ExportTimeout: durationpbOf(time.Hour)}))
	t.Cleanup(func() {
		close(exp.release)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = p.shutdown(ctx)
	})
	f := newFilter(t, "dubbo", &breezev1.Tracing{RandomSamplingPercentage: 100}, p)
	m := decodeFrame(t, "dubbo", readFile(t, "../../codecs/dubbo/testdata/request.bin"))
	before := testutil.ToFloat64(metrics.TracingSpansDropped)
	for range n {
		s := &filter.Stream{Request: *m, Start: time.Now()}
		f.OnRequest(s)
		s.End = time.Now()
		s.Outcome = filter.Outcome{Responded: true, Code: 20}
		f.OnDone(s)
	}
	dropped := int(testutil.ToFloat64(metrics.TracingSpansDropped) - before)
	// Held: our queue, the SDK's queue (one batch), the batch the stuck
	// export holds, and the span the feeder is handing over.
	maxHeld := queue + 2*batch + 1
	if kept := n - dropped; kept > maxHeld || kept < queue {
		t.Errorf("%d spans ended, %d dropped: %d held, want between %d and %d", n, dropped, kept, queue, maxHeld)
	}
	exp.mu.Lock()
	received := exp.received
	exp.mu.Unlock()
	if received > batch {
		t.Errorf("the stuck exporter was handed %d spans, more than one batch of %d", received, batch)
	}
}

// TestCollectorDown: the real OTLP exporter aimed at a port nobody
// listens on. Requests are traced and finish; exports fail and are
// counted (breeze_tracing_export_errors_total), not retried forever.
func TestCollectorDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := &breezev1.Tracing{Collector: addr, RandomSamplingPercentage: 100, MaxExportBatchSize: 10, ExportTimeout: durationpbOf(2 * time.Second)}
	p, err := sharedPipeline(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newFilter(t, "dubbo", cfg, p)
	m := decodeFrame(t, "dubbo", readFile(t, "../../codecs/dubbo/testdata/request.bin"))
	before := testutil.ToFloat64(metrics.TracingExportErrors)
	for range 20 {
		s := &filter.Stream{Request: *m, Start: time.Now()}
		f.OnRequest(s)
		s.End = time.Now()
		s.Outcome = filter.Outcome{Responded: true, Code: 20}
		f.OnDone(s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = p.provider.ForceFlush(ctx)
	if got := testutil.ToFloat64(metrics.TracingExportErrors) - before; got < 1 {
		t.Errorf("20 spans flushed to a dead collector (flush error %v): %v export errors counted, want at least 1", err, got)
	}
}
