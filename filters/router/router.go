// Package router is the terminal L7 filter: it matches a request to a
// route (before the other filters run, so they see it), picks a weighted
// target, balances onto an endpoint of the target's cluster or subset
// within its circuit breakers, and hands the request to the upstream layer
// with the route's timeout. A request whose upstream connection never
// opened is re-balanced to another endpoint; other failures are retried as
// the route's retry policy says (retry.go), and every attempt's outcome
// feeds the cluster's outlier detection. A route's mirror policies send
// shadow copies of a share of its requests elsewhere (mirror.go). The
// route table and clusters are immutable snapshots swapped under live
// connections; clusters come from the proxy config or, at run time, from
// xDS (SetCluster, RemoveCluster). A route naming a cluster the
// router does not have gets the protocol's "no healthy upstream" reply.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/retry"
	"github.com/breeze-mesh/breeze/filters/route"
	"github.com/breeze-mesh/breeze/filters/upstream"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// maxRebalances bounds how often a request that never reached an
// upstream (its connection failed to open) is balanced again at once,
// without a retry policy: nothing was sent, so nothing can run twice.
const maxRebalances = 3

// DefaultTimeout is the per-request timeout of routes that set none when
// the proxy sets no request_timeout either.
const DefaultTimeout = 5 * time.Second

// Router is the terminal filter of one proxy config.
type Router struct {
	filter.Base
	name           string
	log            *slog.Logger
	defaultTimeout time.Duration
	up             *upstream.Manager
	lookup         func(ctx context.Context, network, host string) ([]netip.Addr, error)
	clock          func() time.Time
	// defaultRetry is the proxy's retry_policy, for routes without one.
	defaultRetry *retry.Policy
	snap         atomic.Pointer[snapshot]
	// mu serialises changes of the snapshot (routes and clusters arrive
	// on different goroutines).
	mu sync.Mutex
}

// snapshot is the immutable routing state; an update swaps it whole.
type snapshot struct {
	routes   *route.Table
	clusters map[string]*clusterEntry
}

type clusterEntry struct {
	*cluster.Cluster
	metrics *metrics.Cluster
	// removed: RemoveCluster took it out. A request that picked it from
	// an older snapshot is routed again by the current table (which no
	// longer names it, unless the server removed it).
	removed atomic.Bool
	// mirrorStats: breeze_mirror_total of the cluster as a mirror (mirror.go).
	mirrorStats atomic.Pointer[mirrorStats]
}

// Options configure a Router.
type Options struct {
	Proxy          string
	Log            *slog.Logger
	DefaultTimeout time.Duration
	Upstream       *upstream.Manager
	// Lookup resolves STRICT_DNS clusters' host names (nil: the system's).
	Lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// Clock is the clusters' clock (outlier ejections, balancing); nil:
	// time.Now. Tests advance it by hand.
	Clock func() time.Time
}

// New compiles a proxy config's routes and clusters. Endpoints leaving a
// cluster (static, DNS, EDS) retire their upstream pools.
func New(cfg *breezev1.ProxyConfig, opts Options) (*Router, error) {
	rt := &Router{name: opts.Proxy, log: opts.Log, defaultTimeout: opts.DefaultTimeout, up: opts.Upstream, lookup: opts.Lookup, clock: opts.Clock}
	if rt.log == nil {
		rt.log = slog.Default()
	}
	if rt.defaultTimeout <= 0 {
		rt.defaultTimeout = DefaultTimeout
	}
	table, err := route.Compile(cfg.GetRouteConfig())
	if err != nil {
		return nil, fmt.Errorf("route_config: %w", err)
	}
	if rt.defaultRetry, err = retry.Compile(cfg.GetRetryPolicy()); err != nil {
		return nil, fmt.Errorf("retry_policy: %w", err)
	}
	subsets := subsetsOf(table)
	snap := &snapshot{routes: table, clusters: map[string]*clusterEntry{}}
	for _, c := range cfg.GetClusters() {
		cl, err := cluster.New(c, cluster.Options{
			Subsets:  subsets[c.GetName()],
			Log:      rt.log,
			OnRemove: rt.up.Retire,
			Lookup:   opts.Lookup,
			Proxy:    rt.name,
			Clock:    rt.clock,
		})
		if err != nil {
			snap.close()
			return nil, err
		}
		snap.clusters[c.GetName()] = &clusterEntry{Cluster: cl, metrics: metrics.NewCluster(rt.name, c.GetName())}
	}
	// Routes may name clusters the config does not define: they arrive
	// over xDS (config.Validate allows that only with an xds source).
	rt.snap.Store(snap)
	return rt, nil
}

func (rt *Router) now() time.Time {
	if rt.clock != nil {
		return rt.clock()
	}
	return time.Now()
}

// subsetsOf lists, per cluster, the subsets a table's routes target or
// mirror to, so that every one gets a prebuilt balancer.
func subsetsOf(table *route.Table) map[string]map[string]map[string]string {
	subsets := map[string]map[string]map[string]string{}
	add := func(cluster, subset string, labels map[string]string) {
		if subsets[cluster] == nil {
			subsets[cluster] = map[string]map[string]string{}
		}
		if subset != "" {
			subsets[cluster][subset] = labels
		}
	}
	for _, r := range table.Routes {
		for _, t := range r.Targets {
			add(t.Cluster, t.Subset, t.SubsetLabels)
		}
		for _, m := range r.Mirrors {
			add(m.Cluster, m.Subset, m.SubsetLabels)
		}
	}
	return subsets
}

// UpdateRoutes swaps in a new route table (from xDS). Requests in flight
// keep the route they matched; new requests see the new table. On error
// the current table stays.
func (rt *Router) UpdateRoutes(rc *breezev1.RouteConfiguration) error {
	table, err := route.Compile(rc)
	if err != nil {
		return err
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	old := rt.snap.Load()
	// Subset balancers first, so the new table never meets a missing one.
	// A cluster not here yet gets them when it arrives (SetCluster).
	for name, s := range subsetsOf(table) {
		if c := old.clusters[name]; c != nil {
			c.AddSubsets(s)
		}
	}
	rt.snap.Store(&snapshot{routes: table, clusters: old.clusters})
	return nil
}

// SetCluster adds a cluster, or replaces the one of that name (a new
// version from xDS): endpoints the new version keeps keep their state and
// upstream connections; the others drain. eds, when not nil, are the
// endpoints an EDS cluster starts with (otherwise it keeps the previous
// version's, or has none). New requests see the new version at once;
// requests in flight finish on the one they started with.
func (rt *Router) SetCluster(c *breezev1.Cluster, eds []cluster.Spec) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	old := rt.snap.Load()
	prev := old.clusters[c.GetName()]
	opts := cluster.Options{
		Subsets:  subsetsOf(old.routes)[c.GetName()],
		Log:      rt.log,
		OnRemove: rt.up.Retire,
		Lookup:   rt.lookup,
		Proxy:    rt.name,
		Clock:    rt.clock,
	}
	if prev != nil {
		opts.Previous = prev.Cluster
	}
	cl, err := cluster.New(c, opts)
	if err != nil {
		return err
	}
	if eds != nil && c.GetType() == breezev1.Cluster_EDS {
		cl.Update(eds)
	}
	entry := &clusterEntry{Cluster: cl}
	if prev != nil {
		entry.metrics = prev.metrics
	} else {
		entry.metrics = metrics.NewCluster(rt.name, c.GetName())
	}
	clusters := maps.Clone(old.clusters)
	clusters[c.GetName()] = entry
	rt.snap.Store(&snapshot{routes: old.routes, clusters: clusters})
	if prev != nil {
		if gone := prev.Handover(cl); len(gone) > 0 {
			rt.up.Retire(gone)
		}
	}
	return nil
}

// RemoveCluster removes a cluster: new requests to it get "no healthy
// upstream"; its upstream connections close once the requests they carry
// are answered.
func (rt *Router) RemoveCluster(name string) {
	rt.mu.Lock()
	old := rt.snap.Load()
	prev := old.clusters[name]
	if prev == nil {
		rt.mu.Unlock()
		return
	}
	clusters := maps.Clone(old.clusters)
	delete(clusters, name)
	prev.removed.Store(true)
	rt.snap.Store(&snapshot{routes: old.routes, clusters: clusters})
	rt.mu.Unlock()
	// Emptying it retires its endpoints' pools (drained, not cut), and a
	// request in flight that is re-balanced finds no endpoint.
	prev.Shutdown()
}

// Cluster returns a cluster of the current configuration (for endpoint
// updates from EDS), or nil.
func (rt *Router) Cluster(name string) *cluster.Cluster {
	if c := rt.snap.Load().clusters[name]; c != nil {
		return c.Cluster
	}
	return nil
}

func (s *snapshot) close() {
	for _, c := range s.clusters {
		c.Close()
	}
}

// Sleep pauses the clusters' background work (DNS) while the proxy has no
// connection; Wake resumes it.
func (rt *Router) Sleep() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, c := range rt.snap.Load().clusters {
		c.Pause()
	}
}

// Wake resumes what Sleep paused.
func (rt *Router) Wake() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, c := range rt.snap.Load().clusters {
		c.Resume()
	}
}

// ClusterNames lists the clusters the current route table names, as
// targets or mirrors.
func (rt *Router) ClusterNames() map[string]bool {
	names := map[string]bool{}
	for _, r := range rt.snap.Load().routes.Routes {
		for _, t := range r.Targets {
			names[t.Cluster] = true
		}
		for _, m := range r.Mirrors {
			names[m.Cluster] = true
		}
	}
	return names
}

// Close stops the clusters' background work (DNS).
func (rt *Router) Close() {
	if s := rt.snap.Load(); s != nil {
		s.close()
	}
}

// Call is the router's state of one request. The proxy allocates it with
// the stream, and sets it with Stream.SetTerminal before Match.
type Call struct {
	rt     *Router
	s      *filter.Stream
	route  *route.Route
	snap   *snapshot
	target *route.Target
	cl     *clusterEntry
	up     upstream.Request
	// enc is the downstream connection's codec, encMu what guards it.
	enc    codecs.Codec
	encMu  *sync.Mutex
	flavor string
	// rerouted: the request was routed again because its cluster was
	// removed under it (once).
	rerouted bool

	// set is what the last attempt was balanced on: its breaker counts
	// the request, its outlier detector hears each attempt's outcome.
	set *cluster.Set
	// breaker counts the request as active (max_requests) once admitted,
	// and one retry in flight (retrying) from its first retry, until
	// OnDone.
	breaker          *cluster.Breaker
	active, retrying bool
	rebalances       int
	tried            [4]*cluster.Endpoint
	ntried           int
	retryState       // retry.go
}

// Init ties a call to its stream and the connection's codec.
func (c *Call) Init(s *filter.Stream, enc codecs.Codec, encMu *sync.Mutex) {
	c.s, c.enc, c.encMu = s, enc, encMu
	c.up.Handler = c
	if f, ok := enc.(codecs.Flavored); ok {
		c.flavor = f.Flavor()
	}
	s.SetTerminal(c)
}

// Match resolves the stream's route, so that every filter sees it.
func (rt *Router) Match(s *filter.Stream) {
	c := s.Terminal().(*Call)
	c.rt = rt
	c.snap = rt.snap.Load()
	c.route = c.snap.routes.Match(s.Request.Metadata)
	if c.route != nil {
		s.Route = c.route
	}
}

// OnRequest sends the request upstream (or answers it): the router always
// ends the walk.
func (rt *Router) OnRequest(s *filter.Stream) filter.Status {
	c := s.Terminal().(*Call)
	if !rt.pickCluster(c) {
		return filter.Stop
	}
	c.up.Oneway = s.Request.Type == codecs.Oneway
	c.up.Timeout = c.route.Timeout
	if c.up.Timeout <= 0 {
		c.up.Timeout = rt.defaultTimeout
	}
	var shadows *shadow
	if len(c.route.Mirrors) > 0 {
		shadows = rt.drawShadows(c) // mirror.go
	}
	if !c.up.Oneway {
		rt.applyRetryPolicy(c)
	}
	enc, flavor := c.enc, c.flavor
	rt.dispatch(c, &s.Request)
	// After the primary, which never waits for them; the stream may be
	// finished by now: shadows need nothing of it.
	if shadows != nil {
		rt.sendShadows(shadows, enc, flavor)
	}
	return filter.Stop
}

// OnDone implements filter.Filter: the request leaves the breaker's counts
// if its answer did not already take it out (a stream finished without
// an answer: a oneway, a client gone).
func (rt *Router) OnDone(s *filter.Stream) {
	if c, ok := s.Terminal().(*Call); ok {
		c.Answering()
	}
}

// Answering implements filter.Answering: an answered request leaves the
// breaker's counts before the client can see its answer.
func (c *Call) Answering() {
	if c.active {
		c.breaker.EndRequest()
		c.active = false
	}
	if c.retrying {
		c.breaker.EndRetry()
		c.retrying = false
	}
}

// pickCluster picks the request's target of its route and the cluster of
// the call's snapshot, or answers it when it has no route or the cluster
// is missing. The caller holds encMu.
func (rt *Router) pickCluster(c *Call) bool {
	if c.route == nil {
		svc, method := codecs.Describe(c.enc, c.s.Request.Metadata)
		c.s.ReplyAndFinish(codecs.ErrNoRoute, fmt.Sprintf("breeze: no route matches for service %q method %q", svc, method), filter.NoRoute, true)
		return false
	}
	c.target = c.route.PickTarget()
	c.cl = c.snap.clusters[c.target.Cluster]
	c.s.Cluster = c.target.Cluster
	if c.cl == nil {
		metrics.ClusterMissing.WithLabelValues(rt.name, c.target.Cluster).Inc()
		c.s.ReplyAndFinish(codecs.ErrNoHealthyUpstream,
			fmt.Sprintf("breeze: cluster %q has not arrived (over xDS) or is still warming", c.target.Cluster), filter.NoHealthyUpstream, true)
		return false
	}
	return true
}

// reroute routes a request again by the current table, after the cluster
// it picked was removed (a new table dropped it while the request was
// between the two): what the new table would have done with it.
func (rt *Router) reroute(c *Call) bool {
	c.rerouted = true
	c.snap = rt.snap.Load()
	c.route = c.snap.routes.Match(c.s.Request.Metadata)
	if c.route != nil {
		c.s.Route = c.route
	}
	c.ntried = 0 // another cluster's endpoints
	return rt.pickCluster(c)
}

// dispatch balances the request onto an endpoint it has not tried yet
// (where the set has one) and sends it. The caller holds encMu.
func (rt *Router) dispatch(c *Call, m *codecs.Message) {
	s := c.s
	set := c.cl.Set(c.target.Subset)
	// Read after the set: RemoveCluster marks a cluster removed before it
	// empties it, so an emptied set is always seen as removed here.
	if c.cl.removed.Load() && !c.rerouted {
		if !rt.reroute(c) {
			return
		}
		set = c.cl.Set(c.target.Subset)
	}
	if set == nil || set.Len() == 0 {
		s.ReplyAndFinish(codecs.ErrNoHealthyUpstream,
			fmt.Sprintf("cluster %q%s has no endpoints", c.target.Cluster, subsetDesc(c.target)), filter.NoHealthyUpstream, true)
		return
	}
	c.set = set
	if !c.active {
		b := set.Breaker()
		if !b.TryRequest() {
			s.ReplyAndFinish(codecs.ErrOverloaded,
				fmt.Sprintf("cluster %q%s is at its max_requests", c.target.Cluster, subsetDesc(c.target)), filter.UpstreamOverflow, true)
			return
		}
		c.breaker, c.active = b, true
	}
	hashKey := c.route.HashKey
	if hashKey == "" {
		hashKey = set.HashKey
	}
	var hv string
	var hasHash bool
	if hashKey != "" {
		hv, hasHash = m.Metadata.Get(hashKey)
	}
	ep := set.Pick(hv, hasHash)
	// Another endpoint than those already tried, where the set has one;
	// a few draws, since balancers pick with randomness or in turns.
	for i := 0; i < 3 && c.triedOn(ep) && set.Len() > c.ntried; i++ {
		ep = set.Pick(hv, hasHash)
	}
	if c.triedOn(ep) && set.Len() > c.ntried {
		// The balancer keeps returning tried ones (a hash, few healthy
		// endpoints): take the first healthy untried one.
		now := rt.now().UnixNano()
		for _, e := range set.Endpoints() {
			if !c.triedOn(e) && e.Healthy(now) {
				ep = e
				break
			}
		}
	}
	if ep.Inflight() >= c.cl.MaxRequests {
		s.ReplyAndFinish(codecs.ErrOverloaded,
			fmt.Sprintf("endpoint %s of cluster %q has %d requests in flight", ep.Addr, c.target.Cluster, ep.Inflight()), filter.UpstreamOverflow, true)
		return
	}
	if c.up.Oneway {
		c.cl.metrics.Oneways.Inc()
	} else if s.Attempts == 0 {
		c.cl.metrics.Requests.Inc()
	}
	s.Attempts++
	c.markTried(ep)
	s.Upstream, s.UpstreamLabels = ep.Addr, ep.Labels
	s.UpstreamStart = time.Now()
	if w := s.AttemptWatcher; w != nil {
		w.StartAttempt(s, m)
	}
	// Read before Send: once a two-way request is sent, its response may
	// finish the stream on an upstream goroutine, and the proxy recycle it.
	oneway := c.up.Oneway
	queued, err := rt.up.Send(upstream.Target{Endpoint: ep, Cluster: c.cl.Cluster, Metrics: c.cl.metrics, Flavor: c.flavor, Breaker: set.Breaker()}, &c.up, m, c.enc)
	switch {
	case err == nil:
		if oneway && !queued {
			c.endAttempt(filter.AttemptEnd{Sent: true})
			s.Finish(filter.Outcome{Sent: true})
		}
	case errors.Is(err, upstream.ErrUnavailable):
		c.endAttempt(filter.AttemptEnd{Failure: "connect_failure", Flag: filter.UpstreamConnectionFailure})
		rt.rebalance(c, m, ep)
	case errors.Is(err, upstream.ErrOverflow):
		c.endAttempt(filter.AttemptEnd{Failure: "overflow", Flag: filter.UpstreamOverflow})
		s.ReplyAndFinish(codecs.ErrOverloaded,
			fmt.Sprintf("cluster %q%s has its max_pending_requests waiting for upstream connections", c.target.Cluster, subsetDesc(c.target)), filter.UpstreamOverflow, true)
	default:
		c.endAttempt(filter.AttemptEnd{Failure: "encode_error", Flag: filter.InternalError})
		s.ReplyAndFinish(codecs.ErrBadRequest, "breeze: cannot encode request: "+err.Error(), filter.InternalError, true)
	}
}

// endAttempt tells the stream's attempt watcher (tracing) how the
// attempt in flight ended.
func (c *Call) endAttempt(end filter.AttemptEnd) {
	if w := c.s.AttemptWatcher; w != nil {
		w.EndAttempt(c.s, end)
	}
}

func (c *Call) triedOn(ep *cluster.Endpoint) bool {
	for _, t := range c.tried[:min(c.ntried, len(c.tried))] {
		if t == ep {
			return true
		}
	}
	return false
}

func (c *Call) markTried(ep *cluster.Endpoint) {
	if c.triedOn(ep) {
		return
	}
	if c.ntried < len(c.tried) {
		c.tried[c.ntried] = ep
	}
	c.ntried++
}

// rebalance sends a request that never reached its upstream to another
// endpoint at once (nothing was sent: it cannot run twice), a few times;
// then it is the retry policy's (connect-failure), or answered. The
// caller holds encMu.
func (rt *Router) rebalance(c *Call, m *codecs.Message, failed *cluster.Endpoint) {
	if c.rebalances < maxRebalances && m != nil {
		c.rebalances++
		rt.dispatch(c, m)
		return
	}
	if rt.retryLater(c, retry.ConnectFailure) {
		return
	}
	c.s.ReplyAndFinish(codecs.ErrNoHealthyUpstream,
		fmt.Sprintf("breeze: no upstream of cluster %q reachable (last tried %s)", c.target.Cluster, failed.Addr),
		filter.UpstreamConnectionFailure|filter.UpstreamRetryLimitExceeded, true)
}

// redispatch is rebalance on an upstream goroutine. It holds the
// downstream codec (released by a defer, so that a panic leaves the
// connection usable) before it touches the stream, which its connection
// may have ended meanwhile (the client gone, a recovered panic): then it
// does nothing.
func (rt *Router) redispatch(c *Call, m *codecs.Message, failed *cluster.Endpoint) {
	c.encMu.Lock()
	defer c.encMu.Unlock()
	if c.s.Done() {
		return
	}
	rt.rebalance(c, m, failed)
}

// Abort withdraws a request waiting for its upstream whose client went
// away, and finishes it (DC). False: the request is not waiting upstream,
// and whoever holds it finishes it.
func (rt *Router) Abort(s *filter.Stream) bool {
	if !rt.Withdraw(s) {
		return false
	}
	s.Finish(filter.ClientGone)
	return true
}

// Withdraw takes a request waiting for its upstream (or for the backoff
// before a retry) out of the upstream layer, whose handler will then not
// be called, and reports whether it was waiting there. The caller
// finishes the stream.
func (rt *Router) Withdraw(s *filter.Stream) bool {
	c, ok := s.Terminal().(*Call)
	if !ok {
		return false
	}
	return c.parked.CompareAndSwap(true, false) || rt.up.Cancel(&c.up)
}

// OnResponse implements upstream.Handler: relay the response, or retry
// it when it carries a status the retry policy lists.
func (c *Call) OnResponse(r *upstream.Request, m *codecs.Message, codec codecs.Codec) {
	cm := c.cl.metrics
	result := cluster.Success
	switch m.Status {
	case codecs.StatusOK:
		cm.OK.Inc()
	case codecs.StatusAppError:
		cm.AppError.Inc()
	default:
		cm.ErrStatus.Inc()
		result = cluster.StatusError
		if g, ok := codec.(codecs.GatewayErrors); ok && g.IsGatewayError(m.Code) {
			result = cluster.GatewayError
		}
	}
	cm.Latency.Observe(time.Since(c.s.UpstreamStart).Seconds())
	c.endAttempt(filter.AttemptEnd{Response: m})
	c.set.Report(r.Endpoint, result)
	if result != cluster.Success && c.policy.RetriesStatus(m.Code) && c.rt.retryLater(c, retry.Status) {
		return // the response is dropped; the retry answers
	}
	c.s.Respond(m, codec)
}

// OnFailure implements upstream.Handler.
func (c *Call) OnFailure(r *upstream.Request, f upstream.Failure) {
	switch f {
	case upstream.Timeout:
		c.endAttempt(filter.AttemptEnd{Failure: "timeout", Flag: filter.UpstreamRequestTimeout})
		c.set.Report(r.Endpoint, cluster.Timeout)
		if c.rt.retryLater(c, retry.Timeout) {
			return
		}
		c.s.ReplyAndFinish(codecs.ErrTimeout,
			fmt.Sprintf("breeze: upstream %s of cluster %q did not answer within %v", r.Endpoint.Addr, c.target.Cluster, r.Timeout),
			filter.UpstreamRequestTimeout|c.exhaustedFlag(), false)
	case upstream.Closed, upstream.GoneAway:
		if f == upstream.GoneAway {
			c.endAttempt(filter.AttemptEnd{Failure: "goaway", Flag: filter.UpstreamConnectionTermination})
		} else {
			c.endAttempt(filter.AttemptEnd{Failure: "reset", Flag: filter.UpstreamConnectionTermination})
		}
		c.set.Report(r.Endpoint, cluster.Reset)
		on := retry.Reset
		if f == upstream.GoneAway && c.policy.Retries(retry.GoAway) {
			on = retry.GoAway
		}
		if c.rt.retryLater(c, on) {
			return
		}
		c.s.ReplyAndFinish(codecs.ErrNoHealthyUpstream,
			fmt.Sprintf("breeze: upstream %s of cluster %q closed the connection before answering", r.Endpoint.Addr, c.cl.Name),
			filter.UpstreamConnectionTermination|c.exhaustedFlag(), false)
	case upstream.Internal:
		c.endAttempt(filter.AttemptEnd{Failure: "internal", Flag: filter.InternalError})
		c.s.ReplyAndFinish(codecs.ErrInternal,
			fmt.Sprintf("breeze: internal error on the connection to upstream %s of cluster %q", r.Endpoint.Addr, c.cl.Name),
			filter.InternalError, false)
	case upstream.NotSent:
		c.endAttempt(filter.AttemptEnd{Failure: "connect_failure", Flag: filter.UpstreamConnectionFailure})
		c.set.Report(r.Endpoint, cluster.ConnectFailure)
		c.rt.redispatch(c, r.Message(), r.Endpoint)
	}
}

// OnSent implements upstream.Handler: a oneway that waited was written.
func (c *Call) OnSent(*upstream.Request) {
	c.endAttempt(filter.AttemptEnd{Sent: true})
	c.s.Finish(filter.Outcome{Sent: true})
}

func subsetDesc(t *route.Target) string {
	if t.Subset == "" {
		return ""
	}
	return " subset {" + t.Subset + "}"
}
