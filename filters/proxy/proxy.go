// Package proxy is Breeze's MetaProtocol proxy: a terminal Envoy Go network
// filter that decodes each request with a codec, routes it on its metadata,
// balances it onto a shared upstream connection with a rewritten request
// id, and relays the response back with the client's id restored.
package proxy

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/route"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

const defaultRequestTimeout = 5 * time.Second

// Proxy is one parsed proxy configuration with its live state (clusters,
// upstream pools). All downstream connections of that configuration share it.
type Proxy struct {
	name           string
	log            *slog.Logger
	codec          codecs.Factory
	codecOpts      codecs.Options
	idleTimeout    time.Duration
	defaultTimeout time.Duration

	snap atomic.Pointer[snapshot]

	poolsMu sync.RWMutex
	pools   map[poolKey]*pool

	// err is set when the configuration was rejected: every connection is
	// then refused with a log line, instead of crashing Envoy.
	err error

	// xds is the proxy's subscription to routes and endpoints (xds.go).
	xds *xdsWatches
}

// snapshot is the immutable routing state; a config update swaps it whole.
type snapshot struct {
	routes   *route.Table
	clusters map[string]*clusterEntry
}

type clusterEntry struct {
	*cluster.Cluster
	metrics *clusterMetrics
}

// New builds a proxy from a validated configuration. With xds set it
// subscribes to its routes and endpoints and waits up to
// xds.initial_fetch_timeout for their first versions (xds.go).
func New(cfg *breezev1.ProxyConfig, log *slog.Logger) (*Proxy, error) {
	if log == nil {
		log = slog.Default()
	}
	factory, ok := codecs.Lookup(cfg.GetCodec())
	if !ok {
		return nil, fmt.Errorf("codec %q: not registered (known: %v)", cfg.GetCodec(), codecs.Names())
	}
	p := &Proxy{
		name:  cfg.GetStatPrefix(),
		log:   log.With("proxy", cfg.GetStatPrefix()),
		codec: factory,
		codecOpts: codecs.Options{
			MaxFrameSize: int(cfg.GetMaxFrameSize()),
			Params:       cfg.GetCodecParams(),
		},
		idleTimeout:    cfg.GetIdleTimeout().AsDuration(),
		defaultTimeout: cfg.GetRequestTimeout().AsDuration(),
		pools:          map[poolKey]*pool{},
	}
	if p.defaultTimeout <= 0 {
		p.defaultTimeout = defaultRequestTimeout
	}
	// Fail now rather than on the first connection.
	if _, err := factory(p.codecOpts); err != nil {
		return nil, fmt.Errorf("codec %q: %w", cfg.GetCodec(), err)
	}
	snap, err := p.compile(cfg)
	if err != nil {
		return nil, err
	}
	p.snap.Store(snap)
	if err := p.startXDS(cfg); err != nil {
		snap.close()
		return nil, err
	}
	return p, nil
}

func (p *Proxy) compile(cfg *breezev1.ProxyConfig) (*snapshot, error) {
	table, err := route.Compile(cfg.GetRouteConfig())
	if err != nil {
		return nil, fmt.Errorf("route_config: %w", err)
	}
	// Every subset a route targets gets a prebuilt balancer in its cluster.
	subsets := map[string]map[string]map[string]string{}
	for _, r := range table.Routes {
		for _, t := range r.Targets {
			if subsets[t.Cluster] == nil {
				subsets[t.Cluster] = map[string]map[string]string{}
			}
			if t.Subset != "" {
				subsets[t.Cluster][t.Subset] = t.SubsetLabels
			}
		}
	}
	snap := &snapshot{routes: table, clusters: map[string]*clusterEntry{}}
	for _, c := range cfg.GetClusters() {
		cl, err := cluster.New(c, subsets[c.GetName()], p.log)
		if err != nil {
			snap.close()
			return nil, err
		}
		snap.clusters[c.GetName()] = &clusterEntry{Cluster: cl, metrics: newClusterMetrics(p.name, c.GetName())}
	}
	for _, r := range table.Routes {
		for _, t := range r.Targets {
			if snap.clusters[t.Cluster] == nil {
				snap.close()
				return nil, fmt.Errorf("route %q: cluster %q is not defined", r.Name, t.Cluster)
			}
		}
	}
	return snap, nil
}

// UpdateRoutes swaps in a new route table (from xDS). Connections and
// requests in flight keep the table they started with; new requests see
// the new one. On error the current table stays.
func (p *Proxy) UpdateRoutes(rc *breezev1.RouteConfiguration) error {
	table, err := route.Compile(rc)
	if err != nil {
		return err
	}
	old := p.snap.Load()
	subsets := map[string]map[string]map[string]string{}
	for _, r := range table.Routes {
		for _, t := range r.Targets {
			if old.clusters[t.Cluster] == nil {
				return fmt.Errorf("route %q: cluster %q is not defined", r.Name, t.Cluster)
			}
			if t.Subset != "" {
				if subsets[t.Cluster] == nil {
					subsets[t.Cluster] = map[string]map[string]string{}
				}
				subsets[t.Cluster][t.Subset] = t.SubsetLabels
			}
		}
	}
	// Subset balancers first, so the new table never meets a missing one.
	for name, s := range subsets {
		old.clusters[name].AddSubsets(s)
	}
	p.snap.Store(&snapshot{routes: table, clusters: old.clusters})
	return nil
}

// Cluster returns a cluster of the current configuration (for endpoint
// updates from EDS), or nil.
func (p *Proxy) Cluster(name string) *cluster.Cluster {
	if c := p.snap.Load().clusters[name]; c != nil {
		return c.Cluster
	}
	return nil
}

func (s *snapshot) close() {
	for _, c := range s.clusters {
		c.Close()
	}
}

// Close stops background work (DNS) and closes upstream connections. Envoy
// never frees a parsed config; the standalone runner and tests do.
func (p *Proxy) Close() {
	p.xds.stop()
	if s := p.snap.Load(); s != nil {
		s.close()
	}
	p.poolsMu.Lock()
	pools := p.pools
	p.pools = map[poolKey]*pool{}
	p.poolsMu.Unlock()
	for _, pl := range pools {
		pl.closeAll()
	}
}

// poolKey: one pool per endpoint and codec flavor (see codecs.Flavored).
type poolKey struct {
	ep     *cluster.Endpoint
	flavor string
}

// pool returns the shared upstream pool of an endpoint for a flavor.
func (p *Proxy) pool(ep *cluster.Endpoint, c *clusterEntry, flavor string) *pool {
	key := poolKey{ep, flavor}
	// Every request of every connection looks its pool up: share the lock
	// for that, and take it exclusively only to add a pool.
	p.poolsMu.RLock()
	pl := p.pools[key]
	p.poolsMu.RUnlock()
	if pl != nil {
		return pl
	}
	p.poolsMu.Lock()
	defer p.poolsMu.Unlock()
	pl = p.pools[key]
	if pl == nil {
		pl = &pool{proxy: p, ep: ep, cluster: c}
		if !live(c, ep) {
			// Balanced on a set replaced since: sends re-balance (xds.go).
			pl.retired = true
			return pl
		}
		p.pools[key] = pl
	}
	return pl
}
