// Package dubbogo runs org.breeze.Greeter (see internal/greeter) with
// dubbo-go v3's classic config API: a provider over dubbo://, hessian2, no
// registry, and a consumer with a direct URL.
//
// dubbo-go keeps its configuration in process-wide state and has data races
// in its connection teardown (seen with -race in getty's session close), so
// it runs only inside cmd/provider and cmd/consumer, never in a test binary.
package dubbogo

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"dubbo.apache.org/dubbo-go/v3/common"
	"dubbo.apache.org/dubbo-go/v3/common/constant"
	"dubbo.apache.org/dubbo-go/v3/config"
	// Only the dubbo-go plugins this process uses, not dubbo-go/v3/imports:
	// that one links every registry, config center and tracer (a 78 MB binary,
	// slow to link once per test run).
	_ "dubbo.apache.org/dubbo-go/v3/cluster/cluster/failfast"
	_ "dubbo.apache.org/dubbo-go/v3/cluster/loadbalance/random"
	_ "dubbo.apache.org/dubbo-go/v3/filter/accesslog"
	_ "dubbo.apache.org/dubbo-go/v3/filter/echo"
	_ "dubbo.apache.org/dubbo-go/v3/filter/exec_limit"
	_ "dubbo.apache.org/dubbo-go/v3/filter/generic"
	_ "dubbo.apache.org/dubbo-go/v3/filter/graceful_shutdown"
	_ "dubbo.apache.org/dubbo-go/v3/filter/token"
	_ "dubbo.apache.org/dubbo-go/v3/filter/tps"
	_ "dubbo.apache.org/dubbo-go/v3/filter/tps/limiter"
	_ "dubbo.apache.org/dubbo-go/v3/filter/tps/strategy"
	_ "dubbo.apache.org/dubbo-go/v3/protocol/dubbo"
	_ "dubbo.apache.org/dubbo-go/v3/proxy/proxy_factory"
	_ "dubbo.apache.org/dubbo-go/v3/registry/protocol" // else dubbo-go logs an error at start
	// dubbo-go's own ZooKeeper registry, interface- and application-level,
	// with ZooKeeper as the metadata report (the registry tests).
	_ "dubbo.apache.org/dubbo-go/v3/metadata/mapping/metadata"
	_ "dubbo.apache.org/dubbo-go/v3/metadata/report/zookeeper"
	_ "dubbo.apache.org/dubbo-go/v3/registry/servicediscovery"
	_ "dubbo.apache.org/dubbo-go/v3/registry/zookeeper"
	// And its Nacos registry, with Nacos as the metadata report.
	_ "dubbo.apache.org/dubbo-go/v3/metadata/report/nacos"
	_ "dubbo.apache.org/dubbo-go/v3/registry/nacos"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
)

// ProviderOptions configures Serve.
type ProviderOptions struct {
	// Port to listen on, on 127.0.0.1.
	Port int
	// Name is the provider's identity, returned in every Reply.
	Name string
	// Versions are the Dubbo service versions to export the interface under;
	// none means the unversioned service (""). A consumer must ask for one of
	// them: dubbo-go answers a call for any other version with an error.
	Versions []string
	// HeartbeatPeriod is how often the provider heartbeats each of its client
	// connections; 0 keeps dubbo-go's default (60s).
	HeartbeatPeriod time.Duration
	// LogLevel of dubbo-go's logger ("debug", "info", "warn", "error").
	LogLevel string
	// Behaviour counts, gates and fails the calls (see Behaviour); nil
	// answers every call at once.
	Behaviour *Behaviour
	// ZooKeeper, if set, is the address of a ZooKeeper the provider
	// registers in, through dubbo-go's own registry; none: no registry.
	ZooKeeper string
	// RegistryType is dubbo-go's registry-type: "interface" (when
	// empty), "service" (application-level) or "all".
	RegistryType string
	// Application names the dubbo-go application; "breeze-e2e-provider"
	// when empty.
	Application string
	// RegistryTimeout is the provider's ZooKeeper session timeout (dubbo-go's
	// registry "timeout"): how long a killed provider's nodes outlive it;
	// 10s when zero.
	RegistryTimeout time.Duration
	// OTLP, when set, turns on dubbo-go's OpenTelemetry tracing (a server
	// span per call, its parent read from the traceparent attachment),
	// exported to this OTLP/gRPC collector address.
	OTLP string
	// MetadataServicePort, when set, makes the application keep its
	// metadata local (metadata-type local) and export its MetadataService
	// over dubbo on this port; 0: metadata-type remote (see application).
	MetadataServicePort int
	// Nacos, if set, is the address (host:port, the HTTP port) of a Nacos
	// server the provider registers in, through dubbo-go's own Nacos
	// registry, with RegistryType as for ZooKeeper.
	Nacos string
}

// Service implements org.breeze.Greeter for one service version. dubbo-go
// finds a provider's methods by reflection: every exported method whose last
// result is an error is a Dubbo method, named as in Go. dubbo-go refuses to
// export an unexported type.
type Service struct {
	name, version, ref string
	behaviour          *Behaviour
}

// Reference is dubbo-go's key for this service object; one per version.
func (s *Service) Reference() string { return s.ref }

func (s *Service) Greet(ctx context.Context, name string) (string, error) {
	return s.run(ctx, "Greet", name)
}

// Slow answers after ms milliseconds: for timeout tests.
func (s *Service) Slow(ctx context.Context, ms int32) (string, error) {
	return s.behaviour.run("Slow", strconv.Itoa(int(ms)), func() (string, error) {
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return s.reply(ctx, "Slow", strconv.Itoa(int(ms)))
	})
}

func (s *Service) Whoami(ctx context.Context) (string, error) {
	return s.run(ctx, "Whoami", "")
}

func (s *Service) run(ctx context.Context, method, arg string) (string, error) {
	return s.behaviour.run(method, arg, func() (string, error) { return s.reply(ctx, method, arg) })
}

func (s *Service) reply(ctx context.Context, method, arg string) (string, error) {
	r := greeter.Reply{Provider: s.name, Version: s.version, Method: method, Arg: arg, Attachments: map[string]string{}}
	if m, ok := ctx.Value(constant.AttachmentKey).(map[string]interface{}); ok {
		for k, v := range m {
			switch v := v.(type) {
			case string:
				r.Attachments[k] = v
			case []string: // dubbo-go keeps some keys as string slices
				if len(v) == 1 {
					r.Attachments[k] = v[0]
				} else {
					r.Attachments[k] = fmt.Sprint(v)
				}
			case net.Addr: // local/remote address added by the server
				r.Attachments[k] = v.String()
			default:
				r.Attachments[k] = fmt.Sprint(v)
			}
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// Serve exports org.breeze.Greeter over dubbo://127.0.0.1:Port with hessian2
// and no registry, and returns once the port accepts connections. dubbo-go's
// configuration is process-wide: call it once per process.
func Serve(o ProviderOptions) error {
	versions := o.Versions
	if len(versions) == 0 {
		versions = []string{""}
	}
	sort.Strings(versions)
	behaviour := o.Behaviour
	if behaviour == nil {
		behaviour = NewBehaviour()
	}
	installStatusCodec()
	pb := config.NewProviderConfigBuilder()
	if o.OTLP != "" {
		pb.SetFilter(otelServerFilter)
	}
	for i, v := range versions {
		svc := &Service{name: o.Name, version: v, ref: "GreeterProvider" + strconv.Itoa(i), behaviour: behaviour}
		config.SetProviderService(svc)
		pb.AddService(svc.ref, config.NewServiceConfigBuilder().
			SetInterface(greeter.Interface).
			SetProtocolIDs("dubbo").
			SetSerialization(constant.Hessian2Serialization).
			SetVersion(v).
			SetNotRegister(o.ZooKeeper == "" && o.Nacos == "").
			Build())
	}
	proto := config.NewProtocolConfigBuilder().
		SetName("dubbo").
		SetIp("127.0.0.1").
		SetPort(strconv.Itoa(o.Port)).
		Build()
	params := map[string]interface{}{}
	if o.HeartbeatPeriod > 0 {
		params["heartbeat-period"] = o.HeartbeatPeriod.String()
	}
	proto.Params = params
	app := o.Application
	if app == "" {
		app = "breeze-e2e-provider"
	}
	rb := config.NewRootConfigBuilder()
	if o.ZooKeeper != "" {
		kind := o.RegistryType
		if kind == "" {
			kind = "interface"
		}
		rb.AddRegistry("zk", config.NewRegistryConfigBuilder().
			SetProtocol("zookeeper").
			SetAddress(o.ZooKeeper).
			SetTimeout(cmp.Or(o.RegistryTimeout, 10*time.Second).String()).
			SetRegistryType(kind).
			Build())
	}
	if o.Nacos != "" {
		kind := o.RegistryType
		if kind == "" {
			kind = "interface"
		}
		rb.AddRegistry("nacos", config.NewRegistryConfigBuilder().
			SetProtocol("nacos").
			SetAddress(o.Nacos).
			SetTimeout(cmp.Or(o.RegistryTimeout, 10*time.Second).String()).
			SetRegistryType(kind).
			Build())
	}
	rb.SetApplication(application(app, o.MetadataServicePort)).
		SetProvider(pb.Build()).
		AddProtocol("dubbo", proto).
		SetLogger(loggerConfig(o.LogLevel)).
		SetShutDown(noSignalShutdown())
	if o.OTLP != "" {
		rb.SetOtel(otelConfig(o.OTLP, "always"))
	}
	root := rb.Build()
	// dubbo-go binds the port inside config.Load and, when it cannot, getty
	// panics there (server.RunEventLoop) with a stack for a message. Binding
	// first says why in one line; load's recover covers a port taken since.
	addr := fmt.Sprintf("127.0.0.1:%d", o.Port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return &ListenError{Addr: addr, Err: osReason(err)}
	}
	ln.Close()
	if err := load(root); err != nil {
		return fmt.Errorf("start dubbo-go provider %s on port %d: %w", o.Name, o.Port, err)
	}
	// config.Load only logs a failed export; check that each version is served.
	for _, v := range versions {
		if common.ServiceMap.GetService("dubbo", greeter.Interface, "", v) == nil {
			return fmt.Errorf("dubbo-go provider %s did not export %s version %q (see its log)", o.Name, greeter.Interface, v)
		}
	}
	return waitListening(addr, 10*time.Second)
}

// ListenError is Serve's error when the provider's port cannot be bound.
type ListenError struct {
	Addr string
	Err  error
}

func (e *ListenError) Error() string { return "cannot listen on " + e.Addr + ": " + e.Err.Error() }
func (e *ListenError) Unwrap() error { return e.Err }

// load runs config.Load, turning a panic inside dubbo-go into an error that
// carries the panic's first line (getty's carries a stack after it).
func load(root *config.RootConfig) (err error) {
	defer func() {
		if p := recover(); p != nil {
			first, _, _ := strings.Cut(fmt.Sprint(p), "\n")
			err = fmt.Errorf("dubbo-go panicked: %s", first)
		}
	}()
	return config.Load(config.WithRootConfig(root))
}

// osReason is a dial or listen error in the operating system's words
// ("connection refused", "address already in use") or the resolver's
// ("lookup HOST: no such host"), without the operation and address that
// the caller's message already names.
func osReason(err error) error {
	var sys *os.SyscallError
	if errors.As(err, &sys) {
		return sys.Err
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns
	}
	return err
}

// waitListening dials addr until it accepts or the deadline passes: dubbo-go
// starts its server asynchronously and says nothing when it is bound.
func waitListening(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dubbo-go provider not listening on %s after %s: %w", addr, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func loggerConfig(level string) *config.LoggerConfig {
	if level == "" {
		level = "warn"
	}
	return config.NewLoggerConfigBuilder().SetLevel(level).Build()
}

// noSignalShutdown keeps dubbo-go from trapping SIGINT/SIGTERM: its graceful
// shutdown waits out step timeouts, while test processes must die at once.
func noSignalShutdown() *config.ShutdownConfig {
	return config.NewShutDownConfigBuilder().SetInternalSignal(false).Build()
}

// application names the dubbo-go application. Metadata type "remote" stops
// dubbo-go from exporting its MetadataService on the dubbo protocol's port
// (or, in a consumer, on the default port 50051), which fails with "address
// already in use" and would make concurrent consumer processes collide.
//
// With a metadataPort, metadata-type local: the MetadataService is exported
// over dubbo on that port instead (a provider in the registry tests).
func application(name string, metadataPort int) *config.ApplicationConfig {
	if metadataPort > 0 {
		return config.NewApplicationConfigBuilder().SetName(name).SetMetadataType("local").
			SetMetadataServiceProtocol("dubbo").SetMetadataServicePort(metadataPort).Build()
	}
	return config.NewApplicationConfigBuilder().SetName(name).SetMetadataType("remote").Build()
}
