package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/bench/internal/load"
	"github.com/breeze-mesh/breeze/bench/internal/relay"
	"github.com/breeze-mesh/breeze/bench/internal/wire"
)

// Smoke tests: the tools run end to end, through breeze-echo directly,
// through the relay, and through Breeze (in this process, on the host, with
// the route table of configs/breeze.yaml, and for Thrift of
// configs/breeze-thrift.yaml). Nothing here is timed.

func proto(t *testing.T, name string) wire.Protocol {
	t.Helper()
	p, err := wire.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func dubbo(t *testing.T) wire.Protocol { return proto(t, "dubbo") }

func run(t *testing.T, cfg load.Config) *load.Result {
	t.Helper()
	if cfg.Proto == nil {
		cfg.Proto = dubbo(t)
	}
	if cfg.Mix == "" {
		cfg.Mix = wire.MixRoutes
	}
	cfg.PID = os.Getpid()
	cfg.Verify = true
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := load.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	res.Format(&b)
	t.Log(b.String())
	if res.OK != cfg.Requests || res.Errors != 0 || res.Responses != cfg.Requests {
		t.Errorf("%s: %d ok, %d responses, %d errors %v; want %d ok", cfg.Label, res.OK, res.Responses, res.Errors, res.ErrorKinds, cfg.Requests)
	}
	if res.P50 <= 0 || res.P999 < res.P50 || res.CPUPer1k < 0 || res.ConnsOpen != cfg.Conns {
		t.Errorf("%s: implausible figures: %+v", cfg.Label, res)
	}
	return res
}

func TestLoadEchoDirect(t *testing.T) {
	servers, addrs := echoServers(t, dubbo(t))
	run(t, load.Config{Label: "echo-direct", Addr: addrs[0], Payload: 1024, Conns: 4, InFlight: 8, Requests: 400})
	if got := servers[0].Requests.Load(); got != 400 {
		t.Errorf("echo answered %d requests, want 400", got)
	}
	// A duration run stops by itself and drains what is in flight.
	ctx := context.Background()
	res, err := load.Run(ctx, load.Config{Addr: addrs[1], Proto: dubbo(t), Mix: wire.MixSingle, Payload: 100,
		Conns: 2, InFlight: 2, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, Rate: 2000, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Responses == 0 || res.Errors != 0 || res.CPUPer1k != -1 {
		t.Errorf("duration run: %+v", res)
	}
}

func TestLoadThroughRelay(t *testing.T) {
	_, addrs := echoServers(t, dubbo(t))
	r := &relay.Relay{Upstreams: addrs}
	ln := listen(t)
	go r.Serve(ln)
	t.Cleanup(r.Close)
	run(t, load.Config{Label: "relay", Addr: ln.Addr().String(), Payload: 1024, Conns: 3, InFlight: 4, Requests: 300})
}

// TestLoadThroughBreeze runs the bench route table: every one of the ten
// request kinds must be routed (no local replies), and all three endpoints
// must get traffic.
func TestLoadThroughBreeze(t *testing.T) {
	servers, addrs := echoServers(t, dubbo(t))
	addr := startBreeze(t, "configs/breeze.yaml", 21001, addrs)
	run(t, load.Config{Label: "breeze", Addr: addr, Payload: 1024, Conns: 4, InFlight: 4, Requests: 400})
	for i, s := range servers {
		if s.Requests.Load() == 0 {
			t.Errorf("endpoint v%d got no request", i+1)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	idle, err := load.Idle(ctx, load.IdleConfig{Label: "breeze", Addr: addr, Proto: dubbo(t), Conns: 20, PID: os.Getpid(), Settle: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if idle.Opened != 20 || len(idle.Errors) != 0 || idle.RSSAfter <= 0 {
		t.Errorf("idle: %+v", idle)
	}
}

// The same for Thrift (framed, binary): echo direct, and Breeze with
// configs/breeze-thrift.yaml.
func TestLoadThriftEchoDirect(t *testing.T) {
	p := proto(t, "thrift")
	servers, addrs := echoServers(t, p)
	run(t, load.Config{Label: "echo-direct", Proto: p, Addr: addrs[0], Payload: 1024, Conns: 4, InFlight: 8, Requests: 400})
	if got := servers[0].Requests.Load(); got != 400 {
		t.Errorf("echo answered %d requests, want 400", got)
	}
}

func TestLoadThriftThroughBreeze(t *testing.T) {
	p := proto(t, "thrift")
	servers, addrs := echoServers(t, p)
	addr := startBreeze(t, "configs/breeze-thrift.yaml", 21101, addrs)
	run(t, load.Config{Label: "breeze", Proto: p, Addr: addr, Payload: 1024, Conns: 4, InFlight: 4, Requests: 400})
	for i, s := range servers {
		if s.Requests.Load() == 0 {
			t.Errorf("endpoint v%d got no request", i+1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	idle, err := load.Idle(ctx, load.IdleConfig{Label: "breeze", Addr: addr, Proto: p, Conns: 5, PID: os.Getpid(), Settle: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if idle.Opened != 5 || len(idle.Errors) != 0 {
		t.Errorf("idle: %+v", idle)
	}
}
