package harness

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RateLimit is Envoy's rate-limit service (github.com/envoyproxy/ratelimit)
// running on a Redis of its own, both started by scripts/ratelimit-peer.sh.
type RateLimit struct {
	// Addr is the service's gRPC address (RLS v3).
	Addr string
	// RedisAddr is its Redis.
	RedisAddr string
	Proc      *Proc
	Redis     *Proc
}

var (
	rlInstallOnce sync.Once
	rlInstallErr  error
)

// ratelimitScript is the script that installs and starts both.
func ratelimitScript() string { return filepath.Join(RepoDir(), "scripts", "ratelimit-peer.sh") }

// installRateLimit makes sure Redis and the service are installed: a no-op
// when they are (`make test-deps` installs them; the service is built once
// per machine into a cache outside the clone), else an install that takes
// about a minute.
func installRateLimit(t testing.TB) {
	t.Helper()
	rlInstallOnce.Do(func() {
		out, err := exec.Command("bash", ratelimitScript(), "install").CombinedOutput()
		if err != nil {
			rlInstallErr = fmt.Errorf("%s install: %v\n%s", ratelimitScript(), err, out)
		}
	})
	if rlInstallErr != nil {
		t.Fatal(rlInstallErr)
	}
}

// StartRateLimit starts a fresh Redis and the rate-limit service with the
// rules of the service's own config file format (domain, descriptors with
// rate_limit: {unit, requests_per_unit}), on free loopback ports, and waits
// until the service answers its health check. Both are killed when t ends.
func StartRateLimit(t testing.TB, rules string) *RateLimit {
	t.Helper()
	installRateLimit(t)
	root := t.TempDir()
	cfgDir := filepath.Join(root, "ratelimit", "config")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "rules.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	redisPort := FreePort(t)
	rl := &RateLimit{RedisAddr: Addr(redisPort)}
	rl.Redis = Start(t, "redis", "bash", ratelimitScript(), "redis", strconv.Itoa(redisPort))
	if err := WaitAccepting(rl.RedisAddr, rl.Redis, 30*time.Second); err != nil {
		t.Fatalf("redis: %v\n%s", err, rl.Redis.Output())
	}
	grpcPort, httpPort, debugPort := FreePort(t), FreePort(t), FreePort(t)
	rl.Addr = Addr(grpcPort)
	rl.Proc = Start(t, "ratelimit", "bash", ratelimitScript(), "ratelimit",
		strconv.Itoa(redisPort), strconv.Itoa(grpcPort), strconv.Itoa(httpPort), strconv.Itoa(debugPort), root)
	if err := waitHealthy("http://"+Addr(httpPort)+"/healthcheck", rl.Proc, 30*time.Second); err != nil {
		t.Fatalf("ratelimit: %v\n%s", err, rl.Proc.Output())
	}
	if err := WaitAccepting(rl.Addr, rl.Proc, 30*time.Second); err != nil {
		t.Fatalf("ratelimit: %v\n%s", err, rl.Proc.Output())
	}
	return rl
}

// waitHealthy polls url until it answers 200, proc exits, or within passes.
func waitHealthy(url string, proc *Proc, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		if ok, perr := proc.Exited(); ok {
			return fmt.Errorf("%s exited (%v) before %s answered", proc.Name, perr, url)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no health after %s: %w", within, err)
		}
		select {
		case <-time.After(25 * time.Millisecond):
		case <-proc.Done():
		}
	}
}

// FlushRedis empties the service's Redis: every limit starts over.
func (rl *RateLimit) FlushRedis(t testing.TB) {
	t.Helper()
	c, err := net.DialTimeout("tcp", rl.RedisAddr, 5*time.Second)
	if err != nil {
		t.Fatalf("redis: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "*1\r\n$8\r\nFLUSHALL\r\n"); err != nil {
		t.Fatalf("redis FLUSHALL: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "+OK" {
		t.Fatalf("redis FLUSHALL: %q, %v", line, err)
	}
}

// H2Gate is a TCP relay in front of an HTTP/2 server (a gRPC service) that
// counts the calls made through it (the HEADERS frames its clients send)
// and, while held, keeps the server's answers from reaching them: the
// calls arrive, their answers wait for Release. A test holds it to stall
// the service at a moment of its choosing, knowing how many calls wait.
type H2Gate struct {
	Addr   string
	Target string
	ln     net.Listener

	mu      sync.Mutex
	calls   int
	changed chan struct{} // closed and replaced when calls changes
	open    chan struct{} // closed while answers flow
	conns   []net.Conn
	closed  bool
}

// StartH2Gate starts an open gate in front of target; it is closed when t
// ends.
func StartH2Gate(t testing.TB, target string) *H2Gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("gate: %v", err)
	}
	g := &H2Gate{Addr: ln.Addr().String(), Target: target, ln: ln, changed: make(chan struct{}), open: make(chan struct{})}
	close(g.open)
	go g.accept()
	t.Cleanup(g.close)
	return g
}

// Hold keeps every answer the server sends from now on.
func (g *H2Gate) Hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

// Release lets the answers held, and all later ones, through.
func (g *H2Gate) Release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

// Calls is the number of calls made through the gate so far.
func (g *H2Gate) Calls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

// WaitCalls waits until at least n calls were made through the gate.
func (g *H2Gate) WaitCalls(ctx context.Context, n int) error {
	for {
		g.mu.Lock()
		calls, changed := g.calls, g.changed
		g.mu.Unlock()
		if calls >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("%d calls through the gate, waiting for %d: %w", calls, n, ctx.Err())
		}
	}
}

func (g *H2Gate) close() {
	g.Release() // no relay goroutine stays parked on a held gate
	g.mu.Lock()
	g.closed = true
	conns := g.conns
	g.mu.Unlock()
	g.ln.Close()
	for _, c := range conns {
		c.Close()
	}
}

func (g *H2Gate) track(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		c.Close()
		return false
	}
	g.conns = append(g.conns, c)
	return true
}

func (g *H2Gate) accept() {
	for {
		down, err := g.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", g.Target)
		if err != nil {
			down.Close()
			continue
		}
		if !g.track(down) || !g.track(up) {
			return
		}
		go g.countCalls(down, up)
		go g.answers(up, down)
	}
}

// countCalls relays the client's bytes, counting the HEADERS frames: one
// per call, after the connection preface.
func (g *H2Gate) countCalls(from, to net.Conn) {
	defer from.Close()
	defer to.Close()
	r := bufio.NewReader(from)
	preface := make([]byte, 24) // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	if _, err := io.ReadFull(r, preface); err != nil {
		return
	}
	if _, err := to.Write(preface); err != nil {
		return
	}
	header := make([]byte, 9) // length (24 bits), type, flags, stream id
	for {
		if _, err := io.ReadFull(r, header); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(append([]byte{0}, header[:3]...)))
		frame := append(append([]byte(nil), header...), make([]byte, n)...)
		if _, err := io.ReadFull(r, frame[9:]); err != nil {
			return
		}
		if _, err := to.Write(frame); err != nil {
			return
		}
		const headersFrame = 0x1
		if header[3] == headersFrame {
			g.mu.Lock()
			g.calls++
			close(g.changed)
			g.changed = make(chan struct{})
			g.mu.Unlock()
		}
	}
}

// answers relays the server's bytes, waiting while the gate is held.
func (g *H2Gate) answers(from, to net.Conn) {
	defer from.Close()
	defer to.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			g.mu.Lock()
			open := g.open
			g.mu.Unlock()
			<-open
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
