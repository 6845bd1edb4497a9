package controlplane

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strconv"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	serverconfig "github.com/envoyproxy/go-control-plane/pkg/server/config"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

// Resources is what the control plane serves: Breeze route tables by name,
// Envoy clusters by name and endpoint assignments by EDS service name.
type Resources struct {
	Routes    map[string]*breezev1.RouteConfiguration
	Clusters  map[string]*clusterv3.Cluster
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
}

// clone copies the maps (not the resources, which are never modified).
func (r Resources) clone() Resources {
	return Resources{Routes: maps.Clone(r.Routes), Clusters: maps.Clone(r.Clusters), Endpoints: maps.Clone(r.Endpoints)}
}

// NACK is a client's rejection of a version the server sent.
type NACK struct {
	Node    string
	TypeURL string
	// Version is the version the client still runs.
	Version string
	Detail  string
}

// Server serves Resources over ADS (state of the world and delta) with
// go-control-plane's server. Each type lives in a linear cache that
// versions resources one by one, so an update sends only what changed.
// The same resources go to every node.
type Server struct {
	log    *slog.Logger
	routes *cachev3.LinearCache
	// go-control-plane answers for Envoy's cluster type URL with every
	// subscribed cluster that exists (CDS's rule in state of the world), so
	// a client sees a removed cluster as one left out of a response.
	clusters  *cachev3.LinearCache
	endpoints *cachev3.LinearCache
	grpc      *grpc.Server
	cancel    context.CancelFunc

	mu      sync.Mutex
	current Resources
	// ready closes with the first Set, stopped with Stop: Serve answers
	// nobody before the first Set, since an empty cluster list would tell
	// a reconnecting proxy that its clusters were removed (full state).
	ready, stopped      chan struct{}
	readyOnce, stopOnce sync.Once
	// OnNACK, if set before Serve, is called for every NACK (tests).
	OnNACK func(NACK)

	// TLS, if set before Serve, serves ADS over TLS with this config
	// (its certificate); nil serves plaintext.
	TLS *tls.Config
	// Auth, if set before Serve, requires each stream to carry a bearer
	// token it accepts; refused streams are counted (Refused) and logged.
	// It needs TLS: Serve refuses to take tokens over plaintext.
	Auth Authenticator
	// OnRefused, if set before Serve, is called with the cause of each
	// refused stream (metrics).
	OnRefused func(cause string)
	refused   refusals
}

// NewServer returns a server with no resources.
func NewServer(logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.Default()
	}
	// Versions of a restarted server must not be mistaken for the old
	// one's: a reconnecting client then gets every resource again.
	prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	gcpLog := goControlPlaneLog(logger)
	s := &Server{
		log:       logger,
		routes:    cachev3.NewLinearCache(client.RouteConfigurationType, cachev3.WithVersionPrefix(prefix), cachev3.WithLogger(gcpLog)),
		clusters:  cachev3.NewLinearCache(client.ClusterType, cachev3.WithVersionPrefix(prefix), cachev3.WithLogger(gcpLog)),
		endpoints: cachev3.NewLinearCache(client.ClusterLoadAssignmentType, cachev3.WithVersionPrefix(prefix), cachev3.WithLogger(gcpLog)),
		current: Resources{
			Routes:    map[string]*breezev1.RouteConfiguration{},
			Clusters:  map[string]*clusterv3.Cluster{},
			Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		},
		ready:   make(chan struct{}),
		stopped: make(chan struct{}),
	}
	return s
}

// Set replaces the served resources; only those that changed are sent.
// New and changed clusters and endpoints go before the routes, removed
// ones after them (make before break, as xDS recommends): a route table
// that names a new cluster is not pushed ahead of it, and a cluster stays
// until the routes that named it are replaced.
func (s *Server) Set(r Resources) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.readyOnce.Do(func() { close(s.ready) })
	steps := []func() error{
		func() error { return update(s.clusters, s.current.Clusters, r.Clusters, false) },
		func() error { return update(s.endpoints, s.current.Endpoints, r.Endpoints, false) },
		func() error { return update(s.routes, s.current.Routes, r.Routes, true) },
		func() error { return remove(s.clusters, s.current.Clusters, r.Clusters) },
		func() error { return remove(s.endpoints, s.current.Endpoints, r.Endpoints) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	s.current = r.clone()
	return nil
}

// update sends the resources of next that old lacks or has otherwise, and
// with removals those of old that next lacks.
func update[M proto.Message](c *cachev3.LinearCache, old, next map[string]M, removals bool) error {
	changed := map[string]types.Resource{}
	for name, m := range next {
		// The same pointer is the same resource (resources are never
		// modified; Translator hands back those of unchanged objects):
		// with a thousand endpoint sets, comparing each one's content on
		// every update would cost more than all else.
		if o, ok := old[name]; !ok || (any(o) != any(m) && !proto.Equal(o, m)) {
			changed[name] = m
		}
	}
	var removed []string
	if removals {
		removed = missing(old, next)
	}
	if len(changed) == 0 && len(removed) == 0 {
		return nil
	}
	return c.UpdateResources(changed, removed)
}

// remove removes the resources of old that next lacks.
func remove[M proto.Message](c *cachev3.LinearCache, old, next map[string]M) error {
	if removed := missing(old, next); len(removed) > 0 {
		return c.UpdateResources(nil, removed)
	}
	return nil
}

func missing[M any](old, next map[string]M) []string {
	var out []string
	for name := range old {
		if _, ok := next[name]; !ok {
			out = append(out, name)
		}
	}
	return out
}

// Serve serves ADS on ln until Stop.
//
// Connections wait (in the listen backlog) until the first Set.
func (s *Server) Serve(ln net.Listener) error {
	select {
	case <-s.ready:
	case <-s.stopped:
		ln.Close()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return r.GetTypeUrl() },
		Caches: map[string]cachev3.Cache{
			client.RouteConfigurationType:    s.routes,
			client.ClusterType:               s.clusters,
			client.ClusterLoadAssignmentType: s.endpoints,
		},
	}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			if d := req.GetErrorDetail(); d != nil {
				s.nack(req.GetNode(), req.GetTypeUrl(), req.GetVersionInfo(), d.GetMessage())
			}
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			if d := req.GetErrorDetail(); d != nil {
				s.nack(req.GetNode(), req.GetTypeUrl(), "", d.GetMessage())
			}
			return nil
		},
	}
	// Only named subscriptions: an empty request must not mean "all".
	xds := serverv3.NewServer(ctx, mux, cb, serverconfig.DeactivateLegacyWildcard())
	var gopts []grpc.ServerOption
	if s.TLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(s.TLS)))
	}
	if s.Auth != nil {
		if s.TLS == nil {
			cancel()
			ln.Close()
			return fmt.Errorf("xds token authentication needs TLS: tokens must not travel in clear")
		}
		gopts = append(gopts, grpc.StreamInterceptor(s.authenticate))
	}
	g := grpc.NewServer(gopts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, xds)
	s.mu.Lock()
	select {
	case <-s.stopped:
		s.mu.Unlock()
		cancel()
		ln.Close()
		return nil
	default:
	}
	s.grpc, s.cancel = g, cancel
	s.mu.Unlock()
	return g.Serve(ln)
}

func (s *Server) nack(node *corev3.Node, typeURL, version, detail string) {
	n := NACK{Node: node.GetId(), TypeURL: typeURL, Version: version, Detail: detail}
	s.log.Warn("a proxy rejected an update (NACK); it keeps its last good version",
		"node", n.Node, "type", typeURL, "version", version, "detail", detail)
	if s.OnNACK != nil {
		s.OnNACK(n)
	}
}

// Stop closes every stream and the listener.
func (s *Server) Stop() {
	s.mu.Lock()
	s.stopOnce.Do(func() { close(s.stopped) })
	g, cancel := s.grpc, s.cancel
	s.mu.Unlock()
	if g != nil {
		g.Stop()
		cancel()
	}
}

// goControlPlaneLog sends go-control-plane's logs to slog; its info lines
// are per-request chatter, so they go to debug.
func goControlPlaneLog(l *slog.Logger) log.Logger {
	return log.LoggerFuncs{
		DebugFunc: func(f string, a ...any) { l.Debug(fmt.Sprintf(f, a...)) },
		InfoFunc:  func(f string, a ...any) { l.Debug(fmt.Sprintf(f, a...)) },
		WarnFunc:  func(f string, a ...any) { l.Warn(fmt.Sprintf(f, a...)) },
		ErrorFunc: func(f string, a ...any) { l.Error(fmt.Sprintf(f, a...)) },
	}
}
