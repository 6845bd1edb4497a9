package metrics

import "github.com/prometheus/client_golang/prometheus"

// AccessLogDropped counts access log lines that were never written: the
// request went on, its line did not.
var AccessLogDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_access_log_dropped_total",
	Help: "Access log lines dropped, by reason: queue_full (the writer is behind: a slow disk, a stdout nobody reads), write_error (the write or the reopen of the file failed: a full disk, permissions).",
}, []string{"proxy", "reason"})

func init() { Registry.MustRegister(AccessLogDropped) }
