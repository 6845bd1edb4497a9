package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/kubesync"
)

// refused groups the xDS server's refusal counters into one collector,
// registered and unregistered with its Run.
type refused struct{ srv *controlplane.Server }

func (r refused) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range r.srv.RefusedCollectors() {
		c.Describe(ch)
	}
}

func (r refused) Collect(ch chan<- prometheus.Metric) {
	for _, c := range r.srv.RefusedCollectors() {
		c.Collect(ch)
	}
}

// Config is `breeze controller`'s configuration.
type Config struct {
	Options
	// Kubeconfig: the file to reach the API server with; empty: the
	// in-cluster config (or $KUBECONFIG, as controller-runtime finds it).
	Kubeconfig string
	// Rest, if set, is used instead of Kubeconfig (tests).
	Rest *rest.Config
	// Namespaces to watch; empty: all.
	Namespaces []string
	// XDSListen is where the xDS server listens (port 0: a free one).
	XDSListen string
	// XDSTLS, if set, serves xDS over TLS with this config; nil is
	// plaintext.
	XDSTLS *tls.Config
	// XDSTokenAudiences, if set, requires each xDS stream to carry a
	// Kubernetes service-account token issued for one of these audiences,
	// checked with the TokenReview API (as istiod checks istio-agent's).
	// Needs XDSTLS.
	XDSTokenAudiences []string
	// HealthAddr serves /healthz and /readyz; MetricsAddr /metrics. "0"
	// turns one off.
	HealthAddr, MetricsAddr string
	// LeaderElect: several replicas, one writing (a Lease in
	// LeaderElectionNamespace); every replica serves xDS.
	LeaderElect             bool
	LeaderElectionNamespace string
	// OnServing, if set, is called once the xDS server serves the first
	// snapshot, with its address.
	OnServing func(xds net.Addr)

	// Registry, if set, is followed by the leader, which writes its
	// ServiceEntries into RegistryNamespace (registry/kubesync); the
	// controller then serves them as any other ServiceEntry.
	Registry registry.Registry
	// RegistryKind labels them (breeze.io/registry): zookeeper, nacos.
	RegistryKind      string
	RegistryNamespace string
	// RegistryVIPs: their addresses' range; kubesync.DefaultVIPs if unset.
	RegistryVIPs netip.Prefix
	// OnRegistrySync, if set, is called after each pass of the registry's
	// writes (tests).
	OnRegistrySync func(registry.Update, error)
}

// registryMetrics are the breeze_registry_* series on /metrics, made
// once per process (another Run in the same process, tests, shares them).
var registryMetrics = sync.OnceValue(func() *registry.Metrics { return registry.NewMetrics(ctrlmetrics.Registry) })

// Run runs the controller and its xDS server until ctx ends, then stops
// both gracefully.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
		cfg.Log = log
	}
	ctrl.SetLogger(logr.FromSlogHandler(log.Handler()))
	rc := cfg.Rest
	if rc == nil {
		var err error
		if cfg.Kubeconfig != "" {
			rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
		} else {
			rc, err = config.GetConfig()
		}
		if err != nil {
			return fmt.Errorf("reaching the API server: %w", err)
		}
	}
	ln, err := net.Listen("tcp", cfg.XDSListen)
	if err != nil {
		return fmt.Errorf("xds listen: %w", err)
	}
	if cfg.XDSAddress == "" {
		cfg.XDSAddress = ln.Addr().String()
	}
	opts := ctrl.Options{
		Metrics:                 metricsserver.Options{BindAddress: cfg.MetricsAddr},
		HealthProbeBindAddress:  cfg.HealthAddr,
		LeaderElection:          cfg.LeaderElect,
		LeaderElectionID:        "breeze-controller",
		LeaderElectionNamespace: cfg.LeaderElectionNamespace,
		// Stepping down on SIGTERM lets another replica take over at
		// once, rather than after the lease expires.
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       ptr(30 * time.Second),
		Client:                        client.Options{Cache: &client.CacheOptions{Unstructured: true}},
	}
	if len(cfg.Namespaces) > 0 {
		opts.Cache = cache.Options{DefaultNamespaces: map[string]cache.Config{}}
		for _, ns := range cfg.Namespaces {
			opts.Cache.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	mgr, err := ctrl.NewManager(rc, opts)
	if err != nil {
		ln.Close()
		return err
	}
	feed := controlplane.NewFeed()
	if _, err := Setup(mgr, feed, cfg.Options); err != nil {
		ln.Close()
		return err
	}
	if cfg.Registry != nil {
		if cfg.RegistryNamespace == "" {
			ln.Close()
			return errors.New("controller: RegistryNamespace is required with a Registry")
		}
		if len(cfg.Namespaces) > 0 && !slices.Contains(cfg.Namespaces, cfg.RegistryNamespace) {
			ln.Close()
			return fmt.Errorf("controller: the registry's namespace %s is not among the watched namespaces %v: its ServiceEntries would be written but never served", cfg.RegistryNamespace, cfg.Namespaces)
		}
		if err := mgr.Add(&kubesync.Sync{
			Registry: cfg.Registry, Kind: cfg.RegistryKind, Namespace: cfg.RegistryNamespace,
			Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorderFor("breeze-controller"),
			VIPs: cfg.RegistryVIPs, Metrics: registryMetrics(), Log: log, OnSync: cfg.OnRegistrySync,
		}); err != nil {
			ln.Close()
			return err
		}
	}
	var serving atomic.Bool
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Ready once the xDS server serves what the API server holds: a
	// plugin that connects earlier would wait anyway.
	if err := mgr.AddReadyzCheck("xds", func(*http.Request) error {
		if !serving.Load() {
			return errors.New("xds: not serving yet")
		}
		return nil
	}); err != nil {
		return err
	}
	srv := controlplane.NewServer(log)
	srv.TLS = cfg.XDSTLS
	if len(cfg.XDSTokenAudiences) > 0 {
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			ln.Close()
			return err
		}
		srv.Auth = TokenReview{Reviews: cs.AuthenticationV1().TokenReviews(), Audiences: cfg.XDSTokenAudiences}
	}
	// Not fatal: another Run in the same process (tests) holds the name.
	if err := ctrlmetrics.Registry.Register(refused{srv}); err != nil {
		log.Warn("xds refusal metrics not exported", "err", err)
	}
	defer ctrlmetrics.Registry.Unregister(refused{srv})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer srv.Stop()
	runErr := make(chan error, 1)
	go func() {
		runErr <- controlplane.Run(ctx, feed, srv, log, func(controlplane.Resources, []controlplane.Problem) {
			if !serving.Swap(true) && cfg.OnServing != nil {
				cfg.OnServing(ln.Addr())
			}
		})
	}()
	mgrErr := make(chan error, 1)
	go func() { mgrErr <- mgr.Start(ctx) }()
	mgrDone := false
	select {
	case err = <-serveErr:
		err = fmt.Errorf("xds server: %w", err)
	case err = <-runErr:
	case err = <-mgrErr:
		mgrDone = true
	}
	cancel()
	// Wait for the manager whichever part stopped first: it is the manager
	// that, on its way out, drains the controllers and gives up the Lease
	// (LeaderElectionReleaseOnCancel). Returning earlier let the process
	// exit holding the Lease, so another replica waited for it to expire.
	if !mgrDone {
		if mErr := <-mgrErr; err == nil {
			err = mErr
		}
	}
	return err
}
