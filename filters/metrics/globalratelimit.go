package metrics

import "github.com/prometheus/client_golang/prometheus"

// GlobalRateLimit counts the requests the global_ratelimit filter checked,
// by what came of the check.
var GlobalRateLimit = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_global_ratelimit_total",
	Help: "Requests checked with the rate-limit service, by result: ok (let through), over_limit (refused, flag RL), error_allowed and error_denied (the call failed, timed out or was not made because too many were in flight; deny_on_fail let the request through or refused it).",
}, []string{"proxy", "result"})

func init() { Registry.MustRegister(GlobalRateLimit) }
