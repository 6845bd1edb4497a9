package zookeeper

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/zookeeper/zktest"
)

// BenchmarkScale measures `breeze xds` with 1,000 interfaces × 10 providers in
// a real ZooKeeper: the control plane (ZooKeeper source, translation,
// xDS cache) runs in this process. It prints the time to serve them all
// when the control plane starts, the time from registering one more
// provider per interface (1,000 at once) to serving them, and the CPU
// time and heap it takes. A benchmark so that `make test` does not run it;
// run it alone, once:
//
//	go test -run '^$' -bench BenchmarkScale -benchtime 1x -v ./registry/zookeeper/
func BenchmarkScale(b *testing.B) {
	t := b // one measurement, whatever b.N: it reports times, not ns/op
	const interfaces, perInterface = 1000, 10
	zs := zktest.Start(t)
	conn, _, err := zk.Connect([]string{zs.Addr}, 30*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	iface := func(i int) string { return fmt.Sprintf("org.breeze.scale.Service%04d", i) }
	acl := zk.WorldACL(zk.PermAll)
	// providers creates one ephemeral provider node per interface, at
	// address 10.<k>.x.y, in batches of 200 (ZooKeeper's multi).
	providers := func(k int) {
		t.Helper()
		var ops []any
		flush := func() {
			if _, err := conn.Multi(ops...); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
		for i := range interfaces {
			u := fmt.Sprintf("dubbo://10.%d.%d.%d:20880/%s?application=scale&side=provider&version=1.0.%d&methods=a,b&dubbo=2.0.2&release=3.3.0", k, i/256, i%256, iface(i), k)
			ops = append(ops, &zk.CreateRequest{Path: "/dubbo/" + iface(i) + "/providers/" + url.QueryEscape(u), Acl: acl, Flags: zk.FlagEphemeral})
			if len(ops) == 200 {
				flush()
			}
		}
		if len(ops) > 0 {
			flush()
		}
	}
	if _, err := conn.Create("/dubbo", nil, 0, acl); err != nil {
		t.Fatal(err)
	}
	var ops []any
	for i := range interfaces {
		ops = append(ops, &zk.CreateRequest{Path: "/dubbo/" + iface(i), Acl: acl}, &zk.CreateRequest{Path: "/dubbo/" + iface(i) + "/providers", Acl: acl})
		if len(ops) >= 200 {
			if _, err := conn.Multi(ops...); err != nil {
				t.Fatal(err)
			}
			ops = nil
		}
	}
	for k := range perInterface {
		providers(k)
	}

	var (
		mu        sync.Mutex
		endpoints int
		changed   = make(chan struct{}, 1)
	)
	count := func(r controlplane.Resources) int {
		n := 0
		for _, cla := range r.Endpoints {
			for _, l := range cla.GetEndpoints() {
				n += len(l.GetLbEndpoints())
			}
		}
		return n
	}
	waitServed := func(want int, from time.Time) time.Duration {
		t.Helper()
		timeout := time.After(5 * time.Minute)
		for {
			mu.Lock()
			n := endpoints
			mu.Unlock()
			if n == want {
				return time.Since(from)
			}
			select {
			case <-changed:
			case <-timeout:
				t.Fatalf("%d endpoints served after 5 minutes, want %d", n, want)
			}
		}
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	cpu0 := cpuTime(t)
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := controlplane.NewServer(nil)
	go func() {
		done <- controlplane.Run(ctx, &registry.Source{Registry: &Registry{Servers: []string{zs.Addr}}}, srv, nil, func(r controlplane.Resources, _ []controlplane.Problem) {
			n := count(r)
			mu.Lock()
			endpoints = n
			mu.Unlock()
			select {
			case changed <- struct{}{}:
			default:
			}
		})
	}()
	defer func() {
		cancel()
		<-done
	}()
	startup := waitServed(interfaces*perInterface, start)
	cpuStartup := cpuTime(t) - cpu0
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("start: %d interfaces × %d providers served %s after the control plane started; CPU %s; heap in use %.1f MiB (%.1f MiB before), %d goroutines",
		interfaces, perInterface, startup.Round(time.Millisecond), cpuStartup.Round(time.Millisecond),
		float64(after.HeapInuse)/(1<<20), float64(before.HeapInuse)/(1<<20), runtime.NumGoroutine())

	// One more provider for every interface, at once.
	cpu1 := cpuTime(t)
	registered := time.Now()
	providers(perInterface)
	created := time.Since(registered)
	churn := waitServed(interfaces*(perInterface+1), registered)
	t.Logf("churn: %d providers more (one per interface) created in %s, all served %s after the first was created; CPU (registering included) %s",
		interfaces, created.Round(time.Millisecond), churn.Round(time.Millisecond), (cpuTime(t) - cpu1).Round(time.Millisecond))

	// One provider more, alone.
	one := time.Now()
	u := "dubbo://10.99.0.1:20880/" + iface(7) + "?application=scale&side=provider&version=9"
	if _, err := conn.Create("/dubbo/"+iface(7)+"/providers/"+url.QueryEscape(u), nil, zk.FlagEphemeral, acl); err != nil {
		t.Fatal(err)
	}
	t.Logf("one provider more: served %s after it was created", waitServed(interfaces*(perInterface+1)+1, one).Round(time.Millisecond))
}

// cpuTime is this process's CPU time, user and system.
func cpuTime(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
