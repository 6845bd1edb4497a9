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

// UpstreamProbes counts heartbeats that probed an upstream connection
// silent for upstream.ProbeAfter before requests were written to it.
var UpstreamProbes = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_upstream_probes_total",
	Help: "Heartbeats sent to probe an upstream connection that had been silent, before the requests waiting for it were written (closes the idle-close race).",
}, []string{"proxy"})

func init() { Registry.MustRegister(UpstreamProbes) }
