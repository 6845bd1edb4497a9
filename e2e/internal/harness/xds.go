package harness

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ControlPlane is a `breeze xds` process watching Dir, serving ADS on Addr.
type ControlPlane struct {
	t    testing.TB
	Dir  string
	Addr string
	Proc *Proc
}

// StartControlPlane starts `breeze xds -dir dir` on addr ("": a free port)
// and waits until it accepts connections.
func StartControlPlane(t testing.TB, dir, addr string) *ControlPlane {
	t.Helper()
	if addr == "" {
		addr = Addr(FreePort(t))
	}
	p := Start(t, "breeze xds", BreezeBin(t), "xds", "-dir", dir, "-listen", addr)
	if err := WaitAccepting(addr, p, 30*time.Second); err != nil {
		t.Fatalf("breeze xds: %v\n%s", err, p.Output())
	}
	return &ControlPlane{t: t, Dir: dir, Addr: addr, Proc: p}
}

// Write replaces a file of the watched directory the way editors and
// kubelet do: written aside, renamed into place.
func (cp *ControlPlane) Write(name, content string) {
	cp.t.Helper()
	tmp := filepath.Join(cp.Dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		cp.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(cp.Dir, name)); err != nil {
		cp.t.Fatal(err)
	}
}

// Remove deletes a file of the watched directory.
func (cp *ControlPlane) Remove(name string) {
	cp.t.Helper()
	if err := os.Remove(filepath.Join(cp.Dir, name)); err != nil {
		cp.t.Fatal(err)
	}
}
