package controlplane

import (
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/breeze-mesh/breeze/config"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

// clusterWatcher applies clusters as a proxy would: it reads and checks
// each, refuses MAGLEV ones (standing for any cluster a proxy cannot
// take), and keeps what it had when it refuses.
type clusterWatcher struct {
	offered chan *breezev1.Cluster // every version offered; nil: removed
	current atomic.Pointer[breezev1.Cluster]
}

func newClusterWatcher() *clusterWatcher {
	return &clusterWatcher{offered: make(chan *breezev1.Cluster, 100)}
}

var errNoMaglev = errors.New("lb_policy: MAGLEV: not taken by this proxy")

func (w *clusterWatcher) apply(c *clusterv3.Cluster) error {
	if c == nil {
		w.current.Store(nil)
		w.offered <- nil
		return nil
	}
	bc, err := client.Cluster(c)
	if err == nil {
		err = config.ValidateCluster(bc)
	}
	if err == nil && bc.GetLbPolicy() == breezev1.Cluster_MAGLEV {
		err = errNoMaglev
	}
	w.offered <- bc
	if err != nil {
		return err
	}
	w.current.Store(bc)
	return nil
}

// next waits for the next version offered and returns its policy and hash
// key ("removed" for a removal).
func (w *clusterWatcher) next(t *testing.T) string {
	t.Helper()
	select {
	case c := <-w.offered:
		return policyOf(c)
	case <-time.After(10 * time.Second):
		t.Fatal("no cluster offered within 10s")
		return ""
	}
}

func policyOf(c *breezev1.Cluster) string {
	if c == nil {
		return "removed"
	}
	return strings.TrimSpace(c.GetLbPolicy().String() + " " + c.GetHashKey())
}

// The control plane's clusters reach Breeze's xDS client over a real
// loopback gRPC connection to go-control-plane's server: a watched cluster
// arrives, a changed policy arrives, a removed cluster is reported as
// removed (full state), and a version the watcher refuses is NACKed, seen
// by the server's OnNACK, while the watcher keeps its previous version.
func TestServeClusters(t *testing.T) {
	const c20880, c20990 = "outbound|20880||org.example.Greeter", "outbound|20990||org.example.Greeter"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(quiet)
	nacks := make(chan NACK, 10)
	srv.OnNACK = func(n NACK) { nacks <- n }
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})

	d := dir(t, map[string]string{"se.yaml": entry("org.example.Greeter", 20880, 20990)})
	// serve translates the directory and serves the result.
	serve := func(files map[string]string) {
		t.Helper()
		for name, content := range files {
			write(t, d, name, content)
		}
		tr, problems := read(t, d)
		if len(problems) > 0 {
			t.Fatalf("problems: %v", problemStrings(problems))
		}
		if err := srv.Set(tr.Resources); err != nil {
			t.Fatal(err)
		}
	}
	serve(map[string]string{"dr.yaml": rule("  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n")})

	c, err := client.New(client.Options{Address: ln.Addr().String(), NodeID: "sidecar-1", Log: quiet,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	w, other := newClusterWatcher(), newClusterWatcher()
	c.WatchClusters(c20880, w.apply)
	c.WatchClusters(c20990, other.apply)

	// Arrives.
	if got := w.next(t); got != "ROUND_ROBIN" {
		t.Fatalf("%s: %s", c20880, got)
	}
	if got := other.next(t); got != "ROUND_ROBIN" {
		t.Fatalf("%s: %s", c20990, got)
	}

	// A changed policy (for one port) arrives.
	serve(map[string]string{"dr.yaml": rule("  trafficPolicy:\n    portLevelSettings: [{port: {number: 20880}, loadBalancer: {consistentHash: {httpHeaderName: user}}}]\n")})
	if got := w.next(t); got != "RING_HASH user" {
		t.Fatalf("changed: %s", got)
	}

	// Refused: NACKed, reported by the server, and the watcher keeps its
	// previous version.
	serve(map[string]string{"dr.yaml": rule("  trafficPolicy:\n    portLevelSettings: [{port: {number: 20880}, loadBalancer: {consistentHash: {httpHeaderName: user, maglev: {}}}}]\n")})
	if got := w.next(t); got != "MAGLEV user" {
		t.Fatalf("offered: %s", got)
	}
	select {
	case n := <-nacks:
		if n.Node != "sidecar-1" || n.TypeURL != client.ClusterType || n.Version == "" ||
			n.Detail != `envoy.config.cluster.v3.Cluster "`+c20880+`": `+errNoMaglev.Error() {
			t.Fatalf("NACK %+v", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no NACK within 10s")
	}
	if got := policyOf(w.current.Load()); got != "RING_HASH user" {
		t.Fatalf("after the NACK the watcher runs %s", got)
	}

	// The next good version is taken.
	serve(map[string]string{"dr.yaml": rule("  trafficPolicy:\n    portLevelSettings: [{port: {number: 20880}, loadBalancer: {simple: RANDOM}}]\n")})
	if got := w.next(t); got != "RANDOM" {
		t.Fatalf("after the NACK: %s", got)
	}

	// Removed: the watcher hears of it; the other cluster, in the same
	// response, is untouched.
	serve(map[string]string{"se.yaml": entry("org.example.Greeter", 20990)})
	if got := w.next(t); got != "removed" {
		t.Fatalf("removed: %s", got)
	}
	if w.current.Load() != nil {
		t.Fatal("the removed cluster is still applied")
	}
	select {
	case c := <-other.offered:
		t.Fatalf("%s offered again: %s", c20990, policyOf(c))
	default:
	}
	if got := policyOf(other.current.Load()); got != "ROUND_ROBIN" {
		t.Fatalf("%s: %s", c20990, got)
	}
	select {
	case n := <-nacks:
		t.Fatalf("unexpected NACK %+v", n)
	default:
	}
}

// Serve answers nobody before the first Set (an empty cluster list would
// tell a reconnecting proxy its clusters were removed), and a Stop before
// any Set ends it and closes the listener.
func TestServeBeforeFirstSet(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(quiet)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	srv.Stop()
	if err := <-served; err != nil {
		t.Fatalf("Serve after Stop: %v", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Fatal("listener still open after Stop")
	}

	// Subscribed before the first Set: the first thing the watcher hears is
	// the cluster, not its absence.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv = NewServer(quiet)
	served = make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	c, err := client.New(client.Options{Address: ln.Addr().String(), NodeID: "early", Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	w := newClusterWatcher()
	c.WatchClusters("outbound|20880||org.example.Greeter", w.apply)
	d := dir(t, map[string]string{"se.yaml": entry("org.example.Greeter", 20880)})
	tr, _ := read(t, d)
	if err := srv.Set(tr.Resources); err != nil {
		t.Fatal(err)
	}
	if got := w.next(t); got != "ROUND_ROBIN" {
		t.Fatalf("first delivery %q, want the cluster", got)
	}
}
