// Package metrics defines every Prometheus metric of Breeze's data plane,
// once, for the layers that count into them (connection manager, router,
// upstream); the standalone runner serves Registry on /metrics.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Registry holds every Breeze metric of the process. The standalone runner
// serves it on /metrics; inside Envoy, where the Go API offers no stats
// sink, an admin listener of the plugin's own can serve it.
var Registry = prometheus.NewRegistry()

var (
	DownstreamConnections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_downstream_connections_total", Help: "Downstream connections accepted.",
	}, []string{"proxy"})
	DownstreamActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "breeze_downstream_connections_active", Help: "Downstream connections open.",
	}, []string{"proxy"})
	DownstreamClosed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_downstream_closes_total", Help: "Downstream connections closed by the proxy, by reason.",
	}, []string{"proxy", "reason"})
	Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_requests_total", Help: "Requests routed to a cluster.",
	}, []string{"proxy", "cluster", "type"})
	Responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_responses_total", Help: "Upstream responses relayed, by status.",
	}, []string{"proxy", "cluster", "status"})
	Latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "breeze_request_duration_seconds", Help: "Time from request sent upstream to response relayed.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
	}, []string{"proxy", "cluster"})
	LocalReplies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_local_replies_total", Help: "Error replies the proxy built itself, by reason.",
	}, []string{"proxy", "reason"})
	ProtocolErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_protocol_errors_total", Help: "Frames rejected by the codec; the connection is closed.",
	}, []string{"proxy", "side", "reason"})
	Heartbeats = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_heartbeats_total", Help: "Heartbeats answered locally.",
	}, []string{"proxy", "side"})
	UpstreamEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_upstream_connection_events_total", Help: "Upstream connection events: connect, connect_failure, close, goaway.",
	}, []string{"proxy", "cluster", "event"})
	Dropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_dropped_total", Help: "Messages dropped, by reason: late_response, oneway_<why> (a oneway that could not be sent; never also a local reply), unexpected_<type>.",
	}, []string{"proxy", "reason"})
	Panics = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_panics_total", Help: "Panics recovered; the connection concerned failed: its requests in flight were answered with an internal error and it was closed.",
	}, []string{"where"})
	ConfigErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "breeze_config_errors_total", Help: "Proxy configurations rejected; their connections are refused.",
	})
	GoSocketFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_upstream_go_socket_failures_total", Help: "Upstream connections of upstream_connect GO_LOOPBACK the proxy failed itself, by reason: not_loopback (an address outside 127.0.0.0/8 and ::1: refused, never dialed), write_queue_full (the app stopped reading: closed).",
	}, []string{"proxy", "reason"})
)

func init() {
	Registry.MustRegister(DownstreamConnections, DownstreamActive, DownstreamClosed, Requests, Responses,
		Latency, LocalReplies, ProtocolErrors, Heartbeats, UpstreamEvents, Dropped, Panics, ConfigErrors,
		GoSocketFailures)
}

// Cluster holds one cluster's children, resolved once at config time
// so that the request path does no label lookups.
type Cluster struct {
	Requests, Oneways                   prometheus.Counter
	OK, AppError, ErrStatus             prometheus.Counter
	Latency                             prometheus.Observer
	Connect, ConnectFail, Close, GoAway prometheus.Counter
}

// NewCluster resolves the children of one cluster of one proxy.
func NewCluster(proxy, cluster string) *Cluster {
	return &Cluster{
		Requests:    Requests.WithLabelValues(proxy, cluster, "request"),
		Oneways:     Requests.WithLabelValues(proxy, cluster, "oneway"),
		OK:          Responses.WithLabelValues(proxy, cluster, "ok"),
		AppError:    Responses.WithLabelValues(proxy, cluster, "app_error"),
		ErrStatus:   Responses.WithLabelValues(proxy, cluster, "error"),
		Latency:     Latency.WithLabelValues(proxy, cluster),
		Connect:     UpstreamEvents.WithLabelValues(proxy, cluster, "connect"),
		ConnectFail: UpstreamEvents.WithLabelValues(proxy, cluster, "connect_failure"),
		Close:       UpstreamEvents.WithLabelValues(proxy, cluster, "close"),
		GoAway:      UpstreamEvents.WithLabelValues(proxy, cluster, "goaway"),
	}
}

// XDSUpdates counts resource versions from xDS.
// ClusterMissing counts requests routed to a cluster the proxy does not
// have: not (yet) received over xDS, removed, or still warming.
var ClusterMissing = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_cluster_missing_total", Help: "Requests routed to a cluster the proxy does not have (not received over xDS, removed, or warming); answered \"no healthy upstream\".",
}, []string{"proxy", "cluster"})

var XDSUpdates = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_xds_updates_total", Help: "Resource versions from xDS applied (accepted) or refused (rejected, NACKed), by type (routes, endpoints).",
}, []string{"proxy", "type", "result"})

func init() { Registry.MustRegister(XDSUpdates, ClusterMissing) }

// CircuitBreakerOverflows counts requests and retries a cluster's (or
// subset's) circuit breaker refused, by the limit that refused them.
var CircuitBreakerOverflows = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_circuit_breaker_overflows_total", Help: "Requests or retries refused by a cluster's circuit breaker, by limit: max_requests, max_pending_requests (answered overloaded, flag UO), max_retries, retry_budget (the retry is not made).",
}, []string{"proxy", "cluster", "limit"})

// OutlierEjections counts endpoints ejected by outlier detection.
var OutlierEjections = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_outlier_ejections_total", Help: "Endpoints ejected by outlier detection, by reason: consecutive_errors, consecutive_gateway_errors, consecutive_local_origin_failures.",
}, []string{"proxy", "cluster", "endpoint", "reason"})

func init() { Registry.MustRegister(CircuitBreakerOverflows, OutlierEjections) }

// MetricsAddressConflicts counts proxy configs naming a metrics address
// other than the one the process already serves metrics on.
var MetricsAddressConflicts = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "breeze_metrics_address_conflicts_total", Help: "Proxy configs whose metrics.address differs from the address the process already serves metrics on (the first named wins; their metrics are served there).",
})

// MetricsServerErrors counts failures of the plugin's metrics server.
var MetricsServerErrors = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "breeze_metrics_server_errors_total", Help: "Failures to listen on, or serve, metrics.address; traffic is served all the same.",
})

func init() { Registry.MustRegister(MetricsAddressConflicts, MetricsServerErrors) }
