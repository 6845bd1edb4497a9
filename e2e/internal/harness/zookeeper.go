package harness

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// ZooKeeper is a real Apache ZooKeeper (scripts/zookeeper-peer.sh) on a
// free loopback port with a temporary data directory.
type ZooKeeper struct {
	Addr string
	t    testing.TB
	cfg  string
	proc *Proc
}

var zkInstall struct {
	once sync.Once
	err  error
	out  []byte
}

// StartZooKeeper installs ZooKeeper when missing (once per test binary)
// and starts a server; the test's cleanup stops it. Sessions may be as
// short as 200ms (tickTime 100ms).
func StartZooKeeper(t testing.TB) *ZooKeeper {
	t.Helper()
	script := filepath.Join(RepoDir(), "scripts", "zookeeper-peer.sh")
	zkInstall.once.Do(func() {
		zkInstall.out, zkInstall.err = exec.Command("bash", script, "install").CombinedOutput()
	})
	if zkInstall.err != nil {
		t.Fatalf("%s install: %v\n%s", script, zkInstall.err, zkInstall.out)
	}
	dir := t.TempDir()
	port := FreePort(t)
	cfg := filepath.Join(dir, "zoo.cfg")
	conf := fmt.Sprintf("tickTime=100\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\nminSessionTimeout=200\n"+
		"maxSessionTimeout=60000\nadmin.enableServer=false\n4lw.commands.whitelist=stat\n", filepath.Join(dir, "data"), port)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	z := &ZooKeeper{Addr: Addr(port), t: t, cfg: cfg}
	z.proc = Start(t, "zookeeper", "bash", script, "server", cfg)
	deadline := time.Now().Add(60 * time.Second)
	for !zkServing(z.Addr) {
		if exited, _ := z.proc.Exited(); exited || time.Now().After(deadline) {
			t.Fatalf("ZooKeeper on %s not serving (exited: %v):\n%s", z.Addr, exited, z.proc.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return z
}

// zkServing asks ZooKeeper whether it serves requests ("stat"; "ruok"
// answers before sessions can be opened).
func zkServing(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
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
