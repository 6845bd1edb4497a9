package registry

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the series of the registries a Source follows, labelled by
// Registry.Name:
//
//	breeze_registry_stale{registry}         1 while the registry cannot be reached and its last known set is served
//	breeze_registry_instances{registry}     provider instances in the last set (all protocols, disabled ones included)
//	breeze_registry_updates_total{registry} sets published (the first, each change, each stale/fresh turn)
type Metrics struct {
	stale, instances *prometheus.GaugeVec
	updates          *prometheus.CounterVec
}

// NewMetrics makes the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		stale: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "breeze_registry_stale",
			Help: "1 while the registry cannot be reached and the last set of providers it was seen to hold is served, else 0."}, []string{"registry"}),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "breeze_registry_instances",
			Help: "Provider instances in the registry's last published set."}, []string{"registry"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breeze_registry_updates_total",
			Help: "Sets of providers the registry published: the first, then one per change and per stale/fresh turn."}, []string{"registry"}),
	}
	reg.MustRegister(m.stale, m.instances, m.updates)
	return m
}

// Observe records one Update of the registry named name (Source does;
// so does whatever else follows a Registry, kubesync.Sync).
func (m *Metrics) Observe(name string, u Update) {
	if m == nil {
		return
	}
	stale := 0.0
	if u.Stale {
		stale = 1
	}
	m.stale.WithLabelValues(name).Set(stale)
	m.instances.WithLabelValues(name).Set(float64(len(u.Instances)))
	m.updates.WithLabelValues(name).Inc()
}
