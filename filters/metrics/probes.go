package metrics

import "github.com/prometheus/client_golang/prometheus"

// UpstreamProbes counts heartbeats that probed an upstream connection
// silent for upstream.ProbeAfter before requests were written to it.
var UpstreamProbes = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_upstream_probes_total",
	Help: "Heartbeats sent to probe an upstream connection that had been silent, before the requests waiting for it were written (closes the idle-close race).",
}, []string{"proxy"})

func init() { Registry.MustRegister(UpstreamProbes) }
