// Package proxy is Breeze's connection manager: the terminal Envoy Go
// network filter (plugin name "breeze"). Per downstream connection it
// decodes frames with the configured codec and walks each request through
// the proxy's L7 filter chain, which ends in the router; the router hands
// it to the upstream layer, whose response walks back through the chain
// to the client.
package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/accesslog"
	"github.com/breeze-mesh/breeze/filters/authz"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/globalratelimit"
	"github.com/breeze-mesh/breeze/filters/localratelimit"
	"github.com/breeze-mesh/breeze/filters/logs"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/mutation"
	"github.com/breeze-mesh/breeze/filters/router"
	"github.com/breeze-mesh/breeze/filters/tracing"
	"github.com/breeze-mesh/breeze/filters/upstream"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Registry holds every Breeze metric of the process (filters/metrics).
var Registry = metrics.Registry

// Proxy is one parsed proxy configuration with its live state (filter
// chain, clusters, upstream pools). All downstream connections of that
// configuration share it.
type Proxy struct {
	name string
	log  *slog.Logger
	// plog writes the lines a peer can trigger (bad frames, refused
	// connections, upstream failures), limited per reason: a flood of
	// them is counted exactly by the metrics and sampled in the log.
	plog        *logs.Logger
	codec       codecs.Factory
	codecOpts   codecs.Options
	idleTimeout time.Duration
	// maxInFlight: requests in flight per downstream connection before it
	// is closed (max_requests_in_flight).
	maxInFlight int
	// serviceKey and methodKey name a request's service and method in its
	// metadata (codecs.Describer), for the log; "" when the codec does not.
	serviceKey, methodKey string

	chain  *filter.Chain
	router *router.Router
	// peerKey is the filter-state key of the caller's URI SAN, "" when no
	// filter of the chain reads Stream.Peer (filter.PeerReader): then
	// connections do not read their peer at all.
	peerKey string
	// readAddr: connections read their caller's address before the first request,
	// for the access log (%DOWNSTREAM_REMOTE_ADDRESS%).
	readAddr bool
	// accessLog is the chain's access log filter, nil without access_log.
	accessLog *accesslog.Filter
	up        *upstream.Manager

	// err is set when the configuration was rejected: every connection is
	// then refused with a log line, instead of crashing Envoy.
	err error

	// cfg is kept to subscribe again after a sleep.
	cfg *breezev1.ProxyConfig

	// lifeMu guards the proxy's life (life.go): the connections open,
	// whether it sleeps, and its xDS subscription.
	lifeMu sync.Mutex
	conns  int
	asleep bool
	closed bool
	unused *time.Timer
	// xds is the proxy's subscription to routes, clusters and endpoints
	// (xds.go), nil while asleep.
	xds *xdsWatches
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
		idleTimeout: cfg.GetIdleTimeout().AsDuration(),
		maxInFlight: int(cfg.GetMaxRequestsInFlight()),
		cfg:         cfg,
	}
	p.plog = logs.New(p.log, peerLogOptions)
	if p.maxInFlight == 0 {
		p.maxInFlight = defaultMaxInFlight
	}
	for _, w := range config.Warnings(cfg) {
		p.log.Warn("proxy config: " + w)
	}
	// Fail now rather than on the first connection.
	c, err := factory(p.codecOpts)
	if err != nil {
		return nil, fmt.Errorf("codec %q: %w", cfg.GetCodec(), err)
	}
	if d, ok := c.(codecs.Describer); ok {
		p.serviceKey, p.methodKey = d.RequestKeys()
	}
	connect := upstream.ConnectEnvoy
	if cfg.GetUpstreamConnect() == breezev1.UpstreamConnect_GO_LOOPBACK {
		connect = upstream.ConnectGoLoopback
	}
	p.up = upstream.New(upstream.Options{Proxy: p.name, Codec: factory, CodecOpts: p.codecOpts, Log: p.log, PeerLog: p.plog, Connect: connect})
	rt, err := router.New(cfg, router.Options{
		Proxy: p.name, Log: p.log, DefaultTimeout: cfg.GetRequestTimeout().AsDuration(), Upstream: p.up, Lookup: dnsLookup,
	})
	if err != nil {
		return nil, err
	}
	p.router = rt
	if p.chain, err = buildChain(cfg, rt, p.log); err != nil {
		rt.Close()
		return nil, err
	}
	for _, f := range p.chain.Filters {
		if r, ok := f.(filter.PeerReader); ok && p.peerKey == "" {
			p.peerKey = r.PeerPrincipalKey()
		}
	}
	if len(cfg.GetAccessLog()) > 0 {
		// The access log is the proxy's, as Envoy's is its connection
		// manager's: no filter entry to list, and none in the chain when
		// unset, so that a proxy without one pays nothing. First in the
		// chain, though any place would do: it acts in OnDone alone.
		al, err := accesslog.New(cfg.GetAccessLog(), accesslog.Options{Proxy: p.name, Codec: cfg.GetCodec(), Log: p.log})
		if err != nil {
			rt.Close()
			return nil, err
		}
		p.accessLog, p.readAddr = al, true
		p.chain.Filters = append([]filter.Filter{al}, p.chain.Filters...)
		p.chain.Names = append([]string{"access_log"}, p.chain.Names...)
	}
	if err := p.startXDS(true); err != nil {
		rt.Close()
		p.accessLog.Close()
		return nil, err
	}
	// A config Envoy parsed but never gives a connection must not keep
	// its pools and subscriptions forever either.
	p.unused = time.AfterFunc(unusedSleep, p.sleepIfUnused)
	return p, nil
}

// peerLogOptions limit the log lines peers can trigger (zero: the
// defaults of package logs). Tests replace it.
var peerLogOptions logs.Options

// defaultMaxInFlight is max_requests_in_flight when unset: as many as one
// endpoint may have (clusters' max_requests_per_endpoint), so that no client
// the upstream would serve is cut off.
const defaultMaxInFlight = 10000

// dnsLookup resolves STRICT_DNS clusters; nil is the system resolver.
// Tests replace it.
var dnsLookup func(ctx context.Context, network, host string) ([]netip.Addr, error)

// tracingOptions are the tracing filter's; tests replace them.
var tracingOptions tracing.Options

// implicitFilters join every chain that does not list them, in this
// order before the router, with their default (empty) config: they act on
// routes' configs alone, which the control plane sets from MetaRouters
// (localRateLimit, globalRateLimit, request and response mutations, the
// mesh's authorization policies) without the proxy config having to name
// them. Each costs an idle request one lookup of its route config.
//
// authz comes first, so that a denied request takes no rate-limit token.
// It is safe implicit: its empty config has no policy, which allows every
// request. And it must be: a mesh policy the control plane put on a route
// would otherwise be silently ignored by a proxy that does not list it.
// Its cost: every proxy reads the caller's identity from the connection's
// filter state once per connection (filter.PeerReader).
var implicitFilters = []string{authz.Name, localratelimit.Name, globalratelimit.Name, mutation.Name}

// buildChain builds the configured filters in order, the implicit ones
// not listed, and the router last.
func buildChain(cfg *breezev1.ProxyConfig, rt *router.Router, log *slog.Logger) (*filter.Chain, error) {
	c := &filter.Chain{}
	ctx := filter.BuildContext{ProxyName: cfg.GetStatPrefix(), Codec: cfg.GetCodec()}
	if t := cfg.GetTracing(); t != nil {
		// First, so that its server span covers what every other filter
		// does, and its OnDone sees the outcome they produced.
		f, err := tracing.New(t, ctx, log, tracingOptions)
		if err != nil {
			return nil, err
		}
		c.Filters = append(c.Filters, f)
		c.Names = append(c.Names, tracing.Name)
	}
	listed := map[string]bool{}
	for i, fc := range cfg.GetFilters() {
		if fc.GetName() == filter.RouterName {
			continue // validated to be last
		}
		f, ok := filter.Lookup(fc.GetName())
		if !ok {
			return nil, fmt.Errorf("filters[%d].name: %w", i, filter.UnknownError(fc.GetName()))
		}
		msg, err := config.FilterConfig(f, fc.GetTypedConfig())
		if err != nil {
			return nil, fmt.Errorf("filters[%d].typed_config: %w", i, err)
		}
		inst, err := f.Build(msg, ctx)
		if err != nil {
			return nil, fmt.Errorf("filters[%d] (%s): %w", i, fc.GetName(), err)
		}
		c.Filters = append(c.Filters, inst)
		c.Names = append(c.Names, fc.GetName())
		listed[fc.GetName()] = true
	}
	for _, name := range implicitFilters {
		if listed[name] {
			continue
		}
		f, _ := filter.Lookup(name)
		inst, err := f.Build(f.Config(), ctx)
		if err != nil {
			return nil, err
		}
		c.Filters = append(c.Filters, inst)
		c.Names = append(c.Names, name)
	}
	c.Filters = append(c.Filters, rt)
	c.Names = append(c.Names, filter.RouterName)
	return c, nil
}

// UpdateRoutes swaps in a new route table (from xDS). Connections and
// requests in flight keep the table they started with; new requests see
// the new one. On error the current table stays.
func (p *Proxy) UpdateRoutes(rc *breezev1.RouteConfiguration) error {
	return p.router.UpdateRoutes(rc)
}

// Cluster returns a cluster of the current configuration (for endpoint
// updates from EDS), or nil.
func (p *Proxy) Cluster(name string) *cluster.Cluster { return p.router.Cluster(name) }

// Close stops background work (DNS, xDS) and closes upstream connections.
// Envoy never frees a parsed config; the standalone runner and tests do.
func (p *Proxy) Close() {
	p.lifeMu.Lock()
	p.closed = true
	if p.unused != nil {
		p.unused.Stop()
	}
	p.xds.stop()
	p.xds = nil
	p.lifeMu.Unlock()
	if p.router != nil {
		p.router.Close()
	}
	if p.up != nil {
		p.up.Close()
	}
	if p.accessLog != nil {
		p.accessLog.Close()
	}
}
