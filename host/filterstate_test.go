package host_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"

	"github.com/breeze-mesh/breeze/host"
	"github.com/breeze-mesh/breeze/internal/filterstate"
)

func init() {
	network.RegisterNetworkFilterConfigFactory("fstate", factory(newFState))
}

// fstate reads the connection's filter state through internal/filterstate,
// the way Breeze reads the caller's identity. It reads "peer" in
// OnNewConnection, and answers each line it receives:
//
//	READ        "<peer at OnNewConnection>|<peer now>|<mine>\n", after setting
//	            mine to "set-<peer>" with SetString
//	SETRO v     SetString("ro", v, read-only), then "<ro>\n"
//	OFFTHREAD   reads peer from another goroutine; writes "<value>|<err>\n"
//	UPSTREAM    connects upstream and reads from the upstream callback;
//	            writes "<err>\n"
//
// At close (OnEvent) it reads peer again and reports it to rec.halfClose
// while that has room.
type fstate struct {
	cfg   pluginConfig
	cb    api.ConnectionCallback
	atNew string
	buf   []byte
}

func newFState(cfg pluginConfig, cb api.ConnectionCallback) api.DownstreamFilter {
	return &fstate{cfg: cfg, cb: cb}
}

func (f *fstate) get(key string) string {
	v, err := filterstate.Get(f.cb, key)
	if err != nil {
		return "error: " + err.Error()
	}
	return v
}

func (f *fstate) OnNewConnection() api.FilterStatus {
	f.atNew = f.get("peer")
	return api.NetworkFilterContinue
}

func (f *fstate) OnData(b []byte, end bool) api.FilterStatus {
	f.buf = append(f.buf, b...)
	for {
		line, rest, ok := strings.Cut(string(f.buf), "\n")
		if !ok {
			return api.NetworkFilterContinue
		}
		f.buf = []byte(rest)
		f.command(line)
	}
}

func (f *fstate) command(line string) {
	cmd, arg, _ := strings.Cut(line, " ")
	switch cmd {
	case "READ":
		peer := f.get("peer")
		f.cb.StreamInfo().FilterState().SetString("mine", "set-"+peer, api.StateTypeMutable, api.LifeSpanConnection, api.None)
		f.cb.Write([]byte(f.atNew+"|"+peer+"|"+f.get("mine")+"\n"), false)
	case "SETRO":
		f.cb.StreamInfo().FilterState().SetString("ro", arg, api.StateTypeReadOnly, api.LifeSpanConnection, api.None)
		f.cb.Write([]byte(f.get("ro")+"\n"), false)
	case "OFFTHREAD":
		done := make(chan string)
		go func() {
			v, err := filterstate.Get(f.cb, "peer")
			done <- fmt.Sprintf("%s|%v", v, err)
		}()
		f.cb.Write([]byte(<-done+"\n"), false)
	case "UPSTREAM":
		network.CreateUpstreamConn(f.cfg.upstream, &fstateUp{down: f.cb})
	}
}

func (f *fstate) OnWrite(b []byte, end bool) api.FilterStatus { return api.NetworkFilterContinue }

func (f *fstate) OnEvent(e api.ConnectionEvent) {
	if e == api.LocalClose || e == api.RemoteClose {
		select { // only TestFilterStateAtClose reads them
		case f.cfg.rec.halfClose <- "at close: " + f.get("peer"):
		default:
		}
	}
}

type fstateUp struct{ down api.ConnectionCallback }

func (u *fstateUp) OnPoolReady(cb api.ConnectionCallback) {
	_, err := filterstate.Get(cb, "peer")
	u.down.Write([]byte(fmt.Sprintf("%v\n", err)), false)
	cb.Close(api.NoFlush)
}
func (u *fstateUp) OnPoolFailure(r api.PoolFailureReason, s string) {
	u.down.Write([]byte("pool failure "+s+"\n"), false)
}
func (u *fstateUp) OnData(b []byte, end bool)     {}
func (u *fstateUp) OnEvent(e api.ConnectionEvent) {}

// peerOf is what the test's "earlier filter" stores for a client address:
// a SPIFFE id, as set_filter_state does with %DOWNSTREAM_PEER_URI_SAN%.
func peerOf(remote string) string {
	return "spiffe://cluster.local/ns/demo/sa/client-" + strings.ReplaceAll(remote, ":", "-")
}

func withPeers() host.Options {
	return host.Options{FilterState: func(remote string) map[string]string {
		return map[string]string{"peer": peerOf(remote)}
	}}
}

// Strings put in the filter state before Breeze (the C side) read back
// intact through internal/filterstate, on many connections at once, each
// its own; and what the plugin sets is read back too.
func TestFilterStateReadBack(t *testing.T) { eachEventLoop(t, testFilterStateReadBack) }

func testFilterStateReadBack(t *testing.T) {
	h, _, addr := start(t, withPeers(), "fstate", "")
	const conns = 64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			peer := peerOf(c.LocalAddr().String())
			want := peer + "|" + peer + "|set-" + peer + "\n"
			for range 3 {
				if _, err := c.Write([]byte("READ\n")); err != nil {
					errs <- err
					return
				}
				if got, err := r.ReadString('\n'); got != want {
					errs <- fmt.Errorf("connection %s: got %q (%v), want %q", c.LocalAddr(), got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	noAborts(t, h)
	released(t, h)
}

// The close event comes after Envoy marked the connection closed: the read
// answers "" (CAPIFilterIsDestroy), not stale state.
func TestFilterStateAtClose(t *testing.T) { eachEventLoop(t, testFilterStateAtClose) }

func testFilterStateAtClose(t *testing.T) {
	h, rec, addr := start(t, withPeers(), "fstate", "")
	c := dial(t, addr)
	c.Close()
	if got := <-rec.halfClose; got != "at close: " {
		t.Errorf("read in OnEvent(close): %q, want it empty", got)
	}
	noAborts(t, h)
}

// Read from another goroutine than the connection's callbacks, Envoy would
// post the read and write the answer into Go memory later: counted as fatal,
// answered "", and the connection goes on.
func TestFilterStateOffThreadCounted(t *testing.T) { eachEventLoop(t, testFilterStateOffThreadCounted) }

func testFilterStateOffThreadCounted(t *testing.T) {
	h, _, addr := start(t, withPeers(), "fstate", "")
	c := dial(t, addr)
	r := bufio.NewReader(c)
	c.Write([]byte("OFFTHREAD\nREAD\n"))
	if got, _ := r.ReadString('\n'); got != "|<nil>\n" {
		t.Errorf("off-thread read: %q, want an empty answer", got)
	}
	peer := peerOf(c.LocalAddr().String())
	if got, _ := r.ReadString('\n'); got != peer+"|"+peer+"|set-"+peer+"\n" {
		t.Errorf("then, in a callback: %q", got)
	}
	if s := h.Stats(); s.EnvoyWouldAbort != 1 || s.Panics != 0 {
		t.Errorf("EnvoyWouldAbort=%d Panics=%d, want 1 and 0", s.EnvoyWouldAbort, s.Panics)
	}
}

// Upstream connections have no filter state in Envoy's Go network filter.
func TestFilterStateNotUpstream(t *testing.T) { eachEventLoop(t, testFilterStateNotUpstream) }

func testFilterStateNotUpstream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	h, _, addr := start(t, withPeers(), "fstate", ln.Addr().String())
	c := dial(t, addr)
	c.Write([]byte("UPSTREAM\n"))
	got, _ := bufio.NewReader(c).ReadString('\n')
	if want := filterstate.ErrNotDownstream.Error() + "\n"; got != want {
		t.Errorf("read from the upstream callback: %q, want %q", got, want)
	}
	noAborts(t, h)
}

// The host knows which shim it drives: the one of the go.mod it is built
// with (go test -modfile=envoy-1.39.mod: 1.39).
func TestShimRelease(t *testing.T) {
	r := host.ShimRelease()
	t.Logf("driving the shim of Envoy Go API %s (%s)", r.EnvoyGoAPI, r)
	if r.Envoy != "1.36" && r.Envoy != "1.39" {
		t.Errorf("ShimRelease: %v", r)
	}
}

// A read-only key set twice: Envoy 1.36 keeps the first value (an
// ENVOY_BUG, fatal in debug builds); Envoy 1.39 has no read-only state and
// takes the second.
func TestFilterStateReadOnlyTwice(t *testing.T) { eachEventLoop(t, testFilterStateReadOnlyTwice) }

func testFilterStateReadOnlyTwice(t *testing.T) {
	h, _, addr := start(t, withPeers(), "fstate", "")
	c := dial(t, addr)
	r := bufio.NewReader(c)
	c.Write([]byte("SETRO first\nSETRO second\n"))
	first, _ := r.ReadString('\n')
	second, _ := r.ReadString('\n')
	rel := host.ShimRelease()
	wantSecond, wantAborts := "second\n", uint64(0)
	if rel.Envoy == "1.36" {
		wantSecond, wantAborts = "first\n", 1
	}
	if first != "first\n" || second != wantSecond {
		t.Errorf("Envoy %s: read back %q then %q, want %q then %q", rel.Envoy, first, second, "first\n", wantSecond)
	}
	if s := h.Stats(); s.EnvoyWouldAbort != wantAborts {
		t.Errorf("Envoy %s: EnvoyWouldAbort=%d, want %d", rel.Envoy, s.EnvoyWouldAbort, wantAborts)
	}
}

// Anything but the shim's downstream callback is refused, without a call.
func TestFilterStateRefusesOtherCallbacks(t *testing.T) {
	eachEventLoop(t, testFilterStateRefusesOtherCallbacks)
}

func testFilterStateRefusesOtherCallbacks(t *testing.T) {
	for _, cb := range []api.ConnectionCallback{nil, fakeCallback{}, (*fakeCallbackPtr)(nil)} {
		if _, err := filterstate.Get(cb, "peer"); !errors.Is(err, filterstate.ErrNotDownstream) {
			t.Errorf("%T: %v, want ErrNotDownstream", cb, err)
		}
	}
}

type fakeCallback struct{ api.ConnectionCallback }
type fakeCallbackPtr struct{ api.ConnectionCallback }

// What set_filter_state stores at the TLS handshake (on a TLS connection,
// Envoy's Connected event) is not there yet in OnNewConnection and is
// there from the first data on: READ answers "|<peer>|...".
func TestFilterStateAtHandshake(t *testing.T) { eachEventLoop(t, testFilterStateAtHandshake) }

func testFilterStateAtHandshake(t *testing.T) {
	opts := host.Options{HandshakeFilterState: func(remote string) map[string]string {
		return map[string]string{"peer": peerOf(remote)}
	}}
	h, _, addr := start(t, opts, "fstate", "")
	c := dial(t, addr)
	r := bufio.NewReader(c)
	c.Write([]byte("READ\n"))
	peer := peerOf(c.LocalAddr().String())
	if got, err := r.ReadString('\n'); got != "|"+peer+"|set-"+peer+"\n" {
		t.Errorf("READ: got %q (%v), want the peer absent at OnNewConnection and present at the first data", got, err)
	}
	noAborts(t, h)
}
