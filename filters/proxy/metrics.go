package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Registry holds every Breeze metric of the process. The standalone runner
// serves it on /metrics; inside Envoy, where the Go API offers no stats
// sink, an admin listener of the plugin's own can serve it.
var Registry = prometheus.NewRegistry()

var (
	downstreamConnections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_downstream_connections_total", Help: "Downstream connections accepted.",
	}, []string{"proxy"})
	downstreamActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "breeze_downstream_connections_active", Help: "Downstream connections open.",
	}, []string{"proxy"})
	downstreamClosed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_downstream_closes_total", Help: "Downstream connections closed by the proxy, by reason.",
	}, []string{"proxy", "reason"})
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_requests_total", Help: "Requests routed to a cluster.",
	}, []string{"proxy", "cluster", "type"})
	responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_responses_total", Help: "Upstream responses relayed, by status.",
	}, []string{"proxy", "cluster", "status"})
	latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "breeze_request_duration_seconds", Help: "Time from request sent upstream to response relayed.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
	}, []string{"proxy", "cluster"})
	localReplies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_local_replies_total", Help: "Error replies the proxy built itself, by reason.",
	}, []string{"proxy", "reason"})
	protocolErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_protocol_errors_total", Help: "Frames rejected by the codec; the connection is closed.",
	}, []string{"proxy", "side", "reason"})
	heartbeats = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_heartbeats_total", Help: "Heartbeats answered locally.",
	}, []string{"proxy", "side"})
	upstreamEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_upstream_connection_events_total", Help: "Upstream connection events: connect, connect_failure, close, goaway.",
	}, []string{"proxy", "cluster", "event"})
	dropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_dropped_total", Help: "Messages dropped, by reason (late_response, oneway_unsent, unexpected).",
	}, []string{"proxy", "reason"})
	panics = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_panics_total", Help: "Panics recovered; the connection concerned was closed.",
	}, []string{"where"})
	configErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "breeze_config_errors_total", Help: "Proxy configurations rejected; their connections are refused.",
	})
)

func init() {
	Registry.MustRegister(downstreamConnections, downstreamActive, downstreamClosed, requests, responses,
		latency, localReplies, protocolErrors, heartbeats, upstreamEvents, dropped, panics, configErrors)
}

// clusterMetrics are one cluster's children, resolved once at config time
// so that the request path does no label lookups.
type clusterMetrics struct {
	requests, oneways                   prometheus.Counter
	ok, appError, errStatus             prometheus.Counter
	latency                             prometheus.Observer
	connect, connectFail, close, goaway prometheus.Counter
}

func newClusterMetrics(proxy, cluster string) *clusterMetrics {
	return &clusterMetrics{
		requests:    requests.WithLabelValues(proxy, cluster, "request"),
		oneways:     requests.WithLabelValues(proxy, cluster, "oneway"),
		ok:          responses.WithLabelValues(proxy, cluster, "ok"),
		appError:    responses.WithLabelValues(proxy, cluster, "app_error"),
		errStatus:   responses.WithLabelValues(proxy, cluster, "error"),
		latency:     latency.WithLabelValues(proxy, cluster),
		connect:     upstreamEvents.WithLabelValues(proxy, cluster, "connect"),
		connectFail: upstreamEvents.WithLabelValues(proxy, cluster, "connect_failure"),
		close:       upstreamEvents.WithLabelValues(proxy, cluster, "close"),
		goaway:      upstreamEvents.WithLabelValues(proxy, cluster, "goaway"),
	}
}
