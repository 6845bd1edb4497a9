package proxy

import (
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
)

// upstream_connect GO_LOOPBACK: the proxy reaches its app with the Go
// runtime's own socket. Requests are answered without a single upstream
// connection through Envoy (the host counts every CreateUpstreamConn), and
// the requests in flight when the app dies fail at once, each with an
// error reply, none left to its timeout.
func TestGoLoopbackUpstream(t *testing.T) {
	app := newBackend(t, "app")
	addr := startProxy(t, cfg(`  - route: {cluster: local-app}`, "- name: local-app\n  endpoints:\n"+ep(app, ""),
		"upstream_connect: GO_LOOPBACK", "request_timeout: 60s"))
	connectsBefore := testHost.Stats().UpstreamConnects
	c := dial(t, addr)
	for i := range 50 {
		m, err := c.call(0, "x")
		if err != nil || m.status != codecs.StatusOK || md(m, "server") != "app" {
			t.Fatalf("call %d: %+v %v", i, m, err)
		}
	}
	if n := testHost.Stats().UpstreamConnects - connectsBefore; n != 0 {
		t.Fatalf("%d upstream connections went through Envoy (CreateUpstreamConn); want 0 with GO_LOOPBACK", n)
	}

	app.hangAll.Store(true)
	var chans []chan tmsg
	for range 10 {
		chans = append(chans, c.send(codecs.Request, 0, "y"))
	}
	eventually(t, "the app holding 10 requests", func() bool { return app.received.Load() == 60 })
	app.kill()
	for i, ch := range chans {
		select {
		case m := <-ch:
			if m.status != codecs.StatusError || md(m, "error") == "" {
				t.Fatalf("request %d in flight when the app died: %+v, want an error reply", i, m)
			}
			if i == 0 {
				t.Logf("in flight when the app died: error %q", md(m, "error"))
			}
		case <-time.After(10 * time.Second):
			// request_timeout is 60s: only the close can answer it.
			t.Fatalf("request %d in flight hangs after the app died", i)
		}
	}
}
