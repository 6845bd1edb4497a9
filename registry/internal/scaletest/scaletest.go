// Package scaletest measures a registry at scale end to end, for the
// benchmarks of each registry (BenchmarkScale): the providers written to a
// real registry server, `breeze xds`'s control plane (the registry source,
// translation, the ADS server on a loopback port) and a real Breeze proxy
// (the standalone host running the plugin, its route table, clusters and
// endpoints over xDS from that control plane) sending Dubbo requests to
// real TCP endpoints standing in for the providers.
//
// What it reports (Measure): start → every interface served; one provider
// more of an existing interface → the first request routed to it; one
// removed → no more requests to it; a new interface → its first routed
// request; the control plane's CPU time and heap.
package scaletest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	_ "github.com/breeze-mesh/breeze/codecs/dubbo" // the proxy's codec
	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/filters/proxy"
	"github.com/breeze-mesh/breeze/host"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/registry"
)

// Registrar writes providers to the registry under test.
type Registrar interface {
	// Registry is what the control plane follows.
	Registry() registry.Registry
	// Populate registers perInterface providers of each of the
	// interfaces Interface(0..n-1), provider k of interface i at addr(i, k).
	Populate(tb testing.TB, interfaces, perInterface int, addr func(i, k int) (ip string, port int))
	// Add registers one provider of iface at ip:port, with parameters
	// other than the others' (so it is a new endpoint). It returns when
	// the registering request started, and remove, which unregisters it
	// and returns when that request started.
	Add(tb testing.TB, iface, ip string, port int) (registered time.Time, remove func() time.Time)
}

// Interface is the name of the i-th interface.
func Interface(i int) string { return fmt.Sprintf("org.breeze.scale.Service%04d", i) }

// FakeAddress is provider k of interface i where no request goes (only
// the interface under test gets requests): 10.k.x.y.
func FakeAddress(i, k int) (string, int) {
	return fmt.Sprintf("10.%d.%d.%d", k, i/256, i%256), 20880
}

// Options size a measurement.
type Options struct {
	Interfaces, PerInterface int
	// Additions: single-provider additions (and removals) measured, each
	// through the proxy; NewInterfaces: new interfaces measured.
	Additions, NewInterfaces int
	// Timeout for each thing awaited.
	Timeout time.Duration
}

// underTest is the interface whose providers are real listeners and that
// the proxy calls.
const underTest = 7

// Measure runs the whole measurement and reports its figures with
// b.ReportMetric (milliseconds, MiB) and b.Logf.
func Measure(b *testing.B, r Registrar, o Options) {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	iface := Interface(underTest)
	var underTestProviders []*Provider
	for range o.PerInterface {
		underTestProviders = append(underTestProviders, StartProvider(b))
	}
	start := time.Now()
	r.Populate(b, o.Interfaces, o.PerInterface, func(i, k int) (string, int) {
		if i == underTest {
			return "127.0.0.1", underTestProviders[k].Port
		}
		return FakeAddress(i, k)
	})
	b.Logf("populate: %d interfaces × %d providers registered in %s", o.Interfaces, o.PerInterface, time.Since(start).Round(time.Millisecond))

	// (a) start → every interface served.
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	cpu0 := CPUTime(b)
	start = time.Now()
	cp := StartControlPlane(b, r.Registry())
	total := o.Interfaces * o.PerInterface
	startup := cp.WaitEndpoints(b, total, start, o.Timeout)
	cpuStartup := CPUTime(b) - cpu0
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapInuse) / (1 << 20)
	b.Logf("start: %d endpoints served %s after the control plane started; CPU %s; heap in use %.1f MiB (%.1f MiB before), %d goroutines",
		total, startup.Round(time.Millisecond), cpuStartup.Round(time.Millisecond), heap, float64(before.HeapInuse)/(1<<20), runtime.NumGoroutine())
	b.ReportMetric(startup.Seconds()*1000, "start-served-ms")
	b.ReportMetric(cpuStartup.Seconds()*1000, "start-cpu-ms")
	b.ReportMetric(heap, "heap-MiB")

	// The control plane alone: one provider more, then removed, served
	// (no traffic: the CPU time is the registry's and the control
	// plane's, the proxy's xDS client's included).
	var served, unserved, cpuPer []time.Duration
	for n := range o.Additions {
		cpu := CPUTime(b)
		ip := fmt.Sprintf("10.200.%d.%d", n/256, n%256)
		at, remove := r.Add(b, Interface(n*37%o.Interfaces), ip, 20880)
		served = append(served, cp.WaitEndpoints(b, total+1, at, o.Timeout))
		gone := remove()
		unserved = append(unserved, cp.WaitEndpoints(b, total, gone, o.Timeout))
		cpuPer = append(cpuPer, (CPUTime(b)-cpu)/2)
	}
	report(b, "add-served", served)
	report(b, "remove-served", unserved)
	report(b, "update-cpu", cpuPer)

	// (b) and (d): through a real proxy.
	proxyAddr := StartProxy(b, cp.Addr, iface)
	caller := StartCaller(b, proxyAddr, iface)
	caller.WaitOK(b, 100, o.Timeout)
	var routed, stopped []time.Duration
	for range o.Additions {
		p := StartProvider(b)
		failedBefore := caller.Failed()
		at, remove := r.Add(b, iface, "127.0.0.1", p.Port)
		routed = append(routed, p.WaitFirst(b, o.Timeout).Sub(at))
		gone := remove()
		cp.WaitEndpoints(b, total, gone, o.Timeout)
		// The proxy stopped sending it requests once a run of requests
		// long enough for every endpoint to be picked many times over
		// (round robin) left it out: its last request is when.
		quiet := int64(20 * (o.PerInterface + 1))
		deadline := time.Now().Add(o.Timeout)
		for {
			n := p.Requests()
			caller.WaitOK(b, quiet, o.Timeout)
			if p.Requests() == n {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("the removed provider still gets requests %s after its removal (%d in all)", o.Timeout, p.Requests())
			}
		}
		stopped = append(stopped, max(0, p.Last().Sub(gone)))
		if f := caller.Failed() - failedBefore; f > 0 {
			b.Fatalf("%d requests failed while a provider was added and removed (first failure: %v)", f, caller.firstErr.Load())
		}
		p.Close()
	}
	caller.Stop()
	report(b, "add-routed", routed)
	report(b, "remove-last-request", stopped)

	// (c) a new interface → its first routed request.
	var fresh []time.Duration
	for n := range o.NewInterfaces {
		name := fmt.Sprintf("org.breeze.scale.New%04d", n)
		p := StartProvider(b)
		c := StartCaller(b, StartProxy(b, cp.Addr, name), name) // no route yet: error replies
		at, _ := r.Add(b, name, "127.0.0.1", p.Port)
		fresh = append(fresh, p.WaitFirst(b, o.Timeout).Sub(at))
		c.Stop()
	}
	report(b, "new-interface-routed", fresh)
}

// report logs and reports the 50th and 90th percentiles and the maximum
// of ds, in milliseconds.
func report(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	pct := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.Logf("%s: p50 %.1f ms, p90 %.1f ms, max %.1f ms over %d (all: %v)", name, ms(pct(0.5)), ms(pct(0.9)), ms(s[len(s)-1]), len(s), roundAll(ds))
	b.ReportMetric(ms(pct(0.5)), name+"-p50-ms")
	b.ReportMetric(ms(pct(0.9)), name+"-p90-ms")
	b.ReportMetric(ms(s[len(s)-1]), name+"-max-ms")
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Microsecond)
	}
	return out
}

// CPUTime is this process's CPU time, user and system.
func CPUTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ControlPlane is `breeze xds -<registry>`: the registry as its only
// source, the ADS server on a loopback port.
type ControlPlane struct {
	Addr string

	mu        sync.Mutex
	endpoints int
	changed   chan struct{}
}

// StartControlPlane runs the control plane on reg until the benchmark
// ends.
func StartControlPlane(tb testing.TB, reg registry.Registry) *ControlPlane {
	tb.Helper()
	quiet := slog.New(slog.DiscardHandler)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cp := &ControlPlane{Addr: ln.Addr().String(), changed: make(chan struct{}, 1)}
	srv := controlplane.NewServer(quiet)
	go srv.Serve(ln)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, &registry.Source{Registry: reg, Log: quiet}, srv, quiet, func(r controlplane.Resources, _ []controlplane.Problem) {
			n := 0
			for _, cla := range r.Endpoints {
				for _, l := range cla.GetEndpoints() {
					n += len(l.GetLbEndpoints())
				}
			}
			cp.mu.Lock()
			cp.endpoints = n
			cp.mu.Unlock()
			select {
			case cp.changed <- struct{}{}:
			default:
			}
		})
	}()
	tb.Cleanup(func() {
		cancel()
		srv.Stop()
		if err := <-done; err != nil {
			tb.Errorf("control plane: %v", err)
		}
	})
	return cp
}

// WaitEndpoints waits until the control plane serves want endpoints in
// all, and returns how long after from that was.
func (cp *ControlPlane) WaitEndpoints(tb testing.TB, want int, from time.Time, timeout time.Duration) time.Duration {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		cp.mu.Lock()
		n := cp.endpoints
		cp.mu.Unlock()
		if n == want {
			return time.Since(from)
		}
		select {
		case <-cp.changed:
		case <-deadline:
			tb.Fatalf("%d endpoints served after %s, want %d", n, timeout, want)
		}
	}
}

var (
	hostOnce sync.Once
	theHost  *host.Host
)

// StartProxy serves a Breeze proxy (Dubbo) on a loopback port whose
// route table is iface's, over xDS from the server at xdsAddr, and
// returns its address.
func StartProxy(tb testing.TB, xdsAddr, iface string) string {
	tb.Helper()
	hostOnce.Do(func() {
		proxy.Register()
		theHost = host.New(host.Options{Logger: slog.New(slog.NewTextHandler(discard{}, nil))})
	})
	cfg := &breezev1.ProxyConfig{
		StatPrefix: "scale", Codec: "dubbo", RequestTimeout: durationpb.New(10 * time.Second),
		Xds: &breezev1.XdsSource{Address: xdsAddr, NodeId: "scale",
			RouteConfigName:     controlplane.RouteConfigName(registry.Host(iface), 20880),
			InitialFetchTimeout: durationpb.New(0)},
	}
	a, err := config.ToAny(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	if err := theHost.AddListener(ln, proxy.PluginName, a); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
