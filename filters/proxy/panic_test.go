package proxy

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/internal/fault"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/upstream"
)

// injector panics once at a fault point of one proxy or endpoint, when
// armed.
type injector struct {
	armed atomic.Bool
	fired chan struct{}
}

func inject(t *testing.T, where, key string) *injector {
	t.Helper()
	in := &injector{fired: make(chan struct{})}
	t.Cleanup(fault.Set(func(w, k string) {
		if w == where && k == key && in.armed.CompareAndSwap(true, false) {
			close(in.fired)
			panic("injected panic at " + w)
		}
	}))
	return in
}

// unique names a test's proxy and the cases of its requests, so that
// runs (-count) do not meet the outcomes of earlier ones.
func unique(name string) string {
	return fmt.Sprintf("%s-%d", strings.ReplaceAll(name, " ", "-"), runs.Add(1))
}

var runs atomic.Int64

func (in *injector) wait(t *testing.T) {
	t.Helper()
	select {
	case <-in.fired:
	case <-time.After(20 * time.Second):
		t.Fatal("the injected panic never fired")
	}
}

// panicCfg is a proxy (stat_prefix name, the test.record filter) with one
// cluster b. Method T has a short timeout; everything else a long one, so
// that a request the proxy lost shows as a timeout, not as a hang.
func panicCfg(name string, b string, extra ...string) string {
	c := cfg(`  - {match: {metadata: [{key: method, exact: T}]}, route: {cluster: b}, timeout: 0.05s}
  - {route: {cluster: b}, timeout: 10s}`,
		"- name: b\n  endpoints:\n"+b, append([]string{"filters: [{name: test.record}]"}, extra...)...)
	return strings.Replace(c, "stat_prefix: t\n", "stat_prefix: "+name+"\n", 1)
}

// call is one request of a test and the channel its answer arrives on.
type call struct {
	c    *client
	name string // its "case"
	ch   chan tmsg
}

func send(c *client, name string, md ...string) call {
	return call{c, name, c.send(codecs.Request, 0, name, append([]string{"case", name}, md...)...)}
}

// answer waits for the call's answer; false when its connection closed
// without one.
func (cl call) answer(t *testing.T) (tmsg, bool) {
	t.Helper()
	select {
	case m := <-cl.ch:
		return m, true
	case <-cl.c.closed:
		// The reader hands over every frame before it sees the end.
		select {
		case m := <-cl.ch:
			return m, true
		default:
			return tmsg{}, false
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no answer within 20s", cl.name)
		return tmsg{}, false
	}
}

// internal checks that each call was answered with the protocol's
// internal-error reply, and its filters saw it end so (IE).
func internal(t *testing.T, calls ...call) {
	t.Helper()
	for _, cl := range calls {
		m, ok := cl.answer(t)
		if !ok {
			t.Errorf("%s: connection closed without an answer", cl.name)
			continue
		}
		if m.status != codecs.StatusError || md(m, "error") != codecs.ErrInternal.String() {
			t.Errorf("%s: answered %q (%s), want the internal-error reply", cl.name, md(m, "error"), m.body)
			continue
		}
		if o := doneOnce(t, cl.name); o.LocalReply != codecs.ErrInternal || o.Flags != filter.InternalError {
			t.Errorf("%s: outcome %+v", cl.name, o)
		}
	}
}

// responded checks that each call got its upstream's response.
func responded(t *testing.T, calls ...call) {
	t.Helper()
	for _, cl := range calls {
		if m, ok := cl.answer(t); !ok || m.status != codecs.StatusOK || m.body != cl.name {
			t.Errorf("%s: answered %+v (%v), want the upstream's response", cl.name, m, ok)
		}
	}
}

// closes waits for the proxy to close c.
func closes(t *testing.T, c *client) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(20 * time.Second):
		t.Fatal("connection not closed after a panic")
	}
}

// A panic recovered in any callback of a downstream connection, or in a
// filter, answers every request in flight on that connection with the
// protocol's internal-error reply (paused, waiting upstream, resumed, the
// one being handled), then closes the connection; other connections of
// the proxy go on. The connection's codec may be what broke: the replies
// do not need it.
func TestDownstreamPanicAnswersRequestsInFlight(t *testing.T) {
	for _, tc := range []struct {
		where string
		extra []string
		// trigger makes the panic happen; it returns the calls it made
		// that must get the internal-error reply, and those that must
		// get their response.
		trigger func(t *testing.T, p string, c *client, in *injector) (failed, ok []call)
	}{
		{where: "OnData", trigger: func(t *testing.T, p string, c *client, in *injector) ([]call, []call) {
			in.armed.Store(true)
			return []call{send(c, p+"trigger")}, nil
		}},
		{where: "codec", trigger: func(t *testing.T, p string, c *client, in *injector) ([]call, []call) {
			// The codec panics decoding the frame and is broken from then
			// on. That frame has no id to answer; the others are answered.
			c.send(codecs.Request, 0, "x", "panic", "poison")
			return nil, nil
		}},
		{where: "codec encode", trigger: func(t *testing.T, p string, c *client, in *injector) ([]call, []call) {
			// The codec panics encoding the request for the upstream:
			// the request is answered with its own id all the same.
			return []call{send(c, p+"trigger", "panic", "encode")}, nil
		}},
		{where: "resume", trigger: func(t *testing.T, p string, c *client, in *injector) ([]call, []call) {
			in.armed.Store(true)
			close(rec.gate(p + "resumed"))
			return nil, nil // the resumed call is in flight already
		}},
		{where: "idle timer", extra: []string{"idle_timeout: 2s"}, trigger: func(t *testing.T, p string, c *client, in *injector) ([]call, []call) {
			in.armed.Store(true)
			in.wait(t)
			return nil, nil
		}},
		{where: "filter OnRequest", trigger: func(t *testing.T, p string, c *client, in *injector) ([]call, []call) {
			return []call{send(c, p+"trigger", "do", "panic")}, nil
		}},
		{where: "filter OnResponse", trigger: func(t *testing.T, p string, c *client, in *injector) ([]call, []call) {
			// The panicking filter is skipped; the response still goes out.
			return nil, []call{send(c, p+"trigger", "do", "panic_response")}
		}},
		{where: "filter OnDone", trigger: func(t *testing.T, p string, c *client, in *injector) ([]call, []call) {
			return nil, []call{send(c, p+"trigger", "do", "panic_done")}
		}},
	} {
		t.Run(tc.where, func(t *testing.T) {
			p := unique("dpanic-" + tc.where)
			b := newBackend(t, "b")
			addr := startProxy(t, panicCfg(p, ep(b, ""), tc.extra...))
			in := inject(t, tc.where, p)
			c := dial(t, addr)
			before := testutil.ToFloat64(metrics.Panics.WithLabelValues(tc.where))
			flight := []call{
				send(c, p+"paused", "do", "pause_forever"),
				send(c, p+"resumed", "do", "pause"),
				send(c, p+"up1", "hang", "1"),
				send(c, p+"up2", "hang", "1"),
				send(c, p+"up3", "hang", "1"),
			}
			// In order on the connection: the paused ones were walked
			// before the others reached the upstream.
			eventually(t, "requests in flight upstream", func() bool { return b.received.Load() == 3 })
			failed, ok := tc.trigger(t, p, c, in)
			responded(t, ok...)
			internal(t, append(flight, failed...)...)
			closes(t, c)
			if tc.where != "resume" {
				close(rec.gate(p + "resumed")) // its goroutine ends
			}
			if m, err := dial(t, addr).call(0, "x"); err != nil || m.status != codecs.StatusOK {
				t.Fatalf("another connection after the panic: %+v %v", m, err)
			}
			if strings.HasPrefix(tc.where, "filter") || strings.HasPrefix(tc.where, "codec") {
				return // counted under the filter's callback, or as OnData
			}
			if got := testutil.ToFloat64(metrics.Panics.WithLabelValues(tc.where)) - before; got != 1 {
				t.Fatalf("breeze_panics_total{where=%q} rose by %v, want 1", tc.where, got)
			}
		})
	}
}

// A panic while a connection closes (OnEvent) still ends every request it
// had in flight: each filter sees it end, once.
func TestDownstreamPanicOnCloseEndsRequestsInFlight(t *testing.T) {
	p := unique("dpanic-OnEvent")
	b := newBackend(t, "b")
	addr := startProxy(t, panicCfg(p, ep(b, "")))
	in := inject(t, "OnEvent", p)
	c := dial(t, addr)
	names := []string{p + "paused", p + "up1", p + "up2"}
	send(c, names[0], "do", "pause_forever")
	send(c, names[1], "hang", "1")
	send(c, names[2], "hang", "1")
	eventually(t, "requests in flight upstream", func() bool { return b.received.Load() == 2 })
	in.armed.Store(true)
	c.c.Close()
	in.wait(t)
	for _, name := range names {
		if o := doneOnce(t, name); o.Responded || o.Flags&(filter.InternalError|filter.DownstreamConnectionTermination) == 0 {
			t.Fatalf("%s: outcome %+v", name, o)
		}
	}
}

// A panic as a connection opens closes it; the proxy serves others.
func TestDownstreamPanicOnNewConnection(t *testing.T) {
	p := unique("dpanic-OnNewConnection")
	b := newBackend(t, "b")
	addr := startProxy(t, panicCfg(p, ep(b, "")))
	in := inject(t, "OnNewConnection", p)
	in.armed.Store(true)
	closes(t, dial(t, addr))
	if m, err := dial(t, addr).call(0, "x"); err != nil || m.status != codecs.StatusOK {
		t.Fatalf("a later connection: %+v %v", m, err)
	}
}

// A panic recovered in any callback of an upstream connection (or in what
// it calls: its codec, the handler relaying a response) fails every
// request on that connection now, each answered to its own client with
// the protocol's internal-error reply, instead of leaving them to their
// timeouts; the clients' connections stay open.
func TestUpstreamPanicAnswersRequestsInFlight(t *testing.T) {
	for _, tc := range []struct {
		where   string
		trigger func(c *client, p string, in *injector) []call
	}{
		{"upstream OnData", func(c *client, p string, in *injector) []call {
			in.armed.Store(true)
			return []call{send(c, p+"trigger")}
		}},
		{"upstream codec", func(c *client, p string, in *injector) []call {
			// The response cannot be decoded: its request fails too.
			return []call{send(c, p+"trigger", "reply_panic", "decode")}
		}},
		{"upstream handler", func(c *client, p string, in *injector) []call {
			// Encoding the response for the client panics.
			return []call{send(c, p+"trigger", "reply_panic", "encode")}
		}},
		{"upstream OnEvent", func(c *client, p string, in *injector) []call {
			in.armed.Store(true)
			return []call{send(c, p+"trigger", "drop", "1")}
		}},
		{"timeout", func(c *client, p string, in *injector) []call {
			in.armed.Store(true)
			return []call{send(c, p+"trigger", "method", "T", "hang", "1")}
		}},
		{"keepalive", func(c *client, p string, in *injector) []call {
			in.armed.Store(true)
			return nil
		}},
	} {
		t.Run(tc.where, func(t *testing.T) {
			if tc.where == "keepalive" {
				old := upstream.Keepalive.Swap(int64(50 * time.Millisecond))
				defer upstream.Keepalive.Store(old)
			}
			p := unique("upanic-" + tc.where)
			b := newBackend(t, "b")
			addr := startProxy(t, panicCfg(p, ep(b, "")))
			in := inject(t, tc.where, b.ln.Addr().String())
			c1, c2 := dial(t, addr), dial(t, addr)
			flight := []call{
				send(c1, p+"c1-1", "hang", "1"), send(c1, p+"c1-2", "hang", "1"),
				send(c2, p+"c2-1", "hang", "1"), send(c2, p+"c2-2", "hang", "1"),
			}
			eventually(t, "requests in flight upstream", func() bool { return b.received.Load() == 4 })
			internal(t, append(flight, tc.trigger(c1, p, in)...)...)
			for _, c := range []*client{c1, c2} {
				if m, err := c.call(0, "after"); err != nil || m.body != "after" {
					t.Fatalf("client connection after the upstream panic: %+v %v", m, err)
				}
			}
		})
	}
}

// A panic as an upstream connection opens, or fails to open, answers the
// requests that waited for it (here, those that reached it before it
// opened: the others went on another connection and were served).
func TestUpstreamPanicWhileConnecting(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close()
	for _, tc := range []struct {
		where string
		// other is how a request not on the panicking connection ends.
		other codecs.ErrorKind
	}{
		{"OnPoolReady", 0},
		{"OnPoolFailure", codecs.ErrNoHealthyUpstream},
	} {
		t.Run(tc.where, func(t *testing.T) {
			p := unique("upanic-" + tc.where)
			b := newBackend(t, "b")
			endpoint, key := ep(b, ""), b.ln.Addr().String()
			if tc.where == "OnPoolFailure" {
				endpoint, key = fmt.Sprintf("  - {address: 127.0.0.1, port: %d}", deadPort), fmt.Sprintf("127.0.0.1:%d", deadPort)
			}
			addr := startProxy(t, panicCfg(p, endpoint))
			in := inject(t, tc.where, key)
			in.armed.Store(true)
			c := dial(t, addr)
			var calls []call
			for i := range 5 {
				calls = append(calls, send(c, fmt.Sprint(p, "-", i)))
			}
			in.wait(t)
			failed := 0
			for _, cl := range calls {
				m, ok := cl.answer(t)
				switch {
				case !ok:
					t.Fatalf("%s: connection closed without an answer", cl.name)
				case md(m, "error") == codecs.ErrInternal.String():
					failed++
				case tc.other == 0 && m.status == codecs.StatusOK:
				case tc.other != 0 && md(m, "error") == tc.other.String():
				default:
					t.Fatalf("%s: answered %q (%s)", cl.name, md(m, "error"), m.body)
				}
			}
			if failed == 0 {
				t.Fatal("no request was on the panicking connection")
			}
		})
	}
}

// A panic applying an xDS resource is refused like an invalid one (NACK);
// the proxy keeps serving with what it had and applies the next version.
func TestXDSPanicIsRefused(t *testing.T) {
	v1, v2 := newBackend(t, "v1"), newBackend(t, "v2")
	drainServed(t, v1, v2)
	s := startXDSServer(t, "")
	s.setRoutes(routeTable(0))
	s.setEndpoints("svc", v1)
	name := unique("xpanic")
	yml := strings.Replace(xdsCfg("initial_fetch_timeout: 10s, address: "+s.addr+", route_config_name: r",
		"- name: c\n  endpoints:\n"+ep(v1, "version: v1")+"\n"+ep(v2, "version: v2")+
			"\n- name: e\n  type: EDS\n  eds_service_name: svc"), "stat_prefix: t\n", "stat_prefix: "+name+"\n", 1)
	addr, _ := startXDSProxy(t, yml)
	c := dial(t, addr)
	served := func(want string) {
		t.Helper()
		eventually(t, "requests served by "+want, func() bool {
			m, err := c.call(0, "x")
			if err != nil {
				t.Fatal(err)
			}
			return md(m, "server") == want
		})
	}
	served("v1")

	in := inject(t, "xds routes", name)
	in.armed.Store(true)
	s.setRoutes(routeTable(1))
	s.nack(t, "internal error")
	served("v1")
	next := routeTable(1)
	next.Routes[0].Name = "all-v2-again"
	s.setRoutes(next)
	served("v2")

	in = inject(t, "xds endpoints", name)
	in.armed.Store(true)
	s.setEndpoints("svc", v2)
	s.nack(t, "internal error")
	s.setEndpoints("svc", v1, v2)
	eventually(t, "endpoints applied after the refused version", func() bool {
		return len(proxyFor(t, yml).Cluster("e").Endpoints()) == 2
	})
}

// A panic in the timer that puts an unused proxy to sleep is recovered.
func TestUnusedTimerPanic(t *testing.T) {
	old := unusedSleep
	unusedSleep = time.Millisecond
	defer func() { unusedSleep = old }()
	b := newBackend(t, "b")
	name := unique("unused-panic")
	in := inject(t, "unused", name)
	in.armed.Store(true)
	before := testutil.ToFloat64(metrics.Panics.WithLabelValues("unused"))
	Register()
	proxyFor(t, panicCfg(name, ep(b, "")))
	in.wait(t)
	eventually(t, "the panic counted", func() bool {
		return testutil.ToFloat64(metrics.Panics.WithLabelValues("unused")) == before+1
	})
}
