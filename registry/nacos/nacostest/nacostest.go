// Package nacostest runs a real Nacos-compatible server for tests: rnacos,
// built by scripts/nacos-peer.sh (once per machine, cached by version),
// bound to loopback on free ports (HTTP P, gRPC P+1000, console P+2000),
// with a temporary data directory; a test can stop and restart it.
package nacostest

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/registry/internal/peertest"

	"github.com/breeze-mesh/breeze/internal/testport"
)

// Server is an rnacos server a test started.
type Server struct {
	t      testing.TB
	script string
	dir    string
	// Addr is the HTTP address, host:port, as Nacos clients take it (they
	// derive the gRPC port: Port+1000).
	Addr string
	Port int
	proc peertest.Process
}

var (
	installOnce sync.Once
	installErr  error
	installOut  []byte
)

// Start builds rnacos if needed (once per test binary; a cold build takes
// many minutes) and starts a server; the test's cleanup stops it.
func Start(t testing.TB) *Server {
	t.Helper()
	script := peerScript(t)
	installOnce.Do(func() {
		installOut, installErr = exec.Command("bash", script, "install").CombinedOutput()
	})
	if installErr != nil {
		t.Fatalf("%s install: %v\n%s", script, installErr, installOut)
	}
	for attempt := 1; ; attempt++ {
		s := &Server{t: t, script: script, dir: t.TempDir(), proc: peertest.Process{Pkg: "nacostest", Name: "rnacos"}}
		s.Port = testport.Set(t, 1000, 2000)
		s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
		s.Restart()
		// rnacos 0.8.8 sometimes panics at start in a thread of its raft
		// store (an actor handling a request before its injection): it
		// serves on, but stores no configuration. Start another.
		if strings.Contains(s.Output(), "panicked") && attempt < 5 {
			t.Logf("nacostest: rnacos panicked at start (its raft store's start-up race); starting another")
			s.Stop()
			continue
		}
		t.Cleanup(s.Stop)
		return s
	}
}

// Restart starts the server (again, after Stop) with the same ports and
// data directory. Ephemeral instances live in memory only: a restarted
// server has none until their clients register them again (Nacos' SDKs
// do on reconnecting). It returns once the server answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.proc.Start(s.t, s.Addr, s.serving, s.script, "server", s.dir, strconv.Itoa(s.Port))
}

// serving asks the HTTP API for the service list and checks that the gRPC
// port accepts connections.
func (s *Server) serving() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s/nacos/v1/ns/service/list?pageNo=1&pageSize=1", s.Addr))
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.Port+1000), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// Stop kills the server (as a crash would) and waits for it to exit.
func (s *Server) Stop() { s.proc.Stop() }

// Output is what the server wrote so far.
func (s *Server) Output() string { return s.proc.Output() }

func peerScript(t testing.TB) string { return peertest.Script(t, "nacostest", "nacos-peer.sh") }
