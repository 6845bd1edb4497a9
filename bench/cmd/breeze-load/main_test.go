package main

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain runs breeze-load itself when the test re-executes its binary
// with BREEZE_LOAD_MAIN=1.
func TestMain(m *testing.M) {
	if os.Getenv("BREEZE_LOAD_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A run whose replies never come must not hang the bench: breeze-load gives
// up -grace after the measured duration, exits 1 and names the row (group
// and label) and what it waited for. -drain is far longer than the grace,
// so nothing else ends the run.
func TestGivesUpAndNamesTheRow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // reads the requests, answers none
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	cmd := exec.Command(os.Args[0], "-proto", "thrift", "-addr", ln.Addr().String(), "-label", "silent",
		"-group", "half load (thrift)", "-conns", "1", "-inflight", "2", "-rate", "1000",
		"-d", "100ms", "-drain", "1h", "-grace", "300ms")
	cmd.Env = append(os.Environ(), "BREEZE_LOAD_MAIN=1")
	out, err := cmd.CombinedOutput()
	t.Logf("breeze-load said: %s", out)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("breeze-load ended with %v, want exit status 1", err)
	}
	for _, want := range []string{"breeze-load: half load (thrift): silent (thrift to " + ln.Addr().String() + "): not ended 300ms after the end of the measured duration: ",
		" requests in flight on 1 of 1 connections"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not say %q", want)
		}
	}
}
