package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/breeze-mesh/breeze/bench/internal/proc"
	"github.com/breeze-mesh/breeze/bench/internal/wire"
)

// IdleConfig measures the memory a proxy holds per idle downstream connection.
type IdleConfig struct {
	Label string
	Addr  string
	Proto wire.Protocol
	Conns int
	// PID is the proxy whose resident memory is read (required).
	PID int
	// Settle is the wait between the last connection's response and the
	// second RSS reading (default 2s).
	Settle time.Duration
	// Hold keeps the connections open this long after the reading.
	Hold time.Duration
	// Held, if set, runs after the reading while the connections are still
	// open (e.g. to take a heap profile of the proxy).
	Held        func()
	DialTimeout time.Duration
}

// IdleResult is what Idle measured.
type IdleResult struct {
	Label     string           `json:"label,omitempty"`
	Proto     string           `json:"proto"`
	Conns     int              `json:"conns"`
	Opened    int              `json:"opened"` // connections that got their response
	Errors    map[string]int64 `json:"error_kinds,omitempty"`
	RSSBefore int64            `json:"rss_before_bytes"`
	RSSAfter  int64            `json:"rss_after_bytes"`
	// PerConn is (RSSAfter - RSSBefore) / Opened.
	PerConn float64 `json:"bytes_per_conn"`
}

// Idle opens Conns connections, sends one request on each and waits for its
// response (so the proxy has set up everything a connection needs), then
// leaves them idle and reports the growth of the proxy's resident memory
// per connection.
func Idle(ctx context.Context, cfg IdleConfig) (*IdleResult, error) {
	if cfg.Proto == nil || cfg.Conns < 1 || cfg.PID <= 0 {
		return nil, errors.New("idle: need a protocol, connections and a pid")
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 2 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	reqs, err := cfg.Proto.Requests(wire.MixSingle, 16)
	if err != nil {
		return nil, err
	}
	res := &IdleResult{Label: cfg.Label, Proto: cfg.Proto.Name(), Conns: cfg.Conns, Errors: map[string]int64{}}
	if res.RSSBefore, err = proc.RSS(cfg.PID); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var conns []net.Conn
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	d := net.Dialer{Timeout: cfg.DialTimeout}
	for i := range cfg.Conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			nc, kind, err := idleConn(ctx, &d, cfg, &reqs[0], uint64(i+1))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Errors[kind]++
				if nc != nil {
					nc.Close()
				}
				return
			}
			conns = append(conns, nc)
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	res.Opened = len(conns)
	select {
	case <-time.After(cfg.Settle):
	case <-ctx.Done():
	}
	if res.RSSAfter, err = proc.RSS(cfg.PID); err != nil {
		return nil, err
	}
	if res.Opened > 0 {
		res.PerConn = float64(res.RSSAfter-res.RSSBefore) / float64(res.Opened)
	}
	if cfg.Held != nil {
		cfg.Held()
	}
	if cfg.Hold > 0 {
		select {
		case <-time.After(cfg.Hold):
		case <-ctx.Done():
		}
	}
	return res, nil
}

func idleConn(ctx context.Context, d *net.Dialer, cfg IdleConfig, req *wire.Request, id uint64) (net.Conn, string, error) {
	nc, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, "dial", err
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := nc.Write(cfg.Proto.AppendRequest(nil, req, id)); err != nil {
		return nc, "write", err
	}
	br := bufio.NewReaderSize(nc, 4096)
	for {
		h, err := br.Peek(cfg.Proto.HeaderLen())
		if err != nil {
			return nc, "read", err
		}
		n, err := cfg.Proto.FrameLen(h)
		if err != nil {
			return nc, "bad_frame", err
		}
		f := make([]byte, n)
		if _, err := io.ReadFull(br, f); err != nil {
			return nc, "read", err
		}
		resp, err := cfg.Proto.ParseResponse(f)
		switch {
		case err != nil:
			return nc, "bad_frame", err
		case resp.Kind == wire.Ping || resp.Kind == wire.Other:
			continue
		case resp.ID != id:
			return nc, "unexpected_id", fmt.Errorf("response id %d, want %d", resp.ID, id)
		case resp.Kind != wire.OK:
			return nc, resp.Status, errors.New(resp.Status)
		}
		nc.SetDeadline(time.Time{})
		return nc, "", nil
	}
}

// Format writes res for people.
func (res *IdleResult) Format(w io.Writer) {
	fmt.Fprintf(w, "%s %s idle: %d of %d connections open; RSS %.1f -> %.1f MiB: %.1f KiB per connection\n",
		orDash(res.Label), res.Proto, res.Opened, res.Conns,
		float64(res.RSSBefore)/(1<<20), float64(res.RSSAfter)/(1<<20), res.PerConn/1024)
	for k, v := range res.Errors {
		fmt.Fprintf(w, "    %s: %d\n", k, v)
	}
}
