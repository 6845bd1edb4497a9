package proxy

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/internal/fault"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/route"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	xdsclient "github.com/breeze-mesh/breeze/xds/client"
)

// xdsClients shares one client (one ADS stream) per server and node id
// among all proxies of the process: Envoy builds a Proxy per distinct
// config, and they may be many.
var xdsClients = struct {
	mu sync.Mutex
	m  map[xdsKey]*sharedClient
}{m: map[xdsKey]*sharedClient{}}

// xdsKey: proxies share a client only when they would open the same
// stream, with the same security and identity.
type xdsKey struct{ address, node, caFile, serverName, tokenFile string }

type sharedClient struct {
	*xdsclient.Client
	refs int
}

func acquireXDS(x *breezev1.XdsSource, node string) (*xdsclient.Client, func(), error) {
	k := xdsKey{x.GetAddress(), node, x.GetTls().GetCaFile(), x.GetTls().GetServerName(), x.GetTokenFile()}
	xdsClients.mu.Lock()
	defer xdsClients.mu.Unlock()
	sc := xdsClients.m[k]
	if sc == nil {
		opts := xdsclient.Options{Address: k.address, NodeID: node, TokenFile: k.tokenFile, Log: slog.Default().With("xds_node", node)}
		if x.GetTls() != nil {
			opts.TLS = &xdsclient.TLS{CAFile: k.caFile, ServerName: k.serverName}
		}
		c, err := xdsclient.New(opts)
		if err != nil {
			return nil, nil, err
		}
		sc = &sharedClient{Client: c}
		xdsClients.m[k] = sc
	}
	sc.refs++
	var once sync.Once
	return sc.Client, func() {
		once.Do(func() {
			xdsClients.mu.Lock()
			sc.refs--
			last := sc.refs == 0
			if last {
				delete(xdsClients.m, k)
			}
			xdsClients.mu.Unlock()
			if last {
				sc.Close()
			}
		})
	}, nil
}

// xdsWatches is what a proxy subscribed to; stop ends it.
type xdsWatches struct {
	cancels  []func()
	clusters *xdsClusters
	release  func()
}

func (w *xdsWatches) stop() {
	if w == nil {
		return
	}
	for _, c := range w.cancels {
		c()
	}
	w.clusters.close()
	w.release()
}

// startXDS subscribes the proxy to its route table, the clusters its
// routes name that its config does not define (xdsclusters.go), and the
// endpoints of its EDS clusters. Each version is applied atomically under
// live connections. A version that does not fit this proxy is refused (the
// client NACKs it) and the proxy keeps what it had.
//
// block: wait up to initial_fetch_timeout for the first versions (a new
// proxy, on Envoy's main thread); a waking proxy serves what it had
// meanwhile.
func (p *Proxy) startXDS(block bool) error {
	cfg := p.cfg
	x := cfg.GetXds()
	if x == nil {
		return nil
	}
	node := x.GetNodeId()
	if node == "" {
		node, _ = os.Hostname()
	}
	c, release, err := acquireXDS(x, node)
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	wait := defaultInitialFetchTimeout
	if d := x.GetInitialFetchTimeout(); d != nil {
		wait = d.AsDuration()
	}
	w := &xdsWatches{release: release}
	// A route table waits this long for its clusters; 0 (do not wait at
	// start) still waits for them a little.
	w.clusters = newXDSClusters(p, c, cfg, cmp.Or(wait, defaultInitialFetchTimeout))
	// all closes once each watched resource has arrived (applied or not);
	// the count starts at 1 until every watch is set up.
	var pending atomic.Int32
	all := make(chan struct{})
	countDown := func() {
		if pending.Add(-1) == 0 {
			close(all)
		}
	}
	pending.Add(1)
	arrived := func() func() {
		pending.Add(1)
		var once sync.Once
		return func() { once.Do(countDown) }
	}
	// The table in use (the config's own, or the last from xDS before a
	// sleep) may name clusters to fetch.
	w.clusters.routes(nil, p.router.ClusterNames(), arrived())
	if name := x.GetRouteConfigName(); name != "" {
		clusters := cfg.GetClusters()
		done := arrived()
		w.cancels = append(w.cancels, c.WatchRoutes(name, func(rc *breezev1.RouteConfiguration) error {
			err := p.guardXDS("xds routes", func() error { return p.acceptRoutes(w.clusters, rc, clusters, done) })
			if err != nil {
				done()
			}
			return err
		}))
	}
	for _, cl := range cfg.GetClusters() {
		if cl.GetType() != breezev1.Cluster_EDS {
			continue
		}
		service := cl.GetEdsServiceName()
		if service == "" {
			service = cl.GetName()
		}
		name := cl.GetName()
		done := arrived()
		w.cancels = append(w.cancels, c.WatchEndpoints(service, func(cla *endpointv3.ClusterLoadAssignment) error {
			defer done()
			return p.guardXDS("xds endpoints", func() error { return p.applyEndpoints(name, cla) })
		}))
	}
	p.xds = w
	countDown()

	if wait > 0 && block {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-all:
		case <-t.C:
			p.log.Warn("xds: not everything arrived in time; serving without it meanwhile",
				"xds_server", x.GetAddress(), "initial_fetch_timeout", wait)
		}
	}
	return nil
}

// guardXDS runs an xDS callback. A panic in it, on the xDS client's
// goroutine, would end the process: it is recovered, counted, and the
// resource refused (NACKed) as an invalid one is. What the callback
// changed before it panicked stays; the locks it took are released by
// their defers.
func (p *Proxy) guardXDS(where string, apply func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			metrics.Panics.WithLabelValues(where).Inc()
			p.log.Error("panic applying an xds resource; refusing it", "where", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error applying it (%v)", v)
		}
	}()
	return apply()
}

// recovered keeps a panic in one of the proxy's own timers from ending
// the process: counted and logged. Deferred directly.
func (p *Proxy) recovered(where string) {
	if v := recover(); v != nil {
		metrics.Panics.WithLabelValues(where).Inc()
		p.log.Error("panic in proxy", "where", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	}
}

// defaultInitialFetchTimeout bounds how long a new proxy waits for its
// first xDS resources: long enough for a healthy control plane, short
// enough not to stall Envoy's thread for long when it is down.
const defaultInitialFetchTimeout = time.Second

// acceptRoutes validates a route table from xDS and hands it to the
// cluster fetcher, which applies it once its clusters are here; done runs
// then. An error refuses it (NACK) and the current table stays.
func (p *Proxy) acceptRoutes(d *xdsClusters, rc *breezev1.RouteConfiguration, clusters []*breezev1.Cluster, done func()) error {
	fault.Point("xds routes", p.name)
	err := config.ValidateRoutes(rc, clusters)
	if err == nil {
		_, err = route.Compile(rc)
	}
	if err != nil {
		metrics.XDSUpdates.WithLabelValues(p.name, "routes", "rejected").Inc()
		err = oneLine(err)
		p.log.Warn("xds route table rejected; keeping the current one", "route_config", rc.GetName(), "err", err)
		return err
	}
	metrics.XDSUpdates.WithLabelValues(p.name, "routes", "accepted").Inc()
	for _, w := range config.RouteWarnings(rc, clusters) {
		// A hash_key on a route to one of this proxy's own clusters
		// that does not hash: the server cannot know that cluster.
		p.log.Warn("xds route table: "+w, "route_config", rc.GetName())
	}
	d.routes(rc, clusterNames(rc), done)
	return nil
}

// endpointSpecs reads an endpoint assignment from xDS as cluster.Update
// takes it.
func endpointSpecs(cla *endpointv3.ClusterLoadAssignment) ([]cluster.Spec, error) {
	eps, err := xdsclient.Endpoints(cla)
	if err != nil {
		return nil, err
	}
	specs := make([]cluster.Spec, len(eps))
	for i, e := range eps {
		specs[i] = cluster.Spec{Addr: e.Addr, Labels: e.Labels, Weight: e.Weight}
	}
	return specs, nil
}

func (p *Proxy) applyEndpoints(name string, cla *endpointv3.ClusterLoadAssignment) error {
	fault.Point("xds endpoints", p.name)
	specs, err := endpointSpecs(cla)
	if err != nil {
		metrics.XDSUpdates.WithLabelValues(p.name, "endpoints", "rejected").Inc()
		p.log.Warn("xds endpoints rejected; keeping the current ones", "cluster", name, "eds_service_name", cla.GetClusterName(), "err", err)
		return err
	}
	// The cluster tells the upstream layer which endpoints left, and it
	// retires their pools (router.New wires that up).
	p.Cluster(name).Update(specs)
	metrics.XDSUpdates.WithLabelValues(p.name, "endpoints", "accepted").Inc()
	p.log.Info("xds endpoints applied", "cluster", name, "endpoints", len(specs))
	return nil
}

// oneLine puts joined errors on one line: the NACK carries the same text.
func oneLine(err error) error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return err
	}
	var parts []string
	for _, e := range j.Unwrap() {
		parts = append(parts, e.Error())
	}
	return errors.New(strings.Join(parts, "; "))
}
