package zookeeper

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/internal/scaletest"
	"github.com/breeze-mesh/breeze/registry/zookeeper/zktest"
)

// BenchmarkScale measures `breeze xds` with 1,000 interfaces × 10
// providers in a real ZooKeeper, end to end (registry/internal/scaletest):
// start → all served; one provider more → the first request a real Breeze
// proxy routes to it; removed → the last request it gets; a new interface
// → its first routed request; CPU time and heap. A benchmark so that
// `make test` does not run it; run it alone, once:
//
//	go test -run '^$' -bench BenchmarkScale -benchtime 1x -v ./registry/zookeeper/
func BenchmarkScale(b *testing.B) {
	zs := zktest.Start(b)
	conn, _, err := zk.Connect([]string{zs.Addr}, 30*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(conn.Close)
	scaletest.Measure(b, &zkRegistrar{servers: []string{zs.Addr}, conn: conn},
		scaletest.Options{Interfaces: 1000, PerInterface: 10, Additions: 20, NewInterfaces: 5})
}

// zkRegistrar writes provider nodes as Dubbo does: ephemeral, URL-encoded
// provider URLs under /dubbo/<interface>/providers.
type zkRegistrar struct {
	servers []string
	conn    *zk.Conn
	added   int
}

func (z *zkRegistrar) Registry() registry.Registry { return &Registry{Servers: z.servers} }

var worldACL = zk.WorldACL(zk.PermAll)

func providerNode(iface, ip string, port int, version string) string {
	u := fmt.Sprintf("dubbo://%s:%d/%s?application=scale&side=provider&version=%s&methods=a,b&dubbo=2.0.2&release=3.3.0", ip, port, iface, version)
	return "/dubbo/" + iface + "/providers/" + url.QueryEscape(u)
}

// Populate creates the interfaces' nodes, then their providers, in
// batches of 200 (ZooKeeper's multi).
func (z *zkRegistrar) Populate(tb testing.TB, interfaces, perInterface int, addr func(i, k int) (string, int)) {
	tb.Helper()
	var ops []any
	flush := func() {
		if len(ops) == 0 {
			return
		}
		if _, err := z.conn.Multi(ops...); err != nil {
			tb.Fatal(err)
		}
		ops = ops[:0]
	}
	add := func(op *zk.CreateRequest) {
		if ops = append(ops, op); len(ops) == 200 {
			flush()
		}
	}
	add(&zk.CreateRequest{Path: "/dubbo", Acl: worldACL})
	for i := range interfaces {
		iface := scaletest.Interface(i)
		add(&zk.CreateRequest{Path: "/dubbo/" + iface, Acl: worldACL})
		add(&zk.CreateRequest{Path: "/dubbo/" + iface + "/providers", Acl: worldACL})
	}
	for k := range perInterface {
		for i := range interfaces {
			ip, port := addr(i, k)
			add(&zk.CreateRequest{Path: providerNode(scaletest.Interface(i), ip, port, fmt.Sprintf("1.0.%d", k)), Acl: worldACL, Flags: zk.FlagEphemeral})
		}
	}
	flush()
}

// Add creates one provider node; for an interface not there yet, its
// nodes with it in one multi (as one registration).
func (z *zkRegistrar) Add(tb testing.TB, iface, ip string, port int) (time.Time, func() time.Time) {
	tb.Helper()
	z.added++
	node := providerNode(iface, ip, port, fmt.Sprintf("9.%d", z.added))
	ops := []any{&zk.CreateRequest{Path: node, Acl: worldACL, Flags: zk.FlagEphemeral}}
	if ok, _, err := z.conn.Exists("/dubbo/" + iface); err != nil {
		tb.Fatal(err)
	} else if !ok {
		ops = append([]any{&zk.CreateRequest{Path: "/dubbo/" + iface, Acl: worldACL}, &zk.CreateRequest{Path: "/dubbo/" + iface + "/providers", Acl: worldACL}}, ops...)
	}
	at := time.Now()
	if _, err := z.conn.Multi(ops...); err != nil {
		tb.Fatal(err)
	}
	return at, func() time.Time {
		gone := time.Now()
		if err := z.conn.Delete(node, -1); err != nil {
			tb.Fatal(err)
		}
		return gone
	}
}
