package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// The tests of background resolution run in a synctest bubble: the
// resolver's ticker and lookup deadlines run on the bubble's fake clock,
// which moves only when every goroutine of the test waits, and
// synctest.Wait returns once the resolver has finished what it was doing.

// fakeDNS is a STRICT_DNS cluster's Lookup: answer gets the lookup's
// context, host and number (from 1). It panics on a lookup after the test
// ended, so that a resolver outliving Close fails loudly instead of
// ticking on in the bubble's fake time.
type fakeDNS struct {
	n      atomic.Int32
	ended  atomic.Bool
	answer func(ctx context.Context, host string, n int32) ([]netip.Addr, error)
}

func (d *fakeDNS) lookup(ctx context.Context, _, host string) ([]netip.Addr, error) {
	if d.ended.Load() {
		panic("lookup of " + host + " after the test ended: a resolver outlived Close")
	}
	return d.answer(ctx, host, d.n.Add(1))
}

func ips(s ...string) []netip.Addr {
	var a []netip.Addr
	for _, ip := range s {
		a = append(a, netip.MustParseAddr(ip))
	}
	return a
}

func dnsConfig(policy breezev1.Cluster_LbPolicy, refresh time.Duration, hosts ...string) *breezev1.Cluster {
	c := &breezev1.Cluster{Name: "dns", Type: breezev1.Cluster_STRICT_DNS, LbPolicy: policy, DnsRefreshRate: durationpb.New(refresh)}
	for _, h := range hosts {
		c.Endpoints = append(c.Endpoints, &breezev1.Endpoint{Address: h, Port: 9})
	}
	return c
}

// logRecorder keeps the records of a cluster's log.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

func (h *logRecorder) messages(min slog.Level) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var m []string
	for _, r := range h.records {
		if r.Level >= min {
			m = append(m, r.Message)
		}
	}
	return m
}

// A new version of a STRICT_DNS cluster does not wait for DNS: it serves
// its previous version's endpoints (the same objects) until its first
// resolution, which then replaces them like any refresh.
func TestStrictDNSWithPreviousKeepsItsAddresses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d1 := &fakeDNS{answer: func(context.Context, string, int32) ([]netip.Addr, error) {
			return ips("10.1.0.1", "10.1.0.2"), nil
		}}
		v1 := mustNew(t, dnsConfig(breezev1.Cluster_ROUND_ROBIN, time.Hour, "svc.example"), Options{Lookup: d1.lookup})
		old := slices.Clone(v1.Endpoints())
		if len(old) != 2 {
			t.Fatalf("first version resolved %s", addrs(old))
		}
		old[0].Begin()

		gate := make(chan struct{})
		d2 := &fakeDNS{answer: func(ctx context.Context, _ string, _ int32) ([]netip.Addr, error) {
			select {
			case <-gate:
				return ips("10.1.0.1", "10.1.0.3"), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}}
		removed := make(chan []*Endpoint, 1)
		start := time.Now()
		v2 := mustNew(t, dnsConfig(breezev1.Cluster_RING_HASH, time.Hour, "svc.example"), Options{
			Previous: v1, Lookup: d2.lookup,
			OnRemove: func(eps []*Endpoint) { removed <- eps },
		})
		defer func() {
			v1.Close()
			v2.Close()
			synctest.Wait()
			d1.ended.Store(true)
			d2.ended.Store(true)
		}()
		if waited := time.Since(start); waited != 0 {
			t.Fatalf("New waited %v for the first resolution", waited)
		}
		synctest.Wait() // the first lookup waits at the gate
		if n := d2.n.Load(); n != 1 {
			t.Fatalf("%d lookups under way, want the first resolution's", n)
		}
		sameEndpoints(t, "before the first resolution", v2.Endpoints(), old)
		checkSticky(t, "new version (RING_HASH)", v2.Set(""))

		close(gate)
		sameEndpoints(t, "removed by the first resolution", <-removed, old[1:])
		eps := v2.Endpoints()
		if e := byAddr(t, eps, "10.1.0.1:9"); e != old[0] || e.Inflight() != 1 {
			t.Fatalf("an address both versions resolve lost its endpoint: %p, want %p", e, old[0])
		}
		byAddr(t, eps, "10.1.0.3:9")
		if len(eps) != 2 {
			t.Fatalf("after the first resolution: %s", addrs(eps))
		}
	})
}

// A failed first resolution of a new version keeps its previous version's
// endpoints, as a failed refresh keeps the last ones.
func TestStrictDNSWithPreviousFailedFirstResolution(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d1 := &fakeDNS{answer: func(context.Context, string, int32) ([]netip.Addr, error) {
			return ips("10.1.0.1", "10.1.0.2"), nil
		}}
		v1 := mustNew(t, dnsConfig(breezev1.Cluster_ROUND_ROBIN, time.Hour, "svc.example"), Options{Lookup: d1.lookup})
		old := slices.Clone(v1.Endpoints())
		d2 := &fakeDNS{answer: func(context.Context, string, int32) ([]netip.Addr, error) {
			return nil, &net.DNSError{Err: "server misbehaving", Name: "svc.example", IsTemporary: true}
		}}
		var r removals
		log := &logRecorder{}
		v2 := mustNew(t, dnsConfig(breezev1.Cluster_LEAST_REQUEST, time.Hour, "svc.example"), Options{
			Previous: v1, Lookup: d2.lookup, OnRemove: r.onRemove, Log: slog.New(log),
		})
		defer func() {
			v1.Close()
			v2.Close()
			synctest.Wait()
			d1.ended.Store(true)
			d2.ended.Store(true)
		}()
		synctest.Wait() // the first resolution is over
		if n := d2.n.Load(); n != 1 {
			t.Fatalf("%d lookups, want 1", n)
		}
		if len(log.messages(slog.LevelWarn)) != 1 {
			t.Fatalf("warnings: %q, want the failed lookup's", log.messages(slog.LevelWarn))
		}
		sameEndpoints(t, "after a failed first resolution", v2.Endpoints(), old)
		if r.count() != 0 {
			t.Fatalf("removed %s", addrs(r.all()))
		}
	})
}

// After Pause no lookup happens, however many refresh periods pass; Resume
// resolves at once and refreshes again every period.
func TestPauseStopsRefreshesResumeResolvesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const every = time.Millisecond
		lookups := make(chan int32)
		d := &fakeDNS{answer: func(ctx context.Context, _ string, n int32) ([]netip.Addr, error) {
			if n > 1 { // New's own is not reported
				select {
				case lookups <- n:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return ips("10.1.0.1"), nil
		}}
		start := time.Now()
		cl := mustNew(t, dnsConfig(breezev1.Cluster_ROUND_ROBIN, every, "svc.example"), Options{Lookup: d.lookup})
		defer func() {
			cl.Close()
			synctest.Wait()
			d.ended.Store(true)
		}()
		for want := int32(2); want <= 3; want++ {
			if n := <-lookups; n != want {
				t.Fatalf("lookup %d, want %d", n, want)
			}
		}
		if elapsed := time.Since(start); elapsed != 2*every {
			t.Fatalf("two refreshes took %v, want %v", elapsed, 2*every)
		}

		cl.Pause()
		select {
		case n := <-lookups:
			t.Fatalf("lookup %d after Pause", n)
		case <-time.After(100 * every):
		}
		if n := d.n.Load(); n != 3 {
			t.Fatalf("%d lookups, want 3", n)
		}

		resumed := time.Now()
		cl.Resume()
		if n := <-lookups; n != 4 {
			t.Fatalf("lookup %d after Resume, want 4", n)
		}
		if elapsed := time.Since(resumed); elapsed != 0 {
			t.Fatalf("Resume resolved after %v, want at once", elapsed)
		}
		if n := <-lookups; n != 5 {
			t.Fatalf("lookup %d, want 5", n)
		}
		if elapsed := time.Since(resumed); elapsed != every {
			t.Fatalf("first refresh after Resume at %v, want %v", elapsed, every)
		}
		if eps := cl.Endpoints(); len(eps) != 1 || eps[0].Addr != "10.1.0.1:9" {
			t.Fatalf("endpoints %s", addrs(eps))
		}
	})
}

// A lookup Pause cancels changes nothing: not the endpoints of the hosts
// resolved before it in the same round, not the cancelled host's (no
// "keeping previous addresses" either). The next round applies.
func TestPauseCancelsLookupInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var block atomic.Bool
		inflight := make(chan context.Context, 1)
		d := &fakeDNS{answer: func(ctx context.Context, host string, n int32) ([]netip.Addr, error) {
			switch {
			case host == "a.example" && n == 1:
				return ips("10.1.0.1"), nil
			case host == "a.example":
				return ips("10.1.0.9"), nil
			case block.Load():
				inflight <- ctx
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return ips("10.2.0.1"), nil
		}}
		var r removals
		log := &logRecorder{}
		cl := mustNew(t, dnsConfig(breezev1.Cluster_ROUND_ROBIN, time.Hour, "a.example", "b.example"),
			Options{Lookup: d.lookup, OnRemove: r.onRemove, Log: slog.New(log)})
		defer func() {
			cl.Close()
			synctest.Wait()
			d.ended.Store(true)
		}()
		before := slices.Clone(cl.Endpoints())
		if len(before) != 2 {
			t.Fatalf("resolved %s", addrs(before))
		}

		block.Store(true)
		cl.Pause()
		cl.Resume()
		ctx := <-inflight // a.example answered a new address; b.example waits
		cl.Pause()
		<-ctx.Done()
		if err := ctx.Err(); err != context.Canceled {
			t.Fatalf("lookup ended with %v, want context.Canceled", err)
		}
		synctest.Wait() // the resolution has returned
		if n := d.n.Load(); n != 4 {
			t.Fatalf("%d lookups, want 4", n)
		}
		if eps := cl.Endpoints(); !slices.Equal(eps, before) {
			t.Fatalf("a cancelled resolution changed the endpoints: %s, want %s", addrs(eps), addrs(before))
		}
		if r.count() != 0 {
			t.Fatalf("a cancelled resolution removed %s", addrs(r.all()))
		}
		if w := log.messages(slog.LevelWarn); len(w) != 0 {
			t.Fatalf("a cancelled resolution logged %q", w)
		}

		block.Store(false)
		cl.Resume()
		synctest.Wait()
		sameEndpoints(t, "removed by the next resolution", r.all(), before[:1])
		eps := cl.Endpoints()
		if byAddr(t, eps, "10.2.0.1:9") != before[1] || byAddr(t, eps, "10.1.0.9:9") == nil || len(eps) != 2 {
			t.Fatalf("after the next resolution: %s", addrs(eps))
		}
	})
}

// Resume after Close (or Shutdown, which closes) starts
// nothing.
func TestResumeAfterCloseDoesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDNS{answer: func(context.Context, string, int32) ([]netip.Addr, error) {
			return ips("10.1.0.1"), nil
		}}
		defer func() {
			synctest.Wait()
			d.ended.Store(true)
		}()
		for _, stop := range []struct {
			name string
			stop func(*Cluster)
		}{
			{"Close", (*Cluster).Close},
			{"Pause, Close", func(c *Cluster) { c.Pause(); c.Close() }},
			{"Shutdown", (*Cluster).Shutdown},
		} {
			d.n.Store(0)
			cl := mustNew(t, dnsConfig(breezev1.Cluster_ROUND_ROBIN, time.Hour, "svc.example"), Options{Lookup: d.lookup})
			stop.stop(cl)
			cl.Resume()
			synctest.Wait()
			if n := d.n.Load(); n != 1 {
				t.Fatalf("%s, Resume: %d lookups, want only New's", stop.name, n)
			}
		}
		// Nor does it on a cluster without background work.
		static := mustNew(t, staticConfig(breezev1.Cluster_ROUND_ROBIN, ep("10.0.0.1", 0, nil)), Options{})
		static.Pause()
		static.Resume()
		static.Close()
		static.Resume()
		if eps := static.Endpoints(); len(eps) != 1 {
			t.Fatalf("static cluster: %s", addrs(eps))
		}
	})
}

// A resolution that starts after its context was cancelled (the goroutine
// of a Resume that a Pause overtook) looks nothing up and changes nothing.
func TestResolveWithCancelledContextLooksNothingUp(t *testing.T) {
	var r removals
	cl := &Cluster{Name: "dns", log: slog.Default(), byAddr: map[string]*Endpoint{}, onRemove: r.onRemove}
	cl.Update([]Spec{{Addr: "10.1.0.1:9"}})
	before := cl.Endpoints()
	var n atomic.Int32
	res := &resolver{cluster: cl, every: time.Hour, endpoints: []*breezev1.Endpoint{{Address: "svc.example", Port: 9}},
		lookup: func(context.Context, string, string) ([]netip.Addr, error) {
			n.Add(1)
			return ips("10.1.0.2"), nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res.resolveOnce(ctx)
	if n.Load() != 0 {
		t.Fatalf("%d lookups with a cancelled context", n.Load())
	}
	if eps := cl.Endpoints(); !slices.Equal(eps, before) || r.count() != 0 {
		t.Fatalf("endpoints %s, removed %s", addrs(eps), addrs(r.all()))
	}
}

// A panic while refreshing (a lookup, an update) is recovered: the
// cluster keeps its endpoints and the next refresh resolves again; the
// process, Envoy's, goes on. Also for the first resolution, in New.
func TestDNSRefreshPanicIsRecovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const every = time.Millisecond
		lookups := make(chan int32)
		d := &fakeDNS{answer: func(ctx context.Context, _ string, n int32) ([]netip.Addr, error) {
			switch n {
			case 1:
				panic("lookup asked to panic")
			case 2:
				return ips("10.1.0.1"), nil
			case 3:
				lookups <- n
				panic("lookup asked to panic")
			}
			select {
			case lookups <- n:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return ips("10.1.0.2"), nil
		}}
		cl := mustNew(t, dnsConfig(breezev1.Cluster_ROUND_ROBIN, every, "svc.example"), Options{Lookup: d.lookup})
		defer func() {
			cl.Close()
			synctest.Wait()
			d.ended.Store(true)
		}()
		if eps := cl.Endpoints(); len(eps) != 0 {
			t.Fatalf("endpoints %s after a first resolution that panicked", addrs(eps))
		}
		if n := <-lookups; n != 3 {
			t.Fatalf("lookup %d, want 3", n)
		}
		synctest.Wait()
		if eps := cl.Endpoints(); len(eps) != 1 || eps[0].Addr != "10.1.0.1:9" {
			t.Fatalf("endpoints %s after a refresh that panicked, want the previous ones", addrs(eps))
		}
		if n := <-lookups; n != 4 {
			t.Fatalf("lookup %d, want 4", n)
		}
		synctest.Wait()
		if eps := cl.Endpoints(); len(eps) != 1 || eps[0].Addr != "10.1.0.2:9" {
			t.Fatalf("endpoints %s after the next refresh", addrs(eps))
		}
	})
}

// textLog is a cluster's log as text lines, without their time.
type textLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *textLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *textLog) logger() *slog.Logger {
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: noTime}))
}

func (l *textLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.buf.String()), "\n")
}

// A host that fails to resolve for ten refreshes is one line when it
// starts failing and one when it resolves again, not a line per refresh.
func TestDNSOutageIsOneLineEachWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const every = time.Millisecond
		lookups := make(chan int32)
		d := &fakeDNS{answer: func(ctx context.Context, _ string, n int32) ([]netip.Addr, error) {
			if n == 13 {
				lookups <- n
			}
			if n >= 2 && n <= 11 {
				return nil, &net.DNSError{Err: "server misbehaving", Name: "svc.example", IsTemporary: true}
			}
			return ips("10.1.0.1"), nil
		}}
		log := &textLog{}
		cl := mustNew(t, dnsConfig(breezev1.Cluster_ROUND_ROBIN, every, "svc.example"), Options{Lookup: d.lookup, Log: log.logger()})
		defer func() {
			cl.Close()
			synctest.Wait()
			d.ended.Store(true)
		}()
		<-lookups
		want := []string{
			`level=WARN msg="dns resolution failed; keeping the host's previous addresses until it resolves again" cluster=dns host=svc.example err="lookup svc.example: server misbehaving"`,
			`level=INFO msg="dns resolution works again" cluster=dns host=svc.example failures=10`,
		}
		if got := log.lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("ten failed refreshes, then good ones: log\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}
