package client_test

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/breeze-mesh/breeze/controlplane"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// server is a real go-control-plane ADS server on a loopback port.
type server struct {
	t     *testing.T
	addr  string
	srv   *controlplane.Server
	nacks chan controlplane.NACK
	res   controlplane.Resources
}

func startServer(t *testing.T, addr string, res controlplane.Resources) *server {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, addr: ln.Addr().String(), srv: controlplane.NewServer(quiet), nacks: make(chan controlplane.NACK, 100)}
	s.srv.OnNACK = func(n controlplane.NACK) { s.nacks <- n }
	s.set(res)
	go s.srv.Serve(ln)
	t.Cleanup(s.srv.Stop)
	return s
}

func (s *server) set(res controlplane.Resources) {
	s.t.Helper()
	s.res = res
	if err := s.srv.Set(res); err != nil {
		s.t.Fatal(err)
	}
}

func routes(rcs ...*breezev1.RouteConfiguration) controlplane.Resources {
	r := controlplane.Resources{Routes: map[string]*breezev1.RouteConfiguration{}, Endpoints: map[string]*endpointv3.ClusterLoadAssignment{}}
	for _, rc := range rcs {
		r.Routes[rc.GetName()] = rc
	}
	return r
}

func table(name, cluster string) *breezev1.RouteConfiguration {
	return &breezev1.RouteConfiguration{Name: name, Routes: []*breezev1.Route{{Name: cluster, Route: &breezev1.RouteAction{
		ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: cluster}}}}}
}

func target(rc *breezev1.RouteConfiguration) string { return rc.GetRoutes()[0].GetRoute().GetCluster() }

func newClient(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{Address: addr, NodeID: "test-node", Log: quiet, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// recorder is a route watcher that reports each version it is offered and
// accepts those its reject function lets through.
type recorder struct {
	got    chan string
	reject func(*breezev1.RouteConfiguration) error
}

func newRecorder() *recorder { return &recorder{got: make(chan string, 100)} }

func (r *recorder) apply(rc *breezev1.RouteConfiguration) error {
	r.got <- target(rc)
	if r.reject != nil {
		return r.reject(rc)
	}
	return nil
}

func (r *recorder) next(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-r.got:
		if got != want {
			t.Fatalf("applied a table to %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no table applied within 10s (want one to %q)", want)
	}
}

func (r *recorder) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case got := <-r.got:
		t.Fatalf("unexpected table to %q", got)
	case <-time.After(within):
	}
}

func TestUpdatesInOrder(t *testing.T) {
	s := startServer(t, "", routes(table("r", "c0")))
	c := newClient(t, s.addr)
	rec := newRecorder()
	c.WatchRoutes("r", rec.apply)
	rec.next(t, "c0")
	for i := 1; i <= 20; i++ {
		want := "c" + string(rune('0'+i%10))
		s.set(routes(table("r", want)))
		rec.next(t, want)
	}
}

func TestInvalidResourceNACKedAndLastGoodKept(t *testing.T) {
	s := startServer(t, "", routes(table("r", "good")))
	c := newClient(t, s.addr)
	rec := newRecorder()
	rec.reject = func(rc *breezev1.RouteConfiguration) error {
		if target(rc) == "bad" {
			return errors.New(`routes[0].route.cluster: "bad": no such cluster`)
		}
		return nil
	}
	c.WatchRoutes("r", rec.apply)
	rec.next(t, "good")

	s.set(routes(table("r", "bad")))
	rec.next(t, "bad")
	select {
	case n := <-s.nacks:
		if n.Node != "test-node" || n.TypeURL != client.RouteConfigurationType ||
			!strings.Contains(n.Detail, `RouteConfiguration "r": routes[0].route.cluster: "bad": no such cluster`) {
			t.Fatalf("NACK %+v", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no NACK")
	}
	// The next good version is ACKed: no further NACK.
	s.set(routes(table("r", "good2")))
	rec.next(t, "good2")
	select {
	case n := <-s.nacks:
		t.Fatalf("unexpected NACK %+v", n)
	default:
	}
}

func TestServerStartsLaterAndRestarts(t *testing.T) {
	// Reserve a port, then free it: the client starts with nothing there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	c := newClient(t, addr)
	rec := newRecorder()
	c.WatchRoutes("r", rec.apply)
	rec.none(t, 100*time.Millisecond)

	s := startServer(t, addr, routes(table("r", "v1")))
	rec.next(t, "v1")

	// Restart with the same table: the client gets it again from the new
	// server (new versions) but its watcher is not bothered with it.
	s.srv.Stop()
	s2 := startServer(t, addr, routes(table("r", "v1")))
	s2.set(routes(table("r", "v2")))
	rec.next(t, "v2")
}

func TestSharedSubscriptions(t *testing.T) {
	s := startServer(t, "", routes(table("a", "a1"), table("b", "b1")))
	c := newClient(t, s.addr)
	a1, a2, b := newRecorder(), newRecorder(), newRecorder()
	c.WatchRoutes("a", a1.apply)
	a1.next(t, "a1")
	// A second watcher of the same resource gets the cached version at once.
	cancelA2 := c.WatchRoutes("a", a2.apply)
	a2.next(t, "a1")
	cancelB := c.WatchRoutes("b", b.apply)
	b.next(t, "b1")

	s.set(routes(table("a", "a2"), table("b", "b2")))
	a1.next(t, "a2")
	a2.next(t, "a2")
	b.next(t, "b2")

	cancelA2()
	cancelB()
	s.set(routes(table("a", "a3"), table("b", "b3")))
	a1.next(t, "a3")
	a2.none(t, 50*time.Millisecond)
	b.none(t, 0)

	// One watcher refusing a version NACKs it; the other one applies it.
	a2.reject = func(*breezev1.RouteConfiguration) error { return errors.New("no") }
	c.WatchRoutes("a", a2.apply)
	a2.next(t, "a3")
	s.set(routes(table("a", "a4")))
	a1.next(t, "a4")
	a2.next(t, "a4")
	select {
	case n := <-s.nacks:
		if !strings.Contains(n.Detail, `RouteConfiguration "a": no`) {
			t.Fatalf("NACK %+v", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no NACK")
	}
}
