package upstream

import (
	"sync"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// pool is the set of upstream connections to one endpoint (for one codec
// flavor), shared by every downstream connection of the proxy. Requests
// from many clients are multiplexed onto them with request ids unique per
// upstream connection.
type pool struct {
	m       *Manager
	ep      *cluster.Endpoint
	cluster *cluster.Cluster
	metrics *metrics.Cluster

	mu    sync.Mutex
	conns []*conn
	next  int
	// retired: the endpoint left its cluster; no new connections.
	retired bool
	// idle is the endpoint's idle timeout as learned from its closes.
	idle idleLearning
}

// keepaliveEvery is the heartbeat period for the pool's connections: the
// default, or half the idle timeout learned for the endpoint, so that a
// provider with a short one keeps the next connection; never below half
// MinIdleTimeout, whatever was learned.
func (pl *pool) keepaliveEvery() time.Duration {
	every := time.Duration(Keepalive.Load())
	if l := time.Duration(pl.idle.limit.Load()); l > 0 {
		every = min(every, max(l/2, time.Duration(MinIdleTimeout.Load())/2))
	}
	return every
}

// pick returns a connection of the pool, a new one (fresh: the caller
// dials it) while it has fewer than conns (the current version of the
// cluster says how many: a new version from xDS keeps the pool).
func (pl *pool) pick(conns int) (uc *conn, fresh bool, err error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.retired {
		return nil, false, ErrUnavailable
	}
	if len(pl.conns) < conns {
		codec, err := pl.m.opts.Codec(pl.m.opts.CodecOpts)
		if err != nil {
			return nil, false, err
		}
		uc := &conn{pool: pl, codec: codec, pending: map[uint64]*Request{}}
		pl.conns = append(pl.conns, uc)
		return uc, true, nil
	}
	uc = pl.conns[pl.next%len(pl.conns)]
	pl.next++
	return uc, false, nil
}

func (pl *pool) remove(uc *conn) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for i, c := range pl.conns {
		if c == uc {
			pl.conns = append(pl.conns[:i], pl.conns[i+1:]...)
			return
		}
	}
}

func (pl *pool) closeAll() {
	pl.mu.Lock()
	conns := append([]*conn(nil), pl.conns...)
	pl.conns = nil
	pl.retired = true
	pl.mu.Unlock()
	for _, uc := range conns {
		uc.closeByUs()
	}
}

// retire stops new requests to the pool; each of its connections closes
// once the requests it carries are answered.
func (pl *pool) retire() {
	pl.mu.Lock()
	pl.retired = true
	conns := pl.conns
	pl.conns = nil
	pl.mu.Unlock()
	for _, uc := range conns {
		if uc.retire() {
			uc.closeByUs()
		}
	}
}

// failed ejects the endpoint after a connection to it failed (reason, and
// the OS error when the host gives one). Only the failure that begins an
// outage is logged, with how long the endpoint is out: the next ones of
// the outage (each probe doubling the ejection, up to 30s) are counted,
// not logged, until succeeded says it is back.
func (pl *pool) failed(reason, osErr string) {
	ejectedFor, first := pl.ep.Failed()
	if !first {
		return
	}
	args := []any{"cluster", pl.cluster.Name, "endpoint", pl.ep.Addr, "reason", reason}
	if osErr != "" {
		args = append(args, "err", osErr)
	}
	args = append(args, "ejected_for", ejectedFor)
	pl.m.plog.Warn("endpoint_ejected", "upstream endpoint ejected", args...)
}

// succeeded: a connection to the endpoint opened. The first after an
// outage says it is back, with how many failures the outage had.
func (pl *pool) succeeded() {
	if n := pl.ep.Succeeded(); n > 0 {
		pl.m.plog.Info("endpoint_back", "upstream endpoint back", "cluster", pl.cluster.Name, "endpoint", pl.ep.Addr, "failures", n)
	}
}

// poolFailure names a connect failure as the log's reason field does.
func poolFailure(r api.PoolFailureReason) string {
	switch r {
	case api.Overflow:
		return "overflow"
	case api.LocalConnectionFailure:
		return "local_connection_failure"
	case api.RemoteConnectionFailure:
		return "remote_connection_failure"
	case api.Timeout:
		return "connect_timeout"
	}
	return "connect_failure"
}
