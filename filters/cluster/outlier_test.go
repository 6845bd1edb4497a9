package cluster

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/breeze-mesh/breeze/filters/metrics"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// fakeClock is a cluster's Clock that moves only when told.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// outlierCluster is a round-robin STATIC cluster of n endpoints
// 10.0.0.1-n, labelled version v1 and v2 alternately, with od, subsets
// for both versions, and clock.
func outlierCluster(t *testing.T, n int, od *breezev1.OutlierDetection, clock *fakeClock, opts Options, subsets ...*breezev1.ClusterSubset) *Cluster {
	t.Helper()
	c := &breezev1.Cluster{Name: "c", OutlierDetection: od, Subsets: subsets}
	for i := range n {
		labels := v1
		if i%2 == 1 {
			labels = v2
		}
		c.Endpoints = append(c.Endpoints, &breezev1.Endpoint{Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 1, Labels: labels})
	}
	opts.Clock = clock.now
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	opts.Subsets = routeSubsets(v1, v2)
	cl, err := New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func u32(v uint32) *uint32 { return &v }

func report(s *Set, ep *Endpoint, r Result, times int) {
	for range times {
		s.Report(ep, r)
	}
}

func ejected(ep *Endpoint, clock *fakeClock) bool { return !ep.Healthy(clock.now().UnixNano()) }

// ejectedFor is how long ep stays ejected from now.
func ejectedFor(ep *Endpoint, clock *fakeClock) time.Duration {
	return max(time.Duration(ep.outlier.ejectedUntil.Load()-clock.now().UnixNano()), 0)
}

func ejections(proxy, ep, reason string) int {
	return int(testutil.ToFloat64(metrics.OutlierEjections.WithLabelValues(proxy, "c", ep, reason)))
}

// Five server errors in a row eject (the default), for base_ejection_time
// (30s by default); the balancer skips the endpoint meanwhile, the
// ejection is counted and logged once.
func TestConsecutiveErrorsEject(t *testing.T) {
	clock := newFakeClock()
	log := &strings.Builder{}
	cl := outlierCluster(t, 2, &breezev1.OutlierDetection{}, clock, Options{Proxy: "outlier-eject", Log: slog.New(slog.NewTextHandler(log, nil))})
	set := cl.Set("")
	bad, good := set.Endpoints()[0], set.Endpoints()[1]
	report(set, bad, StatusError, 4)
	if ejected(bad, clock) {
		t.Fatal("ejected after 4 errors")
	}
	set.Report(bad, StatusError)
	if !ejected(bad, clock) || ejectedFor(bad, clock) != 30*time.Second {
		t.Fatalf("after 5 errors: ejected %v for %v, want for 30s", ejected(bad, clock), ejectedFor(bad, clock))
	}
	for range 10 {
		if ep := set.Pick("", false); ep != good {
			t.Fatalf("picked %s while it is ejected", ep.Addr)
		}
	}
	if n := ejections("outlier-eject", bad.Addr, "consecutive_errors"); n != 1 {
		t.Fatalf("breeze_outlier_ejections_total = %d, want 1", n)
	}
	// The run that ejected is over: the next ejection takes 5 more.
	clock.advance(30 * time.Second)
	report(set, bad, StatusError, 4)
	if ejected(bad, clock) {
		t.Fatal("ejected again by 4 errors after its ejection")
	}
	set.Report(bad, StatusError)
	if !ejected(bad, clock) || ejectedFor(bad, clock) != 60*time.Second {
		t.Fatalf("second ejection: ejected %v for %v, want for 60s", ejected(bad, clock), ejectedFor(bad, clock))
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "level=WARN") ||
		!strings.Contains(lines[0], "cluster=c endpoint=10.0.0.1:1 reason=consecutive_errors ejected_for=30s ejections=1") ||
		!strings.Contains(lines[1], "ejected_for=1m0s ejections=2") {
		t.Fatalf("log:\n%s\nwant a WARN line with cluster, endpoint, reason, ejected_for, ejections", log)
	}
}

// What each result counts as, with and without split local-origin
// failures, and with each threshold.
func TestOutlierClassification(t *testing.T) {
	const (
		S  = StatusError
		G  = GatewayError
		CF = ConnectFailure
		R  = Reset
		T  = Timeout
		OK = Success
	)
	unsplit := &breezev1.OutlierDetection{}
	gateway3 := &breezev1.OutlierDetection{ConsecutiveGatewayErrors: 3}
	split3 := &breezev1.OutlierDetection{ConsecutiveLocalOriginFailures: u32(3)}
	for i, tc := range []struct {
		od      *breezev1.OutlierDetection
		results []Result
		reason  string // "" for not ejected
	}{
		{unsplit, []Result{S, S, S, S, S}, reasonErrors},
		{unsplit, []Result{S, S, S, S, OK, S, S, S, S}, ""},
		{unsplit, []Result{CF, CF, CF, CF, CF}, reasonErrors},
		{unsplit, []Result{R, R, R, R, R}, reasonErrors},
		{unsplit, []Result{T, T, T, T, T}, reasonErrors}, // gateway errors are off by default
		{unsplit, []Result{S, CF, R, T, G}, reasonErrors},
		{gateway3, []Result{T, T, T}, reasonGatewayErrors},
		{gateway3, []Result{G, G, G}, reasonGatewayErrors},
		{gateway3, []Result{G, G, S, G, G}, reasonErrors}, // a plain error breaks the gateway run, not the server-error run
		{gateway3, []Result{G, G, CF, G}, ""},
		{gateway3, []Result{G, G, OK, G, G}, ""},
		{&breezev1.OutlierDetection{ConsecutiveErrors: u32(0)}, []Result{S, S, S, S, S, S, S, S, S, S}, ""},
		{&breezev1.OutlierDetection{ConsecutiveErrors: u32(2)}, []Result{G, G}, reasonErrors}, // a gateway error is a server error
		{split3, []Result{CF, R, T}, reasonLocalOrigin},
		{split3, []Result{CF, CF, S, CF, CF}, ""}, // a response: the connection worked
		{split3, []Result{CF, CF, OK, CF, CF}, ""},
		{split3, []Result{CF, S, CF, S, CF, S, S, S}, reasonErrors}, // local-origin failures break no server-error run
		{&breezev1.OutlierDetection{ConsecutiveLocalOriginFailures: u32(0)}, []Result{CF, R, T, CF, R, T, CF, R, T, CF}, ""},
	} {
		clock := newFakeClock()
		proxy := fmt.Sprint("outlier-classes-", i)
		set := outlierCluster(t, 10, tc.od, clock, Options{Proxy: proxy}).Set("")
		ep := set.Endpoints()[0]
		for j, r := range tc.results {
			if ejected(ep, clock) {
				t.Errorf("%v, %v: ejected after %d results", tc.od, tc.results, j)
				break
			}
			set.Report(ep, r)
		}
		got := ""
		for _, reason := range []string{reasonErrors, reasonGatewayErrors, reasonLocalOrigin} {
			if ejections(proxy, ep.Addr, reason) > 0 {
				got += reason
			}
		}
		if got != tc.reason || ejected(ep, clock) != (tc.reason != "") {
			t.Errorf("%v, results %v: ejected %v, for %q; want for %q", tc.od, tc.results, ejected(ep, clock), got, tc.reason)
		}
	}
}

// Without outlier_detection, nothing is ejected for its responses.
func TestNoOutlierDetection(t *testing.T) {
	clock := newFakeClock()
	set := outlierCluster(t, 2, nil, clock, Options{}).Set("")
	ep := set.Endpoints()[0]
	report(set, ep, StatusError, 20)
	report(set, ep, Timeout, 20)
	if ejected(ep, clock) {
		t.Fatal("ejected without outlier detection")
	}
}

// Of 10 endpoints, max_ejection_percent may be ejected at once, and one
// always may.
func TestMaxEjectionPercent(t *testing.T) {
	for _, tc := range []struct {
		percent *uint32
		want    int
	}{{nil, 1}, {u32(30), 3}, {u32(5), 1}, {u32(0), 1}, {u32(100), 10}} {
		clock := newFakeClock()
		set := outlierCluster(t, 10, &breezev1.OutlierDetection{MaxEjectionPercent: tc.percent}, clock, Options{}).Set("")
		got := 0
		for _, ep := range set.Endpoints() {
			report(set, ep, StatusError, 5)
			if ejected(ep, clock) {
				got++
			}
		}
		if got != tc.want {
			t.Errorf("max_ejection_percent %v: %d of 10 failing endpoints ejected, want %d", fmtPtr(tc.percent), got, tc.want)
		}
		// Once the ejections end, the others' turn comes.
		clock.advance(30 * time.Second)
		ep := set.Endpoints()[9]
		report(set, ep, StatusError, 5)
		if !ejected(ep, clock) {
			t.Errorf("max_ejection_percent %v: the last endpoint not ejected after the others came back", fmtPtr(tc.percent))
		}
	}
}

// Reports from many goroutines at once never eject more than
// max_ejection_percent of the set.
func TestConcurrentReportsKeepTheEjectionLimit(t *testing.T) {
	clock := newFakeClock()
	set := outlierCluster(t, 10, &breezev1.OutlierDetection{MaxEjectionPercent: u32(30), ConsecutiveErrors: u32(2)}, clock, Options{}).Set("")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				ep := set.Endpoints()[(g+i)%10]
				if i%7 == 0 {
					set.Report(ep, Success)
				} else {
					set.Report(ep, StatusError)
				}
				set.Pick("", false)
			}
		})
	}
	wg.Wait()
	n := 0
	for _, ep := range set.Endpoints() {
		if ejected(ep, clock) {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("8 goroutines failing 10 endpoints at max_ejection_percent 30: %d ejected, want 3", n)
	}
}

func fmtPtr(p *uint32) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// An ejection lasts base_ejection_time times the endpoint's ejections,
// which decay by one per interval spent healthy, up to
// max_ejection_time.
func TestEjectionMultiplier(t *testing.T) {
	type step struct {
		healthy time.Duration // spent healthy after the previous ejection ended
		want    time.Duration // how long the next ejection lasts
	}
	for _, tc := range []struct {
		name      string
		base, max time.Duration
		steps     []step
	}{
		{"grows by one per ejection", 10 * time.Second, 0, []step{{0, 10 * time.Second}, {0, 20 * time.Second}, {0, 30 * time.Second}, {0, 40 * time.Second}}},
		{"decays by one per interval healthy", 10 * time.Second, 0, []step{
			{0, 10 * time.Second}, {0, 20 * time.Second}, {0, 30 * time.Second},
			{25 * time.Second, 20 * time.Second}, // 3 - 2 intervals + 1
			{9 * time.Second, 30 * time.Second},  // no whole interval
			{time.Hour, 10 * time.Second},        // decayed to nothing
		}},
		{"capped by max_ejection_time", 10 * time.Second, 25 * time.Second, []step{
			{0, 10 * time.Second}, {0, 20 * time.Second}, {0, 25 * time.Second}, {0, 25 * time.Second}, {0, 25 * time.Second},
			// The multiplier stopped at 3 (30s ≥ the cap): one interval
			// decays it below the cap.
			{10 * time.Second, 25 * time.Second}, {20 * time.Second, 20 * time.Second},
		}},
		{"300s cap by default", 100 * time.Second, 0, []step{{0, 100 * time.Second}, {0, 200 * time.Second}, {0, 300 * time.Second}, {0, 300 * time.Second}}},
		{"the cap is never below the base", 30 * time.Second, 10 * time.Second, []step{{0, 30 * time.Second}, {0, 30 * time.Second}}},
	} {
		clock := newFakeClock()
		od := &breezev1.OutlierDetection{Interval: durationpb.New(10 * time.Second), BaseEjectionTime: durationpb.New(tc.base)}
		if tc.max > 0 {
			od.MaxEjectionTime = durationpb.New(tc.max)
		}
		set := outlierCluster(t, 2, od, clock, Options{}).Set("")
		ep := set.Endpoints()[0]
		for i, s := range tc.steps {
			clock.advance(ejectedFor(ep, clock) + s.healthy)
			report(set, ep, StatusError, 5)
			if got := ejectedFor(ep, clock); got != s.want {
				t.Errorf("%s: ejection %d, after %v healthy: ejected for %v, want %v", tc.name, i+1, s.healthy, got, s.want)
				break
			}
		}
	}
}

// An ejected endpoint is picked again once its ejection has passed, and
// not before: neither a connection opening to it nor a new version of the
// cluster ends the ejection.
func TestEjectedEndpointComesBack(t *testing.T) {
	clock := newFakeClock()
	cl := outlierCluster(t, 2, &breezev1.OutlierDetection{}, clock, Options{})
	set := cl.Set("")
	bad := set.Endpoints()[0]
	report(set, bad, StatusError, 5)
	bad.Succeeded() // a connection to it opened
	next, err := New(&breezev1.Cluster{Name: "c", OutlierDetection: &breezev1.OutlierDetection{}, Endpoints: []*breezev1.Endpoint{
		{Address: "10.0.0.1", Port: 1, Labels: v1}, {Address: "10.0.0.2", Port: 1, Labels: v2},
	}}, Options{Previous: cl, Clock: clock.now, Subsets: routeSubsets(v1, v2), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cl.Handover(next)
	picks := func() (n int) {
		for range 10 {
			if next.Set("").Pick("", false) == bad {
				n++
			}
		}
		return n
	}
	clock.advance(30*time.Second - 1)
	if n := picks(); n != 0 {
		t.Fatalf("picked %d times of 10 a nanosecond before its ejection ends", n)
	}
	clock.advance(1)
	if n := picks(); n != 5 {
		t.Fatalf("after its ejection: picked %d times of 10 by round robin over 2, want 5", n)
	}
}

// A subset's outlier_detection applies to the requests balanced on the
// subset; the others report to the cluster's. The ejection is the
// endpoint's, whichever set decided it.
func TestSubsetOutlierDetection(t *testing.T) {
	clock := newFakeClock()
	cl := outlierCluster(t, 4, &breezev1.OutlierDetection{}, clock, Options{},
		&breezev1.ClusterSubset{Name: "v2", Labels: v2, OutlierDetection: &breezev1.OutlierDetection{ConsecutiveErrors: u32(2)}})
	sub := cl.Set(SubsetKey(v2))
	subEp := sub.Endpoints()[0]
	report(sub, subEp, StatusError, 2)
	if !ejected(subEp, clock) {
		t.Fatal("subset with consecutive_errors 2: not ejected after 2 errors")
	}
	for range 8 {
		if cl.Set("").Pick("", false) == subEp {
			t.Fatal("ejected through the subset, still picked from the whole cluster")
		}
	}
	other := cl.Set(SubsetKey(v1))
	otherEp := other.Endpoints()[0]
	report(other, otherEp, StatusError, 4)
	if ejected(otherEp, clock) {
		t.Fatal("subset without its own detection: ejected after 4 errors, the cluster's threshold is 5")
	}

	// Only the subset detects.
	clock = newFakeClock()
	cl = outlierCluster(t, 4, nil, clock, Options{},
		&breezev1.ClusterSubset{Name: "v2", Labels: v2, OutlierDetection: &breezev1.OutlierDetection{}})
	all := cl.Set("")
	report(all, all.Endpoints()[1], StatusError, 10)
	if ejected(all.Endpoints()[1], clock) {
		t.Fatal("cluster without detection: ejected through the whole cluster's set")
	}
	sub = cl.Set(SubsetKey(v2))
	report(sub, sub.Endpoints()[0], StatusError, 5)
	if !ejected(sub.Endpoints()[0], clock) {
		t.Fatal("subset with detection, cluster without: not ejected through the subset")
	}
}

func TestReportDoesNotAllocate(t *testing.T) {
	clock := newFakeClock()
	set := outlierCluster(t, 2, &breezev1.OutlierDetection{ConsecutiveGatewayErrors: 3}, clock, Options{}).Set("")
	ep := set.Endpoints()[0]
	if n := testing.AllocsPerRun(100, func() {
		set.Report(ep, StatusError)
		set.Report(ep, Success)
	}); n != 0 {
		t.Fatalf("an error then a success reported: %v allocations", n)
	}
}

func BenchmarkReportSuccess(b *testing.B) {
	clock := newFakeClock()
	c := &breezev1.Cluster{Name: "c", OutlierDetection: &breezev1.OutlierDetection{ConsecutiveGatewayErrors: 3},
		Endpoints: []*breezev1.Endpoint{{Address: "10.0.0.1", Port: 1}}}
	cl, err := New(c, Options{Clock: clock.now, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	set := cl.Set("")
	ep := set.Endpoints()[0]
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			set.Report(ep, Success)
		}
	})
}
