// Package peertest runs the server process of a test peer (rnacos,
// ZooKeeper) through its scripts/<name>-peer.sh, for nacostest and
// zktest: started and waited for until it answers, killed as a crash
// would kill it, its output kept for failure messages.
package peertest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is one peer server, started again after each Stop.
type Process struct {
	// Pkg and Name say whose server it is in failure messages
	// ("zktest", "ZooKeeper").
	Pkg, Name string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	output *lockedBuffer
}

// Start runs `bash script args...` and returns once serving (polled) is
// true; it fails t if the process is running already, exits first or is
// not serving within 60s (a JVM on 2 busy cores needs many seconds).
func (p *Process) Start(t testing.TB, addr string, serving func() bool, script string, args ...string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		t.Fatal(p.Pkg + ": Restart of a running server")
	}
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	p.output = &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	deadline := time.Now().Add(60 * time.Second)
	for !serving() {
		select {
		case <-done:
			p.cmd = nil
			t.Fatalf("%s: %s exited before answering: %s", p.Pkg, p.Name, p.output)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s on %s was not serving within 60s: %s", p.Pkg, p.Name, addr, p.output)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the server (as a crash would: no clean shutdown) and waits
// for it to exit.
func (p *Process) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// Output is what the server wrote so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.output == nil {
		return ""
	}
	return p.output.String()
}

// Script is the path of scripts/<file>, failing t (with pkg's name) when
// it is not there.
func Script(t testing.TB, pkg, file string) string {
	_, self, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(self), "..", "..", "..", "scripts", file)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v", pkg, err)
	}
	return p
}

// lockedBuffer is the server's output: written by exec's copier while
// Output reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
