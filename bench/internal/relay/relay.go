// Package relay is breeze-relay: a plain TCP relay with one upstream
// connection per client and io.Copy both ways, the floor for any user-space
// hop.
package relay

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Relay forwards each accepted connection to one of Upstreams (round robin
// per connection).
type Relay struct {
	Upstreams   []string
	DialTimeout time.Duration // default 5s

	next         atomic.Uint64
	DialErrors   atomic.Int64
	AcceptErrors atomic.Int64

	mu    sync.Mutex
	lns   []net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Serve accepts connections on ln until ln is closed.
func (r *Relay) Serve(ln net.Listener) error {
	if len(r.Upstreams) == 0 {
		return errors.New("relay: no upstream")
	}
	r.mu.Lock()
	r.lns = append(r.lns, ln)
	if r.conns == nil {
		r.conns = map[net.Conn]struct{}{}
	}
	r.mu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off and go on, as net/http does.
			r.AcceptErrors.Add(1)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.handle(c)
		}()
	}
}

func (r *Relay) track(c net.Conn, add bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if add {
		r.conns[c] = struct{}{}
	} else {
		delete(r.conns, c)
	}
}

func (r *Relay) handle(down net.Conn) {
	r.track(down, true)
	defer r.track(down, false)
	defer down.Close()
	timeout := r.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	addr := r.Upstreams[(r.next.Add(1)-1)%uint64(len(r.Upstreams))]
	up, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		r.DialErrors.Add(1)
		return
	}
	r.track(up, true)
	defer r.track(up, false)
	defer up.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(down, up)
		closeWrite(down)
		close(done)
	}()
	io.Copy(up, down)
	closeWrite(up)
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// Close closes the listeners and every connection and waits for the handlers.
func (r *Relay) Close() {
	r.mu.Lock()
	for _, ln := range r.lns {
		ln.Close()
	}
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
