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
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/registry/internal/peertest"

	"github.com/breeze-mesh/breeze/internal/testport"
)

// Server is a ZooKeeper server a test started.
type Server struct {
	t       testing.TB
	script  string
	cfg     string
	Addr    string
	proc    peertest.Process
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
	port := testport.Free(t)
	cfg := filepath.Join(dir, "zoo.cfg")
	conf := fmt.Sprintf("tickTime=%d\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\n"+
		"minSessionTimeout=%d\nmaxSessionTimeout=60000\nadmin.enableServer=false\n4lw.commands.whitelist=stat\n",
		TickTime.Milliseconds(), filepath.Join(dir, "data"), port, 2*TickTime.Milliseconds())
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, script: script, cfg: cfg, Port: port, Addr: "127.0.0.1:" + strconv.Itoa(port), dataDir: dir, proc: peertest.Process{Pkg: "zktest", Name: "ZooKeeper"}}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server (again, after Stop), with the same port and
// data: sessions and nodes written before survive, as in a real restart.
// It returns once the server answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.proc.Start(s.t, s.Addr, s.serving, s.script, "server", s.cfg)
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

// Wipe deletes the stopped server's data, as when a ZooKeeper is replaced
// by one restored from an older backup or started on an empty volume: the
// next Restart serves an empty tree, at lower zxids than its clients saw.
func (s *Server) Wipe() {
	s.t.Helper()
	if err := os.RemoveAll(filepath.Join(s.dataDir, "data")); err != nil {
		s.t.Fatal(err)
	}
}

// Stop kills the server (as a crash would: no clean shutdown) and waits
// for it to exit.
func (s *Server) Stop() { s.proc.Stop() }

func peerScript(t testing.TB) string { return peertest.Script(t, "zktest", "zookeeper-peer.sh") }
