// Package harness runs the end-to-end peers as real processes: it builds the
// dubbo-go provider and consumer and the Breeze proxy once per test run,
// starts them on free loopback ports, waits for each to be ready on a
// condition (a READY line, a port that accepts) with a deadline, and kills
// them when the test ends.
package harness

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a child process whose output is kept for diagnosis.
type Proc struct {
	Name string
	cmd  *exec.Cmd

	mu     sync.Mutex
	lines  []string // last maxLines lines of stdout and stderr
	ready  string   // the READY line, once seen
	notify chan struct{}

	exited chan struct{} // closed when the process has exited
	err    error         // Wait's result, valid once exited is closed

	alarms []string // lines that show a crash or a data race

	stdin  io.WriteCloser                // set with ProcOptions.Stdin
	onLine func(line string) (keep bool) // stdout lines; false: not kept
}

// ProcOptions are StartWith's options.
type ProcOptions struct {
	// Stdin gives the process a pipe the test writes with Proc.Write.
	Stdin bool
	// OnLine sees every stdout line first; a false result keeps the line out
	// of Output.
	OnLine func(line string) (keep bool)
	// Env is added to the test's environment ("KEY=value"; a later entry
	// wins over the inherited one of the same key).
	Env []string
}

const maxLines = 400

// Start starts bin with args; the process is killed when t ends, and its
// output is logged if t failed.
func Start(t testing.TB, name, bin string, args ...string) *Proc {
	t.Helper()
	return StartWith(t, ProcOptions{}, name, bin, args...)
}

// StartWith is Start with options.
func StartWith(t testing.TB, o ProcOptions, name, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, cmd: exec.Command(bin, args...), notify: make(chan struct{}), exited: make(chan struct{}), onLine: o.OnLine}
	if len(o.Env) > 0 {
		p.cmd.Env = append(os.Environ(), o.Env...)
	}
	if o.Stdin {
		w, err := p.cmd.StdinPipe()
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		p.stdin = w
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s (%s): %v", name, bin, err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go p.scan(stdout, "", &readers)
	go p.scan(stderr, "stderr: ", &readers)
	go func() {
		// Wait only after both pipes are drained, as os/exec requires.
		readers.Wait()
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Kill()
		if a := p.Alarms(); len(a) > 0 {
			t.Errorf("%s reported a crash or a data race:\n%s", name, strings.Join(a, "\n"))
		}
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit 10s after SIGKILL", name, p.Pid())
		}
		if t.Failed() {
			t.Logf("output of %s (last %d lines):\n%s", name, maxLines, p.Output())
		}
	})
	return p
}

func (p *Proc) scan(r io.Reader, prefix string, wg *sync.WaitGroup) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if prefix == "" && p.onLine != nil && !p.onLine(line) {
			continue
		}
		p.mu.Lock()
		if isAlarm(line) && len(p.alarms) < 10 {
			p.alarms = append(p.alarms, line)
		}
		if len(p.lines) == maxLines {
			copy(p.lines, p.lines[1:])
			p.lines = p.lines[:maxLines-1]
		}
		p.lines = append(p.lines, prefix+line)
		if prefix == "" && p.ready == "" && strings.HasPrefix(line, "READY") {
			p.ready = line
		}
		close(p.notify)
		p.notify = make(chan struct{})
		p.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

// isAlarm spots the first line of a Go crash or race report.
func isAlarm(line string) bool {
	return strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") ||
		strings.Contains(line, "WARNING: DATA RACE")
}

// Alarms returns the output lines that showed a Go crash or a data race
// (a proxy built with BREEZE_E2E_RACE_PROXY=1 reports races this way).
func (p *Proc) Alarms() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.alarms...)
}

// Write writes to the process's stdin (ProcOptions.Stdin).
func (p *Proc) Write(b []byte) error {
	if p.stdin == nil {
		return fmt.Errorf("%s has no stdin pipe", p.Name)
	}
	_, err := p.stdin.Write(b)
	return err
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output returns the kept output lines.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.exited:
		return true, p.err
	default:
		return false, nil
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.exited }

// Kill sends SIGKILL (no-op once exited).
func (p *Proc) Kill() {
	if ok, _ := p.Exited(); !ok {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// KillAndWait sends SIGKILL and waits until the process is gone.
func (p *Proc) KillAndWait(t testing.TB) {
	t.Helper()
	p.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s (pid %d) did not exit 10s after SIGKILL", p.Name, p.Pid())
	}
}

// WaitReady waits for a stdout line starting with "READY" and returns it.
func (p *Proc) WaitReady(within time.Duration) (string, error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		ready, notify := p.ready, p.notify
		p.mu.Unlock()
		if ready != "" {
			return ready, nil
		}
		select {
		case <-notify:
		case <-p.exited:
			return "", fmt.Errorf("%s exited before READY (%v)", p.Name, p.err)
		case <-deadline.C:
			return "", fmt.Errorf("%s printed no READY line within %s", p.Name, within)
		}
	}
}

// WaitOutput waits, line by line as the process prints them (no polling),
// for an output line containing s, and returns it.
func (p *Proc) WaitOutput(s string, within time.Duration) (string, error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		notify := p.notify
		for _, line := range p.lines {
			if strings.Contains(line, s) {
				p.mu.Unlock()
				return line, nil
			}
		}
		p.mu.Unlock()
		select {
		case <-notify:
		case <-p.exited:
			return "", fmt.Errorf("%s exited before printing %q (%v)", p.Name, s, p.err)
		case <-deadline.C:
			return "", fmt.Errorf("%s printed no %q within %s", p.Name, s, within)
		}
	}
}

// Eventually polls cond until it holds; after within it fails the test
// with what and what cond last said. For conditions no event announces
// (a remote server's state); the guard only keeps a broken test from
// hanging.
func Eventually(t testing.TB, what string, within time.Duration, cond func() (ok bool, said string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, said := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last seen: %s", what, said)
		}
		time.Sleep(20 * time.Millisecond) // the polling interval
	}
}

// RSS is the process's resident memory in bytes (Linux /proc), for tests
// that bound a process's memory from outside.
func (p *Proc) RSS(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
	return 0
}
