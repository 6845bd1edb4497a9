package proxy

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/breeze-mesh/breeze/filters/metrics"
)

// Envoy's Go network filter has no stats API, so the plugin serves the
// process's Prometheus registry itself, on the address ProxyConfig.metrics
// names. Envoy parses a config per listener and again for every update,
// and builds a filter per connection: the server belongs to the process,
// not to a config. The first address named wins; a config naming another
// is served all the same (metrics must never cost traffic), and the
// conflict is logged once per address and counted. Nothing stops the
// server: Envoy never frees a config, and a new version naming the same
// address finds it running.

// metricsServer is the process's metrics endpoint.
type metricsServer struct {
	mu sync.Mutex
	// configured is the address the first config named ("" before).
	configured string
	// bound is the address listened on, "" while listening failed.
	bound string
	srv   *http.Server
	// starts counts successful listens (tests: one server per process).
	starts int
	// conflicts are the other addresses configs named, each logged once.
	conflicts map[string]bool
	// failedAt is when listening on configured last failed: a later
	// config naming it tries again, at most once per retryAfter.
	failedAt time.Time
	// now is the clock of retries (nil: time.Now); tests set it.
	now func() time.Time
}

// procMetrics is the process's one metrics server. Tests replace it.
var procMetrics = &metricsServer{}

func (m *metricsServer) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

// retryAfter spaces attempts to listen on an address that failed (taken
// by the app, say): each listener update would otherwise retry.
const retryAfter = 10 * time.Second

// maxConflictsLogged bounds the conflicting addresses remembered; beyond
// it conflicts are still counted, and logged no more.
const maxConflictsLogged = 64

// ensure serves the registry on addr, unless the process already serves
// it (on addr, or on the address an earlier config named).
func (m *metricsServer) ensure(addr string, log *slog.Logger) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.configured == "":
		m.configured = addr
	case m.configured != addr:
		metrics.MetricsAddressConflicts.Inc()
		if !m.conflicts[addr] && len(m.conflicts) < maxConflictsLogged {
			if m.conflicts == nil {
				m.conflicts = map[string]bool{}
			}
			m.conflicts[addr] = true
			log.Warn("metrics.address differs from the address the process already serves metrics on; this proxy's metrics are served there (one server per process)",
				"address", addr, "serving_on", m.configured)
		}
		return
	case m.bound != "" || !m.failedAt.IsZero() && m.clock().Sub(m.failedAt) < retryAfter:
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		m.failedAt = m.clock()
		metrics.MetricsServerErrors.Inc()
		log.Error("cannot serve metrics; traffic is served all the same, and the next config naming this address tries again", "address", addr, "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	m.bound = ln.Addr().String()
	m.starts++
	srv := m.srv
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			metrics.MetricsServerErrors.Inc()
			log.Error("metrics server stopped", "address", addr, "err", err)
		}
	}()
	log.Info("serving metrics", "address", m.bound, "path", "/metrics")
}

// addr is the address the server listens on, "" when it does not.
func (m *metricsServer) addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bound
}

// close stops the server (tests; Envoy never does).
func (m *metricsServer) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv != nil {
		m.srv.Close()
	}
}

// MetricsAddress is the address the process serves its metrics on
// (ProxyConfig.metrics), "" when none: for the standalone runner and
// tests, which may have asked for port 0.
func MetricsAddress() string { return procMetrics.addr() }
