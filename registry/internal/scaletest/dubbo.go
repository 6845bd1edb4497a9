package scaletest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"
)

// Dubbo 2 framing (codecs/dubbo/README.md): a 16-byte header (magic,
// flags, status, id, body length), hessian2 bodies.
const (
	headerLen   = 16
	flagRequest = 0x80
	flagTwoWay  = 0x40
	flagEvent   = 0x20
	hessian2    = 2
	statusOK    = 20
)

// request is a two-way Dubbo 2.0.2 call of iface's method "ping", no
// arguments, as dubbo-go writes it: the codec routes on the interface
// (path) and version in the body.
func request(iface string) ([]byte, error) {
	e := hessian.NewEncoder()
	attachments := map[any]any{"path": iface, "interface": iface, "version": "1.0.0"}
	for _, v := range []any{"2.0.2", iface, "1.0.0", "ping", "", attachments} {
		if err := e.Encode(v); err != nil {
			return nil, err
		}
	}
	body := e.Buffer()
	frame := make([]byte, headerLen, headerLen+len(body))
	frame[0], frame[1] = 0xda, 0xbb
	frame[2] = flagRequest | flagTwoWay | hessian2
	binary.BigEndian.PutUint32(frame[12:], uint32(len(body)))
	return append(frame, body...), nil
}

// readFrame reads one frame into buf (grown as needed).
func readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	if cap(buf) < headerLen {
		buf = make([]byte, headerLen, 256)
	}
	buf = buf[:headerLen]
	if _, err := io.ReadFull(r, buf); err != nil {
		return buf, err
	}
	if buf[0] != 0xda || buf[1] != 0xbb {
		return buf, fmt.Errorf("not a Dubbo frame: % x", buf[:2])
	}
	n := int(binary.BigEndian.Uint32(buf[12:]))
	if n > 1<<20 {
		return buf, fmt.Errorf("a %d-byte body", n)
	}
	buf = append(buf, make([]byte, n)...)
	_, err := io.ReadFull(r, buf[headerLen:])
	return buf, err
}

// Provider is a real TCP endpoint standing in for a Dubbo provider: it
// answers every request with a null value, every heartbeat with its
// reply, and records when requests came.
type Provider struct {
	ln       net.Listener
	Port     int
	requests atomic.Int64
	// first and last request, Unix nanoseconds; first closes firstCh.
	first, last atomic.Int64
	firstCh     chan struct{}
	once        sync.Once
	mu          sync.Mutex
	conns       map[net.Conn]bool
}

// StartProvider listens on a free loopback port until the benchmark ends.
func StartProvider(tb testing.TB) *Provider {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Provider{ln: ln, Port: ln.Addr().(*net.TCPAddr).Port, firstCh: make(chan struct{}), conns: map[net.Conn]bool{}}
	go p.serve()
	tb.Cleanup(p.Close)
	return p
}

// Close stops listening and closes every connection.
func (p *Provider) Close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Requests is how many requests it answered.
func (p *Provider) Requests() int64 { return p.requests.Load() }

// Last is when its last request came (zero: none).
func (p *Provider) Last() time.Time {
	if n := p.last.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// WaitFirst waits for the first request and returns when it came.
func (p *Provider) WaitFirst(tb testing.TB, timeout time.Duration) time.Time {
	tb.Helper()
	select {
	case <-p.firstCh:
		return time.Unix(0, p.first.Load())
	case <-time.After(timeout):
		tb.Fatalf("provider :%d got no request within %s", p.Port, timeout)
		return time.Time{}
	}
}

func (p *Provider) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[c] = true
		p.mu.Unlock()
		go p.handle(c)
	}
}

func (p *Provider) handle(c net.Conn) {
	defer func() {
		c.Close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	r := bufio.NewReader(c)
	var in []byte
	out := make([]byte, headerLen+1)
	for {
		var err error
		if in, err = readFrame(r, in); err != nil {
			return
		}
		event := in[2]&flagEvent != 0
		copy(out[4:12], in[4:12]) // the request id
		out[0], out[1], out[3] = 0xda, 0xbb, statusOK
		out[2] = hessian2
		binary.BigEndian.PutUint32(out[12:], 1)
		if event {
			out[2] |= flagEvent
			out[headerLen] = 'N' // a heartbeat's reply: hessian null
		} else {
			out[headerLen] = 0x92 // RESPONSE_NULL_VALUE (2), a compact int
			now := time.Now().UnixNano()
			p.last.Store(now)
			if p.requests.Add(1) == 1 {
				p.first.Store(now)
				p.once.Do(func() { close(p.firstCh) })
			}
		}
		if in[2]&flagTwoWay == 0 && !event {
			continue // a oneway
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// Caller sends iface's request through a proxy, one at a time on one
// connection, until stopped; a connection that fails is dialled again.
type Caller struct {
	addr  string
	frame []byte
	ok    atomic.Int64
	// failed: error replies (no route yet, no endpoint) and broken
	// connections.
	failed   atomic.Int64
	progress chan struct{}
	stop     chan struct{}
	done     chan struct{}
	firstErr atomic.Value
}

// StartCaller starts calling iface through the proxy at addr until the
// benchmark ends (or Stop).
func StartCaller(tb testing.TB, addr, iface string) *Caller {
	tb.Helper()
	frame, err := request(iface)
	if err != nil {
		tb.Fatal(err)
	}
	c := &Caller{addr: addr, frame: frame, progress: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	tb.Cleanup(c.Stop)
	return c
}

// Stop stops calling and waits for the loop to end.
func (c *Caller) Stop() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

// OK and Failed count the answers so far.
func (c *Caller) OK() int64     { return c.ok.Load() }
func (c *Caller) Failed() int64 { return c.failed.Load() }

// WaitOK waits until n more requests than before were answered OK.
func (c *Caller) WaitOK(tb testing.TB, n int64, timeout time.Duration) {
	tb.Helper()
	want := c.ok.Load() + n
	deadline := time.After(timeout)
	for c.ok.Load() < want {
		select {
		case <-c.progress:
		case <-deadline:
			tb.Fatalf("%d requests answered OK within %s, want %d more (%d failed; first failure: %v)",
				c.ok.Load()-want+n, timeout, n, c.failed.Load(), c.firstErr.Load())
		}
	}
}

func (c *Caller) fail(err error) {
	c.failed.Add(1)
	c.firstErr.CompareAndSwap(nil, err.Error())
}

func (c *Caller) run() {
	defer close(c.done)
	var id uint64
	var in []byte
	for {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			c.fail(err)
			select {
			case <-c.stop:
				return
			case <-time.After(10 * time.Millisecond): // a dial that failed: not in a tight loop
			}
			continue
		}
		r := bufio.NewReader(conn)
		for {
			select {
			case <-c.stop:
				conn.Close()
				return
			default:
			}
			id++
			binary.BigEndian.PutUint64(c.frame[4:12], id)
			// A bound should the proxy hold a request: not an assertion.
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err = conn.Write(c.frame); err == nil {
				in, err = readFrame(r, in)
			}
			if err == nil && binary.BigEndian.Uint64(in[4:12]) != id {
				err = fmt.Errorf("reply to request %d, want %d", binary.BigEndian.Uint64(in[4:12]), id)
			}
			if err != nil {
				c.fail(err)
				conn.Close()
				break
			}
			if in[3] == statusOK && len(in) > headerLen && in[headerLen] != 0x90 && in[headerLen] != 0x93 { // not an exception
				c.ok.Add(1)
			} else {
				c.fail(errors.New("an error reply (status " + fmt.Sprint(in[3]) + ")"))
				// A proxy with no route yet answers at once: pace the
				// calls (1 ms, the measure's resolution then) rather than
				// take a core from the control plane measured.
				select {
				case <-c.stop:
				case <-time.After(time.Millisecond):
				}
			}
			select {
			case c.progress <- struct{}{}:
			default:
			}
		}
	}
}
