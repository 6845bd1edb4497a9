// Package echo is breeze-echo: a minimal fast server that answers every
// request with a successful response carrying the request's argument.
package echo

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breeze-mesh/breeze/bench/internal/wire"
)

// Server answers requests of one protocol on any number of listeners.
type Server struct {
	Proto wire.Protocol
	Log   *slog.Logger

	Requests atomic.Int64 // frames answered or absorbed
	Errors   atomic.Int64 // connections closed on a bad frame
	// AcceptErrors counts failed accepts (out of file descriptors...).
	AcceptErrors atomic.Int64

	mu    sync.Mutex
	lns   []net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Serve accepts connections on ln until ln is closed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off and go on, as net/http does.
			s.AcceptErrors.Add(1)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close closes the listeners and connections and waits for the handlers.
func (s *Server) Close() {
	s.mu.Lock()
	for _, ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// handle reads frames and writes the replies in batches: a batch is written
// when no further whole frame is already buffered, so a pipelining client
// gets one write per read rather than one per frame.
func (s *Server) handle(c net.Conn) {
	defer c.Close()
	p := s.Proto
	br := bufio.NewReaderSize(c, 64<<10)
	out := make([]byte, 0, 64<<10)
	hl := p.HeaderLen()
	var big []byte
	for {
		h, err := br.Peek(hl)
		if err != nil {
			s.readEnd(c, err)
			return
		}
		n, err := p.FrameLen(h)
		if err != nil {
			s.bad(c, err)
			return
		}
		var f []byte
		if n <= br.Size() {
			if f, err = br.Peek(n); err != nil {
				s.readEnd(c, err)
				return
			}
		} else {
			big = append(big[:0], make([]byte, n)...)
			if _, err := io.ReadFull(br, big); err != nil {
				s.readEnd(c, err)
				return
			}
			f = big
		}
		if out, err = p.Echo(out, f); err != nil {
			s.bad(c, err)
			return
		}
		if n <= br.Size() {
			br.Discard(n)
		}
		s.Requests.Add(1)
		if more := wire.FrameBuffered(br, p); !more || len(out) >= 64<<10 {
			if len(out) > 0 {
				if _, err := c.Write(out); err != nil {
					return
				}
			}
			out = out[:0]
		}
	}
}

func (s *Server) readEnd(c net.Conn, err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return
	}
	if s.Log != nil {
		s.Log.Debug("echo: read", "remote", c.RemoteAddr(), "err", err)
	}
}

func (s *Server) bad(c net.Conn, err error) {
	s.Errors.Add(1)
	if s.Log != nil {
		s.Log.Warn("echo: bad frame, closing the connection", "remote", c.RemoteAddr(), "err", err)
	}
}
