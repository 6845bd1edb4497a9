// Command thriftpeer runs a real Apache Thrift Go or Kitex server or client
// of the Greeter service (internal/echo.thrift) for the end-to-end tests.
//
//	thriftpeer serve -impl apache -transport framed -protocol binary -name v1 -port 9090
//	    prints "READY <port>" once it accepts connections
//	thriftpeer call -impl kitex -transport ttheader -addr 127.0.0.1:9090 -method whoami -n 100
//	    prints "PROGRESS <n>" once -progress calls succeeded, then
//	    "SUMMARY {json}" and exits
//
// The peers run as processes, so that the test can kill a server under load
// and so that Kitex's runtime never runs inside the race-instrumented test
// binary.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/bytedance/gopkg/cloud/metainfo"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"
	"github.com/kitex-contrib/obs-opentelemetry/provider"
	"github.com/kitex-contrib/obs-opentelemetry/tracing"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/breeze-mesh/breeze/codecs/thrift/testdata/peers/peer"
)

// kitexTracing installs kitex-contrib/obs-opentelemetry's provider (the
// global tracer provider and W3C propagator) exporting spans over
// OTLP/gRPC in plaintext to addr, every call sampled; the function it
// returns flushes and stops it.
func kitexTracing(addr, service string) func() {
	p := provider.NewOpenTelemetryProvider(provider.WithServiceName(service), provider.WithExportEndpoint(addr),
		provider.WithInsecure(), provider.WithEnableMetrics(false))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// The provider's Shutdown (v0.2.9) stops the exporter without
		// flushing the batch processor: spans still batched would be lost.
		if tp, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
			_ = tp.ForceFlush(ctx)
		}
		_ = p.Shutdown(ctx)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: thriftpeer serve|call [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "call":
		err = call(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "thriftpeer:", err)
		os.Exit(1)
	}
}

func flavorFlags(fs *flag.FlagSet) (impl *string, f func() peer.Flavor) {
	impl = fs.String("impl", "apache", "apache or kitex")
	tr := fs.String("transport", "framed", "framed, unframed, header (apache) or ttheader (kitex)")
	proto := fs.String("protocol", "binary", "binary or compact")
	nonStrict := fs.Bool("nonstrict", false, "binary without the version word")
	mux := fs.Bool("mux", false, "multiplexed (apache): Greeter:method")
	zlib := fs.Bool("zlib", false, "THeader client compressing with zlib (apache)")
	return impl, func() peer.Flavor {
		return peer.Flavor{Transport: *tr, Protocol: *proto, NonStrict: *nonStrict, Mux: *mux, Zlib: *zlib}
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	impl, flavor := flavorFlags(fs)
	name := fs.String("name", "server", "answered by Whoami and Greet")
	port := fs.Int("port", 0, "loopback port")
	echo := fs.String("echo-header", "", "header key whose value Greet appends (THeader key, or Kitex metainfo key)")
	otlp := fs.String("otlp", "", "kitex: trace with kitex-contrib/obs-opentelemetry's server suite, exporting to this OTLP/gRPC collector host:port")
	appExc := fs.Int("app-exception", -1, "apache: answer every two-way call with a TApplicationException of this type (1 unknown method, 6 internal error, 7 protocol error, ...); -1: answer normally")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(*port))
	if err != nil {
		return err
	}
	h := &peer.Handler{Name: *name}
	if *appExc >= 0 {
		if *impl != "apache" {
			return fmt.Errorf("-app-exception needs -impl apache")
		}
		h.Middleware = append(h.Middleware, answerAppException(int32(*appExc), *name))
	}
	if *echo != "" {
		key := *echo
		h.Header = func(ctx context.Context) (string, bool) {
			if *impl == "kitex" {
				return metainfo.GetValue(ctx, key)
			}
			return thrift.GetHeader(ctx, key)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("READY %d\n", ln.Addr().(*net.TCPAddr).Port)
	if *impl == "kitex" {
		var opts []server.Option
		if *otlp != "" {
			defer kitexTracing(*otlp, "kitex-e2e-server")()
			opts = append(opts, server.WithSuite(tracing.NewServerSuite()),
				server.WithServerBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: "kitex-e2e-server"}))
		}
		return peer.ServeKitex(ctx, ln, h, opts...)
	}
	peer.ServeApache(ctx, ln, flavor(), h)
	return nil
}

// answerAppException answers every two-way call with a
// TApplicationException of type typ, the way Apache Thrift's generated
// processors answer a failed call (arguments read, EXCEPTION message with
// the call's name and sequence id). Oneway calls run as usual: they have no
// reply.
func answerAppException(typ int32, server string) thrift.ProcessorMiddleware {
	return func(name string, next thrift.TProcessorFunction) thrift.TProcessorFunction {
		if name == "Fire" {
			return next
		}
		return thrift.WrappedTProcessorFunction{Wrapped: func(ctx context.Context, seqID int32, in, out thrift.TProtocol) (bool, thrift.TException) {
			if err := in.Skip(ctx, thrift.STRUCT); err != nil {
				return false, thrift.WrapTException(err)
			}
			if err := in.ReadMessageEnd(ctx); err != nil {
				return false, thrift.WrapTException(err)
			}
			x := thrift.NewTApplicationException(typ, fmt.Sprintf("breeze-e2e: %s answers %s with exception type %d", server, name, typ))
			err := out.WriteMessageBegin(ctx, name, thrift.EXCEPTION, seqID)
			if err == nil {
				err = x.Write(ctx, out)
			}
			if err == nil {
				err = out.WriteMessageEnd(ctx)
			}
			if err == nil {
				err = out.Flush(ctx)
			}
			if err != nil {
				return false, thrift.WrapTException(err)
			}
			return true, nil
		}}
	}
}

// Summary is what a call run prints.
type Summary struct {
	Requests int `json:"requests"`
	OK       int `json:"ok"`
	// AppErrors are TApplicationExceptions (from the server or the proxy).
	AppErrors int `json:"app_errors"`
	// AppTypes counts the Apache clients' TApplicationExceptions by type.
	AppTypes map[int32]int `json:"app_types,omitempty"`
	// Errors are anything else: transport errors, timeouts, wrong answers.
	Errors int `json:"errors"`
	// Results counts the answers by value (Whoami: the server name).
	Results map[string]int `json:"results"`
	// Messages are the first few error texts.
	Messages []string `json:"messages"`
	MaxMS    int64    `json:"max_ms"`
}

func call(args []string) error {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	impl, flavor := flavorFlags(fs)
	addr := fs.String("addr", "", "server or proxy address")
	method := fs.String("method", "whoami", "whoami, greet, slow, fire, fired, getuser")
	arg := fs.String("arg", "", "greet: name; slow: milliseconds; getuser: id")
	n := fs.Int("n", 1, "calls per connection")
	conns := fs.Int("conns", 1, "connections, each calling sequentially")
	headers := fs.String("headers", "", "k=v,k2=v2: THeader headers (apache) or metainfo values (kitex)")
	timeout := fs.Duration("timeout", 5*time.Second, "per call")
	progress := fs.Int("progress", 0, "print PROGRESS once this many calls succeeded")
	otlp := fs.String("otlp", "", "kitex: trace with kitex-contrib/obs-opentelemetry's client suite, exporting to this OTLP/gRPC collector host:port (flushed before SUMMARY)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var kitexOpts []client.Option
	flush := func() {}
	if *otlp != "" {
		flush = kitexTracing(*otlp, "kitex-e2e-client")
		kitexOpts = append(kitexOpts, client.WithSuite(tracing.NewClientSuite()),
			client.WithClientBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: "kitex-e2e-client"}))
	}
	var kv []string
	if *headers != "" {
		for _, p := range strings.Split(*headers, ",") {
			k, v, _ := strings.Cut(p, "=")
			kv = append(kv, k, v)
		}
	}
	var mu sync.Mutex
	sum := Summary{Results: map[string]int{}}
	progressed := false
	record := func(res string, err error, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		sum.Requests++
		if ms := d.Milliseconds(); ms > sum.MaxMS {
			sum.MaxMS = ms
		}
		switch msg, app := peer.IsAppException(err); {
		case err == nil:
			sum.OK++
			sum.Results[res]++
		case app:
			sum.AppErrors++
			var ae thrift.TApplicationException
			if errors.As(err, &ae) {
				if sum.AppTypes == nil {
					sum.AppTypes = map[int32]int{}
				}
				sum.AppTypes[ae.TypeId()]++
			}
			if len(sum.Messages) < 5 {
				sum.Messages = append(sum.Messages, "app: "+msg)
			}
		default:
			sum.Errors++
			if len(sum.Messages) < 5 {
				sum.Messages = append(sum.Messages, err.Error())
			}
		}
		if *progress > 0 && !progressed && sum.OK >= *progress {
			progressed = true
			fmt.Printf("PROGRESS %d\n", sum.OK)
		}
	}
	var wg sync.WaitGroup
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, closeFn, err := dial(*impl, *addr, flavor(), *timeout, kitexOpts...)
			if err != nil {
				for range *n {
					record("", err, 0)
				}
				return
			}
			defer closeFn()
			if *method == "firethenfired" {
				// n oneway calls, then Fired on the same connection: the
				// server counts what reached it.
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				defer cancel()
				for range *n {
					if _, err := c(ctx, "fire", "e2e"); err != nil {
						record("", err, 0)
						return
					}
				}
				// A server may still be running the last oneway handlers
				// when Fired arrives (Kitex need not finish a oneway call
				// before reading the next request), so ask until all n have
				// arrived or the deadline passes: a lost call still shows.
				want := strconv.Itoa(*n)
				for {
					start := time.Now()
					res, err := c(ctx, "fired", "")
					if err != nil || res == want || ctx.Err() != nil {
						record(res, err, time.Since(start))
						return
					}
					select {
					case <-ctx.Done():
						record(res, err, time.Since(start))
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
			}
			for range *n {
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				if *impl == "kitex" {
					ctx = peer.WithKitexHeaders(ctx, kv...)
				} else if len(kv) > 0 {
					ctx = peer.WithHeaders(ctx, kv...)
				}
				start := time.Now()
				res, err := c(ctx, *method, *arg)
				cancel()
				record(res, err, time.Since(start))
			}
		}()
	}
	wg.Wait()
	flush()
	b, _ := json.Marshal(sum)
	fmt.Printf("SUMMARY %s\n", b)
	return nil
}

type caller func(ctx context.Context, method, arg string) (string, error)

func dial(impl, addr string, f peer.Flavor, timeout time.Duration, kitexOpts ...client.Option) (caller, func(), error) {
	if impl == "kitex" {
		c, err := peer.DialKitex(addr, f.Transport, kitexOpts...)
		if err != nil {
			return nil, nil, err
		}
		return func(ctx context.Context, method, arg string) (string, error) {
			switch method {
			case "whoami":
				return c.Whoami(ctx)
			case "greet":
				return c.Greet(ctx, arg, peer.KitexUser())
			case "slow":
				ms, _ := strconv.Atoi(arg)
				return c.Slow(ctx, int32(ms))
			case "fire":
				return "fired", c.Fire(ctx, arg)
			case "fired":
				n, err := c.Fired(ctx)
				return strconv.FormatInt(n, 10), err
			case "getuser":
				u, err := c.GetUser(ctx, arg)
				if err != nil {
					return "", err
				}
				return u.Name, nil
			}
			return "", fmt.Errorf("unknown method %q", method)
		}, func() {}, nil
	}
	c, err := peer.DialApache(addr, f)
	if err != nil {
		return nil, nil, err
	}
	return func(ctx context.Context, method, arg string) (string, error) {
		switch method {
		case "whoami":
			return c.Whoami(ctx)
		case "greet":
			return c.Greet(ctx, arg, peer.SampleUser())
		case "slow":
			ms, _ := strconv.Atoi(arg)
			return c.Slow(ctx, int32(ms))
		case "fire":
			return "fired", c.Fire(ctx, arg)
		case "fired":
			n, err := c.Fired(ctx)
			return strconv.FormatInt(n, 10), err
		case "getuser":
			u, err := c.GetUser(ctx, arg)
			if err != nil {
				return "", err
			}
			return u.Name, nil
		}
		return "", fmt.Errorf("unknown method %q", method)
	}, func() { _ = c.Close() }, nil
}
