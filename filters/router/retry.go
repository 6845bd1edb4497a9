package router

import (
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/retry"
)

// retryState is a call's retry bookkeeping. Its fields change only in
// whoever holds the call at the time (the goroutine that dispatches it, or
// the upstream goroutine reporting its attempt's outcome): attempts of one
// request never overlap.
type retryState struct {
	// policy is the request's retry policy; nil: none, a oneway, or
	// num_retries 0.
	policy *retry.Policy
	// deadline is when the route's timeout ends: per-try timeouts and
	// backoffs never run past it.
	deadline time.Time
	retries  int
	// exhausted: a failure qualified for a retry after num_retries were
	// used up; the answer carries URX.
	exhausted bool
	// parked: the request waits for its backoff timer; Withdraw takes it
	// by clearing this first, and the timer then does nothing.
	parked atomic.Bool
}

// applyRetryPolicy takes the route's retry policy (or the proxy's) for a
// two-way request: the frame gets a copy of its own, which a retry sends
// again once the downstream read buffer has moved on (without a policy,
// no copy is made), and the first attempt gets the per-try timeout. The
// caller holds encMu.
func (rt *Router) applyRetryPolicy(c *Call) {
	p := c.route.Retry
	if p == nil {
		p = rt.defaultRetry
	}
	if p == nil || p.NumRetries == 0 {
		return
	}
	c.policy = p
	c.s.Request.Frame = append([]byte(nil), c.s.Request.Frame...)
	c.deadline = time.Now().Add(c.up.Timeout)
	if p.PerTryTimeout > 0 && p.PerTryTimeout < c.up.Timeout {
		c.up.Timeout = p.PerTryTimeout
	}
}

// retryLater schedules another attempt of a request whose attempt failed
// for reason why, if its policy retries that, retries are left, the
// route's timeout leaves time and the cluster's retry budget allows one.
// It runs where the failure is reported (an upstream goroutine, or the
// dispatching one holding encMu) and does not block: the attempt starts
// after a jittered backoff on a timer. False: the caller answers the
// request with the failure.
func (rt *Router) retryLater(c *Call, why retry.On) bool {
	p := c.policy
	if !p.Retries(why) {
		return false
	}
	count := func(result string) {
		metrics.Retries.WithLabelValues(rt.name, c.target.Cluster, why.String(), result).Inc()
	}
	if c.retries >= p.NumRetries {
		c.exhausted = true
		count("exhausted")
		return false
	}
	left := time.Until(c.deadline)
	if left <= 0 {
		count("deadline")
		return false
	}
	if !c.retrying {
		// One retry slot per request, held until it ends: the budget
		// bounds requests that are retrying, however often each does.
		if !c.breaker.TryRetry() {
			count("budget_exceeded")
			return false
		}
		c.retrying = true
	}
	c.retries++
	count("attempted")
	wait := time.Duration(rand.Int64N(int64(p.Backoff(c.retries)) + 1))
	c.parked.Store(true)
	time.AfterFunc(min(wait, left), func() { rt.resumeRetry(c) })
	return true
}

// resumeRetry starts the attempt a backoff timer was waiting for, unless
// the request was withdrawn meanwhile (its client went away). It runs on
// the timer's goroutine, where a panic would end Envoy's process: one is
// recovered, counted, and the request answered with an internal error.
func (rt *Router) resumeRetry(c *Call) {
	if !c.parked.CompareAndSwap(true, false) {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			metrics.Panics.WithLabelValues("retry").Inc()
			rt.log.Error("panic in a retry; answering the request with an internal error",
				"proxy", rt.name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			c.s.ReplyAndFinish(codecs.ErrInternal, "breeze: internal error retrying the request", filter.InternalError, false)
		}
	}()
	c.encMu.Lock()
	defer c.encMu.Unlock()
	if c.s.Done() {
		return
	}
	left := time.Until(c.deadline)
	if left <= 0 {
		c.s.ReplyAndFinish(codecs.ErrTimeout,
			fmt.Sprintf("breeze: cluster %q did not answer within the route's timeout (%d attempts)", c.target.Cluster, c.s.Attempts),
			filter.UpstreamRequestTimeout, true)
		return
	}
	c.up.Timeout = left
	if t := c.policy.PerTryTimeout; t > 0 && t < left {
		c.up.Timeout = t
	}
	rt.dispatch(c, &c.s.Request)
}

// exhaustedFlag is URX when the request's retries were used up.
func (c *Call) exhaustedFlag() filter.Flag {
	if c.exhausted {
		return filter.UpstreamRetryLimitExceeded
	}
	return 0
}
