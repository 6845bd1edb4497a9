package cluster

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/breeze-mesh/breeze/filters/metrics"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Retry budget defaults (RetryBudget): Envoy's.
const (
	defaultBudgetPercent = 20
	defaultMinRetries    = 3
)

// Breaker is the circuit breaker of a cluster, or of a subset with limits
// of its own: limits on the requests, waiting requests and retries in
// flight, and their live counts. Each version of a cluster has its own
// Breaker with that version's limits, but the counts are shared by every
// version (and per subset key): an xDS update neither forgets the
// requests in flight nor lets a burst through. A request ends on the
// Breaker it started on: hold it from Try to End.
//
// A nil *Breaker has no limits: every Try succeeds and End does nothing.
type Breaker struct {
	maxPending, maxRequests, maxRetries int64
	budgetPercent                       float64
	minRetries                          int64
	n                                   *breakerCounts
	overflows                           [limitCount]prometheus.Counter
}

// breakerCounts are what a breaker counts, shared across versions. Every
// count is kept even without a limit on it: a later version may set one.
type breakerCounts struct {
	requests, pending, retries atomic.Int64
}

// The limits, as breeze_circuit_breaker_overflows_total labels them.
const (
	limitRequests = iota
	limitPending
	limitRetries
	limitBudget
	limitCount
)

var limitNames = [limitCount]string{"max_requests", "max_pending_requests", "max_retries", "retry_budget"}

// newBreaker makes the breaker of cb (nil: no limits but the default
// retry budget) counting into n.
func newBreaker(cb *breezev1.CircuitBreakers, n *breakerCounts, proxy, cluster string) *Breaker {
	b := &Breaker{
		maxPending:    int64(cb.GetMaxPendingRequests()),
		maxRequests:   int64(cb.GetMaxRequests()),
		maxRetries:    int64(cb.GetMaxRetries()),
		budgetPercent: defaultBudgetPercent,
		minRetries:    defaultMinRetries,
		n:             n,
	}
	if rb := cb.GetRetryBudget(); rb != nil {
		if rb.BudgetPercent != nil {
			b.budgetPercent = min(max(rb.GetBudgetPercent(), 0), 100)
		}
		if rb.MinRetryConcurrency != nil {
			b.minRetries = int64(rb.GetMinRetryConcurrency())
		}
	}
	for i, name := range limitNames {
		b.overflows[i] = metrics.CircuitBreakerOverflows.WithLabelValues(proxy, cluster, name)
	}
	return b
}

// acquire adds one to c unless that would pass limit (0: none).
func acquire(c *atomic.Int64, limit int64) bool {
	if limit <= 0 {
		c.Add(1)
		return true
	}
	// A compare-and-swap rather than add-then-undo: concurrent attempts
	// at the limit never refuse one another spuriously.
	for {
		n := c.Load()
		if n >= limit {
			return false
		}
		if c.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (b *Breaker) refuse(limit int) bool {
	b.overflows[limit].Inc()
	return false
}

// TryRequest counts a request in flight to the cluster (or subset), or
// refuses it when max_requests are already in flight. A request counted
// ends with EndRequest.
func (b *Breaker) TryRequest() bool {
	if b == nil {
		return true
	}
	return acquire(&b.n.requests, b.maxRequests) || b.refuse(limitRequests)
}

// EndRequest ends a request TryRequest counted.
func (b *Breaker) EndRequest() {
	if b != nil {
		b.n.requests.Add(-1)
	}
}

// TryPending counts a request waiting for an upstream connection to open,
// or refuses it when max_pending_requests already wait. The upstream
// layer calls it, and EndPending once the wait is over.
func (b *Breaker) TryPending() bool {
	if b == nil {
		return true
	}
	return acquire(&b.n.pending, b.maxPending) || b.refuse(limitPending)
}

// EndPending ends the wait of n requests TryPending counted.
func (b *Breaker) EndPending(n int) {
	if b != nil && n != 0 {
		b.n.pending.Add(int64(-n))
	}
}

// TryRetry counts a retry in flight, or refuses it: retries in flight may
// not reach max_retries (when set), nor the retry budget, a share of the
// requests in flight (at least min_retry_concurrency). A retry counted
// ends with EndRetry.
func (b *Breaker) TryRetry() bool {
	if b == nil {
		return true
	}
	for {
		n := b.n.retries.Load()
		if b.maxRetries > 0 && n >= b.maxRetries {
			return b.refuse(limitRetries)
		}
		if n >= b.retryBudget() {
			return b.refuse(limitBudget)
		}
		if b.n.retries.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// retryBudget is how many retries may be in flight now.
func (b *Breaker) retryBudget() int64 {
	// Rounded down, as Envoy does; the multiplication first keeps whole
	// percentages exact (20% of 15 is 3, not 2.9999...).
	share := int64(float64(b.n.requests.Load()) * b.budgetPercent / 100)
	return max(share, b.minRetries)
}

// EndRetry ends a retry TryRetry counted.
func (b *Breaker) EndRetry() {
	if b != nil {
		b.n.retries.Add(-1)
	}
}

// Counts are the requests, waiting requests and retries in flight (for
// tests and debugging).
func (b *Breaker) Counts() (requests, pending, retries int64) {
	if b == nil {
		return 0, 0, 0
	}
	return b.n.requests.Load(), b.n.pending.Load(), b.n.retries.Load()
}

// connsPerHost is how many connections a pool opens to one endpoint:
// connections_per_endpoint (at least one), capped by max_connections.
func connsPerHost(c *breezev1.Cluster) int {
	n := max(c.GetConnectionsPerEndpoint(), 1)
	if m := c.GetCircuitBreakers().GetMaxConnections(); m > 0 {
		n = min(n, m)
	}
	return int(n)
}
