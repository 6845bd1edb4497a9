package metrics

import "github.com/prometheus/client_golang/prometheus"

// Authz counts the requests the authz filter decided, by result and by
// the policy that decided it.
var Authz = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_authz_total",
	Help: "Requests checked by the authz filter, by result (allowed, denied: answered with the protocol's error reply, flag UAEX) and policy: the DENY or ALLOW policy that matched, or none (allowed: there is no ALLOW policy; denied: no ALLOW policy matched).",
}, []string{"proxy", "result", "policy"})

func init() { Registry.MustRegister(Authz) }
