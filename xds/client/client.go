// Package client is Breeze's xDS client: one aggregated (ADS) gRPC stream to
// an xDS server, state of the world, shared by every watcher of the process.
//
// Watchers subscribe to resources by type and name; the stream's
// subscription for a type is the union of its watchers' names. Each new
// version of a resource is handed to its watchers, which apply it or return
// an error: the response is then NACKed with every error in its detail,
// and the watchers that refused it keep what they had. The stream
// reconnects with backoff, from a server that is not up yet as well as from
// one that went away; watchers keep their last version meanwhile.
//
// Three resource types are known: Breeze's own route table
// (breeze.v1.RouteConfiguration), Envoy's cluster
// (envoy.config.cluster.v3.Cluster, read by Cluster) and Envoy's endpoint
// assignment (envoy.config.endpoint.v3.ClusterLoadAssignment, read by
// Endpoints). Clusters follow Envoy's CDS rule for state of the world:
// every response carries all the subscribed clusters that exist, so a
// subscribed cluster missing from one was removed.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Type URLs of the resources a Client fetches.
const (
	RouteConfigurationType    = "type.googleapis.com/breeze.v1.RouteConfiguration"
	ClusterType               = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	ClusterLoadAssignmentType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

	// A server sends a resource wrapped in this when it gives it a TTL.
	resourceWrapperType = "type.googleapis.com/envoy.service.discovery.v3.Resource"
)

// Options configure a Client.
type Options struct {
	// Address is the server's host:port.
	Address string
	// TLS, if set, connects over TLS; nil is plaintext.
	TLS *TLS
	// TokenFile, if set, holds the bearer token sent on each stream
	// (a Kubernetes projected service-account token); read again on each
	// reconnect. Needs TLS.
	TokenFile string
	// NodeID identifies this process to the server.
	NodeID string
	Log    *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between connection
	// attempts (jittered, doubling); zero means 100ms and 5s. A stream
	// that lived a while starts again from MinBackoff.
	MinBackoff, MaxBackoff time.Duration
	// DialOptions are added to the connection's (tests).
	DialOptions []grpc.DialOption
}

// Client is one ADS stream and its watchers. Its methods are safe for
// concurrent use.
type Client struct {
	opts Options
	log  *slog.Logger
	node *corev3.Node
	conn *grpc.ClientConn

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// deliverMu serialises the delivery of resources to watchers, so that
	// a watcher sees versions in order, and a new watcher's first value
	// (from the cache) never overtakes a newer one from the stream.
	deliverMu sync.Mutex

	mu    sync.Mutex
	types map[string]*typeState
	kick  chan struct{} // wakes the sender: a request is due
}

// typeState is the client's state for one resource type.
type typeState struct {
	decode func(*anypb.Any) (proto.Message, string, error)
	// fullState: a response lists every subscribed resource that exists
	// (Envoy's rule for clusters), so one it leaves out was removed.
	fullState bool
	// watchers by resource name.
	watchers map[string]map[*watcher]struct{}
	// last is the newest version of each watched resource the server
	// sent; a new watcher starts from it. Entries go with their last
	// watcher, so memory follows what is watched.
	last map[string]proto.Message
	// absent (full-state types) are watched names the last response
	// did not carry: a new watcher of one is told at once.
	absent map[string]bool

	// version is the last version ACKed (on any stream): a NACK repeats
	// it, and a new stream starts from it.
	version string
	// Per stream: the last nonce received, whether a request is due and
	// the error detail it must carry (a NACK).
	nonce string
	dirty bool
	nack  string
}

type watcher struct {
	apply func(proto.Message) error
	// seen is the last version offered to this watcher and err its
	// answer: a resend of the same resource (after a reconnect) gets the
	// same answer without applying it again.
	seen proto.Message
	err  error
	// absent: the watcher was told the resource does not exist, and
	// nothing arrived since.
	absent bool
}

// New starts a client; it connects in the background and keeps trying
// until Close.
func New(opts Options) (*Client, error) {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	security, err := transport(opts)
	if err != nil {
		return nil, fmt.Errorf("xds server %q: %w", opts.Address, err)
	}
	dial := append(security,
		// gRPC's own reconnect backoff (up to 2 minutes by default) would
		// otherwise decide how soon a restarted server is seen again.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: opts.MinBackoff, Multiplier: 2, Jitter: 0.2, MaxDelay: opts.MaxBackoff},
			MinConnectTimeout: 5 * time.Second,
		}))
	dial = append(dial, opts.DialOptions...)
	conn, err := grpc.NewClient(opts.Address, dial...)
	if err != nil {
		return nil, fmt.Errorf("xds server %q: %w", opts.Address, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		opts:   opts,
		log:    log.With("xds_server", opts.Address),
		node:   &corev3.Node{Id: opts.NodeID, UserAgentName: "breeze"},
		conn:   conn,
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		kick:   make(chan struct{}, 1),
		types: map[string]*typeState{
			RouteConfigurationType:    {decode: decodeRoutes},
			ClusterType:               {decode: decodeCluster, fullState: true},
			ClusterLoadAssignmentType: {decode: decodeEndpoints},
		},
	}
	for _, ts := range c.types {
		ts.watchers = map[string]map[*watcher]struct{}{}
		ts.last = map[string]proto.Message{}
		ts.absent = map[string]bool{}
	}
	go c.run()
	return c, nil
}

// Close ends the stream and waits for the client's goroutines.
func (c *Client) Close() {
	c.cancel()
	<-c.done
	c.conn.Close()
}

// WatchRoutes subscribes to the breeze.v1.RouteConfiguration named name.
// apply gets every new version (and soon the current one, if the client
// has it); an error it returns NACKs that version and apply must then keep
// what it had. Calls are serialised across all watchers of the client;
// apply may watch and cancel (a cluster naming its endpoints), but must
// not wait for another delivery. cancel ends the watch.
func (c *Client) WatchRoutes(name string, apply func(*breezev1.RouteConfiguration) error) (cancel func()) {
	return c.watch(RouteConfigurationType, name, func(m proto.Message) error {
		return apply(m.(*breezev1.RouteConfiguration))
	})
}

// WatchEndpoints subscribes to the ClusterLoadAssignment named name (an
// EDS service name), as WatchRoutes does.
func (c *Client) WatchEndpoints(name string, apply func(*endpointv3.ClusterLoadAssignment) error) (cancel func()) {
	return c.watch(ClusterLoadAssignmentType, name, func(m proto.Message) error {
		return apply(m.(*endpointv3.ClusterLoadAssignment))
	})
}

// WatchClusters subscribes to the Envoy Cluster named name, as WatchRoutes
// does. apply(nil) says the server does not have it (a response left it
// out): removed, or never there; once per absence.
func (c *Client) WatchClusters(name string, apply func(*clusterv3.Cluster) error) (cancel func()) {
	return c.watch(ClusterType, name, func(m proto.Message) error {
		if m == nil {
			return apply(nil)
		}
		return apply(m.(*clusterv3.Cluster))
	})
}

func (c *Client) watch(typeURL, name string, apply func(proto.Message) error) func() {
	w := &watcher{apply: apply}
	c.mu.Lock()
	ts := c.types[typeURL]
	ws := ts.watchers[name]
	if ws == nil {
		ws = map[*watcher]struct{}{}
		ts.watchers[name] = ws
		c.due(ts)
	}
	ws[w] = struct{}{}
	known := ts.last[name] != nil || ts.absent[name]
	c.mu.Unlock()
	if known {
		// Not here: watch may be called from a delivery, which holds
		// deliverMu.
		go c.deliverKnown(ts, name, w)
	}

	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			delete(ws, w)
			if len(ws) == 0 && ts.watchers[name] != nil {
				delete(ts.watchers, name)
				delete(ts.last, name)
				delete(ts.absent, name)
				c.due(ts)
			}
		})
	}
}

// deliverKnown hands a new watcher what the client knows of its resource:
// the newest version, or that it does not exist. It reads them when its
// turn to deliver comes, so a newer version that arrived meanwhile is the
// one it hands over.
func (c *Client) deliverKnown(ts *typeState, name string, w *watcher) {
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	c.mu.Lock()
	_, watching := ts.watchers[name][w]
	last, absent := ts.last[name], ts.absent[name]
	c.mu.Unlock()
	switch {
	case !watching:
	case last != nil:
		w.offer(last)
	case absent:
		w.remove()
	}
}

// due marks a request for ts due (its subscription changed, or an answer
// is owed) and wakes the sender. Called with c.mu held.
func (c *Client) due(ts *typeState) {
	ts.dirty = true
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// offer hands m to the watcher unless it already answered for an equal
// resource, and returns its answer.
func (w *watcher) offer(m proto.Message) error {
	if w.seen != nil && proto.Equal(w.seen, m) {
		return w.err
	}
	w.absent = false
	w.seen, w.err = m, w.apply(m)
	return w.err
}

// remove tells the watcher its resource does not exist, once.
func (w *watcher) remove() {
	if w.absent {
		return
	}
	w.seen, w.err, w.absent = nil, nil, true
	w.apply(nil)
}

func (c *Client) run() {
	defer close(c.done)
	wait := c.opts.MinBackoff
	for {
		start := time.Now()
		err := c.stream()
		if c.ctx.Err() != nil {
			return
		}
		if time.Since(start) > 30*time.Second {
			wait = c.opts.MinBackoff
		}
		c.log.Warn("xds stream ended; reconnecting", "err", err, "after", wait)
		// Jitter, so that a fleet of proxies does not reconnect in step.
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, c.opts.MaxBackoff)
	}
}

// stream runs one ADS stream until it fails or the client closes.
func (c *Client) stream() error {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	// WaitForReady: while the server is down, wait for gRPC to connect
	// (with the backoff set in New) instead of failing at once. Not with
	// TLS: a failed handshake (an untrusted certificate) would then be
	// retried forever in silence; failing fast logs its cause on each
	// attempt.
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).StreamAggregatedResources(ctx, grpc.WaitForReady(c.opts.TLS == nil))
	if err != nil {
		return err
	}
	c.mu.Lock()
	for _, ts := range c.types {
		ts.nonce, ts.nack = "", ""
		// A type nobody watches is not requested: an empty first request
		// would subscribe to all its resources.
		if len(ts.watchers) > 0 {
			c.due(ts)
		}
	}
	c.mu.Unlock()
	c.log.Info("xds stream open")

	sendErr := make(chan error, 1)
	go func() { sendErr <- c.send(ctx, s) }()
	for {
		resp, err := s.Recv()
		if err != nil {
			cancel()
			<-sendErr
			return err
		}
		c.handle(resp)
	}
}

// send writes the requests that are due until ctx ends.
func (c *Client) send(ctx context.Context, s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient) error {
	first := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		}
		for {
			req := c.nextRequest()
			if req == nil {
				break
			}
			if first {
				req.Node = c.node // the server needs it on the first request only
				first = false
			}
			if err := s.Send(req); err != nil {
				return err
			}
		}
	}
}

// nextRequest builds the request of one type that is due, or returns nil.
func (c *Client) nextRequest() *discoveryv3.DiscoveryRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Envoy's order: clusters, then their endpoints, then routes.
	for _, typeURL := range []string{ClusterType, ClusterLoadAssignmentType, RouteConfigurationType} {
		ts := c.types[typeURL]
		if !ts.dirty {
			continue
		}
		ts.dirty = false
		req := &discoveryv3.DiscoveryRequest{
			TypeUrl:       typeURL,
			VersionInfo:   ts.version,
			ResponseNonce: ts.nonce,
			ResourceNames: slices.Sorted(maps.Keys(ts.watchers)),
		}
		if ts.nack != "" {
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: ts.nack}
			ts.nack = ""
		}
		return req
	}
	return nil
}

// handle applies a response and queues its ACK or NACK.
func (c *Client) handle(resp *discoveryv3.DiscoveryResponse) {
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	c.mu.Lock()
	ts := c.types[resp.GetTypeUrl()]
	c.mu.Unlock()
	if ts == nil {
		// Nothing asked for it: answer nothing, as a request for that
		// type would need a subscription of its own.
		c.log.Warn("xds response of a type never requested", "type", resp.GetTypeUrl())
		return
	}
	var problems []string
	applied := 0
	names := map[string]bool{}
	undecodable := false
	for i, a := range resp.GetResources() {
		m, name, err := ts.decode(a)
		if err != nil {
			problems = append(problems, fmt.Sprintf("resources[%d]: %v", i, err))
			undecodable = true
			continue
		}
		names[name] = true
		c.mu.Lock()
		var ws []*watcher
		if set := ts.watchers[name]; set != nil {
			ts.last[name] = m
			delete(ts.absent, name)
			for w := range set {
				ws = append(ws, w)
			}
		}
		c.mu.Unlock()
		var errs []error
		for _, w := range ws {
			if err := w.offer(m); err != nil && !slices.ContainsFunc(errs, func(e error) bool { return e.Error() == err.Error() }) {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			problems = append(problems, fmt.Sprintf("%s %q: %v", shortType(resp.GetTypeUrl()), name, errors.Join(errs...)))
		} else if len(ws) > 0 {
			applied++
		}
	}
	// Full state: what the response leaves out was removed (also when a
	// watcher refused another resource of it, as Envoy's CDS does). Not
	// when a resource could not be decoded: it may be one of the watched.
	if ts.fullState && !undecodable {
		c.removeMissing(ts, names)
	}
	c.mu.Lock()
	ts.nonce = resp.GetNonce()
	if len(problems) == 0 {
		ts.version = resp.GetVersionInfo()
	} else {
		ts.nack = strings.Join(problems, "; ")
	}
	c.due(ts)
	c.mu.Unlock()
	if len(problems) > 0 {
		c.log.Warn("xds update rejected (NACK); keeping the last good version", "type", shortType(resp.GetTypeUrl()),
			"version", resp.GetVersionInfo(), "err", strings.Join(problems, "; "))
		return
	}
	c.log.Debug("xds update accepted (ACK)", "type", shortType(resp.GetTypeUrl()), "version", resp.GetVersionInfo(), "resources", len(resp.GetResources()), "applied", applied)
}

// removeMissing tells the watchers of resources absent from a full-state
// response that theirs is gone. Called with deliverMu held.
func (c *Client) removeMissing(ts *typeState, present map[string]bool) {
	var ws []*watcher
	c.mu.Lock()
	for name, set := range ts.watchers {
		if present[name] {
			continue
		}
		delete(ts.last, name)
		ts.absent[name] = true
		for w := range set {
			ws = append(ws, w)
		}
	}
	c.mu.Unlock()
	for _, w := range ws {
		w.remove()
	}
}

func shortType(typeURL string) string { return typeURL[strings.LastIndexByte(typeURL, '/')+1:] }

// unwrap returns the resource inside a discovery Resource wrapper (sent with
// a TTL), or a itself.
func unwrap(a *anypb.Any, want string) (*anypb.Any, error) {
	if a.GetTypeUrl() == resourceWrapperType {
		var r discoveryv3.Resource
		if err := a.UnmarshalTo(&r); err != nil {
			return nil, err
		}
		if r.GetResource() == nil {
			return nil, fmt.Errorf("resource %q: empty wrapper (removal is not supported in state of the world)", r.GetName())
		}
		a = r.GetResource()
	}
	if a.GetTypeUrl() != want {
		return nil, fmt.Errorf("type %q in a response for %q", a.GetTypeUrl(), want)
	}
	return a, nil
}

func decodeRoutes(a *anypb.Any) (proto.Message, string, error) {
	a, err := unwrap(a, RouteConfigurationType)
	if err != nil {
		return nil, "", err
	}
	rc := &breezev1.RouteConfiguration{}
	if err := proto.Unmarshal(a.GetValue(), rc); err != nil {
		return nil, "", err
	}
	return rc, rc.GetName(), nil
}

func decodeCluster(a *anypb.Any) (proto.Message, string, error) {
	a, err := unwrap(a, ClusterType)
	if err != nil {
		return nil, "", err
	}
	c := &clusterv3.Cluster{}
	if err := proto.Unmarshal(a.GetValue(), c); err != nil {
		return nil, "", err
	}
	return c, c.GetName(), nil
}

func decodeEndpoints(a *anypb.Any) (proto.Message, string, error) {
	a, err := unwrap(a, ClusterLoadAssignmentType)
	if err != nil {
		return nil, "", err
	}
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := proto.Unmarshal(a.GetValue(), cla); err != nil {
		return nil, "", err
	}
	return cla, cla.GetClusterName(), nil
}
