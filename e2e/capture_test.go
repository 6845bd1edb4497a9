package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// EnvWriteRealFrames=1 makes TestCaptureRealFrames write what it captured to
// codecs/dubbo/testdata/real/, the Dubbo codec's corpus of real frames.
const EnvWriteRealFrames = "E2E_WRITE_REAL_FRAMES"

// TestCaptureRealFrames records real dubbo-go frames through a tee between a
// dubbo-go client and provider: requests with and without attachments and
// arguments, their responses, an exception response, and heartbeats both
// ways. It checks that the test's own frame decoding reads them all.
func TestCaptureRealFrames(t *testing.T) {
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "capture", Heartbeat: time.Second})
	tee := harness.StartTee(t, p.Addr)
	c := newClient(t, tee.Addr, harness.ClientSpec{})
	wrong := newClient(t, tee.Addr, harness.ClientSpec{Version: "9.9.9"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := c.Greet(ctx, "alice", map[string]string{"tenant": "gold", "user": "u42"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Whoami(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Slow(ctx, 5, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Whoami(ctx, nil); err == nil {
		t.Fatal("version 9.9.9: want an error")
	}
	// Heartbeats: the clients' (1s) and the provider's (-heartbeat 1s).
	err := tee.WaitFor(ctx, "a heartbeat round trip each way", func(s harness.TeeState) bool {
		return s.HeartbeatRoundTrips(harness.Up) > 0 && s.HeartbeatRoundTrips(harness.Down) > 0
	})
	if err != nil {
		t.Fatal(err)
	}

	st := tee.State()
	files := map[string][]byte{}
	// response finds the frame answering f, if the capture has it.
	response := func(f harness.TeeFrame) ([]byte, bool) {
		for _, g := range st.Frames {
			if g.Conn == f.Conn && g.Dir != f.Dir && !g.Header.IsRequest() && g.Header.ID == f.Header.ID {
				return g.Raw, true
			}
		}
		return nil, false
	}
	responseTo := func(f harness.TeeFrame) []byte {
		raw, ok := response(f)
		if !ok {
			t.Fatalf("no response to %s", f)
		}
		return raw
	}
	answered := func(f harness.TeeFrame) bool {
		_, ok := response(f)
		return ok
	}
	for _, f := range st.Frames {
		h := f.Header
		switch {
		case h.IsHeartbeat() && !answered(f):
			// Heartbeats go on while the test reads the capture: the last
			// one may not be answered yet. WaitFor saw a round trip each way.
		case h.IsHeartbeat() && f.Dir == harness.Up:
			setOnce(files, "heartbeat_request_from_client.bin", f.Raw)
			setOnce(files, "heartbeat_response_from_provider.bin", responseTo(f))
		case h.IsHeartbeat() && f.Dir == harness.Down:
			setOnce(files, "heartbeat_request_from_provider.bin", f.Raw)
			setOnce(files, "heartbeat_response_from_client.bin", responseTo(f))
		case h.IsRequest() && f.Dir == harness.Up:
			_, inv, err := harness.DecodeRequest(f.Raw)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var name string
			switch {
			case inv.Version == "9.9.9":
				name = "whoami_unknown_version"
			case inv.Method == "Greet":
				name = "greet_with_attachments"
				if inv.Attachments["tenant"] != "gold" || len(inv.Args) != 1 || inv.Args[0] != "alice" {
					t.Errorf("Greet request decoded as %+v", inv)
				}
			case inv.Method == "Whoami":
				name = "whoami_no_args"
			case inv.Method == "Slow":
				name = "slow_int_arg"
			default:
				t.Fatalf("unexpected call %+v", inv)
			}
			if inv.Service != greeter.Interface {
				t.Errorf("%s: service %q", name, inv.Service)
			}
			setOnce(files, "request_"+name+".bin", f.Raw)
			resp := responseTo(f)
			r, err := harness.DecodeResponse(resp)
			if err != nil {
				t.Fatalf("response to %s: %v", name, err)
			}
			if failed := r.Failed(); failed != (name == "whoami_unknown_version") {
				t.Errorf("response to %s: failed=%v (value %v, exception %v)", name, failed, r.Value, r.Exception)
			}
			if name == "whoami_unknown_version" {
				name = "exception_unknown_version"
			}
			setOnce(files, "response_"+name+".bin", resp)
		}
	}
	for _, want := range []string{
		"request_greet_with_attachments.bin", "response_greet_with_attachments.bin",
		"request_whoami_no_args.bin", "response_whoami_no_args.bin",
		"request_slow_int_arg.bin", "response_slow_int_arg.bin",
		"request_whoami_unknown_version.bin", "response_exception_unknown_version.bin",
		"heartbeat_request_from_client.bin", "heartbeat_response_from_provider.bin",
		"heartbeat_request_from_provider.bin", "heartbeat_response_from_client.bin",
	} {
		b, ok := files[want]
		if !ok {
			t.Errorf("captured no %s", want)
			continue
		}
		h, _ := harness.ParseHeader(b)
		t.Logf("%-42s %4d bytes  %s", want, len(b), h)
	}
	if os.Getenv(EnvWriteRealFrames) != "1" {
		return
	}
	dir := filepath.Join(harness.RepoDir(), "codecs", "dubbo", "testdata", "real")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %d frames to %s", len(files), dir)
}

func setOnce(m map[string][]byte, name string, b []byte) {
	if _, ok := m[name]; !ok {
		m[name] = bytes.Clone(b)
	}
}
