// Package tracing is Breeze's OpenTelemetry tracing: a server span per
// request a proxy receives and a client span per upstream attempt (the
// first, each retry, each re-balance), exported over OTLP/gRPC through
// the official Go SDK. The W3C trace context is read from the request
// (Dubbo attachments, THeader headers, Kitex's metainfo keys in TTHeader)
// and each attempt carries its client span's context upstream, so that a
// trace a dubbo-go or Kitex client started continues through Breeze to
// the provider (README.md).
//
// The proxy puts the filter first in the chain when ProxyConfig.tracing is
// set; without it nothing of this package runs. A request the sampler
// does not draw costs a metadata lookup and no allocation; spans of drawn
// requests are queued for export without ever waiting (a full queue
// drops them, counted).
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Name is the filter's name in the chain (Chain.Names, logs, panics).
const Name = "tracing"

// Attribute keys: OpenTelemetry's RPC and network semantic conventions,
// and Breeze's own (breeze.*) for what they have no name for.
const (
	attrRPCSystem   = "rpc.system"
	attrRPCService  = "rpc.service"
	attrRPCMethod   = "rpc.method"
	attrStatusCode  = "rpc.response.status_code"
	attrServerAddr  = "server.address"
	attrServerPort  = "server.port"
	attrPeerAddr    = "network.peer.address"
	attrPeerPort    = "network.peer.port"
	attrClientAddr  = "client.address"
	attrFlags       = "breeze.response_flags"
	attrCluster     = "breeze.cluster"
	attrRoute       = "breeze.route"
	attrProxy       = "breeze.proxy"
	attrAttempt     = "breeze.attempt"
	attrFailure     = "breeze.failure"
	attrLocalReply  = "breeze.local_reply"
	attrPropagation = "breeze.trace_context"
	attrMirror      = "breeze.mirror"
)

// rpcSystem names the protocol as the RPC conventions do.
func rpcSystem(codec string) string {
	switch codec {
	case "dubbo":
		return "apache_dubbo"
	case "thrift":
		return "apache_thrift"
	}
	return codec
}

// Counters of spans started, resolved once.
var (
	serverSpans = metrics.TracingSpans.WithLabelValues("server")
	clientSpans = metrics.TracingSpans.WithLabelValues("client")
)

// Options are what tests replace; zero values are production's.
type Options struct {
	// Now is the clock of the sampler's cap.
	Now func() time.Time
	// Rand draws the random sampling decisions (uniform 64-bit numbers).
	Rand func() uint64
	// Exporter, when set, replaces the OTLP exporter: spans go through
	// the same bounded queue and batch processor to it (tests export to
	// memory). Each filter built so gets a pipeline of its own.
	Exporter sdktrace.SpanExporter
	// pipeline replaces the whole pipeline (this package's tests).
	pipeline *pipeline
}

// Filter traces the requests of one proxy.
type Filter struct {
	filter.Base
	proxy, codec string
	tracer       trace.Tracer
	sampler      *sampler
	// carrier says whether a request's frame has room for keys (Thrift's
	// framed and unframed transports have none).
	carrier            codecs.KeyCarrier
	serviceKey, method string
	system             attribute.KeyValue
}

// New builds the tracing filter of a proxy from its validated config.
func New(cfg *breezev1.Tracing, ctx filter.BuildContext, log *slog.Logger, o Options) (*Filter, error) {
	p := o.pipeline
	if p == nil && o.Exporter != nil {
		p = newPipeline(o.Exporter, settingsOf(cfg))
	}
	if p == nil {
		var err error
		if p, err = sharedPipeline(cfg, log); err != nil {
			return nil, err
		}
	}
	f := &Filter{
		proxy: ctx.ProxyName, codec: ctx.Codec, tracer: p.tracer,
		sampler: newSampler(cfg.GetRandomSamplingPercentage(), !cfg.GetIgnoreClientSampled(), cfg.GetMaxSpansPerSecond(), o.Now, o.Rand),
		system:  attribute.String(attrRPCSystem, rpcSystem(ctx.Codec)),
	}
	if c := codecs.Instance(ctx.Codec); c != nil {
		f.carrier, _ = c.(codecs.KeyCarrier)
		if d, ok := c.(codecs.Describer); ok {
			f.serviceKey, f.method = d.RequestKeys()
		}
	}
	return f, nil
}

// OnRequest reads the request's trace context, decides whether it is
// traced and, if so, starts its server span. An untraced request goes on
// untouched: its trace context, if any, reaches the upstream as the
// client sent it.
func (f *Filter) OnRequest(s *filter.Stream) filter.Status {
	md := s.Request.Metadata
	k, carried := keysFor(f.codec, md)
	var (
		clientSampled bool
		tid           trace.TraceID
		sid           trace.SpanID
		flags         trace.TraceFlags
		hasParent     bool
	)
	if carried {
		if v, ok := md.Get(k.parent); ok {
			if tid, sid, flags, hasParent = parseTraceparent(v); hasParent {
				clientSampled = flags.IsSampled()
			}
		}
	}
	if !f.sampler.sample(clientSampled) {
		return filter.Continue
	}
	ctx := context.Background()
	if hasParent {
		cfg := trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, Remote: true}
		if ts, ok := md.Get(k.state); ok {
			// A malformed tracestate is dropped, as the spec says.
			cfg.TraceState, _ = trace.ParseTraceState(ts)
		}
		ctx = trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(cfg))
	}
	service, method := f.describe(md)
	propagation := "none"
	switch {
	case !carried:
		propagation = "unsupported"
	case hasParent:
		propagation = k.parent
	}
	ctx, span := f.tracer.Start(ctx, spanName(service, method),
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(s.Start),
		trace.WithAttributes(f.system,
			attribute.String(attrRPCService, service),
			attribute.String(attrRPCMethod, method),
			attribute.String(attrProxy, f.proxy),
			attribute.String(attrPropagation, propagation),
		))
	serverSpans.Inc()
	if s.Peer != nil && s.Peer.IP.IsValid() {
		span.SetAttributes(attribute.String(attrClientAddr, s.Peer.IP.String()))
	}
	s.AttemptWatcher = &request{f: f, ctx: ctx, server: span, keys: k, carried: carried, service: service, method: method}
	return filter.Continue
}

func (f *Filter) describe(md codecs.Metadata) (service, method string) {
	if f.serviceKey != "" {
		service, _ = md.Get(f.serviceKey)
	}
	if f.method != "" {
		method, _ = md.Get(f.method)
	}
	return service, method
}

// spanName is the RPC conventions' {rpc.service}/{rpc.method}.
func spanName(service, method string) string {
	switch {
	case service == "" && method == "":
		return "unknown"
	case service == "":
		return method
	}
	return service + "/" + method
}

// OnDone ends the request's spans: an attempt still open (the client went
// away while it was in flight), then the server span with the outcome.
func (f *Filter) OnDone(s *filter.Stream) {
	r, ok := s.AttemptWatcher.(*request)
	if !ok || r.f != f {
		return
	}
	if c := r.client.Swap(nil); c != nil {
		c.span.SetStatus(codes.Error, "request ended with the attempt in flight: "+s.Outcome.Detail)
		c.span.End()
	}
	sp := r.server
	o := &s.Outcome
	attrs := make([]attribute.KeyValue, 0, 6)
	if s.Route != nil && s.Route.RouteName() != "" {
		attrs = append(attrs, attribute.String(attrRoute, s.Route.RouteName()))
	}
	if s.Cluster != "" {
		attrs = append(attrs, attribute.String(attrCluster, s.Cluster))
	}
	if o.Flags != 0 {
		attrs = append(attrs, attribute.String(attrFlags, o.Flags.String()))
	}
	switch {
	case o.Responded:
		attrs = append(attrs, attribute.String(attrStatusCode, strconv.FormatUint(uint64(o.Code), 10)))
		if o.Status != codecs.StatusOK {
			sp.SetStatus(codes.Error, statusText(o.Status))
		}
	case o.LocalReply != 0:
		attrs = append(attrs, attribute.String(attrLocalReply, o.LocalReply.String()))
		sp.SetStatus(codes.Error, o.Detail)
	case o.Sent:
	default:
		sp.SetStatus(codes.Error, o.Detail)
	}
	sp.SetAttributes(attrs...)
	end := s.End
	if end.IsZero() {
		end = time.Now()
	}
	sp.End(trace.WithTimestamp(end))
}

func statusText(st codecs.ResponseStatus) string {
	if st == codecs.StatusAppError {
		return "application exception"
	}
	return "error response"
}

// request is the tracing state of one traced request: its server span
// and the client span of the attempt in flight.
type request struct {
	f       *Filter
	ctx     context.Context
	server  trace.Span
	keys    keys
	carried bool
	attempt int
	service string
	method  string
	// client is the attempt in flight; swapped out by whoever ends it
	// (the router's outcome, or OnDone when the client went away).
	client atomic.Pointer[clientSpan]
}

type clientSpan struct{ span trace.Span }

// StartAttempt implements filter.AttemptWatcher: a client span, child of
// the server span, whose context the attempt carries upstream.
func (r *request) StartAttempt(s *filter.Stream, m *codecs.Message) {
	defer recoverPanic("tracing_start_attempt")
	r.attempt++
	attrs := []attribute.KeyValue{r.f.system,
		attribute.String(attrRPCService, r.service),
		attribute.String(attrRPCMethod, r.method),
		attribute.String(attrCluster, s.Cluster),
		attribute.Int(attrAttempt, r.attempt),
	}
	attrs = appendAddr(attrs, s.Upstream)
	_, span := r.f.tracer.Start(r.ctx, spanName(r.service, r.method), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	clientSpans.Inc()
	if old := r.client.Swap(&clientSpan{span}); old != nil {
		old.span.End() // not reported: never expected, but never leaked
	}
	if r.carried && (r.f.carrier == nil || r.f.carrier.CarriesKeys(m)) {
		m.Mutations.Set(r.keys.parent, formatTraceparent(span.SpanContext()))
	}
}

// StartShadow implements filter.ShadowWatcher: a client span of its own
// for a mirrored copy of the request (breeze.mirror: true), child of the
// server span, whose context the copy carries.
func (r *request) StartShadow(m *codecs.Message, cluster, endpoint string) func(filter.AttemptEnd) {
	defer recoverPanic("tracing_start_shadow")
	attrs := []attribute.KeyValue{r.f.system,
		attribute.String(attrRPCService, r.service),
		attribute.String(attrRPCMethod, r.method),
		attribute.String(attrCluster, cluster),
		attribute.Bool(attrMirror, true),
	}
	attrs = appendAddr(attrs, endpoint)
	_, span := r.f.tracer.Start(r.ctx, spanName(r.service, r.method), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	clientSpans.Inc()
	if r.carried && (r.f.carrier == nil || r.f.carrier.CarriesKeys(m)) {
		m.Mutations.Set(r.keys.parent, formatTraceparent(span.SpanContext()))
	}
	return func(end filter.AttemptEnd) {
		defer recoverPanic("tracing_end_shadow")
		endClientSpan(span, end)
	}
}

// appendAddr adds server.address/port and network.peer.* of an ip:port.
func appendAddr(attrs []attribute.KeyValue, addr string) []attribute.KeyValue {
	host, port := addr, 0
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			host = addr[:i]
			port, _ = strconv.Atoi(addr[i+1:])
			break
		}
	}
	if len(host) > 1 && host[0] == '[' {
		host = host[1 : len(host)-1]
	}
	return append(attrs,
		attribute.String(attrServerAddr, host), attribute.Int(attrServerPort, port),
		attribute.String(attrPeerAddr, host), attribute.Int(attrPeerPort, port))
}

// EndAttempt implements filter.AttemptWatcher.
func (r *request) EndAttempt(s *filter.Stream, end filter.AttemptEnd) {
	defer recoverPanic("tracing_end_attempt")
	c := r.client.Swap(nil)
	if c == nil {
		return
	}
	endClientSpan(c.span, end)
}

// endClientSpan records how an attempt ended on its span and ends it.
func endClientSpan(sp trace.Span, end filter.AttemptEnd) {
	switch {
	case end.Response != nil:
		sp.SetAttributes(attribute.String(attrStatusCode, strconv.FormatUint(uint64(end.Response.Code), 10)))
		if end.Response.Status != codecs.StatusOK {
			sp.SetStatus(codes.Error, statusText(end.Response.Status))
		}
	case end.Sent:
	default:
		sp.SetAttributes(attribute.String(attrFailure, end.Failure), attribute.String(attrFlags, end.Flag.String()))
		sp.SetStatus(codes.Error, end.Failure)
	}
	sp.End()
}

// recoverPanic keeps a panic in the SDK or here from reaching the router's
// goroutines (and from there Envoy): the span is lost, the request is not.
func recoverPanic(where string) {
	if v := recover(); v != nil {
		metrics.Panics.WithLabelValues(where).Inc()
		slog.Error("panic in tracing; the span is lost, the request goes on", "where", where, "panic", fmt.Sprint(v))
	}
}
