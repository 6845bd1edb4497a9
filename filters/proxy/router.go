package proxy

import (
	"fmt"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/route"
)

// maxAttempts bounds how often a request that never reached an upstream
// (its connection failed to open) is re-balanced to another endpoint.
const maxAttempts = 3

// route picks a route, a cluster and an endpoint for m and sends it. It runs
// on the downstream goroutine with d.mu held.
func (p *Proxy) route(d *downConn, m *codecs.Message) {
	snap := p.snap.Load()
	r := snap.routes.Match(m.Metadata)
	if r == nil {
		d.localReply(m, codecs.ErrNoRoute, describe(m, "no route matches"), true)
		return
	}
	t := r.PickTarget()
	c := snap.clusters[t.Cluster]
	m.Mutations = append(m.Mutations, r.Mutations...)
	req := &pending{
		down:     d,
		clientID: m.ID,
		oneway:   m.Type == codecs.Oneway,
		route:    r,
		target:   t,
		cluster:  c,
		timeout:  r.Timeout,
		private:  m.Private,
	}
	if f, ok := d.codec.(codecs.Flavored); ok {
		req.flavor = f.Flavor()
	}
	if req.timeout <= 0 {
		req.timeout = p.defaultTimeout
	}
	if !req.oneway {
		// Kept for a local reply (timeout, upstream loss): codecs may need
		// more than the id, e.g. Thrift's method name.
		req.meta = append(codecs.Metadata(nil), m.Metadata...)
	}
	p.dispatch(req, m, nil)
}

// dispatch balances req onto an endpoint and hands it to that endpoint's
// pool. exclude is an endpoint that just failed for this request.
func (p *Proxy) dispatch(req *pending, m *codecs.Message, exclude *cluster.Endpoint) {
	d := req.down
	set := req.cluster.Set(req.target.Subset)
	if set == nil || set.Len() == 0 {
		d.localReply(req.replyMsg(), codecs.ErrNoHealthyUpstream,
			fmt.Sprintf("cluster %q%s has no endpoints", req.target.Cluster, subsetDesc(req.target)), true)
		return
	}
	hashKey := req.route.HashKey
	if hashKey == "" {
		hashKey = req.cluster.HashKey
	}
	var hv string
	var hasHash bool
	if hashKey != "" {
		hv, hasHash = m.Metadata.Get(hashKey)
	}
	ep := set.Pick(hv, hasHash)
	if ep == exclude && set.Len() > 1 {
		ep = set.Pick(hv, hasHash)
	}
	if ep.Inflight() >= req.cluster.MaxRequests {
		d.localReply(req.replyMsg(), codecs.ErrOverloaded,
			fmt.Sprintf("endpoint %s of cluster %q has %d requests in flight", ep.Addr, req.target.Cluster, ep.Inflight()), true)
		return
	}
	req.ep = ep
	if req.oneway {
		req.cluster.metrics.oneways.Inc()
	} else if req.attempt == 0 {
		req.cluster.metrics.requests.Inc()
	}
	p.pool(ep, req.cluster, req.flavor).send(req, m)
}

func subsetDesc(t *route.Target) string {
	if t.Subset == "" {
		return ""
	}
	return " subset {" + t.Subset + "}"
}

func describe(m *codecs.Message, what string) string {
	svc, _ := m.Metadata.Get("interface")
	if svc == "" {
		svc, _ = m.Metadata.Get("service")
	}
	method, _ := m.Metadata.Get("method")
	return fmt.Sprintf("breeze: %s for service %q method %q", what, svc, method)
}

// pending is one request between dispatch and its answer.
type pending struct {
	down     *downConn
	clientID uint64
	oneway   bool
	meta     codecs.Metadata
	route    *route.Route
	target   *route.Target
	cluster  *clusterEntry
	ep       *cluster.Endpoint
	timeout  time.Duration
	start    time.Time
	// flavor and private describe the request's wire variant: its pool,
	// and the form of a local reply sent after the connection moved on.
	flavor  string
	private [4]int
	attempt int

	// While its upstream connection is still opening, the request waits
	// with its own copy of the message (the downstream buffer moves on).
	queued      *codecs.Message
	queuedBytes []byte

	conn  *upConn
	id    uint64
	timer *time.Timer
}

func (r *pending) replyMsg() *codecs.Message {
	typ := codecs.Request
	if r.oneway {
		typ = codecs.Oneway
	}
	return &codecs.Message{Type: typ, ID: r.clientID, Metadata: r.meta, Private: r.private}
}

// copyMessage detaches m from the downstream buffer.
func copyMessage(m *codecs.Message) *codecs.Message {
	c := *m
	c.Frame = append([]byte(nil), m.Frame...)
	c.Metadata = append(codecs.Metadata(nil), m.Metadata...)
	c.Mutations = append(codecs.Metadata(nil), m.Mutations...)
	return &c
}
