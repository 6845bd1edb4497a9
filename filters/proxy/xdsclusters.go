package proxy

import (
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/internal/fault"
	"github.com/breeze-mesh/breeze/filters/metrics"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	xdsclient "github.com/breeze-mesh/breeze/xds/client"
)

// xdsClusters fetches, over xDS, the clusters the proxy's routes name and
// its config does not define, in Envoy's order:
//
//   - a cluster is fetched while a route table (applied or waiting) names
//     it, and removed, its pools drained, once none does;
//   - an EDS cluster is usable once its first endpoints arrived (warming);
//     a new version of a usable one replaces it at once, keeping the
//     endpoints it shares;
//   - a new route table waits until every cluster it names is usable or
//     known not to exist, at most wait, so that adding a cluster and then
//     a route to it fails no request; meanwhile the previous table serves.
//     A cluster never seen that a response leaves out is not known not to
//     exist: that response may predate its subscription (onCluster);
//   - a cluster the server removes is removed; requests routed to a
//     missing cluster get "no healthy upstream" (router), counted.
type xdsClusters struct {
	p      *Proxy
	c      *xdsclient.Client
	static map[string]bool // defined by the config: never fetched
	wait   time.Duration

	mu     sync.Mutex
	closed bool
	m      map[string]*xdsCluster
	// applied names the clusters of the route table in use; pending is
	// the newer table waiting for its clusters.
	applied map[string]bool
	pending *pendingTable
}

type xdsCluster struct {
	name   string
	cancel func()
	// cfg is the last version accepted; nil: none, or removed.
	cfg *breezev1.Cluster
	// settled: usable, or known not to exist (a route table need not wait).
	settled   bool
	published bool // in the router
	// eds is the endpoint resource watched (EDS clusters).
	eds       string
	edsCancel func()
}

type pendingTable struct {
	rc    *breezev1.RouteConfiguration // nil: nothing to apply, only wait
	names map[string]bool
	timer *time.Timer
	done  func()
}

func newXDSClusters(p *Proxy, c *xdsclient.Client, cfg *breezev1.ProxyConfig, wait time.Duration) *xdsClusters {
	d := &xdsClusters{p: p, c: c, static: map[string]bool{}, wait: wait, m: map[string]*xdsCluster{}, applied: map[string]bool{}}
	for _, cl := range cfg.GetClusters() {
		d.static[cl.GetName()] = true
	}
	return d
}

// clusterNames lists the clusters rc's routes name, as targets or mirrors.
func clusterNames(rc *breezev1.RouteConfiguration) map[string]bool {
	names := map[string]bool{}
	for _, r := range rc.GetRoutes() {
		a := r.GetRoute()
		if c := a.GetCluster(); c != "" {
			names[c] = true
		}
		for _, w := range a.GetWeightedClusters().GetClusters() {
			names[w.GetName()] = true
		}
		for _, m := range a.GetRequestMirrorPolicies() {
			names[m.GetCluster()] = true
		}
	}
	return names
}

// routes takes a new route table (validated): it is applied once its
// clusters are settled, or after d.wait. rc nil: the config's own table,
// already in use, whose clusters are fetched; done runs when it is
// applied (or replaced by a newer one).
func (d *xdsClusters) routes(rc *breezev1.RouteConfiguration, names map[string]bool, done func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		done()
		return
	}
	if old := d.pending; old != nil {
		old.timer.Stop()
		old.done()
		d.pending = nil
	}
	for name := range names {
		d.watch(name)
	}
	pt := &pendingTable{rc: rc, names: names, done: done}
	d.pending = pt
	pt.timer = time.AfterFunc(d.wait, func() {
		defer d.p.recovered("xds route wait")
		d.mu.Lock()
		defer d.mu.Unlock()
		fault.Point("xds route wait", d.p.name)
		if d.pending == pt && !d.closed {
			d.p.log.Warn("xds: clusters of the new route table not all here in time; applying it anyway",
				"route_config", rc.GetName(), "waited", d.wait, "missing", d.unsettled(pt))
			d.apply()
		}
	})
	d.maybeApply()
}

// watch starts fetching a cluster. Called with d.mu held.
func (d *xdsClusters) watch(name string) {
	if d.static[name] || d.m[name] != nil {
		return
	}
	xc := &xdsCluster{name: name}
	// The router may have it from before a sleep: it serves until the
	// server says otherwise.
	if d.p.router.Cluster(name) != nil {
		xc.published, xc.settled = true, true
	}
	d.m[name] = xc
	xc.cancel = d.c.WatchClusters(name, func(ec *clusterv3.Cluster) error {
		return d.p.guardXDS("xds cluster", func() error { return d.onCluster(xc, ec) })
	})
}

func (d *xdsClusters) unsettled(pt *pendingTable) []string {
	var out []string
	for name := range pt.names {
		if xc := d.m[name]; xc != nil && !xc.settled {
			out = append(out, name)
		}
	}
	return out
}

// maybeApply applies the pending table once its clusters are settled.
// Called with d.mu held.
func (d *xdsClusters) maybeApply() {
	if pt := d.pending; pt != nil && len(d.unsettled(pt)) == 0 {
		d.apply()
	}
}

// apply puts the pending table in use and stops fetching clusters no
// table names any more. Called with d.mu held.
func (d *xdsClusters) apply() {
	pt := d.pending
	d.pending = nil
	pt.timer.Stop()
	if pt.rc != nil {
		// Validated on arrival; Compile cannot fail now.
		if err := d.p.router.UpdateRoutes(pt.rc); err != nil {
			d.p.log.Error("xds route table failed to apply after validation", "route_config", pt.rc.GetName(), "err", err)
		} else {
			d.p.log.Info("xds route table applied", "route_config", pt.rc.GetName(), "routes", len(pt.rc.GetRoutes()))
		}
	}
	d.applied = pt.names
	for name, xc := range d.m {
		if !d.applied[name] {
			d.drop(xc)
		}
	}
	pt.done()
}

// drop stops fetching a cluster and removes it from the router (its pools
// drain). Called with d.mu held.
func (d *xdsClusters) drop(xc *xdsCluster) {
	delete(d.m, xc.name)
	xc.cancel()
	d.stopEDS(xc)
	if xc.published {
		d.p.router.RemoveCluster(xc.name)
		d.p.log.Info("xds cluster removed: no route names it", "cluster", xc.name)
	}
}

func (d *xdsClusters) stopEDS(xc *xdsCluster) {
	if xc.edsCancel != nil {
		xc.edsCancel()
		xc.edsCancel, xc.eds = nil, ""
	}
}

// onCluster applies a version of a cluster, or its removal (ec nil).
func (d *xdsClusters) onCluster(xc *xdsCluster, ec *clusterv3.Cluster) error {
	fault.Point("xds cluster", d.p.name)
	var bc *breezev1.Cluster
	if ec != nil {
		var err error
		if bc, err = xdsclient.Cluster(ec); err == nil {
			err = config.ValidateCluster(bc)
		}
		if err != nil {
			err = oneLine(err)
			metrics.XDSUpdates.WithLabelValues(d.p.name, "clusters", "rejected").Inc()
			d.p.log.Warn("xds cluster rejected; keeping the current version", "cluster", xc.name, "err", err)
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.m[xc.name] != xc {
		return nil // no longer fetched
	}
	if bc == nil {
		if xc.cfg == nil && !xc.published {
			// Absent from a full-state response, never seen: that response
			// may answer the subscription before this cluster joined it (it
			// was on its way when the new names were sent; the server
			// ignores a request with a stale nonce until that response is
			// acknowledged). Not proof that the cluster does not exist: a
			// table naming it keeps waiting, at most d.wait, as for a
			// cluster not answered at all (Envoy's initial fetch timeout).
			return nil
		}
		xc.cfg, xc.settled = nil, true
		d.stopEDS(xc)
		if xc.published {
			xc.published = false
			d.p.router.RemoveCluster(xc.name)
			d.p.log.Info("xds cluster removed by the server", "cluster", xc.name)
		}
		d.maybeApply()
		return nil
	}
	metrics.XDSUpdates.WithLabelValues(d.p.name, "clusters", "accepted").Inc()
	xc.cfg = bc
	if bc.GetType() != breezev1.Cluster_EDS {
		d.stopEDS(xc)
		return d.publish(xc, nil)
	}
	service := bc.GetEdsServiceName()
	if service == "" {
		service = bc.GetName()
	}
	if xc.eds != service {
		d.stopEDS(xc)
		xc.eds = service
		xc.edsCancel = d.c.WatchEndpoints(service, func(cla *endpointv3.ClusterLoadAssignment) error {
			return d.p.guardXDS("xds endpoints", func() error { return d.onEndpoints(xc, service, cla) })
		})
	}
	if !xc.published {
		return nil // warming: published with its first endpoints
	}
	// A new version of a usable cluster: it keeps its endpoints until
	// those of a new eds_service_name arrive.
	return d.publish(xc, nil)
}

// publish puts xc's current version in the router. Called with d.mu held.
func (d *xdsClusters) publish(xc *xdsCluster, eds []cluster.Spec) error {
	if err := d.p.router.SetCluster(xc.cfg, eds); err != nil {
		metrics.XDSUpdates.WithLabelValues(d.p.name, "clusters", "rejected").Inc()
		d.p.log.Warn("xds cluster rejected; keeping the current version", "cluster", xc.name, "err", err)
		return err
	}
	if !xc.published {
		d.p.log.Info("xds cluster added", "cluster", xc.name, "type", xc.cfg.GetType(), "lb_policy", xc.cfg.GetLbPolicy())
	} else {
		d.p.log.Info("xds cluster updated", "cluster", xc.name, "type", xc.cfg.GetType(), "lb_policy", xc.cfg.GetLbPolicy())
	}
	xc.published, xc.settled = true, true
	d.maybeApply()
	return nil
}

// onEndpoints applies the endpoints of an EDS cluster from xDS; the first
// ones end its warming.
func (d *xdsClusters) onEndpoints(xc *xdsCluster, service string, cla *endpointv3.ClusterLoadAssignment) error {
	fault.Point("xds endpoints", d.p.name)
	specs, err := endpointSpecs(cla)
	if err != nil {
		metrics.XDSUpdates.WithLabelValues(d.p.name, "endpoints", "rejected").Inc()
		d.p.log.Warn("xds endpoints rejected; keeping the current ones", "cluster", xc.name, "eds_service_name", service, "err", err)
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.m[xc.name] != xc || xc.eds != service || xc.cfg == nil {
		return nil
	}
	metrics.XDSUpdates.WithLabelValues(d.p.name, "endpoints", "accepted").Inc()
	if !xc.published {
		if specs == nil {
			specs = []cluster.Spec{} // an empty set still ends warming
		}
		return d.publish(xc, specs)
	}
	d.p.router.Cluster(xc.name).Update(specs)
	d.p.log.Info("xds endpoints applied", "cluster", xc.name, "endpoints", len(specs))
	return nil
}

// close stops every watch; the router's clusters close with it.
func (d *xdsClusters) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if pt := d.pending; pt != nil {
		pt.timer.Stop()
		pt.done()
		d.pending = nil
	}
	for _, xc := range d.m {
		xc.cancel()
		d.stopEDS(xc)
	}
	d.m = map[string]*xdsCluster{}
}
