package proc

import (
	"os"
	"testing"
	"time"
)

func TestSelf(t *testing.T) {
	if clockTicks() <= 0 {
		t.Fatal("clock ticks", clockTicks())
	}
	before, err := CPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// CPU time moves in clock ticks (10ms): spin until it does.
	after := before
	for end := time.Now().Add(10 * time.Second); after <= before && time.Now().Before(end); {
		if after, err = CPU(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if after <= before {
		t.Errorf("CPU time stuck at %v over 10s of spinning", before)
	}
	rss, err := RSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Errorf("RSS %d, %v", rss, err)
	}
	io, err := ReadIO(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	os.ReadFile("/proc/self/stat")
	if io2, _ := ReadIO(os.Getpid()); io2.SyscR <= io.SyscR {
		t.Errorf("read syscalls did not move: %+v then %+v", io, io2)
	}
	if _, err := CPU(1 << 30); err == nil {
		t.Error("no error for a missing process")
	}
}
