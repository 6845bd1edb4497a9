package dubbogo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"dubbo.apache.org/dubbo-go/v3/common/constant"
	"dubbo.apache.org/dubbo-go/v3/config"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
)

// ConsumerOptions configures the process-wide dubbo-go consumer (see Setup).
type ConsumerOptions struct {
	// HeartbeatPeriod is how often dubbo-go heartbeats each connection it
	// opens; 0 keeps dubbo-go's default (30s).
	HeartbeatPeriod time.Duration
	// Connections is how many TCP connections dubbo-go keeps to each
	// address; 0 keeps its default (16, used at random per call).
	Connections int
	// LogLevel of dubbo-go's logger; "" means "warn".
	LogLevel string
	// OTLP, when set, turns on dubbo-go's OpenTelemetry tracing (a client
	// span per call, its context sent in the traceparent attachment),
	// exported to this OTLP/gRPC collector address.
	OTLP string
	// OTLPSampleMode is dubbo-go's sample mode with OTLP: "always"
	// (default) or "never" (the context travels unsampled).
	OTLPSampleMode string
}

var (
	setupOnce sync.Once
	setupErr  error
	rootCfg   *config.RootConfig
	// traced: Setup turned on OpenTelemetry; references get its filter.
	traced bool
)

// Setup loads dubbo-go's process-wide consumer configuration. dubbo-go reads
// it once per process (config.Load starts everything only the first time), so
// only the first call's options count; later calls return the first result.
func Setup(o ConsumerOptions) error {
	setupOnce.Do(func() {
		proto := config.NewProtocolConfigBuilder().SetName("dubbo").Build()
		// The getty client reads its settings from the "dubbo" protocol's
		// params (remoting/getty.initClient), as YAML keys.
		params := map[string]interface{}{}
		if o.HeartbeatPeriod > 0 {
			params["heartbeat-period"] = o.HeartbeatPeriod.String()
		}
		if o.Connections > 0 {
			params["connection-number"] = o.Connections
		}
		proto.Params = params
		cb := config.NewConsumerConfigBuilder().SetCheck(false)
		rb := config.NewRootConfigBuilder().
			SetApplication(application("breeze-e2e-consumer", 0)).
			AddProtocol("dubbo", proto).
			SetLogger(loggerConfig(o.LogLevel)).
			SetShutDown(noSignalShutdown())
		if o.OTLP != "" {
			traced = true
			cb.SetFilter(otelClientFilter)
			mode := o.OTLPSampleMode
			if mode == "" {
				mode = "always"
			}
			rb.SetOtel(otelConfig(o.OTLP, mode))
		}
		rootCfg = rb.SetConsumer(cb.Build()).Build()
		if err := config.Load(config.WithRootConfig(rootCfg)); err != nil {
			setupErr = fmt.Errorf("load dubbo-go consumer config: %w", err)
		}
	})
	return setupErr
}

// ClientOptions configures one reference to org.breeze.Greeter.
type ClientOptions struct {
	// Version is the Dubbo service version asked for; "" is unversioned.
	Version string
	// Timeout is dubbo-go's own per-call timeout; 0 means 3s.
	Timeout time.Duration
}

// greeterRef is the dubbo-go consumer stub: dubbo-go fills each func field
// with a call of the Dubbo method of the same name.
type greeterRef struct {
	Greet  func(ctx context.Context, name string) (string, error)
	Slow   func(ctx context.Context, ms int32) (string, error)
	Whoami func(ctx context.Context) (string, error)
}

// Client calls org.breeze.Greeter at one address with dubbo-go.
//
// dubbo-go shares its connections to an address (ConsumerOptions.Connections)
// among all references of a process, and numbers requests from one
// process-wide counter: clients that must have their own connections and
// overlapping request ids need their own process (cmd/consumer).
type Client struct {
	Addr string
	ref  *greeterRef
}

// NewClient makes a reference to org.breeze.Greeter at addr ("host:port")
// with a direct dubbo:// URL, failfast (no retries), hessian2. Setup must
// have been called.
func NewClient(addr string, o ClientOptions) (*Client, error) {
	if rootCfg == nil {
		return nil, errors.New("dubbogo.NewClient: call dubbogo.Setup first")
	}
	if setupErr != nil {
		return nil, setupErr
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	rb := config.NewReferenceConfigBuilder().
		SetInterface(greeter.Interface).
		SetProtocol("dubbo").
		SetURL("dubbo://" + addr).
		SetSerialization(constant.Hessian2Serialization).
		SetCluster("failfast").
		SetRetries("0").
		SetVersion(o.Version).
		SetRequestTimeout(timeout.String())
	if traced {
		rb.SetFilter(otelClientFilter)
	}
	rc := rb.Build()
	if err := rc.Init(rootCfg); err != nil {
		return nil, fmt.Errorf("reference to %s at %s: %w", greeter.Interface, addr, err)
	}
	ref := &greeterRef{}
	if err := refer(rc, ref); err != nil {
		return nil, &UnreachableError{Addr: addr, Err: whyUnreachable(addr, timeout, err)}
	}
	rc.Implement(ref)
	if ref.Greet == nil {
		return nil, fmt.Errorf("reference to %s at %s: dubbo-go did not implement the stub", greeter.Interface, addr)
	}
	return &Client{Addr: addr, ref: ref}, nil
}

// UnreachableError is NewClient's error when dubbo-go could not connect to
// Addr: it dials at once, when the reference is made.
type UnreachableError struct {
	Addr string
	Err  error
}

func (e *UnreachableError) Error() string {
	return "cannot connect to " + e.Addr + ": " + e.Err.Error()
}
func (e *UnreachableError) Unwrap() error { return e.Err }

// refer runs rc.Refer, which connects to the reference's URL. When it
// cannot, dubbo-go v3.3.0's dubbo protocol returns a nil invoker and Refer
// dereferences it (protocolwrapper.BuildInvokerChain): the panic is how
// dubbo-go says "cannot connect", so it becomes an error here.
func refer(rc *config.ReferenceConfig, ref *greeterRef) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("dubbo-go could not make the reference: %v", p)
		}
	}()
	rc.Refer(ref)
	return nil
}

// whyUnreachable says why dubbo-go could not connect to addr, in the
// operating system's words ("connection refused"): dubbo-go's own message is
// a nil pointer. It dials only after dubbo-go failed, so a client that
// connects makes no connection beyond dubbo-go's.
func whyUnreachable(addr string, timeout time.Duration, referErr error) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return osReason(err)
	}
	c.Close()
	// Up now: it came up meanwhile, or dubbo-go failed for another reason.
	return fmt.Errorf("%w, although it accepts TCP connections now (see dubbo-go's log)", referErr)
}

// Greet calls Greet(name) with the given attachments.
func (c *Client) Greet(ctx context.Context, name string, attachments map[string]string) (greeter.Reply, error) {
	return c.call(ctx, "Greet", func(ctx context.Context) (string, error) { return c.ref.Greet(ctx, name) }, attachments)
}

// Slow calls Slow(ms) with the given attachments.
func (c *Client) Slow(ctx context.Context, ms int32, attachments map[string]string) (greeter.Reply, error) {
	return c.call(ctx, "Slow", func(ctx context.Context) (string, error) { return c.ref.Slow(ctx, ms) }, attachments)
}

// Whoami calls Whoami() with the given attachments.
func (c *Client) Whoami(ctx context.Context, attachments map[string]string) (greeter.Reply, error) {
	return c.call(ctx, "Whoami", func(ctx context.Context) (string, error) { return c.ref.Whoami(ctx) }, attachments)
}

// Call calls method ("Greet", "Slow" or "Whoami") with arg as its argument.
func (c *Client) Call(ctx context.Context, method, arg string, attachments map[string]string) (greeter.Reply, error) {
	switch method {
	case "Greet":
		return c.Greet(ctx, arg, attachments)
	case "Slow":
		ms, err := strconv.Atoi(arg)
		if err != nil {
			return greeter.Reply{}, fmt.Errorf("Slow wants milliseconds, got %q", arg)
		}
		return c.Slow(ctx, int32(ms), attachments)
	case "Whoami":
		return c.Whoami(ctx, attachments)
	}
	return greeter.Reply{}, fmt.Errorf("unknown method %q (want Greet, Slow or Whoami)", method)
}

// call runs one dubbo-go call, bounded by ctx as well as by dubbo-go's own
// timeout: dubbo-go ignores context cancellation, and a test must never hang
// on a call. A call abandoned on ctx finishes in the background.
func (c *Client) call(ctx context.Context, method string, f func(context.Context) (string, error), attachments map[string]string) (greeter.Reply, error) {
	type result struct {
		s   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := f(WithAttachments(context.Background(), attachments))
		done <- result{s, err}
	}()
	select {
	case <-ctx.Done():
		return greeter.Reply{}, fmt.Errorf("%s via %s: no answer: %w", method, c.Addr, ctx.Err())
	case r := <-done:
		if r.err != nil {
			return greeter.Reply{}, fmt.Errorf("%s via %s: %w", method, c.Addr, r.err)
		}
		return greeter.ParseReply(r.s)
	}
}

// WithAttachments returns ctx carrying Dubbo attachments for the next call
// made through a dubbo-go reference.
func WithAttachments(ctx context.Context, attachments map[string]string) context.Context {
	if len(attachments) == 0 {
		return ctx
	}
	m := make(map[string]interface{}, len(attachments))
	for k, v := range attachments {
		m[k] = v
	}
	return context.WithValue(ctx, constant.AttachmentKey, m)
}
