package metrics

import "github.com/prometheus/client_golang/prometheus"

// IstioLabels are the labels of Istio's standard request metrics, in the
// order the Istio* vectors take their values (filters/istiostats).
var IstioLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"request_protocol", "response_code", "response_flags", "connection_security_policy",
}

// EnvoyBuckets are Envoy's default histogram buckets, which Istio's stats
// filter records every one of its histograms with (durations in ms and
// sizes in bytes alike) unless the sidecar's bootstrap overrides them:
// Envoy's HistogramSettingsImpl::defaultBuckets.
var EnvoyBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Istio's standard request metrics, by the "istio_stats" filter.
var (
	IstioRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "istio_requests_total", Help: "Requests, as Istio's standard metric: by reporter, source and destination workload, protocol, response code and flags.",
	}, IstioLabels)
	IstioRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "istio_request_duration_milliseconds", Help: "Time from a request decoded to its end (response written, local reply, or failure), in milliseconds.",
		Buckets: EnvoyBuckets,
	}, IstioLabels)
	IstioRequestBytes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "istio_request_bytes", Help: "Size of request frames, in bytes.",
		Buckets: EnvoyBuckets,
	}, IstioLabels)
	IstioResponseBytes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "istio_response_bytes", Help: "Size of what the client was sent back (response or local reply), in bytes; 0 for none.",
		Buckets: EnvoyBuckets,
	}, IstioLabels)
	// IstioStatsOverflow counts what the filter did not record under its
	// own labels because a table of distinct values was full.
	IstioStatsOverflow = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_istio_stats_overflow_total", Help: "istio_stats label tables full: peers (recorded as unknown), services (unknown), series (the request is not recorded).",
	}, []string{"table"})
	// IstioPeerMetadata counts the peer identities an inbound proxy read.
	IstioPeerMetadata = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_istio_peer_metadata_total", Help: "Peer metadata of inbound requests, by result: read, absent, invalid (too long or malformed: source labels unknown).",
	}, []string{"result"})
)

func init() {
	Registry.MustRegister(IstioRequests, IstioRequestDuration, IstioRequestBytes, IstioResponseBytes, IstioStatsOverflow, IstioPeerMetadata)
}
