package host_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/breeze-mesh/breeze/host"
	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
)

// Test plugins, registered with the real shim the way a plugin's init() does in the
// .so. Each test owns a recorder, named in the listener config, that the plugin
// reports to.

func init() {
	network.RegisterNetworkFilterConfigParser(testParser{})
	network.RegisterNetworkFilterConfigFactory("echo", factory(newEcho))
	network.RegisterNetworkFilterConfigFactory("relay", factory(newRelay))
	network.RegisterNetworkFilterConfigFactory("cyclic", factory(newCyclic))
	network.RegisterNetworkFilterConfigFactory("halfclose", factory(newHalfClose))
	network.RegisterNetworkFilterConfigFactory("zerosize", factory(newZeroSize))
}

// testParser is the process's one ConfigParser: it turns the Any into the
// *structpb.Struct the tests pack, or an error value (ParseConfig cannot fail).
type testParser struct{}

func (testParser) ParseConfig(a *anypb.Any) interface{} {
	var s structpb.Struct
	if err := a.UnmarshalTo(&s); err != nil {
		return err
	}
	return &s
}

type pluginConfig struct {
	rec      *recorder
	upstream string
}

func config(test, upstream string) *anypb.Any {
	s, err := structpb.NewStruct(map[string]interface{}{"test": test, "upstream": upstream})
	if err != nil {
		panic(err)
	}
	a, err := anypb.New(s)
	if err != nil {
		panic(err)
	}
	return a
}

type factory func(cfg pluginConfig, cb api.ConnectionCallback) api.DownstreamFilter

// CreateFactoryFromConfig runs on every connection in Envoy: keep it cheap.
func (f factory) CreateFactoryFromConfig(c interface{}) network.FilterFactory {
	s, ok := c.(*structpb.Struct)
	if !ok {
		panic(fmt.Sprintf("bad test config: %v", c))
	}
	cfg := pluginConfig{
		rec:      recorderFor(s.Fields["test"].GetStringValue()),
		upstream: s.Fields["upstream"].GetStringValue(),
	}
	return filterFactory{f: f, cfg: cfg}
}

type filterFactory struct {
	f   factory
	cfg pluginConfig
}

func (ff filterFactory) CreateFilter(cb api.ConnectionCallback) api.DownstreamFilter {
	return ff.f(ff.cfg, cb)
}

// recorder collects what plugins saw, for one test.
type recorder struct {
	events       chan api.ConnectionEvent // downstream close events
	upEvents     chan api.ConnectionEvent // upstream close events
	poolFailures chan api.PoolFailureReason
	poolDetails  chan string // the transportFailure of each OnPoolFailure
	halfClose    chan string // what the halfclose plugin saw
	// relayThreads: for each relay session, the goroutines of its first
	// downstream OnData and its first upstream OnData.
	relayThreads chan [2]uint64

	dataCalls      atomic.Int64
	writeCalls     atomic.Int64 // OnWrite
	writeInData    atomic.Int64 // OnWrite running while OnData is on the stack
	concurrentData atomic.Int64 // two callbacks of one connection at once

	mu      sync.Mutex
	keptCbs []api.ConnectionCallback
}

var recorders sync.Map // name -> *recorder

func newRecorder(name string) *recorder {
	r := &recorder{
		events:       make(chan api.ConnectionEvent, 4096),
		upEvents:     make(chan api.ConnectionEvent, 4096),
		poolFailures: make(chan api.PoolFailureReason, 4096),
		poolDetails:  make(chan string, 4096),
		halfClose:    make(chan string, 16),
		relayThreads: make(chan [2]uint64, 4096),
	}
	recorders.Store(name, r)
	return r
}

func recorderFor(name string) *recorder {
	v, ok := recorders.Load(name)
	if !ok {
		panic("no recorder " + name)
	}
	return v.(*recorder)
}

// echo writes back what it reads, with a few commands (a whole read equal to the
// command) for the tests:
//
//	PANIC     panic in OnData
//	CLOSE     write "bye\n", then Close(FlushWrite)
//	ORDER     write a, b, c in OnData, then d, e from another goroutine
//	INFO      write "<local> <remote>\n" from StreamInfo
//	KEEPCB    remember the callback object past the filter's life
//	GETSTATE  call FilterState().GetString
type echo struct {
	cfg    pluginConfig
	cb     api.ConnectionCallback
	inData atomic.Bool
	busy   atomic.Int32
}

func newEcho(cfg pluginConfig, cb api.ConnectionCallback) api.DownstreamFilter {
	return &echo{cfg: cfg, cb: cb}
}

func (f *echo) enter() {
	if f.busy.Add(1) != 1 {
		f.cfg.rec.concurrentData.Add(1)
	}
}
func (f *echo) leave() { f.busy.Add(-1) }

func (f *echo) OnNewConnection() api.FilterStatus { return api.NetworkFilterContinue }

func (f *echo) OnData(b []byte, end bool) api.FilterStatus {
	f.enter()
	defer f.leave()
	f.inData.Store(true)
	defer f.inData.Store(false)
	f.cfg.rec.dataCalls.Add(1)
	switch string(b) {
	case "PANIC":
		panic("test plugin panics on purpose")
	case "CLOSE":
		f.cb.Write([]byte("bye\n"), false)
		f.cb.Close(api.FlushWrite)
		return api.NetworkFilterContinue
	case "ORDER":
		for _, s := range []string{"a", "b", "c"} {
			f.cb.Write([]byte(s), false)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			f.cb.Write([]byte("d"), false)
			f.cb.Write([]byte("e"), false)
		}()
		<-done // still inside OnData: the writes must not have been delivered
		return api.NetworkFilterContinue
	case "INFO":
		local, _ := f.cb.StreamInfo().UpstreamLocalAddress()
		remote, _ := f.cb.StreamInfo().UpstreamRemoteAddress()
		f.cb.Write([]byte(local+" "+remote+"\n"), false)
		return api.NetworkFilterContinue
	case "KEEPCB":
		f.cfg.rec.mu.Lock()
		f.cfg.rec.keptCbs = append(f.cfg.rec.keptCbs, f.cb)
		f.cfg.rec.mu.Unlock()
		f.cb.Write([]byte("kept\n"), false)
		return api.NetworkFilterContinue
	case "GETSTATE":
		f.cb.StreamInfo().FilterState().GetString("k")
		return api.NetworkFilterContinue
	}
	// The buffer is the filter's own copy: scribbling on it after writing must
	// not change what the peer receives.
	f.cb.Write(b, false)
	for i := range b {
		b[i] = 'X'
	}
	return api.NetworkFilterContinue
}

func (f *echo) OnWrite(b []byte, end bool) api.FilterStatus {
	f.enter()
	defer f.leave()
	f.cfg.rec.writeCalls.Add(1)
	if f.inData.Load() {
		f.cfg.rec.writeInData.Add(1)
	}
	return api.NetworkFilterContinue
}

func (f *echo) OnEvent(e api.ConnectionEvent) {
	f.enter()
	defer f.leave()
	f.cfg.rec.events <- e
}

// relay opens an upstream connection per downstream connection and copies both
// ways. It avoids a reference cycle through the downstream filter object: the shim
// sets its finalizer on that object, and Go never finalizes an object that is
// reachable from itself (see the cyclic plugin). relayDown points to the session;
// nothing points back to relayDown.
type relayDown struct{ s *session }

type relayUp struct{ s *session }

type session struct {
	rec  *recorder
	down api.ConnectionCallback

	mu       sync.Mutex
	up       api.ConnectionCallback // nil until ready
	pending  [][]byte               // downstream bytes before the upstream is ready
	downGone bool
	upGone   bool
	downG    uint64 // the goroutine of the first downstream OnData
	upSeen   bool
}

func newRelay(cfg pluginConfig, cb api.ConnectionCallback) api.DownstreamFilter {
	s := &session{rec: cfg.rec, down: cb}
	network.CreateUpstreamConn(cfg.upstream, &relayUp{s: s})
	return &relayDown{s: s}
}

func (d *relayDown) OnNewConnection() api.FilterStatus { return api.NetworkFilterContinue }

func (d *relayDown) OnData(b []byte, end bool) api.FilterStatus {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.downG == 0 {
		s.downG = host.GoroutineID()
	}
	if s.up == nil {
		s.pending = append(s.pending, b)
		return api.NetworkFilterContinue
	}
	if !s.upGone {
		s.up.Write(b, false)
	}
	return api.NetworkFilterContinue
}

func (d *relayDown) OnWrite(b []byte, end bool) api.FilterStatus { return api.NetworkFilterContinue }

func (d *relayDown) OnEvent(e api.ConnectionEvent) {
	s := d.s
	s.rec.events <- e
	s.mu.Lock()
	defer s.mu.Unlock()
	s.downGone = true
	if s.up != nil && !s.upGone {
		s.up.Close(api.FlushWrite)
	}
}

func (u *relayUp) OnPoolReady(cb api.ConnectionCallback) {
	s := u.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.up = cb
	if s.downGone {
		cb.Close(api.NoFlush)
		return
	}
	for _, b := range s.pending {
		cb.Write(b, false)
	}
	s.pending = nil
}

func (u *relayUp) OnPoolFailure(reason api.PoolFailureReason, transportFailure string) {
	s := u.s
	s.rec.poolDetails <- transportFailure
	s.rec.poolFailures <- reason
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upGone = true
	if !s.downGone {
		s.down.Write([]byte("failure:"+reason.String()+"\n"), false)
		s.down.Close(api.FlushWrite)
	}
}

func (u *relayUp) OnData(b []byte, end bool) {
	s := u.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.upSeen {
		s.upSeen = true
		s.rec.relayThreads <- [2]uint64{s.downG, host.GoroutineID()}
	}
	if !s.downGone && len(b) > 0 {
		s.down.Write(b, false)
	}
}

func (u *relayUp) OnEvent(e api.ConnectionEvent) {
	s := u.s
	s.rec.upEvents <- e
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upGone = true
	if !s.downGone {
		s.down.Close(api.FlushWrite)
	}
}

// cyclic is an echo filter in a reference cycle, the shape a relay has when its
// session points back at the downstream filter: filter -> session -> filter. The
// shim's finalizer on the filter can then never run. (A pointer straight to itself
// is not enough: the GC ignores an object's references to itself.)
type cyclic struct {
	echo
	s *cycleSession
}

type cycleSession struct{ f *cyclic }

func newCyclic(cfg pluginConfig, cb api.ConnectionCallback) api.DownstreamFilter {
	c := &cyclic{echo: echo{cfg: cfg, cb: cb}}
	c.s = &cycleSession{f: c}
	return c
}

// halfClose connects upstream, enables half-close there, and reports what it sees:
// the upstream server sends "hello" and shuts down its write side; the plugin
// answers "bye" with endStream, which completes the close.
type halfCloseDown struct {
	api.EmptyDownstreamFilter
	_ int // not zero-size: the shim's finalizer never runs on a zero-size filter
}

type halfCloseUp struct {
	rec *recorder
	mu  sync.Mutex
	cb  api.ConnectionCallback
	got bytes.Buffer
}

func newHalfClose(cfg pluginConfig, cb api.ConnectionCallback) api.DownstreamFilter {
	network.CreateUpstreamConn(cfg.upstream, &halfCloseUp{rec: cfg.rec})
	return &halfCloseDown{}
}

func (u *halfCloseUp) OnPoolReady(cb api.ConnectionCallback) {
	u.mu.Lock()
	u.cb = cb
	u.mu.Unlock()
	local, _ := cb.StreamInfo().UpstreamLocalAddress()
	remote, _ := cb.StreamInfo().UpstreamRemoteAddress()
	u.rec.halfClose <- "info:" + local + " " + remote
	cb.EnableHalfClose(true)
	cb.Write([]byte("ready"), false)
}

func (u *halfCloseUp) OnPoolFailure(reason api.PoolFailureReason, _ string) {
	u.rec.halfClose <- "failure:" + reason.String()
}

func (u *halfCloseUp) OnData(b []byte, end bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.got.Write(b)
	if end {
		u.rec.halfClose <- "data:" + u.got.String() + ":end"
		u.cb.Write([]byte("bye"), true)
	}
}

func (u *halfCloseUp) OnEvent(e api.ConnectionEvent) {
	u.rec.halfClose <- "event:" + strings.TrimSpace(e.String())
}

// zeroSize is a filter without state. A pointer to a zero-size type is the
// runtime's zerobase, on which SetFinalizer silently does nothing.
type zeroSize struct{ api.EmptyDownstreamFilter }

func newZeroSize(pluginConfig, api.ConnectionCallback) api.DownstreamFilter { return &zeroSize{} }
