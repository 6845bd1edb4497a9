package dubbogo

import (
	"os"

	"dubbo.apache.org/dubbo-go/v3/common/constant"
	"dubbo.apache.org/dubbo-go/v3/config"
	// dubbo-go's OpenTelemetry filters (otelClientTrace, otelServerTrace)
	// and its OTLP exporters.
	_ "dubbo.apache.org/dubbo-go/v3/filter/otel/trace"
	_ "dubbo.apache.org/dubbo-go/v3/otel/trace/otlp"
)

// otelConfig turns on dubbo-go's own OpenTelemetry tracing, as an
// application would: spans exported over OTLP/gRPC to addr, W3C trace
// context, every call sampled (sampleMode "always"), or none of them
// ("never": the context still travels, with its sampled flag off).
//
// dubbo-go makes its gRPC exporter with an endpoint only, which is TLS.
// The exporter it links (otlptracegrpc v1.10.0) takes plaintext only from
// the scheme of OTEL_EXPORTER_OTLP_ENDPOINT (it has no _INSECURE
// variable yet): set to http://addr in this process only (a provider or
// consumer command), for the tests' plaintext collector.
func otelConfig(addr, sampleMode string) *config.OtelConfig {
	os.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	enable := true
	return &config.OtelConfig{TraceConfig: &config.OtelTraceConfig{
		Enable: &enable, Exporter: "otlp-grpc", Endpoint: addr, Propagator: "w3c", SampleMode: sampleMode,
	}}
}

// Filter names of dubbo-go's OpenTelemetry filters.
const (
	otelServerFilter = constant.OTELServerTraceKey
	otelClientFilter = constant.OTELClientTraceKey
)
