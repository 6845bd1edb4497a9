package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// The direct tests check the peers themselves, without the proxy: what the
// proxy tests rely on must hold here first.

func TestDirectGreetEchoesAttachments(t *testing.T) {
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "solo"})
	c := newClient(t, p.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	r, err := c.Greet(ctx, "alice", map[string]string{"tenant": "gold", "user": "u42"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Provider != "solo" || r.Method != "Greet" || r.Arg != "alice" {
		t.Errorf("reply %+v, want provider solo, method Greet, arg alice", r)
	}
	for k, v := range map[string]string{"tenant": "gold", "user": "u42", "interface": greeter.Interface} {
		if r.Attachments[k] != v {
			t.Errorf("attachment %s = %q, want %q (all: %v)", k, r.Attachments[k], v, r.Attachments)
		}
	}

	w, err := c.Whoami(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.Provider != "solo" || w.Method != "Whoami" {
		t.Errorf("Whoami reply %+v", w)
	}
	s, err := c.Slow(ctx, 50, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Arg != "50" || s.Method != "Slow" {
		t.Errorf("Slow reply %+v", s)
	}
}

func TestDirectVersions(t *testing.T) {
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "both", Versions: []string{"1.0.0", "2.0.0"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, v := range []string{"1.0.0", "2.0.0"} {
		r, err := newClient(t, p.Addr, harness.ClientSpec{Version: v}).Whoami(ctx, nil)
		if err != nil {
			t.Fatalf("version %s: %v", v, err)
		}
		if r.Version != v {
			t.Errorf("asked version %s, served by version %q", v, r.Version)
		}
	}
	// dubbo-go answers a version it does not export with an error, at once.
	if _, err := newClient(t, p.Addr, harness.ClientSpec{Version: "9.9.9"}).Whoami(ctx, nil); err == nil {
		t.Error("version 9.9.9: got an answer, want an error")
	}
}

func TestDirectConsumerBinary(t *testing.T) {
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "solo"})
	c := harness.StartConsumer(t, "consumer", "-addr", p.Addr, "-n", "200", "-concurrency", "8", "-attach", "tenant=gold")
	s, exitErr, err := harness.Summary(c, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if exitErr != nil || s.OK != 200 || s.Providers["solo"] != 200 {
		t.Fatalf("consumer exit %v, summary %+v", exitErr, s)
	}
}

// TestDirectConsumerTargetDown: a consumer whose -addr has no listener exits
// with status 2 and one line on stderr saying what failed and what to do,
// not with a panic from inside dubbo-go (whose Refer dereferences the nil
// invoker its dubbo protocol returns when it cannot connect).
func TestDirectConsumerTargetDown(t *testing.T) {
	// Free a moment ago, and handed out to no other test: nothing listens.
	addr := harness.Addr(harness.FreePort(t))
	// The deadline only keeps a hung consumer from hanging the test.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.ConsumerBin(t), "-addr", addr, "-n", "1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Errorf("consumer exit: %v, want status 2", err)
	}
	want := "consumer: cannot connect to " + addr + ": connection refused; start a provider or Breeze there, or point -addr at one\n"
	if got := stderr.String(); got != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(stdout.String(), "SUMMARY") {
		t.Errorf("a SUMMARY line although no call was made:\n%s", stdout.String())
	}
}

// TestDirectProviderPortInUse: a provider whose -port is taken exits with
// status 1 and one line on stderr, not with getty's panic from inside
// dubbo-go's config.Load.
func TestDirectProviderPortInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // only against a hang
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.ProviderBin(t), "-port", strconv.Itoa(port), "-name", "v1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("provider exit: %v, want status 1", err)
	}
	want := fmt.Sprintf("provider: cannot listen on 127.0.0.1:%d: address already in use; stop what holds that port or pick another -port\n", port)
	if got := stderr.String(); got != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(stdout.String(), "READY") {
		t.Errorf("READY although the port is taken:\n%s", stdout.String())
	}
}

// TestDirectRawHeartbeat checks the raw heartbeat check against dubbo-go
// itself: the reply is an event response with status 20 and the same id.
func TestDirectRawHeartbeat(t *testing.T) {
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "solo"})
	checkRawHeartbeat(t, p.Addr)
}

func checkRawHeartbeat(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, id := range []uint64{7, 1 << 40} {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(harness.HeartbeatRequest(id)); err != nil {
			t.Fatal(err)
		}
		h, raw, err := harness.ReadFrame(conn)
		if err != nil {
			t.Fatalf("heartbeat %d: no reply: %v", id, err)
		}
		if !h.IsHeartbeatReply() || h.ID != id || h.Status != harness.StatusOK || h.Flags&0x1f != harness.SerialHessian2 {
			t.Fatalf("heartbeat %d: reply %s (% x), want an event response, status 20, same id, hessian2", id, h, raw)
		}
	}
}

// TestDirectRawRequest checks the hand-made request encoding against
// dubbo-go, so raw-socket tests through the proxy can trust it.
func TestDirectRawRequest(t *testing.T) {
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "solo"})
	conn, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	req, err := harness.EncodeRequest(99, harness.Invocation{
		Service: greeter.Interface, Method: "Greet", ParamTypes: "Ljava/lang/String;",
		Args: []interface{}{"raw"}, Attachments: map[string]string{"tenant": "gold"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	_, raw, err := harness.ReadFrame(conn)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := harness.DecodeResponse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.ID != 99 || resp.Failed() {
		t.Fatalf("response %s: value %v exception %v", resp.Header, resp.Value, resp.Exception)
	}
	r, err := greeter.ParseReply(resp.Value.(string))
	if err != nil {
		t.Fatal(err)
	}
	if r.Arg != "raw" || r.Attachments["tenant"] != "gold" {
		t.Errorf("reply %+v", r)
	}
	if !strings.Contains(resp.Value.(string), `"provider":"solo"`) {
		t.Errorf("reply %q", resp.Value)
	}
}
