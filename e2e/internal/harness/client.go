package harness

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
)

// Client is a dubbo-go consumer of org.breeze.Greeter in its own process
// (`consumer -serve`): its own TCP connection(s) to Addr, its own request
// ids (starting low, like every fresh dubbo-go process), calls in flight at
// once.
type Client struct {
	Addr string
	Proc *Proc

	calls *LineCalls[callResult]
}

// ClientSpec configures a Client.
type ClientSpec struct {
	// Version is the Dubbo service version asked for.
	Version string
	// Timeout is dubbo-go's own per-call timeout; 0 means 3s.
	Timeout time.Duration
	// Heartbeat is dubbo-go's heartbeat period; 0 keeps its default (30s).
	Heartbeat time.Duration
	// Connections to addr; 0 means 1 (dubbo-go itself defaults to 16).
	Connections int
	// OTLP, when set, traces the calls with dubbo-go's OpenTelemetry
	// filter, exporting to this collector (OTLPSample: "always", the
	// default, or "never").
	OTLP, OTLPSample string
}

// callResult is the client process's RESULT line.
type callResult struct {
	ID    int64  `json:"id"`
	Reply string `json:"reply"`
	Error string `json:"error"`
	MS    int64  `json:"ms"`
}

// StartClient starts a dubbo-go client process calling addr.
func StartClient(t testing.TB, addr string, spec ClientSpec) *Client {
	t.Helper()
	c := &Client{Addr: addr, calls: NewLineCalls("the client process", func(r callResult) int64 { return r.ID })}
	conns := spec.Connections
	if conns == 0 {
		conns = 1
	}
	args := []string{"-serve", "-addr", addr, "-version", spec.Version, "-connections", strconv.Itoa(conns)}
	if spec.Timeout > 0 {
		args = append(args, "-timeout", spec.Timeout.String())
	}
	if spec.Heartbeat > 0 {
		args = append(args, "-heartbeat", spec.Heartbeat.String())
	}
	if spec.OTLP != "" {
		args = append(args, "-otlp", spec.OTLP)
		if spec.OTLPSample != "" {
			args = append(args, "-otlp-sample", spec.OTLPSample)
		}
	}
	c.Proc = StartWith(t, ProcOptions{Stdin: true, OnLine: c.calls.OnLine}, "client of "+addr, ConsumerBin(t), args...)
	c.calls.Proc = c.Proc
	if _, err := c.Proc.WaitReady(30 * time.Second); err != nil {
		t.Fatalf("dubbo-go client: %v\n%s", err, c.Proc.Output())
	}
	return c
}

// CallError is a call that ended with an error reported by dubbo-go.
type CallError struct {
	Method string
	Msg    string
	// Elapsed is how long the call took in the client process.
	Elapsed time.Duration
}

func (e *CallError) Error() string {
	return fmt.Sprintf("%s: dubbo-go error after %s: %s", e.Method, e.Elapsed, e.Msg)
}

// Call calls method with arg and attachments. It returns when the client
// process answers or ctx ends, whichever is first: a test never waits on a
// call longer than its ctx allows.
func (c *Client) Call(ctx context.Context, method, arg string, attachments map[string]string) (greeter.Reply, error) {
	r, err := c.calls.Do(ctx, func(id int64) any {
		return map[string]interface{}{"id": id, "method": method, "arg": arg, "attachments": attachments}
	})
	if err != nil {
		return greeter.Reply{}, fmt.Errorf("%s(%q) via %s: %w", method, arg, c.Addr, err)
	}
	if r.Error != "" {
		return greeter.Reply{}, &CallError{Method: method, Msg: r.Error, Elapsed: time.Duration(r.MS) * time.Millisecond}
	}
	return greeter.ParseReply(r.Reply)
}

func (c *Client) Greet(ctx context.Context, name string, attachments map[string]string) (greeter.Reply, error) {
	return c.Call(ctx, "Greet", name, attachments)
}

func (c *Client) Slow(ctx context.Context, ms int, attachments map[string]string) (greeter.Reply, error) {
	return c.Call(ctx, "Slow", strconv.Itoa(ms), attachments)
}

func (c *Client) Whoami(ctx context.Context, attachments map[string]string) (greeter.Reply, error) {
	return c.Call(ctx, "Whoami", "", attachments)
}
