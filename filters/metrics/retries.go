package metrics

import "github.com/prometheus/client_golang/prometheus"

// Retries counts what retry policies did, per cluster: a retry attempted,
// or one that a failure qualified for and did not get, and why.
var Retries = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_retries_total",
	Help: "Retries by the condition that triggered them (connect-failure, reset, goaway, retriable-status-codes, timeout) and result: " +
		"attempted; budget_exceeded (the cluster's retry budget or max_retries refused it); exhausted (num_retries used up); deadline (the route's timeout leaves no time).",
}, []string{"proxy", "cluster", "reason", "result"})

func init() { Registry.MustRegister(Retries) }
