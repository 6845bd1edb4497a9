package harness

import (
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Nacos is a real Nacos-compatible server (rnacos, scripts/nacos-peer.sh)
// on free loopback ports: HTTP Addr, gRPC Addr's port + 1000 (the port
// Nacos clients derive), console + 2000; a temporary data directory.
type Nacos struct {
	Addr string
	Port int
	proc *Proc
}

var nacosInstall struct {
	once sync.Once
	err  error
	out  []byte
}

// StartNacos builds rnacos when missing (once per machine, cached by
// version; a cold build takes many minutes) and starts a server; the
// test's cleanup stops it.
func StartNacos(t testing.TB) *Nacos {
	t.Helper()
	script := filepath.Join(RepoDir(), "scripts", "nacos-peer.sh")
	nacosInstall.once.Do(func() {
		nacosInstall.out, nacosInstall.err = exec.Command("bash", script, "install").CombinedOutput()
	})
	if nacosInstall.err != nil {
		t.Fatalf("%s install: %v\n%s", script, nacosInstall.err, nacosInstall.out)
	}
	for attempt := 1; ; attempt++ {
		port := nacosPorts(t)
		n := &Nacos{Addr: Addr(port), Port: port}
		n.proc = Start(t, "rnacos", "bash", script, "server", t.TempDir(), strconv.Itoa(port))
		deadline := time.Now().Add(60 * time.Second)
		for !nacosServing(n.Addr, port+1000) {
			if exited, _ := n.proc.Exited(); exited || time.Now().After(deadline) {
				t.Fatalf("rnacos on %s not serving (exited: %v):\n%s", n.Addr, exited, n.proc.Output())
			}
			time.Sleep(50 * time.Millisecond)
		}
		// rnacos 0.8.8 sometimes panics at start in a thread of its raft
		// store (an actor handling a request before its injection): it
		// serves on, but stores no configuration. Start another.
		if strings.Contains(n.proc.Output(), "panicked") && attempt < 5 {
			t.Logf("rnacos panicked at start (its raft store's start-up race); starting another")
			n.proc.KillAndWait(t)
			continue
		}
		return n
	}
}

func nacosServing(addr string, grpcPort int) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/nacos/v1/ns/service/list?pageNo=1&pageSize=1")
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	conn, err := net.DialTimeout("tcp", Addr(grpcPort), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// nacosPorts finds a port P with P, P+1000 and P+2000 free on loopback.
func nacosPorts(t testing.TB) int {
	for range 100 {
		p := FreePort(t)
		if p+2000 > 65535 {
			continue
		}
		free := true
		for _, q := range []int{p, p + 1000, p + 2000} {
			l, err := net.Listen("tcp", Addr(q))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return p
		}
	}
	t.Fatal("no free port P with P+1000 and P+2000 free")
	return 0
}
