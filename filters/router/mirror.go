package router

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/route"
	"github.com/breeze-mesh/breeze/filters/upstream"
)

// ShadowKey is the key every shadow carries, with value "true": a Dubbo
// attachment, a THeader or TTHeader header (Envoy appends "-shadow" to an
// HTTP shadow's host for the same reason). The mirror's provider can tell
// a copy from a real call, and decline to act on it. Frames with nowhere
// to carry it (Thrift framed or unframed) go unmarked.
const ShadowKey = "x-breeze-shadow"

// shadow is one mirrored copy of a request, from the moment its route's
// mirror policy draws it until the upstream layer reports its outcome. It
// owns its message (a copy of the frame and the mutations) and its
// upstream state; nothing of the request's stream is reachable from it,
// so the filter chain never sees it and the primary never waits for it.
type shadow struct {
	up  upstream.Request
	msg codecs.Message
	// marked: msg.Mutations end with ShadowKey.
	marked bool
	cl     *clusterEntry
	set    *cluster.Set
	// breaker counts the shadow against the mirror's max_requests and
	// max_pending_requests; nil when it is the primary's own breaker.
	breaker *cluster.Breaker
	hashKey string
	stats   *mirrorStats
	next    *shadow
	// ended: the outcome was counted and the breaker released (a handler
	// that panicked is called again with Internal).
	ended atomic.Bool
	// watcher sees the shadow (tracing: a client span of its own), nil
	// for an untraced request; end is its span's end while one is open.
	watcher filter.ShadowWatcher
	end     func(filter.AttemptEnd)
}

// startSpan and endSpan tell the request's watcher, if any, about the
// shadow's send to ep and its outcome.
func (sh *shadow) startSpan(ep *cluster.Endpoint) {
	if sh.watcher != nil {
		sh.end = sh.watcher.StartShadow(&sh.msg, sh.cl.Name, ep.Addr)
	}
}

func (sh *shadow) endSpan(end filter.AttemptEnd) {
	if f := sh.end; f != nil {
		sh.end = nil
		f(end)
	}
}

// mirrorStats are breeze_mirror_total's counters of one mirror cluster.
type mirrorStats struct {
	sent, answered, timeout, reset, connectFailure, internal prometheus.Counter
	overflow, noUpstream, encodeError                        prometheus.Counter
}

// stats returns the counters of a mirror cluster, made on its first
// shadow (a cluster that is never mirrored to shows none).
func (rt *Router) mirrorStats(e *clusterEntry) *mirrorStats {
	if s := e.mirrorStats.Load(); s != nil {
		return s
	}
	c := func(result string) prometheus.Counter {
		return metrics.Mirrors.WithLabelValues(rt.name, e.Name, result)
	}
	s := &mirrorStats{
		sent: c("sent"), answered: c("answered"), timeout: c("timeout"), reset: c("reset"),
		connectFailure: c("connect_failure"), internal: c("internal"),
		overflow: c("dropped_overflow"), noUpstream: c("no_healthy_upstream"), encodeError: c("encode_error"),
	}
	if e.mirrorStats.CompareAndSwap(nil, s) {
		return s
	}
	return e.mirrorStats.Load()
}

// drawShadows draws, for each mirror policy of the request's route,
// whether this request is mirrored, and copies it for each that says so,
// admitted by the mirror's circuit breaker. It runs before the primary is
// dispatched, while the request's frame is still as the client sent it
// (encoding may patch a frame in place); sendShadows sends the copies
// after the primary. Requests not mirrored cost no copy. The caller holds
// encMu.
func (rt *Router) drawShadows(c *Call) *shadow {
	var first *shadow
	for i := range c.route.Mirrors {
		m := &c.route.Mirrors[i]
		if !m.Sample() {
			continue
		}
		if sh := rt.newShadow(c, m); sh != nil {
			sh.next, first = first, sh
		}
	}
	return first
}

func (rt *Router) newShadow(c *Call, m *route.Mirror) *shadow {
	e := c.snap.clusters[m.Cluster]
	if e == nil || e.removed.Load() {
		metrics.Mirrors.WithLabelValues(rt.name, m.Cluster, "no_healthy_upstream").Inc()
		return nil
	}
	stats := rt.mirrorStats(e)
	set := e.Set(m.Subset)
	if set == nil || set.Len() == 0 {
		stats.noUpstream.Inc()
		return nil
	}
	// A mirror sharing the primary's breaker (the same cluster, with no
	// subset limits of its own: Aeraki's samples mirror v1 to v2 of one
	// host) would take the primary's max_requests; there the shadow is
	// bounded by max_requests_per_endpoint of the mirror's endpoints
	// alone. Any other mirror's own limits count it.
	b := set.Breaker()
	if p := c.cl.Set(c.target.Subset); p != nil && p.Breaker() == b {
		b = nil
	}
	if !b.TryRequest() {
		stats.overflow.Inc()
		return nil
	}
	sh := &shadow{cl: e, set: set, breaker: b, stats: stats, hashKey: set.HashKey}
	if sh.hashKey == "" {
		sh.hashKey = c.route.HashKey
	}
	sh.up.Handler = sh
	sh.watcher, _ = c.s.AttemptWatcher.(filter.ShadowWatcher)
	sh.up.Oneway = c.up.Oneway
	sh.up.Timeout = c.up.Timeout // the route's, before any per-try timeout
	sh.msg = c.s.Request
	sh.msg.Frame = append([]byte(nil), c.s.Request.Frame...)
	muts := c.s.Request.Mutations
	sh.msg.Mutations = append(make(codecs.Metadata, 0, len(muts)+1), muts...)
	sh.msg.Mutations.Set(ShadowKey, "true")
	sh.marked = true
	// sh.msg.Metadata still shares the request's: it is read only while
	// sendShadows runs, within the same OnRequest (the upstream layer
	// copies what it keeps).
	return sh
}

// sendShadows balances each shadow onto an endpoint of its mirror and
// hands it to the upstream layer, whose outcome only counts: a shadow is
// never retried nor re-balanced once sent, and its reply is dropped. The
// caller holds encMu, as for the primary.
func (rt *Router) sendShadows(first *shadow, enc codecs.Codec, flavor string) {
	for sh := first; sh != nil; {
		next := sh.next
		sh.next = nil
		rt.sendShadow(sh, enc, flavor)
		sh = next
	}
}

func (rt *Router) sendShadow(sh *shadow, enc codecs.Codec, flavor string) {
	var hv string
	var hasHash bool
	if sh.hashKey != "" {
		hv, hasHash = sh.msg.Metadata.Get(sh.hashKey)
	}
	// A connection found closing, or an endpoint just removed, took
	// nothing: another endpoint, a few times, as for any request.
	for range maxRebalances + 1 {
		ep := sh.set.Pick(hv, hasHash)
		if ep == nil {
			break
		}
		if ep.Inflight() >= sh.cl.MaxRequests {
			sh.stats.overflow.Inc()
			sh.release()
			return
		}
		sh.startSpan(ep)
		t := upstream.Target{Endpoint: ep, Cluster: sh.cl.Cluster, Metrics: sh.cl.metrics, Flavor: flavor, Breaker: sh.breaker}
		queued, err := rt.up.Send(t, &sh.up, &sh.msg, enc)
		if err != nil && sh.marked && !errors.Is(err, upstream.ErrUnavailable) && !errors.Is(err, upstream.ErrOverflow) {
			// The codec cannot carry the mark on this frame
			// (headerless_mutations: reject): the shadow goes unmarked.
			sh.marked = false
			sh.msg.Mutations = sh.msg.Mutations[:len(sh.msg.Mutations)-1]
			queued, err = rt.up.Send(t, &sh.up, &sh.msg, enc)
		}
		switch {
		case err == nil:
			sh.stats.sent.Inc()
			if sh.up.Oneway && !queued && sh.release() { // written: no handler call follows
				sh.endSpan(filter.AttemptEnd{Sent: true})
			}
			return
		case errors.Is(err, upstream.ErrUnavailable):
			sh.endSpan(filter.AttemptEnd{Failure: "connect_failure", Flag: filter.UpstreamConnectionFailure})
			continue
		case errors.Is(err, upstream.ErrOverflow):
			sh.stats.overflow.Inc()
			sh.endSpan(filter.AttemptEnd{Failure: "overflow", Flag: filter.UpstreamOverflow})
		default:
			sh.stats.encodeError.Inc()
			sh.endSpan(filter.AttemptEnd{Failure: "encode_error", Flag: filter.InternalError})
		}
		sh.release()
		return
	}
	sh.stats.noUpstream.Inc()
	sh.release()
}

// release ends the shadow's count on its breaker, once.
func (sh *shadow) release() bool {
	if !sh.ended.CompareAndSwap(false, true) {
		return false
	}
	sh.breaker.EndRequest()
	return true
}

// OnResponse implements upstream.Handler: the reply is dropped; it feeds
// the mirror's outlier detection as any response does.
func (sh *shadow) OnResponse(r *upstream.Request, m *codecs.Message, codec codecs.Codec) {
	if !sh.release() {
		return
	}
	sh.set.Report(r.Endpoint, responseResult(m, codec))
	sh.stats.answered.Inc()
	sh.endSpan(filter.AttemptEnd{Response: m})
}

// OnFailure implements upstream.Handler: counted, and reported to the
// mirror's outlier detection; nothing else happens (a shadow that never
// left, NotSent, is not sent elsewhere: that would take the downstream
// connection's lock from an upstream goroutine).
func (sh *shadow) OnFailure(r *upstream.Request, f upstream.Failure) {
	if !sh.release() {
		return
	}
	switch f {
	case upstream.Timeout:
		sh.set.Report(r.Endpoint, cluster.Timeout)
		sh.stats.timeout.Inc()
		sh.endSpan(filter.AttemptEnd{Failure: "timeout", Flag: filter.UpstreamRequestTimeout})
	case upstream.Closed, upstream.GoneAway:
		sh.set.Report(r.Endpoint, cluster.Reset)
		sh.stats.reset.Inc()
		sh.endSpan(filter.AttemptEnd{Failure: "reset", Flag: filter.UpstreamConnectionTermination})
	case upstream.NotSent:
		sh.set.Report(r.Endpoint, cluster.ConnectFailure)
		sh.stats.connectFailure.Inc()
		sh.endSpan(filter.AttemptEnd{Failure: "connect_failure", Flag: filter.UpstreamConnectionFailure})
	default:
		sh.stats.internal.Inc()
		sh.endSpan(filter.AttemptEnd{Failure: "internal", Flag: filter.InternalError})
	}
}

// OnSent implements upstream.Handler: a oneway shadow that waited for its
// connection was written.
func (sh *shadow) OnSent(*upstream.Request) {
	if sh.release() {
		sh.endSpan(filter.AttemptEnd{Sent: true})
	}
}

// responseResult is what a response tells outlier detection.
func responseResult(m *codecs.Message, codec codecs.Codec) cluster.Result {
	switch m.Status {
	case codecs.StatusOK, codecs.StatusAppError:
		return cluster.Success
	}
	if g, ok := codec.(codecs.GatewayErrors); ok && g.IsGatewayError(m.Code) {
		return cluster.GatewayError
	}
	return cluster.StatusError
}
