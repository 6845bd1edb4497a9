package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// TestDemoScript runs `make demo`'s script as a newcomer would, on its fixed
// ports (the script makes concurrent demos wait for each other), and checks
// its hygiene: it says what it builds before the long first build, routes as
// the README says, leaves nothing in TMPDIR, and stops Breeze before the
// providers, so that Breeze's log, which it prints last, holds no upstream
// close.
func TestDemoScript(t *testing.T) {
	bin, tmp := t.TempDir(), t.TempDir()
	out, err := demoCmd(t, bin, tmp).CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")

	building := "== building breeze and the demo's dubbo-go peers into " + bin + ": minutes the first time (Go modules to download, dubbo-go to compile)"
	if i := slices.Index(lines, building); i < 0 || i > 1 { // 1: after a line saying it waits for another demo
		t.Errorf("the demo does not first say what it builds; want the line\n%s\ngot:\n%s", building, out)
	}

	var summaries []harness.ConsumerSummary
	for _, l := range lines {
		if s, ok := strings.CutPrefix(l, "SUMMARY "); ok {
			var sum harness.ConsumerSummary
			if err := json.Unmarshal([]byte(s), &sum); err != nil {
				t.Fatalf("SUMMARY %s: %v", s, err)
			}
			summaries = append(summaries, sum)
		}
	}
	if len(summaries) != 3 {
		t.Fatalf("%d consumer runs, want 3:\n%s", len(summaries), out)
	}
	canary, whoami, gold := summaries[0].Providers, summaries[1].Providers, summaries[2].Providers
	if summaries[0].OK != 100 || canary["v1"] == 0 || canary["v2"] == 0 {
		t.Errorf("canary: %+v, want 100 calls served by v1 and v2", summaries[0])
	}
	if whoami["v1"] != 20 || len(whoami) != 1 {
		t.Errorf("Whoami: %+v, want all 20 calls to v1", summaries[1])
	}
	if gold["v2"] != 20 || len(gold) != 1 {
		t.Errorf("tenant=gold: %+v, want all 20 calls to v2", summaries[2])
	}

	checkEmpty(t, tmp)

	const logHeading = "== stopping breeze, then the providers; breeze's log:"
	i := slices.Index(lines, logHeading)
	if i < 0 {
		t.Fatalf("no line %q:\n%s", logHeading, out)
	}
	log := lines[i+1:]
	if last := log[len(log)-1]; !strings.Contains(last, `msg="shutting down"`) {
		t.Errorf("breeze's log ends with %q, want its shutdown line", last)
	}
	for _, l := range log {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "upstream") {
			t.Errorf("breeze's log: %s", l)
		}
	}
}

// TestDemoScriptReaderGone: a demo whose reader went away (`make demo | head`)
// still stops what it started and removes its folder: the consumer dies of
// SIGPIPE, and the script's cleanup must not die of it too.
func TestDemoScriptReaderGone(t *testing.T) {
	tmp := t.TempDir()
	cmd := demoCmd(t, t.TempDir(), tmp)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var seen []string
	for sc := bufio.NewScanner(r); sc.Scan(); {
		seen = append(seen, sc.Text())
		if strings.HasPrefix(sc.Text(), "== breeze is serving") {
			break
		}
	}
	r.Close() // the reader goes away while the demo runs
	err = cmd.Wait()
	if len(seen) == 0 || !strings.HasPrefix(seen[len(seen)-1], "== breeze is serving") {
		t.Fatalf("the demo did not get to serve (%v):\n%s", err, strings.Join(seen, "\n"))
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("demo exit: %v, want a failure (its output has no reader)", err)
	}
	checkEmpty(t, tmp)
	// What it started is stopped: the ports are free. The demo's lock keeps
	// another demo on the machine from taking them meanwhile.
	lock, err := os.Open("/tmp/breeze-demo.lock")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"127.0.0.1:20001", "127.0.0.1:20002", "127.0.0.1:20880", "127.0.0.1:15000"} {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after the demo ended", addr)
		}
	}
}

// demoCmd is scripts/demo.sh building into bin with TMPDIR tmp.
func demoCmd(t *testing.T, bin, tmp string) *exec.Cmd {
	// The deadline only keeps a hung demo from hanging the test.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, "bash", filepath.Join("scripts", "demo.sh"))
	cmd.Dir = harness.RepoDir()
	cmd.Env = append(os.Environ(), "DEMO_BIN="+bin, "TMPDIR="+tmp)
	// Its own process group, so that a cancel also stops what it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

func checkEmpty(t *testing.T, tmp string) {
	t.Helper()
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("the demo left %s in TMPDIR", e.Name())
	}
}
