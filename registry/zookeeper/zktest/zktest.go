// Package zktest runs a real Apache ZooKeeper for tests: installed by
// scripts/zookeeper-peer.sh (Debian's zookeeperd, or Apache's distribution
// from Maven Central), bound to loopback on a free port, with a temporary
// data directory; a test can stop and restart it.
package zktest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a ZooKeeper server a test started.
type Server struct {
	t       testing.TB
	script  string
	cfg     string
	Addr    string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	output  *bytes.Buffer
	Port    int
	dataDir string
}

// TickTime is the server's tick: sessions may last from 2 to 20 ticks,
// so a test can ask for a session that expires in under a second.
const TickTime = 100 * time.Millisecond

var installOnce sync.Once

// Start installs ZooKeeper if needed (once per test binary) and starts a
// server; the test's cleanup stops it.
func Start(t testing.TB) *Server {
	t.Helper()
	script := peerScript(t)
	installOnce.Do(func() {
		out, err := exec.Command("bash", script, "install").CombinedOutput()
		if err != nil {
			t.Fatalf("%s install: %v\n%s", script, err, out)
		}
	})
	dir := t.TempDir()
	port := freePort(t)
	cfg := filepath.Join(dir, "zoo.cfg")
	conf := fmt.Sprintf("tickTime=%d\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\n"+
		"minSessionTimeout=%d\nmaxSessionTimeout=60000\nadmin.enableServer=false\n4lw.commands.whitelist=stat\n",
		TickTime.Milliseconds(), filepath.Join(dir, "data"), port, 2*TickTime.Milliseconds())
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, script: script, cfg: cfg, Port: port, Addr: "127.0.0.1:" + strconv.Itoa(port), dataDir: dir}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server (again, after Stop), with the same port and
// data: sessions and nodes written before survive, as in a real restart.
// It returns once the server answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("zktest: Restart of a running server")
	}
	cmd := exec.Command("bash", s.script, "server", s.cfg)
	s.output = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = s.output, s.output
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(60 * time.Second) // a JVM on 2 busy cores
	for !s.serving() {
		select {
		case <-done:
			s.cmd = nil
			s.t.Fatalf("zktest: ZooKeeper exited before answering: %s", s.output)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("zktest: ZooKeeper on %s was not serving within 60s: %s", s.Addr, s.output)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serving asks the server whether it serves requests ("stat", a
// four-letter word: "ruok" answers before sessions can be opened).
func (s *Server) serving() bool {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("stat")); err != nil {
		return false
	}
	b, _ := io.ReadAll(c)
	return bytes.Contains(b, []byte("Mode: "))
}

// Stop kills the server (as a crash would: no clean shutdown) and waits
// for it to exit.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

func peerScript(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "..", "..", "scripts", "zookeeper-peer.sh")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("zktest: %v", err)
	}
	return p
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
