package pluginpath

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"unsafe"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"

	"github.com/breeze-mesh/breeze/bench/internal/wire"
	_ "github.com/breeze-mesh/breeze/builtin"
	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/proxy"
)

// What the benchmarks measure: the plugin's routed-request path on warm
// connections, as Envoy's worker thread drives it, without the shim's
// copies. Each op is one request: its frame handed to the downstream
// filter's OnData, the request the plugin writes upstream echoed into the
// upstream filter's OnData, the response the plugin writes downstream
// checked. Envoy's side is this file's, one goroutine, buffers reused: it
// allocates nothing per request, so allocs/op is the plugin's alone.
//
// Envoy's Go shim itself allocates per request on top (not counted here,
// because the callbacks are called directly rather than through its
// //export entry points): one []byte copy of the data in each
// envoyGoFilterOnDownstreamData and envoyGoFilterOnUpstreamData (the
// `append(buf, data...)` of shim.go), that is two per request.
//
//	go test -run '^$' -bench . -benchmem ./bench/pluginpath/
const (
	conns    = 8
	inFlight = 4
	payload  = 1024
	warmup   = 2000
)

func BenchmarkPluginDubbo(b *testing.B)  { benchPlugin(b, "dubbo", "../configs/breeze.yaml") }
func BenchmarkPluginThrift(b *testing.B) { benchPlugin(b, "thrift", "../configs/breeze-thrift.yaml") }

// TestPluginPathAnswersEveryRequest runs the benchmark's traffic briefly
// and checks what it measures is real: every request answered, with its
// own id, as a successful response of the echo's length.
func TestPluginPathAnswersEveryRequest(t *testing.T) {
	for _, c := range []struct{ proto, file string }{
		{"dubbo", "../configs/breeze.yaml"},
		{"thrift", "../configs/breeze-thrift.yaml"},
	} {
		t.Run(c.proto, func(t *testing.T) {
			e := newEnvoy(t, c.proto, c.file)
			if err := e.run(500); err != nil {
				t.Fatal(err)
			}
			if e.answered != 500 {
				t.Fatalf("500 requests sent, %d answered", e.answered)
			}
			for i, n := range e.perEndpoint() {
				if n == 0 {
					t.Errorf("endpoint %d got no request (per endpoint: %v)", i, e.perEndpoint())
				}
			}
		})
	}
}

// TestPluginPathAllocations guards what the benchmarks show: the plugin
// allocates nothing per routed request on warm connections. What it
// allocates over a run of requests is counted whole (runtime.MemStats,
// every goroutine): the bar, one allocation per hundred requests, leaves
// room for the rare growth of a buffer or a metric's first use, and none
// for anything done per request. Under the race detector, whose runtime
// allocates on its own, the bar is one per two requests: still below one
// allocation added per request.
func TestPluginPathAllocations(t *testing.T) {
	const n = 4000
	for _, c := range []struct{ proto, file string }{
		{"dubbo", "../configs/breeze.yaml"},
		{"thrift", "../configs/breeze-thrift.yaml"},
	} {
		t.Run(c.proto, func(t *testing.T) {
			e := newEnvoy(t, c.proto, c.file)
			if err := e.run(warmup); err != nil {
				t.Fatal("warm-up: ", err)
			}
			var err error
			allocs := testing.AllocsPerRun(1, func() { err = e.run(n) })
			if err != nil {
				t.Fatal(err)
			}
			bar := n / 100
			if raceEnabled {
				bar = n / 2
			}
			t.Logf("%s: %.0f allocations over %d requests (race detector: %v)", c.proto, allocs, n, raceEnabled)
			if allocs > float64(bar) {
				t.Errorf("%s: %.0f allocations over %d requests (%.2f per request), want at most %d", c.proto, allocs, n, allocs/n, bar)
			}
		})
	}
}

func benchPlugin(b *testing.B, protoName, file string) {
	e := newEnvoy(b, protoName, file)
	if err := e.run(warmup); err != nil {
		b.Fatal("warm-up: ", err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	err := e.run(b.N)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
}

// The shim's C API is one per process: this test binary's, installed once.
var (
	capiOnce sync.Once
	capi     = &fakeCAPI{}
)

// fakeCAPI stands for Envoy's C API. Only UpstreamConnect is reached:
// every callback the plugin is given is one of this file's, in Go.
type fakeCAPI struct {
	mu       sync.Mutex
	connects []uint64
	handle   [1]byte
}

func (f *fakeCAPI) UpstreamConnect(libraryID, addr string, connID uint64) unsafe.Pointer {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connects = append(f.connects, connID)
	return unsafe.Pointer(&f.handle)
}

func (f *fakeCAPI) takeConnects() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.connects
	f.connects = nil
	return c
}

func (*fakeCAPI) DownstreamWrite(unsafe.Pointer, unsafe.Pointer, int, int) {}
func (*fakeCAPI) DownstreamClose(unsafe.Pointer, int)                      {}
func (*fakeCAPI) DownstreamFinalize(unsafe.Pointer, int)                   {}
func (*fakeCAPI) DownstreamInfo(unsafe.Pointer, int) string                { return "" }
func (*fakeCAPI) GetFilterState(unsafe.Pointer, string) string             { return "" }
func (*fakeCAPI) UpstreamConnEnableHalfClose(unsafe.Pointer, int)          {}
func (*fakeCAPI) UpstreamWrite(unsafe.Pointer, unsafe.Pointer, int, int)   {}
func (*fakeCAPI) UpstreamClose(unsafe.Pointer, int)                        {}
func (*fakeCAPI) UpstreamFinalize(unsafe.Pointer, int)                     {}
func (*fakeCAPI) UpstreamInfo(unsafe.Pointer, int) string                  { return "" }
func (*fakeCAPI) SetFilterState(unsafe.Pointer, string, string, api.StateType, api.LifeSpan, api.StreamSharing) {
}

// envoy is one proxy with conns downstream connections and the upstream
// connections it opened, driven from one goroutine.
type envoy struct {
	tb    testing.TB
	p     wire.Protocol
	reqs  []wire.Request
	mask  uint64
	down  []*downSide
	up    []*upSide
	sends []*downSide // connections owed a new request
	// budget: requests still to send in this run; answered: responses
	// received in it.
	budget, answered int
}

func newEnvoy(tb testing.TB, protoName, file string) *envoy {
	tb.Helper()
	capiOnce.Do(func() { network.SetCgoAPI(capi) })
	p, err := wire.Lookup(protoName)
	if err != nil {
		tb.Fatal(err)
	}
	reqs, err := p.Requests(wire.MixRoutes, payload)
	if err != nil {
		tb.Fatal(err)
	}
	text, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	runner, err := config.ParseRunner(file, text)
	if err != nil {
		tb.Fatal(err)
	}
	px, err := proxy.New(runner.GetListeners()[0].GetProxy(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(px.Close)
	e := &envoy{tb: tb, p: p, reqs: reqs, mask: wire.IDMask(p)}
	for i := range conns {
		d := &downSide{e: e, k: i, id: 1}
		d.f = px.CreateFilter(d)
		if st := d.f.OnNewConnection(); st != api.NetworkFilterContinue {
			tb.Fatalf("OnNewConnection: %v", st)
		}
		e.down = append(e.down, d)
	}
	tb.Cleanup(func() {
		for _, d := range e.down {
			d.f.OnEvent(api.RemoteClose)
		}
		for _, u := range e.up {
			u.f.OnEvent(api.RemoteClose)
		}
	})
	return e
}

// run sends n requests, inFlight at a time per connection, and returns
// once all are answered.
func (e *envoy) run(n int) error {
	e.budget, e.answered = n, 0
	for _, d := range e.down {
		for range inFlight {
			if err := d.send(); err != nil {
				return err
			}
		}
	}
	for e.answered < n {
		progress, err := e.pump()
		if err != nil {
			return err
		}
		if !progress {
			return fmt.Errorf("stuck: %d of %d answered, nothing more to deliver", e.answered, n)
		}
	}
	return nil
}

// pump opens the upstream connections asked for, echoes what was written
// upstream, and sends the requests owed for the responses that came back,
// as Envoy's event loop would over one turn.
func (e *envoy) pump() (progress bool, err error) {
	for _, id := range capi.takeConnects() {
		f := network.UpstreamFilters.GetFilterByConnID(id)
		network.UpstreamFilters.DeleteFilterByConnID(id)
		u := &upSide{f: f}
		e.up = append(e.up, u)
		f.OnPoolReady(u)
		progress = true
	}
	for _, u := range e.up {
		if len(u.in) == 0 {
			continue
		}
		progress = true
		if err := u.echo(e.p); err != nil {
			return progress, err
		}
	}
	sends := e.sends
	e.sends = e.sends[len(e.sends):]
	for _, d := range sends {
		progress = true
		if err := d.send(); err != nil {
			return progress, err
		}
	}
	if len(e.sends) == 0 {
		e.sends = sends[:0]
	}
	return progress, nil
}

func (e *envoy) perEndpoint() []int {
	var n []int
	for _, u := range e.up {
		n = append(n, u.requests)
	}
	return n
}

// downSide is Envoy's side of a downstream connection.
type downSide struct {
	e  *envoy
	f  api.DownstreamFilter
	k  int // next request kind
	id uint64
	// pending holds the ids awaiting a response.
	pending []uint64
	// ring: a buffer per request in flight, since the plugin may keep
	// the bytes OnData hands it while the request lives (Envoy's shim
	// hands it a fresh copy each time).
	ring [inFlight + 1][]byte
	next int
	// rest: bytes of a response frame written in parts.
	rest []byte
}

func (d *downSide) send() error {
	e := d.e
	if e.budget == 0 {
		return nil
	}
	e.budget--
	id := d.id & e.mask
	d.id++
	buf := e.p.AppendRequest(d.ring[d.next][:0], &e.reqs[d.k], id)
	d.ring[d.next] = buf
	d.next = (d.next + 1) % len(d.ring)
	d.k = (d.k + 1) % len(e.reqs)
	d.pending = append(d.pending, id)
	if st := d.f.OnData(buf, false); st != api.NetworkFilterContinue {
		return fmt.Errorf("downstream OnData: %v", st)
	}
	return nil
}

func (d *downSide) Write(b []byte, endStream bool) {
	d.rest = append(d.rest, b...)
	e := d.e
	for len(d.rest) >= e.p.HeaderLen() {
		n, err := e.p.FrameLen(d.rest)
		if err != nil {
			e.tb.Errorf("downstream got a bad frame: %v (% x)", err, d.rest)
			d.rest = d.rest[:0]
			return
		}
		if len(d.rest) < n {
			return
		}
		r, err := e.p.ParseResponse(d.rest[:n])
		if err != nil || r.Kind != wire.OK {
			e.tb.Errorf("downstream got response %+v, err %v; want OK", r, err)
		} else if !d.ack(r.ID) {
			e.tb.Errorf("downstream got a response to id %d, not in flight (%v)", r.ID, d.pending)
		} else {
			e.answered++
			e.sends = append(e.sends, d)
		}
		d.rest = d.rest[:copy(d.rest, d.rest[n:])]
	}
}

func (d *downSide) ack(id uint64) bool {
	for i, p := range d.pending {
		if p == id {
			d.pending = append(d.pending[:i], d.pending[i+1:]...)
			return true
		}
	}
	return false
}

func (d *downSide) Close(api.ConnectionCloseType) {
	d.e.tb.Errorf("the plugin closed downstream connection %d", d.k)
}
func (*downSide) EnableHalfClose(bool)       {}
func (*downSide) StreamInfo() api.StreamInfo { return streamInfo{} }

// streamInfo: only the address the plugin asks for when configured to.
type streamInfo struct{ api.StreamInfo }

func (streamInfo) UpstreamRemoteAddress() (string, bool) { return "10.0.0.1:40000", true }

// upSide is Envoy's side of an upstream connection, and the echo server
// behind it.
type upSide struct {
	f        api.UpstreamFilter
	in, out  []byte
	requests int
}

func (u *upSide) Write(b []byte, endStream bool) { u.in = append(u.in, b...) }
func (*upSide) Close(api.ConnectionCloseType)    {}
func (*upSide) EnableHalfClose(bool)             {}
func (*upSide) StreamInfo() api.StreamInfo       { return streamInfo{} }

// echo answers every whole frame written so far, in one OnData.
func (u *upSide) echo(p wire.Protocol) error {
	u.out = u.out[:0]
	in := u.in
	for len(in) >= p.HeaderLen() {
		n, err := p.FrameLen(in)
		if err != nil {
			return fmt.Errorf("upstream got a bad frame: %w", err)
		}
		if len(in) < n {
			break
		}
		if u.out, err = p.Echo(u.out, in[:n]); err != nil {
			return fmt.Errorf("upstream echo: %w", err)
		}
		u.requests++
		in = in[n:]
	}
	u.in = u.in[:copy(u.in, in)]
	if len(u.out) > 0 {
		u.f.OnData(u.out, false)
	}
	return nil
}
