package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/internal/buildinfo"
	"github.com/breeze-mesh/breeze/registry"
)

const xdsUsage = `Serves routes, clusters and endpoints over ADS (xDS over gRPC) from a directory
of Aeraki MetaRouter and Istio DestinationRule and ServiceEntry YAML, with the
authorization policies (Aeraki DubboAuthorizationPolicy, Breeze
AuthorizationPolicy of security.breeze.io) on the routes, read again whenever
it changes, and from the Dubbo providers of a ZooKeeper registry, a Nacos
registry or both (one ServiceEntry per interface, see registry/README.md),
followed with watches and pushes. At least one of -dir, -zookeeper and -nacos.
Prints "LISTENING xds <address>" once it serves what every source holds. With
-metrics, serves Prometheus metrics on /metrics there (registry staleness,
instances and updates; the control plane's updates, problems and resources)
and prints "METRICS <address>". With -xds-tls-cert and -xds-tls-key, ADS is
served over TLS; -xds-auth token then requires each proxy to send the token
held in -xds-token-file (a static token, for tests and development; in
Kubernetes, breeze controller checks service-account tokens with the
TokenReview API). Refused streams are logged with their cause and counted in
breeze_xds_refused_streams_total{cause}. SIGINT or SIGTERM stop it.
`

const xdsSynopsis = "breeze xds [-dir DIR] [-zookeeper HOST:PORT[,HOST:PORT]] [-zookeeper-root PATH] [-nacos HOST:PORT[,HOST:PORT]] [-nacos-namespace ID] [-nacos-group GROUP] [-nacos-list-interval DURATION] [-listen ADDR] [-metrics ADDR] [-debounce DURATION] [-xds-tls-cert FILE -xds-tls-key FILE [-xds-auth token -xds-token-file FILE]] [-log-level LEVEL] [-log-format FORMAT]"

// xds runs the control plane: it watches a directory of MetaRouter,
// DestinationRule, ServiceEntry and authorization policy YAML and serves
// what they translate to over ADS.
func xds(args []string) error {
	f := newFlags("xds", xdsSynopsis, xdsUsage)
	dir := f.String("dir", "", "`DIR` of the MetaRouter, DestinationRule and ServiceEntry YAML to serve")
	regf := addRegistryFlags(f)
	listen := f.String("listen", "127.0.0.1:15010", "serve ADS on this `ADDR` (host:port; port 0 picks a free one)")
	metricsAddr := f.String("metrics", "", "serve Prometheus metrics on http://`ADDR`/metrics (host:port; port 0 picks a free one)")
	debounce := f.Duration("debounce", 50*time.Millisecond, "after a change, wait until the directory was quiet this long (a `DURATION`: 50ms, 1s) before reading it again")
	sec := addXDSSecurityFlags(f, "against -xds-token-file")
	tokenFile := f.String("xds-token-file", "", "with -xds-auth token: the `FILE` holding the one token accepted (outside Kubernetes: tests and development; read again for each stream)")
	logf := addLogFlags(f)
	args, err := f.parse(args)
	if err != nil {
		return err
	}
	if err := f.noArgs(args, func(a string) string { return "to serve a directory, name it with -dir: breeze xds -dir " + a }); err != nil {
		return err
	}
	if *dir == "" && !regf.set() {
		return f.usageErrorf("nothing to serve: name the directory of MetaRouter, DestinationRule and ServiceEntry YAML with -dir, a registry with -zookeeper or -nacos, or both")
	}
	if *dir != "" {
		if fi, err := os.Stat(*dir); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("-dir %q: no such directory", *dir)
		} else if err != nil {
			return fmt.Errorf("-dir: %w", err)
		} else if !fi.IsDir() {
			return fmt.Errorf("-dir %q is a file: want the directory holding it", *dir)
		}
	}
	if err := sec.check(f); err != nil {
		return err
	}
	if (*sec.auth == "token") != (*tokenFile != "") {
		return f.usageErrorf("-xds-auth token and -xds-token-file go together: breeze xds checks tokens against that file")
	}
	serverTLS, err := sec.tls()
	if err != nil {
		return err
	}
	log := logf.logger()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	log.Info("breeze xds running", append([]any{"dir", *dir, "zookeeper", regf.zookeeper, "nacos", regf.nacos}, buildinfo.Get().LogAttrs()...)...)
	srv := controlplane.NewServer(log)
	srv.TLS = serverTLS
	if *tokenFile != "" {
		srv.Auth = controlplane.StaticToken{File: *tokenFile}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	serveErr := make(chan error, 1)
	// Serve answers once the directory was read (Server waits for its
	// first Set).
	go func() { serveErr <- srv.Serve(ln) }()
	defer srv.Stop()

	var (
		regMetrics *registry.Metrics
		cpMetrics  *controlPlaneMetrics
	)
	if *metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		regMetrics = registry.NewMetrics(reg)
		cpMetrics = newControlPlaneMetrics(reg)
		reg.MustRegister(srv.RefusedCollectors()...)
		mln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := msrv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
		defer msrv.Close()
		// Scripts and tests read the address here (port 0).
		fmt.Printf("METRICS %s\n", mln.Addr())
	}

	var sources []controlplane.Source
	if *dir != "" {
		sources = append(sources, &controlplane.DirSource{Dir: *dir, Debounce: *debounce, Log: log})
	}
	if regf.set() {
		// One source for every registry named (registry.Merge): an
		// interface in both ZooKeeper and Nacos is one ServiceEntry.
		sources = append(sources, &registry.Source{Registry: regf.registry(log), Log: log, Metrics: regMetrics})
	}
	src := controlplane.Sources(sources...)
	runErr := make(chan error, 1)
	var first sync.Once
	go func() {
		runErr <- controlplane.Run(ctx, src, srv, log, func(res controlplane.Resources, problems []controlplane.Problem) {
			cpMetrics.observe(res, problems)
			// Scripts and tests wait for this line: from now on the
			// server answers with what the directory holds.
			first.Do(func() { fmt.Printf("LISTENING xds %s\n", ln.Addr()) })
		})
	}()
	select {
	case err := <-serveErr:
		return fmt.Errorf("xds server: %w", err)
	case err := <-runErr:
		if err != nil {
			return err
		}
	}
	log.Info("shutting down")
	return nil
}

// controlPlaneMetrics are breeze xds' own series:
//
//	breeze_xds_updates_total        sets of resources served (one per change of any source)
//	breeze_xds_problems{severity}   problems of the objects served now: "rejected" (an object or part of one left out), "ignored" (a warning)
//	breeze_xds_resources{type}      resources served: route_configs, clusters, endpoint_sets
type controlPlaneMetrics struct {
	updates   prometheus.Counter
	problems  *prometheus.GaugeVec
	resources *prometheus.GaugeVec
}

func newControlPlaneMetrics(reg prometheus.Registerer) *controlPlaneMetrics {
	m := &controlPlaneMetrics{
		updates: prometheus.NewCounter(prometheus.CounterOpts{Name: "breeze_xds_updates_total",
			Help: "Sets of resources the control plane served: one per change of any of its sources."}),
		problems: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "breeze_xds_problems",
			Help: "Problems of the objects served now, by severity: rejected (left out, logged as an error) or ignored (a warning)."}, []string{"severity"}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "breeze_xds_resources",
			Help: "Resources served, by type: route_configs, clusters, endpoint_sets."}, []string{"type"}),
	}
	reg.MustRegister(m.updates, m.problems, m.resources)
	return m
}

func (m *controlPlaneMetrics) observe(res controlplane.Resources, problems []controlplane.Problem) {
	if m == nil {
		return
	}
	m.updates.Inc()
	rejected, ignored := 0, 0
	for _, p := range problems {
		if p.Warning {
			ignored++
		} else {
			rejected++
		}
	}
	m.problems.WithLabelValues("rejected").Set(float64(rejected))
	m.problems.WithLabelValues("ignored").Set(float64(ignored))
	m.resources.WithLabelValues("route_configs").Set(float64(len(res.Routes)))
	m.resources.WithLabelValues("clusters").Set(float64(len(res.Clusters)))
	m.resources.WithLabelValues("endpoint_sets").Set(float64(len(res.Endpoints)))
}
