// Command breeze-load drives a server or proxy with valid requests of one
// protocol and reports requests/s, latency percentiles, errors and the CPU
// time a given process (the proxy) spent per 1,000 requests.
//
//	breeze-load -addr 127.0.0.1:21020 -conns 64 -inflight 4 -d 15s -pid $(pgrep -n breeze)
//	breeze-load -proto thrift -addr 127.0.0.1:21120 -conns 64 -d 15s -pid PID
//	breeze-load -addr 127.0.0.1:21020 -idle 10000 -pid PID   # memory per idle connection
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/breeze-mesh/breeze/bench/internal/load"
	"github.com/breeze-mesh/breeze/bench/internal/wire"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "breeze-load:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg load.Config
	protoName := flag.String("proto", "dubbo", fmt.Sprintf("protocol: %v", wire.Names()))
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:20880", "host:port to load")
	flag.StringVar(&cfg.Label, "label", "", "name of what is measured, carried into -json")
	group := flag.String("group", "", "group of runs compared in one table, carried into -json")
	flag.StringVar(&cfg.Mix, "mix", wire.MixRoutes, "requests: routes (ten kinds, one per route of bench/configs) or single")
	flag.IntVar(&cfg.Payload, "payload", 1024, "bytes of call argument per request")
	flag.IntVar(&cfg.Conns, "conns", 64, "connections")
	flag.IntVar(&cfg.InFlight, "inflight", 4, "requests in flight per connection")
	flag.DurationVar(&cfg.Duration, "d", 0, "measured duration (after -warmup); default 10s unless -n is given")
	flag.Int64Var(&cfg.Requests, "n", 0, "total requests instead of a duration")
	flag.DurationVar(&cfg.Warmup, "warmup", 0, "load not measured, before the measured part")
	flag.Float64Var(&cfg.Rate, "rate", 0, "requests/s over all connections; 0: closed loop, as fast as responses return")
	flag.IntVar(&cfg.PID, "pid", 0, "process whose CPU time per request is reported (the proxy)")
	flag.BoolVar(&cfg.Verify, "verify", true, "check each response's length against breeze-echo's")
	flag.DurationVar(&cfg.Drain, "drain", 5*time.Second, "wait for responses in flight at the end")
	flag.DurationVar(&cfg.Grace, "grace", 0, "give up (exit 1, saying what it waits for) when the run has not ended this long after the measured duration; default -drain + 5s")
	jsonOut := flag.String("json", "", "append the result as one JSON line to this file")
	idle := flag.Int("idle", 0, "instead of load: open this many connections, one request each, and report the proxy's (-pid) RSS per idle connection")
	settle := flag.Duration("settle", 2*time.Second, "-idle: wait before reading RSS")
	hold := flag.Duration("hold", 0, "-idle: keep the connections open this long after the reading")
	var fetches [][2]string
	flag.Func("idle-fetch", "-idle: URL=FILE, fetched while the idle connections are open, e.g. the proxy's heap profile (repeatable)", func(v string) error {
		i := strings.LastIndexByte(v, '=') // URLs may hold '=' themselves
		if i <= 0 || i == len(v)-1 {
			return fmt.Errorf("want URL=FILE, got %q", v)
		}
		fetches = append(fetches, [2]string{v[:i], v[i+1:]})
		return nil
	})
	flag.Parse()

	p, err := wire.Lookup(*protoName)
	if err != nil {
		return err
	}
	cfg.Proto = p
	if cfg.Duration == 0 && cfg.Requests == 0 {
		cfg.Duration = 10 * time.Second
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var out any
	if *idle > 0 {
		held := func() {
			for _, f := range fetches {
				if err := fetch(f[0], f[1]); err != nil {
					fmt.Fprintln(os.Stderr, "breeze-load: -idle-fetch:", err)
				}
			}
		}
		res, err := load.Idle(ctx, load.IdleConfig{Label: cfg.Label, Addr: cfg.Addr, Proto: p, Conns: *idle, PID: cfg.PID, Settle: *settle, Hold: *hold, Held: held})
		if err != nil {
			return err
		}
		res.Format(os.Stdout)
		out = struct {
			Group string `json:"group,omitempty"`
			Kind  string `json:"kind"`
			*load.IdleResult
		}{*group, "idle", res}
	} else {
		res, err := load.Run(ctx, cfg)
		if err != nil {
			if *group != "" { // the row of the bench's table that failed
				return fmt.Errorf("%s: %w", *group, err)
			}
			return err
		}
		res.Format(os.Stdout)
		out = struct {
			Group string `json:"group,omitempty"`
			Kind  string `json:"kind"`
			*load.Result
		}{*group, "load", res}
	}
	if *jsonOut != "" {
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(*jsonOut, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	return nil
}

func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
