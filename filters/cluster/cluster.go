// Package cluster holds a cluster's endpoints, its subsets and the request
// level load balancers that pick an endpoint for each request.
//
// The endpoint set of a cluster is an immutable snapshot swapped atomically
// (DNS refreshes, later xDS): a pick never takes a lock. Per-endpoint live
// state (requests in flight, health) lives in *Endpoint and survives
// snapshot swaps, so a refresh that keeps an address keeps its state.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breeze-mesh/breeze/filters/metrics"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Endpoint is one upstream address with its labels and live state.
type Endpoint struct {
	// Addr is a literal ip:port: Envoy dials only those.
	Addr   string
	Labels map[string]string
	Weight uint32
	// alsoLabels are the labels of the other specs of the same address: a
	// Dubbo provider registered under two versions of one interface is two
	// registry endpoints at one address. It is one endpoint here (the
	// whole cluster weights it once), in the subsets of every label set.
	alsoLabels []map[string]string

	inflight       atomic.Int64
	unhealthyUntil atomic.Int64 // unix nanos
	failures       atomic.Int32
	outlier        outlierState
}

// Inflight is the number of requests sent and not yet answered.
func (e *Endpoint) Inflight() int64 { return e.inflight.Load() }

// Begin and End count a request in flight (least-request balancing and the
// per-endpoint request limit read it).
func (e *Endpoint) Begin() int64 { return e.inflight.Add(1) }
func (e *Endpoint) End()         { e.inflight.Add(-1) }

// Healthy reports whether the endpoint is in no ejection period: neither
// after a connect failure or its announced shutdown, nor by outlier
// detection.
func (e *Endpoint) Healthy(now int64) bool {
	return e.unhealthyUntil.Load() <= now && e.outlier.ejectedUntil.Load() <= now
}

// Failed ejects the endpoint for a period that doubles with consecutive
// failures (100ms up to 30s): a dead provider stops receiving new requests
// at once, and is probed again soon after. It returns that period, and
// whether this failure began the streak: of the failures of one outage,
// however many connections report them at once, exactly one is the first,
// the one worth a log line.
func (e *Endpoint) Failed() (ejectedFor time.Duration, first bool) {
	n := e.failures.Add(1)
	backoff := 100 * time.Millisecond << min(n-1, 9)
	backoff = min(backoff, 30*time.Second)
	e.unhealthyUntil.Store(time.Now().Add(backoff).UnixNano())
	return backoff, n == 1
}

// Draining ejects the endpoint for d after it announced its shutdown
// (Dubbo READONLY): unlike a failure, it is known to be leaving.
func (e *Endpoint) Draining(d time.Duration) {
	e.unhealthyUntil.Store(time.Now().Add(d).UnixNano())
}

// Succeeded clears the failure streak. It returns how many failures the
// streak had, once: 0 when there was none, or when a success reported at
// the same time already ended it.
func (e *Endpoint) Succeeded() (failures int) {
	if e.failures.Load() == 0 {
		return 0 // the common case costs no write
	}
	n := e.failures.Swap(0)
	if n != 0 {
		e.unhealthyUntil.Store(0)
	}
	return int(n)
}

// Cluster is a named group of endpoints with a load-balancing policy.
type Cluster struct {
	Name         string
	Policy       breezev1.Cluster_LbPolicy
	HashKey      string
	ConnsPerHost int
	MaxRequests  int64

	state  atomic.Pointer[state]
	log    *slog.Logger
	now    func() time.Time
	stop   context.CancelFunc // guarded by mu
	dns    *resolver          // STRICT_DNS clusters
	mu     sync.Mutex         // serialises endpoint updates
	closed bool
	byAddr map[string]*Endpoint
	// subsetKeys are the subsets routes ask for; every update rebuilds their balancers.
	subsetKeys map[string]map[string]string
	// defaults are the balancing, limits and outlier detection of the
	// whole cluster, and of subsets without their own.
	defaults subsetPolicy
	// subsetPolicies are the subsets the config gives a policy of their
	// own, by subset key.
	subsetPolicies map[string]subsetPolicy
	// counts are the circuit breakers' counts, the cluster's and each
	// subset key's: the next version counts on.
	counts       *breakerCounts
	subsetCounts map[string]*breakerCounts
	onRemove     func([]*Endpoint)
}

type subsetPolicy struct {
	policy   breezev1.Cluster_LbPolicy
	hashKey  string
	breaker  *Breaker
	detector *detector
}

// Options are what New needs besides the cluster's config.
type Options struct {
	// Subsets are the label sets routes target (canonical key → labels),
	// so that their balancers are prebuilt.
	Subsets map[string]map[string]string
	Log     *slog.Logger
	// OnRemove is told which endpoints left the cluster after an update
	// took effect, whatever made it (static config, a DNS refresh, EDS):
	// gone from the new set, or replaced because their labels or weight
	// changed. The upstream layer retires their connections. It runs on
	// the updating goroutine with no lock of the cluster held.
	OnRemove func(removed []*Endpoint)
	// Lookup resolves STRICT_DNS host names; nil means the system resolver.
	Lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// Previous is the version of this cluster the new one replaces (a
	// policy change over xDS): endpoints the new one keeps are the same
	// *Endpoint, with their live state and upstream pools, and only those
	// it drops go to OnRemove. An EDS cluster starts with Previous's
	// endpoints; a STRICT_DNS cluster too, and New does not wait for its
	// first resolution (without Previous it does). Previous must not be
	// updated afterwards; Close it. Circuit breakers keep counting the
	// requests in flight of Previous.
	Previous *Cluster
	// Proxy names the proxy in metrics.
	Proxy string
	// Clock is what picks and outlier detection read the time from (nil:
	// time.Now), so that tests can move it.
	Clock func() time.Time
}

type state struct {
	all     *Set
	subsets map[string]*Set
}

// New builds a cluster from its config. STRICT_DNS clusters resolve in the
// background until Close.
func New(c *breezev1.Cluster, opts Options) (*Cluster, error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	cl := &Cluster{
		Name:         c.GetName(),
		Policy:       c.GetLbPolicy(),
		HashKey:      c.GetHashKey(),
		ConnsPerHost: connsPerHost(c),
		MaxRequests:  int64(c.GetMaxRequestsPerEndpoint()),
		log:          log.With("cluster", c.GetName()),
		now:          opts.Clock,
		byAddr:       map[string]*Endpoint{},
		subsetKeys:   maps.Clone(opts.Subsets),
		onRemove:     opts.OnRemove,
		stop:         func() {},
		counts:       &breakerCounts{},
		subsetCounts: map[string]*breakerCounts{},
	}
	if cl.now == nil {
		cl.now = time.Now
	}
	if prev := opts.Previous; prev != nil && prev.counts != nil {
		// Set once by New: no lock needed to read them.
		cl.counts = prev.counts
		maps.Copy(cl.subsetCounts, prev.subsetCounts)
	}
	cl.defaults = subsetPolicy{
		policy:   cl.Policy,
		hashKey:  cl.HashKey,
		breaker:  newBreaker(c.GetCircuitBreakers(), cl.counts, opts.Proxy, cl.Name),
		detector: newDetector(c.GetOutlierDetection(), opts.Proxy, cl.Name, cl.log),
	}
	for _, sub := range c.GetSubsets() {
		key := SubsetKey(sub.GetLabels())
		sp := cl.defaults
		if sub.LbPolicy != nil {
			sp.policy = sub.GetLbPolicy()
		}
		if sub.GetHashKey() != "" {
			sp.hashKey = sub.GetHashKey()
		}
		if cb := sub.GetCircuitBreakers(); cb != nil {
			n := cl.subsetCounts[key]
			if n == nil {
				n = &breakerCounts{}
				cl.subsetCounts[key] = n
			}
			sp.breaker = newBreaker(cb, n, opts.Proxy, cl.Name)
		}
		if od := sub.GetOutlierDetection(); od != nil {
			sp.detector = newDetector(od, opts.Proxy, cl.Name, cl.log.With("subset", sub.GetName()))
		}
		if cl.subsetPolicies == nil {
			cl.subsetPolicies = map[string]subsetPolicy{}
		}
		cl.subsetPolicies[key] = sp
	}
	if prev := opts.Previous; prev != nil {
		prev.mu.Lock()
		cl.byAddr = maps.Clone(prev.byAddr)
		for k, labels := range prev.subsetKeys {
			if _, ok := cl.subsetKeys[k]; !ok {
				if cl.subsetKeys == nil {
					cl.subsetKeys = map[string]map[string]string{}
				}
				cl.subsetKeys[k] = labels
			}
		}
		prev.mu.Unlock()
	}
	if cl.MaxRequests == 0 {
		cl.MaxRequests = 10000
	}
	switch c.GetType() {
	case breezev1.Cluster_STATIC:
		var eps []Spec
		for i, e := range c.GetEndpoints() {
			ip, err := netip.ParseAddr(e.GetAddress())
			if err != nil {
				return nil, fmt.Errorf("cluster %q endpoints[%d].address %q: not a literal IP (use type STRICT_DNS for host names)", cl.Name, i, e.GetAddress())
			}
			if e.GetPort() == 0 || e.GetPort() > 65535 {
				return nil, fmt.Errorf("cluster %q endpoints[%d].port %d: out of range", cl.Name, i, e.GetPort())
			}
			eps = append(eps, Spec{Addr: netip.AddrPortFrom(ip, uint16(e.GetPort())).String(), Labels: e.GetLabels(), Weight: e.GetWeight()})
		}
		cl.Update(eps)
	case breezev1.Cluster_STRICT_DNS:
		lookup := opts.Lookup
		if lookup == nil {
			lookup = net.DefaultResolver.LookupNetIP
		}
		cl.dns = &resolver{cluster: cl, endpoints: c.GetEndpoints(), every: durationOr(c.GetDnsRefreshRate().AsDuration(), 5*time.Second), lookup: lookup}
		ctx, cancel := context.WithCancel(context.Background())
		cl.stop = cancel
		if opts.Previous != nil {
			// A new version serves the previous version's addresses
			// until its first resolution, in the background: replacing
			// a cluster does not wait for DNS.
			cl.Update(opts.Previous.Specs())
			go cl.dns.resolveThenRun(ctx)
		} else {
			cl.Update(nil)
			cl.dns.resolveOnce(ctx)
			go cl.dns.run(ctx)
		}
	case breezev1.Cluster_EDS:
		// Until xDS delivers endpoints: none, or the previous version's.
		var specs []Spec
		if opts.Previous != nil {
			specs = opts.Previous.Specs()
		}
		cl.Update(specs)
	default:
		return nil, fmt.Errorf("cluster %q type %v: unsupported", cl.Name, c.GetType())
	}
	return cl, nil
}

func durationOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Close stops background resolution; later updates are ignored (a newer
// version of the cluster, which may share its endpoints, owns them).
func (c *Cluster) Close() {
	c.mu.Lock()
	c.closed = true
	stop := c.stop
	c.stop = func() {}
	c.mu.Unlock()
	stop()
}

// Pause stops background resolution until Resume; the endpoints stay. A
// proxy with no connection left pauses its clusters.
func (c *Cluster) Pause() {
	c.mu.Lock()
	stop := c.stop
	c.stop = func() {}
	c.mu.Unlock()
	stop()
}

// Resume restarts background resolution after Pause: it resolves at once,
// in the background, then every refresh period.
func (c *Cluster) Resume() {
	if c.dns == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.stop()
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	go c.dns.resolveThenRun(ctx)
}

// Shutdown closes the cluster and empties it: its endpoints go to
// OnRemove (their pools drain) and a pick finds none.
func (c *Cluster) Shutdown() {
	c.Close()
	c.mu.Lock()
	removed := slices.Collect(maps.Values(c.byAddr))
	c.byAddr = map[string]*Endpoint{}
	c.state.Store(&state{all: c.newSet(c.defaults, nil), subsets: map[string]*Set{}})
	c.mu.Unlock()
	if len(removed) > 0 && c.onRemove != nil {
		c.onRemove(removed)
	}
}

// Spec describes an endpoint for Update.
type Spec struct {
	Addr   string
	Labels map[string]string
	Weight uint32
}

// Update replaces the endpoint set. Endpoints whose address and labels are
// unchanged keep their live state; the others are reported to OnRemove.
func (c *Cluster) Update(specs []Spec) {
	if removed := c.update(specs); len(removed) > 0 && c.onRemove != nil {
		c.onRemove(removed)
	}
}

func (c *Cluster) update(specs []Spec) (removed []*Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	// The specs of each address, in order: the first gives the endpoint's
	// labels, the others add label sets (alsoLabels); the largest weight
	// is its weight.
	var order []string
	byAddr := make(map[string][]Spec, len(specs))
	for _, s := range specs {
		if _, seen := byAddr[s.Addr]; !seen {
			order = append(order, s.Addr)
		}
		byAddr[s.Addr] = append(byAddr[s.Addr], s)
	}
	next := make(map[string]*Endpoint, len(order))
	eps := make([]*Endpoint, 0, len(order))
	for _, addr := range order {
		same := byAddr[addr]
		weight := uint32(1)
		var also []map[string]string
		for i, s := range same {
			weight = max(weight, s.Weight)
			if i > 0 {
				also = append(also, s.Labels)
			}
		}
		ep := c.byAddr[addr]
		if ep == nil || !maps.Equal(ep.Labels, same[0].Labels) || ep.Weight != weight ||
			!slices.EqualFunc(ep.alsoLabels, also, maps.Equal) {
			ep = &Endpoint{Addr: addr, Labels: same[0].Labels, Weight: weight, alsoLabels: also}
		}
		next[addr] = ep
		eps = append(eps, ep)
	}
	// A stable order keeps hash rings identical across refreshes that
	// return the same addresses in another order.
	slices.SortFunc(eps, func(a, b *Endpoint) int {
		if a.Addr < b.Addr {
			return -1
		}
		if a.Addr > b.Addr {
			return 1
		}
		return 0
	})
	for addr, ep := range c.byAddr {
		if next[addr] != ep {
			removed = append(removed, ep)
		}
	}
	c.byAddr = next
	c.publish(eps)
	return removed
}

// publish builds the balancers of eps and swaps them in. Called with c.mu
// held.
func (c *Cluster) publish(eps []*Endpoint) {
	st := &state{all: c.newSet(c.defaults, eps), subsets: make(map[string]*Set, len(c.subsetKeys))}
	for key, labels := range c.subsetKeys {
		var sub []*Endpoint
		for _, ep := range eps {
			if hasLabels(ep.Labels, labels) || slices.ContainsFunc(ep.alsoLabels, func(l map[string]string) bool { return hasLabels(l, labels) }) {
				sub = append(sub, ep)
			}
		}
		sp, own := c.subsetPolicies[key]
		if !own {
			sp = c.defaults
		}
		st.subsets[key] = c.newSet(sp, sub)
	}
	c.state.Store(st)
}

// Handover closes c after next replaced it, and keeps in c's sets only the
// endpoints next has: a request still balancing on c (a retry) can no
// longer reach one that left. It returns the endpoints c had and next has
// not, for the caller to retire once more (a pool opened through c while
// next was being built).
func (c *Cluster) Handover(next *Cluster) (gone []*Endpoint) {
	c.Close()
	keep := next.Endpoints()
	c.mu.Lock()
	defer c.mu.Unlock()
	var eps []*Endpoint
	for _, ep := range c.state.Load().all.endpoints {
		if slices.Contains(keep, ep) {
			eps = append(eps, ep)
		} else {
			gone = append(gone, ep)
		}
	}
	c.publish(eps)
	return gone
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// Specs returns the current endpoint set in Update's form.
func (c *Cluster) Specs() []Spec {
	eps := c.Endpoints()
	specs := make([]Spec, 0, len(eps))
	for _, ep := range eps {
		specs = append(specs, Spec{Addr: ep.Addr, Labels: ep.Labels, Weight: ep.Weight})
		for _, l := range ep.alsoLabels {
			specs = append(specs, Spec{Addr: ep.Addr, Labels: l, Weight: ep.Weight})
		}
	}
	return specs
}

// AddSubsets makes balancers for subsets a new route table targets; those
// already known are kept.
func (c *Cluster) AddSubsets(subsets map[string]map[string]string) {
	c.mu.Lock()
	added := false
	for k, labels := range subsets {
		if _, ok := c.subsetKeys[k]; !ok {
			if c.subsetKeys == nil {
				c.subsetKeys = map[string]map[string]string{}
			}
			c.subsetKeys[k] = labels
			added = true
		}
	}
	c.mu.Unlock()
	if added {
		c.Update(c.Specs())
	}
}

// Endpoints returns the current endpoints.
func (c *Cluster) Endpoints() []*Endpoint { return c.state.Load().all.endpoints }

// Set returns the balancer for a subset key ("" for the whole cluster), or
// nil when routes never asked for that subset.
func (c *Cluster) Set(subset string) *Set {
	st := c.state.Load()
	if subset == "" {
		return st.all
	}
	return st.subsets[subset]
}

// resolver refreshes a STRICT_DNS cluster.
type resolver struct {
	cluster   *Cluster
	endpoints []*breezev1.Endpoint
	every     time.Duration
	lookup    func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// failures counts each host's failed lookups in a row (by index in
	// endpoints), so that an outage is one line when it starts and one
	// when it ends, not one per refresh. Under mu: a paused round's
	// lookup may still be finishing when the resumed one starts.
	mu       sync.Mutex
	failures map[int]int
}

// failed counts a failed lookup of host i and reports whether it is the
// first in a row.
func (r *resolver) failed(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures == nil {
		r.failures = map[int]int{}
	}
	r.failures[i]++
	return r.failures[i] == 1
}

// resolved ends host i's run of failed lookups, returning how long it was.
func (r *resolver) resolved(i int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.failures[i]
	delete(r.failures, i)
	return n
}

// resolveThenRun resolves at once, then every refresh period.
func (r *resolver) resolveThenRun(ctx context.Context) {
	r.resolveOnce(ctx)
	r.run(ctx)
}

func (r *resolver) run(ctx context.Context) {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.resolveOnce(ctx)
		}
	}
}

// resolveOnce resolves every host. A host that fails to resolve keeps its
// previous addresses: a DNS hiccup must not empty a cluster. A panic (in
// a lookup, in the update or whom it tells) is recovered: this round
// changes nothing further and the next one tries again; on the resolver's
// goroutine it would end Envoy's process.
func (r *resolver) resolveOnce(ctx context.Context) {
	defer func() {
		if v := recover(); v != nil {
			metrics.Panics.WithLabelValues("dns").Inc()
			r.cluster.log.Error("panic while resolving; keeping the current endpoints", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	var specs []Spec
	prev := r.cluster.Endpoints()
	for i, e := range r.endpoints {
		if ctx.Err() != nil {
			return // paused or closed before this lookup
		}
		lctx, cancel := context.WithTimeout(ctx, r.every)
		ips, err := r.lookup(lctx, "ip", e.GetAddress())
		cancel()
		if ctx.Err() != nil {
			return // paused or closed meanwhile
		}
		port := strconv.Itoa(int(e.GetPort()))
		if err != nil {
			if r.failed(i) {
				r.cluster.log.Warn("dns resolution failed; keeping the host's previous addresses until it resolves again", "host", e.GetAddress(), "err", err)
			} else {
				r.cluster.log.Debug("dns resolution failed again", "host", e.GetAddress(), "err", err)
			}
			for _, p := range prev {
				if hostOf(p, e) {
					specs = append(specs, Spec{Addr: p.Addr, Labels: p.Labels, Weight: p.Weight})
				}
			}
			continue
		}
		if n := r.resolved(i); n > 0 {
			r.cluster.log.Info("dns resolution works again", "host", e.GetAddress(), "failures", n)
		}
		for _, ip := range ips {
			specs = append(specs, Spec{Addr: net.JoinHostPort(ip.Unmap().String(), port), Labels: withHost(e), Weight: e.GetWeight()})
		}
	}
	r.cluster.Update(specs)
}

// hostLabel records which configured host name an address came from, so a
// failed lookup can keep exactly that host's previous addresses.
const hostLabel = "breeze.dns_host"

func withHost(e *breezev1.Endpoint) map[string]string {
	l := maps.Clone(e.GetLabels())
	if l == nil {
		l = map[string]string{}
	}
	l[hostLabel] = net.JoinHostPort(e.GetAddress(), strconv.Itoa(int(e.GetPort())))
	return l
}

func hostOf(p *Endpoint, e *breezev1.Endpoint) bool {
	return p.Labels[hostLabel] == net.JoinHostPort(e.GetAddress(), strconv.Itoa(int(e.GetPort())))
}
