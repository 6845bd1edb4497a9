package e2e

import (
	"context"
	"encoding/json"
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
	// The deadline only keeps a hung demo from hanging the test.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join("scripts", "demo.sh"))
	cmd.Dir = harness.RepoDir()
	cmd.Env = append(os.Environ(), "DEMO_BIN="+bin, "TMPDIR="+tmp)
	// Its own process group, so that a cancel also stops what it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
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

	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("the demo left %s in TMPDIR", e.Name())
	}

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
