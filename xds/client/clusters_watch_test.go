package client_test

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/breeze-mesh/breeze/xds/client"
)

// scripted is an ADS server the test drives response by response: it
// sends what the test queues and hands over every request the client
// makes. go-control-plane's caches (controlplane.Server) cannot leave a
// resource out of one response on purpose, or send one that does not
// decode.
type scripted struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	t     *testing.T
	addr  string
	reqs  chan *discoveryv3.DiscoveryRequest
	resps chan *discoveryv3.DiscoveryResponse
	nonce int
}

func startScripted(t *testing.T) *scripted {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{t: t, addr: ln.Addr().String(), reqs: make(chan *discoveryv3.DiscoveryRequest, 100), resps: make(chan *discoveryv3.DiscoveryResponse, 100)}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return s
}

func (s *scripted) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case s.reqs <- req:
			case <-st.Context().Done():
				return
			}
		}
	}()
	for {
		select {
		case resp := <-s.resps:
			if err := st.Send(resp); err != nil {
				return err
			}
		case err := <-recvErr:
			return err
		case <-st.Context().Done():
			return st.Context().Err()
		}
	}
}

// request waits for the client's next cluster request that satisfies ok,
// skipping others.
func (s *scripted) request(what string, ok func(*discoveryv3.DiscoveryRequest) bool) *discoveryv3.DiscoveryRequest {
	s.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case req := <-s.reqs:
			if req.GetTypeUrl() == client.ClusterType && ok(req) {
				return req
			}
		case <-timeout:
			s.t.Fatalf("no request %s within 10s", what)
			return nil
		}
	}
}

// subscribed waits until the client asks for exactly names.
func (s *scripted) subscribed(names ...string) {
	s.t.Helper()
	slices.Sort(names)
	s.request("for "+strings.Join(names, ", "), func(req *discoveryv3.DiscoveryRequest) bool {
		return slices.Equal(req.GetResourceNames(), names)
	})
}

// send queues a response of version with resources, and returns its
// nonce.
func (s *scripted) send(version string, resources ...*anypb.Any) string {
	s.nonce++
	nonce := strconv.Itoa(s.nonce)
	s.resps <- &discoveryv3.DiscoveryResponse{TypeUrl: client.ClusterType, VersionInfo: version, Nonce: nonce, Resources: resources}
	return nonce
}

// answer waits for the client's answer to the response with nonce: the
// client has delivered that response to its watchers by then. It returns
// the NACK's detail, "" for an ACK.
func (s *scripted) answer(nonce string) (version, nack string) {
	s.t.Helper()
	req := s.request("answering nonce "+nonce, func(req *discoveryv3.DiscoveryRequest) bool { return req.GetResponseNonce() == nonce })
	return req.GetVersionInfo(), req.GetErrorDetail().GetMessage()
}

// acked sends a response and waits for its ACK.
func (s *scripted) acked(version string, resources ...*anypb.Any) {
	s.t.Helper()
	if v, nack := s.answer(s.send(version, resources...)); nack != "" || v != version {
		s.t.Fatalf("version %s: answered version %q, NACK %q; want an ACK", version, v, nack)
	}
}

// cluster is a cluster resource; mark tells its versions apart.
func cluster(t *testing.T, name, mark string) *anypb.Any {
	t.Helper()
	a, err := anypb.New(&clusterv3.Cluster{Name: name, AltStatName: mark, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// clusterRecorder is a cluster watcher: it reports each call ("mark", or
// "removed" for apply(nil)) and refuses the marks in reject.
type clusterRecorder struct {
	got    chan string
	reject map[string]error
}

func newClusterRecorder() *clusterRecorder { return &clusterRecorder{got: make(chan string, 100)} }

func (r *clusterRecorder) apply(c *clusterv3.Cluster) error {
	if c == nil {
		r.got <- "removed"
		return nil
	}
	r.got <- c.GetAltStatName()
	return r.reject[c.GetAltStatName()]
}

func (r *clusterRecorder) next(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-r.got:
		if got != want {
			t.Fatalf("watcher got %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("watcher got nothing within 10s, want %q", want)
	}
}

// nothing checks that the watcher was not called: only after the client
// answered the last response, which it does once its watchers had it.
func (r *clusterRecorder) nothing(t *testing.T) {
	t.Helper()
	select {
	case got := <-r.got:
		t.Fatalf("watcher got %q, want no call", got)
	default:
	}
}

func TestWatchClustersRemoval(t *testing.T) {
	s := startScripted(t)
	c := newClient(t, s.addr)
	a, b := newClusterRecorder(), newClusterRecorder()
	c.WatchClusters("a", a.apply)
	c.WatchClusters("b", b.apply)
	s.subscribed("a", "b")

	s.acked("1", cluster(t, "a", "a1"), cluster(t, "b", "b1"))
	a.next(t, "a1")
	b.next(t, "b1")

	// b left out of a full-state response: removed. a, unchanged, is not
	// offered again.
	s.acked("2", cluster(t, "a", "a1"))
	b.next(t, "removed")
	a.nothing(t)
	b.nothing(t)

	// Still missing: not removed twice. A new watcher of b is told at once
	// that b does not exist (no stale version from the client's cache).
	b2 := newClusterRecorder()
	c.WatchClusters("b", b2.apply)
	b2.next(t, "removed")
	s.acked("3", cluster(t, "a", "a1"))
	b.nothing(t)
	b2.nothing(t)

	// Back again: both watchers of b get it.
	s.acked("4", cluster(t, "a", "a1"), cluster(t, "b", "b2"))
	b.next(t, "b2")
	b2.next(t, "b2")
	a.nothing(t)

	// An empty response removes every cluster.
	s.acked("5")
	a.next(t, "removed")
	b.next(t, "removed")
	b2.next(t, "removed")
}

// A watched cluster the server never sent is reported absent once, when a
// response first leaves it out (a proxy then knows not to wait for it),
// and not again while it stays absent.
func TestWatchClustersAbsentReportedOnce(t *testing.T) {
	s := startScripted(t)
	c := newClient(t, s.addr)
	a, later := newClusterRecorder(), newClusterRecorder()
	c.WatchClusters("a", a.apply)
	c.WatchClusters("later", later.apply)
	s.subscribed("a", "later")

	s.acked("1", cluster(t, "a", "a1"))
	a.next(t, "a1")
	later.next(t, "removed")
	s.acked("2", cluster(t, "a", "a2"))
	a.next(t, "a2")
	later.nothing(t)

	s.acked("3", cluster(t, "a", "a2"), cluster(t, "later", "l1"))
	later.next(t, "l1")
}

// A response with a resource that does not decode may hold any of the
// watched clusters: it removes nothing, and is NACKed naming the resource.
func TestWatchClustersUndecodableRemovesNothing(t *testing.T) {
	s := startScripted(t)
	c := newClient(t, s.addr)
	a, b := newClusterRecorder(), newClusterRecorder()
	c.WatchClusters("a", a.apply)
	c.WatchClusters("b", b.apply)
	s.subscribed("a", "b")
	s.acked("1", cluster(t, "a", "a1"), cluster(t, "b", "b1"))
	a.next(t, "a1")
	b.next(t, "b1")

	endpoints, err := anypb.New(&endpointv3.ClusterLoadAssignment{ClusterName: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		bad  *anypb.Any
		want string
	}{
		// protobuf's errors vary their spaces on purpose: a prefix.
		{&anypb.Any{TypeUrl: client.ClusterType, Value: []byte{0xff}}, "resources[1]: proto:"},
		{endpoints, `resources[1]: type "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment" in a response for "type.googleapis.com/envoy.config.cluster.v3.Cluster"`},
	} {
		v := strconv.Itoa(2 + i)
		version, nack := s.answer(s.send(v, cluster(t, "a", "a"+v), tc.bad))
		if version != "1" || !strings.HasPrefix(nack, tc.want) {
			t.Fatalf("version %s: answered version %q, NACK %q; want version 1, a NACK starting %q", v, version, nack, tc.want)
		}
		// a decoded, so it is applied, as Envoy does; b stays.
		a.next(t, "a"+v)
		b.nothing(t)
	}

	// The next good response that leaves b out removes it.
	s.acked("4", cluster(t, "a", "a3"))
	b.next(t, "removed")
	a.nothing(t)
}

// A watcher's error NACKs the version, naming the cluster, with the last
// version ACKed; the next good one is ACKed again.
func TestWatchClustersWatcherErrorNACKs(t *testing.T) {
	s := startScripted(t)
	c := newClient(t, s.addr)
	a := newClusterRecorder()
	a.reject = map[string]error{"bad": errors.New("lb_policy: RING_HASH needs a hash_key")}
	c.WatchClusters("a", a.apply)
	s.subscribed("a")
	s.acked("1", cluster(t, "a", "good"))
	a.next(t, "good")

	version, nack := s.answer(s.send("2", cluster(t, "a", "bad")))
	a.next(t, "bad")
	if version != "1" || nack != `envoy.config.cluster.v3.Cluster "a": lb_policy: RING_HASH needs a hash_key` {
		t.Fatalf("answered version %q, NACK %q", version, nack)
	}

	s.acked("3", cluster(t, "a", "good2"))
	a.next(t, "good2")
}

// A cluster a watcher refuses does not hold back the removal of another
// that the same response leaves out (Envoy's CDS removes it too).
func TestWatchClustersRefusalStillRemoves(t *testing.T) {
	s := startScripted(t)
	c := newClient(t, s.addr)
	a, b := newClusterRecorder(), newClusterRecorder()
	a.reject = map[string]error{"bad": errors.New("refused")}
	c.WatchClusters("a", a.apply)
	c.WatchClusters("b", b.apply)
	s.subscribed("a", "b")
	s.acked("1", cluster(t, "a", "a1"), cluster(t, "b", "b1"))
	a.next(t, "a1")
	b.next(t, "b1")

	version, nack := s.answer(s.send("2", cluster(t, "a", "bad")))
	a.next(t, "bad")
	b.next(t, "removed")
	if version != "1" || !strings.Contains(nack, "refused") {
		t.Fatalf("answered version %q, NACK %q", version, nack)
	}
}
