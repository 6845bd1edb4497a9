package cluster

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breeze-mesh/breeze/filters/metrics"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Result is the outcome of one attempt of a request at an endpoint, as
// outlier detection classifies it (Set.Report).
type Result uint8

const (
	// Success: a response that is not a protocol error (an application
	// exception is a success here: the provider works).
	Success Result = iota
	// StatusError: a response with a protocol error status that is not a
	// gateway error.
	StatusError
	// GatewayError: a response with a status the codec calls a gateway
	// error (codecs.GatewayErrors: Dubbo 31, 100).
	GatewayError
	// ConnectFailure: the connection to the endpoint failed to open.
	ConnectFailure
	// Reset: the connection closed before the response.
	Reset
	// Timeout: no response in time.
	Timeout
)

// Ejection reasons, as breeze_outlier_ejections_total labels them.
const (
	reasonErrors        = "consecutive_errors"
	reasonGatewayErrors = "consecutive_gateway_errors"
	reasonLocalOrigin   = "consecutive_local_origin_failures"
)

// OutlierDetection defaults: Envoy's.
const (
	defaultConsecutiveErrors = 5
	defaultInterval          = 10 * time.Second
	defaultBaseEjection      = 30 * time.Second
	defaultMaxEjection       = 300 * time.Second
	defaultMaxEjectedPercent = 10
)

// outlierState is an endpoint's outlier detection state, apart from the
// connect-failure backoff (Endpoint.Failed): a connection opening does
// not end an ejection for bad responses.
type outlierState struct {
	// Consecutive failures, by kind.
	errors, gateway, local atomic.Uint32
	// ejectedUntil is when the current or last ejection ends (unix nanos,
	// on the cluster's clock); 0 when never ejected.
	ejectedUntil atomic.Int64
	// multiplier is the ejections not yet decayed, as of ejectedUntil.
	// Under ejectMu.
	multiplier int64
}

// ejectMu serialises ejections, across clusters and their versions (which
// share endpoints): each decides on the ejected share of its set and on
// an endpoint's multiplier. Ejections are rare; a report that ejects
// nothing never takes it.
var ejectMu sync.Mutex

// detector is the outlier detection config of a cluster, or of a subset
// with one of its own, for the sets that report to it.
type detector struct {
	proxy, cluster string
	log            *slog.Logger
	// Thresholds; 0 disables one. split: local-origin failures are
	// counted apart (consecutive_local_origin_failures is set).
	errors, gateway, local uint32
	split                  bool
	interval, base, cap    time.Duration
	maxMultiplier          int64
	maxPercent             int
}

// newDetector makes the detector of od, nil when od is (no detection).
func newDetector(od *breezev1.OutlierDetection, proxy, cluster string, log *slog.Logger) *detector {
	if od == nil {
		return nil
	}
	d := &detector{
		proxy: proxy, cluster: cluster, log: log,
		errors:     defaultConsecutiveErrors,
		gateway:    od.GetConsecutiveGatewayErrors(),
		interval:   durationOr(od.GetInterval().AsDuration(), defaultInterval),
		base:       durationOr(od.GetBaseEjectionTime().AsDuration(), defaultBaseEjection),
		cap:        durationOr(od.GetMaxEjectionTime().AsDuration(), defaultMaxEjection),
		maxPercent: defaultMaxEjectedPercent,
	}
	if od.ConsecutiveErrors != nil {
		d.errors = od.GetConsecutiveErrors()
	}
	if od.ConsecutiveLocalOriginFailures != nil {
		d.split = true
		d.local = od.GetConsecutiveLocalOriginFailures()
	}
	if od.MaxEjectionPercent != nil {
		d.maxPercent = int(min(od.GetMaxEjectionPercent(), 100))
	}
	d.cap = max(d.cap, d.base)
	// The multiplier stops growing once base × multiplier reaches the
	// cap: beyond, an ejection would last no longer, but would take
	// longer to decay.
	d.maxMultiplier = int64((d.cap + d.base - 1) / d.base)
	return d
}

// Report tells outlier detection the outcome of an attempt at ep, an
// endpoint of s. Without detection (the cluster's or subset's
// outlier_detection unset) it does nothing. It is called for every
// attempt: a success writes only when a failure count is not zero.
func (s *Set) Report(ep *Endpoint, r Result) {
	d := s.detector
	if d == nil || ep == nil {
		return
	}
	o := &ep.outlier
	switch r {
	case Success:
		clear32(&o.errors)
		clear32(&o.gateway)
		clear32(&o.local)
	case StatusError, GatewayError:
		if d.split {
			// A response came: the connection worked.
			clear32(&o.local)
		}
		if r == GatewayError {
			d.count(s, ep, &o.gateway, d.gateway, reasonGatewayErrors)
		} else {
			clear32(&o.gateway)
		}
		// A gateway error is a server error too, as Envoy counts a 503
		// in both.
		d.count(s, ep, &o.errors, d.errors, reasonErrors)
	case ConnectFailure, Reset, Timeout:
		if d.split {
			d.count(s, ep, &o.local, d.local, reasonLocalOrigin)
			return
		}
		// Unsplit, a failure of local origin is a server error; a
		// timeout is a gateway error too (Envoy maps it to 504).
		if r == Timeout {
			d.count(s, ep, &o.gateway, d.gateway, reasonGatewayErrors)
		} else {
			clear32(&o.gateway)
		}
		d.count(s, ep, &o.errors, d.errors, reasonErrors)
	}
}

func clear32(c *atomic.Uint32) {
	if c.Load() != 0 {
		c.Store(0)
	}
}

// count adds a failure to c and ejects ep when the run reaches threshold
// (0: this kind is not counted). The run that reaches it starts over
// whatever the ejection decides, as in Envoy.
func (d *detector) count(s *Set, ep *Endpoint, c *atomic.Uint32, threshold uint32, reason string) {
	if threshold == 0 {
		return
	}
	n := c.Add(1)
	// Of concurrent reports, the one whose count is still there when it
	// resets the run ejects: one ejection per run, and none when a
	// success ended the run meanwhile.
	if n < threshold || !c.CompareAndSwap(n, 0) {
		return
	}
	d.eject(s, ep, reason)
}

// eject takes ep out of balancing for base × multiplier, unless it is
// ejected already or max_ejection_percent of s's endpoints are.
func (d *detector) eject(s *Set, ep *Endpoint, reason string) {
	now := s.now().UnixNano()
	o := &ep.outlier
	ejectMu.Lock()
	last := o.ejectedUntil.Load()
	if last > now {
		ejectMu.Unlock()
		return
	}
	ejected := 0
	for _, e := range s.endpoints {
		if e != ep && e.outlier.ejectedUntil.Load() > now {
			ejected++
		}
	}
	// One may always be ejected.
	if ejected > 0 && (ejected+1)*100 > d.maxPercent*len(s.endpoints) {
		ejectMu.Unlock()
		d.log.Debug("outlier detection would eject the endpoint, but max_ejection_percent are ejected already",
			"endpoint", ep.Addr, "reason", reason, "ejected", ejected)
		return
	}
	// The multiplier decays by one per interval spent healthy since the
	// last ejection ended: computed here rather than by a timer.
	m := o.multiplier
	if last > 0 {
		m = max(m-(now-last)/int64(d.interval), 0)
	}
	m = min(m+1, d.maxMultiplier)
	ejectedFor := min(d.base*time.Duration(m), d.cap)
	o.multiplier = m
	o.ejectedUntil.Store(now + int64(ejectedFor))
	ejectMu.Unlock()

	metrics.OutlierEjections.WithLabelValues(d.proxy, d.cluster, ep.Addr, reason).Inc()
	d.log.Warn("upstream endpoint ejected by outlier detection",
		"endpoint", ep.Addr, "reason", reason, "ejected_for", ejectedFor, "ejections", m)
}
