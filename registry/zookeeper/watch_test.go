package zookeeper

import (
	"fmt"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/zookeeper/zktest"
)

// A providers node created between the watcher's Children (no node) and
// its ExistsW (there now): ExistsW sets a node watch, which does not fire
// when a provider comes or goes. The read that follows must set a child
// watch of its own; it used to read without one, as if the node watch
// covered children, and the interface's providers were frozen from then
// on (TestApplicationLevel's intermittent "no update within 30s of an
// interface-level node" and the removal never seen). The race is made
// deterministic by calling exists on a node that is there.
func TestChildWatchAfterExistsFoundTheNode(t *testing.T) {
	zs := zktest.Start(t)
	admin, _, err := zk.Connect([]string{zs.Addr}, 10*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	const iface = "org.breeze.Greeter"
	providers := "/dubbo/" + iface + "/providers"
	for _, p := range []string{"/dubbo", "/dubbo/" + iface, providers} {
		if _, err := admin.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("create %s: %v", p, err)
		}
	}
	conn, _, err := zk.Connect([]string{zs.Addr}, 10*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := &watcher{
		conn: conn, log: slog.Default(), root: "/dubbo",
		pending: map[string]bool{}, watching: map[watchKey]uint64{}, wake: make(chan struct{}, 1),
		interfaces: map[string]bool{iface: true}, providers: map[string]map[string]registry.Instance{},
		app: newAppState(),
	}

	// The end of the race: ExistsW finds the node, and asks for a read.
	if err := w.exists(providers); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	asked := w.pending[providers]
	clear(w.pending)
	w.mu.Unlock()
	if !asked {
		t.Fatalf("exists on a node that is there did not ask for a read of it (pending empty)")
	}
	<-w.wake
	if changed, err := w.read(providers); err != nil || changed {
		t.Fatalf("reading the empty providers node: changed=%v err=%v, want no change and no error", changed, err)
	}

	// A provider comes. ZooKeeper delivers a watch's event to the session
	// before the answer to any later request of it: once conn lists the
	// provider, the child watch (if any) has fired in go-zookeeper.
	node := providers + "/" + url.QueryEscape("dubbo://10.0.0.1:20880/"+iface+"?version=1.0.0")
	if _, err := admin.Create(node, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	if c, _, err := conn.Children(providers); err != nil || len(c) != 1 {
		t.Fatalf("the watcher's session lists %v (err %v) under %s, want the new provider", c, err, providers)
	}
	// Only the follow goroutine is left to run: a guard, not a bound.
	select {
	case <-w.wake:
	case <-time.After(30 * time.Second):
		w.mu.Lock()
		defer w.mu.Unlock()
		t.Fatalf("a provider created under %s did not wake the watcher: no child watch was set (watching %v, pending %v)",
			providers, w.watching, w.pending)
	}
	w.mu.Lock()
	asked, pending := w.pending[providers], fmt.Sprint(w.pending)
	w.mu.Unlock()
	if !asked {
		t.Fatalf("woken, but %s is not to be read again (pending %s)", providers, pending)
	}
	if changed, err := w.read(providers); err != nil || !changed {
		t.Fatalf("reading %s after a provider came: changed=%v err=%v, want a change", providers, changed, err)
	}
	if got := len(w.providers[iface]); got != 1 {
		t.Fatalf("%d providers of %s after the read, want 1", got, iface)
	}
}
