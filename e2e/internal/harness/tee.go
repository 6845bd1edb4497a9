package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Direction of a frame through a Tee.
type Direction int

const (
	// Up: from the connecting side (client) to the target (server).
	Up Direction = iota
	// Down: from the target back to the client.
	Down
)

func (d Direction) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// TeeFrame is one Dubbo frame seen by a Tee.
type TeeFrame struct {
	Conn   int // connection number, from 0
	Dir    Direction
	Header Header
	Raw    []byte // the whole frame
	At     time.Time
}

func (f TeeFrame) String() string { return fmt.Sprintf("conn %d %s %s", f.Conn, f.Dir, f.Header) }

// Tee is a TCP relay on a loopback port in front of Target. It forwards bytes
// unchanged in both directions and records every Dubbo frame it sees, so a
// test can watch traffic it does not own (dubbo-go heartbeats, say) and wait
// for a condition on it.
type Tee struct {
	Addr   string
	Target string

	ln net.Listener

	mu       sync.Mutex
	frames   []TeeFrame
	conns    int
	open     int
	garbage  int // directions that stopped parsing on non-Dubbo bytes
	changed  chan struct{}
	closed   bool
	allConns []net.Conn
}

// StartTee starts a Tee in front of target; it is closed when t ends.
func StartTee(t testing.TB, target string) *Tee {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tee: %v", err)
	}
	tee := &Tee{Addr: ln.Addr().String(), Target: target, ln: ln, changed: make(chan struct{})}
	go tee.accept()
	t.Cleanup(tee.Close)
	return tee
}

// Close stops the tee and closes all relayed connections.
func (tee *Tee) Close() {
	tee.mu.Lock()
	tee.closed = true
	conns := tee.allConns
	tee.mu.Unlock()
	tee.ln.Close()
	for _, c := range conns {
		c.Close()
	}
}

func (tee *Tee) accept() {
	for {
		down, err := tee.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", tee.Target, 5*time.Second)
		if err != nil {
			down.Close()
			continue
		}
		tee.mu.Lock()
		if tee.closed {
			tee.mu.Unlock()
			down.Close()
			up.Close()
			return
		}
		id := tee.conns
		tee.conns++
		tee.open++
		tee.allConns = append(tee.allConns, down, up)
		tee.signalLocked()
		tee.mu.Unlock()

		var wg sync.WaitGroup
		wg.Add(2)
		go tee.pipe(id, Up, down, up, &wg)
		go tee.pipe(id, Down, up, down, &wg)
		go func() {
			wg.Wait()
			tee.mu.Lock()
			tee.open--
			tee.signalLocked()
			tee.mu.Unlock()
		}()
	}
}

// pipe copies src to dst, parsing Dubbo frames on the way. Once bytes are
// not Dubbo, it copies the rest unparsed. Either side closing closes both.
func (tee *Tee) pipe(id int, dir Direction, src, dst net.Conn, wg *sync.WaitGroup) {
	defer wg.Done()
	defer src.Close()
	defer dst.Close()
	var pending []byte
	buf := make([]byte, 64<<10)
	parsing := true
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if parsing {
				pending = append(pending, buf[:n]...)
				pending, parsing = tee.parse(id, dir, pending)
			}
		}
		if err != nil {
			return
		}
	}
}

func (tee *Tee) parse(id int, dir Direction, b []byte) ([]byte, bool) {
	for len(b) >= HeaderLen {
		h, err := ParseHeader(b)
		if err != nil {
			tee.mu.Lock()
			tee.garbage++
			tee.signalLocked()
			tee.mu.Unlock()
			return nil, false
		}
		n := HeaderLen + int(h.BodyLen)
		if len(b) < n {
			break
		}
		f := TeeFrame{Conn: id, Dir: dir, Header: h, Raw: bytes.Clone(b[:n]), At: time.Now()}
		tee.mu.Lock()
		tee.frames = append(tee.frames, f)
		tee.signalLocked()
		tee.mu.Unlock()
		b = b[n:]
	}
	return append([]byte(nil), b...), true
}

func (tee *Tee) signalLocked() {
	close(tee.changed)
	tee.changed = make(chan struct{})
}

// TeeState is what a Tee has seen so far.
type TeeState struct {
	Frames []TeeFrame
	// Conns is the number of connections accepted; Open of those still open.
	Conns, Open int
}

// State returns a snapshot of what the tee has seen.
func (tee *Tee) State() TeeState {
	tee.mu.Lock()
	defer tee.mu.Unlock()
	return TeeState{Frames: append([]TeeFrame(nil), tee.frames...), Conns: tee.conns, Open: tee.open}
}

// WaitFor waits until cond holds on the tee's state, or ctx ends; the error
// then describes what was seen.
func (tee *Tee) WaitFor(ctx context.Context, what string, cond func(TeeState) bool) error {
	for {
		tee.mu.Lock()
		changed := tee.changed
		tee.mu.Unlock()
		st := tee.State()
		if cond(st) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("tee %s→%s: waiting for %s: %w; saw %d connections (%d open) and frames:\n%s",
				tee.Addr, tee.Target, what, ctx.Err(), st.Conns, st.Open, st.describe(40))
		}
	}
}

func (s TeeState) describe(last int) string {
	fs := s.Frames
	if len(fs) > last {
		fs = fs[len(fs)-last:]
	}
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	return b.String()
}

// HeartbeatRoundTrips counts heartbeats sent in direction dir that were
// answered (a heartbeat reply with the same id on the same connection, in
// the other direction).
func (s TeeState) HeartbeatRoundTrips(dir Direction) int {
	type key struct {
		conn int
		id   uint64
	}
	asked := map[key]bool{}
	n := 0
	for _, f := range s.Frames {
		switch {
		case f.Dir == dir && f.Header.IsHeartbeat():
			asked[key{f.Conn, f.Header.ID}] = true
		case f.Dir != dir && f.Header.IsHeartbeatReply() && asked[key{f.Conn, f.Header.ID}]:
			delete(asked, key{f.Conn, f.Header.ID})
			n++
		}
	}
	return n
}

// Find returns the frames matching pred.
func (s TeeState) Find(pred func(TeeFrame) bool) []TeeFrame {
	var out []TeeFrame
	for _, f := range s.Frames {
		if pred(f) {
			out = append(out, f)
		}
	}
	return out
}

// ErrNotClosed: a connection the peer should have closed is still open.
var ErrNotClosed = errors.New("connection still open")

// WaitClosed reads from c until the peer closes it (EOF or reset) or within
// passes; data received meanwhile is returned.
func WaitClosed(c net.Conn, within time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(within))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return got, fmt.Errorf("%w after %s", ErrNotClosed, within)
		}
		if errors.Is(err, io.EOF) || isReset(err) {
			return got, nil
		}
		return got, err
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe")
}

// Port is the tee's loopback port.
func (tee *Tee) Port() int {
	_, port, _ := net.SplitHostPort(tee.Addr)
	n, _ := strconv.Atoi(port)
	return n
}
