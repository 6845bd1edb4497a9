package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	// Every codec and L7 filter Breeze ships.
	_ "github.com/breeze-mesh/breeze/builtin"
	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/proxy"
	"github.com/breeze-mesh/breeze/host"
	"github.com/breeze-mesh/breeze/internal/buildinfo"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

//go:embed demo.yaml
var demoConfig []byte

const runUsage = `Serves the listeners of a runner config with Breeze's proxy, on a host that
drives Envoy's own Go shim (the plugin's code path, without Envoy). Prints
"LISTENING <name> <address>" for each listener once it accepts, and
"ADMIN <address>" for /metrics and /ready, and "METRICS <address>" when a
listener's proxy names metrics.address (the plugin's own /metrics, as inside
Envoy). SIGINT or SIGTERM stop it.
`

func run(args []string) error {
	f := newFlags("run", "breeze run [-c FILE] [-log-level LEVEL] [-log-format FORMAT] [-pprof ADDR]", runUsage)
	file := f.String("c", "", "runner config `FILE` (YAML or JSON); without it, the embedded demo config")
	logf := addLogFlags(f)
	pprofAddr := f.String("pprof", "", "serve Go's net/http/pprof on this `ADDR` (host:port), for profiling")
	args, err := f.parse(args)
	if err != nil {
		return err
	}
	// `breeze run my.yaml` would otherwise serve the demo config.
	hint := func(a string) string { return "to serve a config file, name it with -c: breeze run -c " + a }
	if *file != "" {
		hint = func(string) string { return "run takes one config file, with -c" }
	}
	if err := f.noArgs(args, hint); err != nil {
		return err
	}
	log := logf.logger()

	var cfg *breezev1.Runner
	name := *file
	if *file == "" {
		name = "embedded demo config"
		cfg, err = config.ParseRunner(name, demoConfig)
	} else {
		cfg, err = config.LoadRunner(*file)
	}
	if err != nil {
		return err
	}
	for _, w := range config.RunnerWarnings(cfg) {
		log.Warn(name + ": " + w)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	proxy.Register()
	h := host.New(runnerHostOptions(log))
	defer h.Close()
	for _, l := range cfg.GetListeners() {
		pc, err := config.ToAny(l.GetProxy())
		if err != nil {
			return fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		ln, err := net.Listen("tcp", l.GetAddress())
		if err != nil {
			return fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		if err := h.AddListener(ln, proxy.PluginName, pc); err != nil {
			ln.Close()
			return fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		// Scripts and tests wait for this line.
		fmt.Printf("LISTENING %s %s\n", l.GetName(), ln.Addr())
	}
	if addr := cfg.GetAdminAddress(); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("admin_address: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(proxy.Registry, promhttp.HandlerOpts{}))
		mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
		srv := &http.Server{Handler: mux}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin server", "err", err)
			}
		}()
		defer srv.Close()
		fmt.Printf("ADMIN %s\n", ln.Addr())
	}
	if a := proxy.MetricsAddress(); a != "" {
		// A listener's proxy.metrics: the plugin's own metrics server,
		// serving the same registry as the admin address.
		fmt.Printf("METRICS %s\n", a)
	}
	if *pprofAddr != "" {
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			return fmt.Errorf("-pprof: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		srv := &http.Server{Handler: mux}
		go srv.Serve(ln)
		defer srv.Close()
		fmt.Printf("PPROF %s\n", ln.Addr())
	}
	log.Info("breeze running", append([]any{"listeners", len(cfg.GetListeners()), "config", name}, buildinfo.Get().LogAttrs()...)...)
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// runnerHostOptions are the host's options for `breeze run`. An upstream
// connection lives on the worker whose callback opened it, as Envoy's own
// C++ proxies pool their connections per worker: a request crosses no
// thread where Envoy's dubbo_proxy would cross none (measured: 1 connection
// × 4 in flight, 0.86-0.89× dubbo_proxy's CPU per request against 1.33-1.35× with
// the Go filter's round-robin, bench/results/2026-11-30-workers.md). The
// proxy's own tests keep the default, round-robin, whose concurrency is
// what Envoy's Go filter gives the plugin; $BREEZE_HOST_UPSTREAM_WORKER
// chooses it here too.
func runnerHostOptions(log *slog.Logger) host.Options {
	opts := host.Options{Logger: log}
	if os.Getenv(host.UpstreamWorkerEnv) == "" {
		opts.UpstreamWorker = host.UpstreamWorkerCaller
	}
	return opts
}
