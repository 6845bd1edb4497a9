package metrics

import "github.com/prometheus/client_golang/prometheus"

// Mirrors counts shadow copies of requests (route request_mirror_policies)
// by mirror cluster and result. A shadow is counted once when it is sent
// or dropped, and once more with its outcome when it was sent.
var Mirrors = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_mirror_total",
	Help: "Shadow copies of requests, by mirror cluster and result: sent (handed to an upstream connection), then answered, timeout, reset, " +
		"connect_failure or internal (its reply is dropped either way; oneways have none); not sent: dropped_overflow (the mirror's circuit " +
		"breaker or max_requests_per_endpoint), no_healthy_upstream (the mirror cluster is missing or has no endpoints), encode_error.",
}, []string{"proxy", "cluster", "result"})

func init() { Registry.MustRegister(Mirrors) }
