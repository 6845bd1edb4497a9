package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/breeze-mesh/breeze/controller"
	"github.com/breeze-mesh/breeze/deploy"
	"github.com/breeze-mesh/breeze/internal/buildinfo"
	"github.com/breeze-mesh/breeze/registry/kubesync"
)

const controllerUsage = `Runs Breeze's Kubernetes controller: watches Services, EndpointSlices, Istio
ServiceEntries, DestinationRules, WorkloadEntries and Gateways and Aeraki
MetaRouters and ApplicationProtocols; writes the EnvoyFilters that put Breeze
on the listeners of services whose ports are Breeze protocols
(tcp-metaprotocol-<codec>-..., or appProtocol) and on the Breeze ports of
ingress Gateways; serves their routes, clusters and endpoints over xDS; writes
MetaRouter status. With -zookeeper or -nacos, its leader also follows that Dubbo
registry and keeps one ServiceEntry per interface in -registry-namespace, served
as any other. Prints "LISTENING xds <address>" once it serves what the API
server holds. SIGINT or SIGTERM stop it gracefully. See controller/README.md.
`

const controllerSynopsis = "breeze controller -xds-address ADDR [-kubeconfig FILE] [-namespaces NS,...] [-xds-listen ADDR] [-xds-tls-cert FILE -xds-tls-key FILE -xds-sidecar-ca-file PATH [-xds-auth token -xds-sidecar-token-file PATH [-xds-token-audience AUDIENCE]]] [-istio RELEASE] [-istio-revision REV] [-health ADDR] [-metrics ADDR] [-leader-elect] [-zookeeper HOST:PORT[,HOST:PORT]] [-zookeeper-root PATH] [-nacos HOST:PORT[,HOST:PORT]] [-nacos-namespace ID] [-nacos-group GROUP] [-nacos-list-interval DURATION] [-registry-namespace NS] [-registry-vips CIDR] [-log-level LEVEL] [-log-format FORMAT]"

// controllerCmd runs `breeze controller`.
func controllerCmd(args []string) error {
	f := newFlags("controller", controllerSynopsis, controllerUsage)
	kubeconfig := f.String("kubeconfig", "", "`FILE` to reach the API server with (default: in the cluster, the pod's service account; else $KUBECONFIG)")
	namespaces := f.String("namespaces", "", "comma-separated `NAMESPACES` to watch (default: all)")
	xdsListen := f.String("xds-listen", ":15010", "serve ADS (xDS over gRPC; plaintext unless -xds-tls-cert) on this `ADDR`")
	xdsAddress := f.String("xds-address", "", "the `ADDR` (host:port) sidecars reach the xDS server at, written into the EnvoyFilters (required: e.g. breeze-controller.breeze-system.svc.cluster.local:15010)")
	health := f.String("health", ":8081", "serve /healthz and /readyz on this `ADDR` (0: off)")
	metrics := f.String("metrics", ":8080", "serve Prometheus /metrics on this `ADDR` (0: off)")
	leaderElect := f.Bool("leader-elect", false, "elect one writer among several replicas with a Lease (every replica serves xDS)")
	leaderNS := f.String("leader-election-namespace", "", "`NAMESPACE` of the Lease (default: the pod's own)")
	upstreamTLS := f.String("upstream-tls", string(deploy.UpstreamIstioMTLS), "`TLS` of the clients' upstream connections: istio (the sidecar's mTLS) or plaintext")
	istio := f.String("istio", "", "Istio `RELEASE` of the sidecars (default: the one this binary is built for)")
	revision := f.String("istio-revision", "", "label every EnvoyFilter written istio.io/rev=`REV`: only that istiod revision's proxies get them (default: no label, every revision's)")
	sec := addXDSSecurityFlags(f, "with the API server's TokenReview for -xds-token-audience")
	audience := f.String("xds-token-audience", "breeze", "with -xds-auth token: the `AUDIENCE` the proxies' service-account tokens must be issued for")
	sidecarCA := f.String("xds-sidecar-ca-file", "", "with -xds-tls-cert: the `PATH` in the sidecars of the CA bundle that signs it, written into the EnvoyFilters (xds.tls.ca_file; the pods mount it)")
	sidecarToken := f.String("xds-sidecar-token-file", "", "with -xds-auth token: the `PATH` in the sidecars of the projected service-account token for -xds-token-audience, written into the EnvoyFilters (xds.token_file; the pods mount it)")
	regf := addRegistryFlags(f)
	registryNS := f.String("registry-namespace", "istio-system", "with -zookeeper or -nacos: the `NAMESPACE` the registry's ServiceEntries are written to (Istio's root namespace by default: the EnvoyFilters of a ServiceEntry go to its namespace, and only there do they reach the clients of every namespace)")
	registryVIPs := f.String("registry-vips", kubesync.DefaultVIPs.String(), "with -zookeeper or -nacos: the `CIDR` the registry's ServiceEntries get their addresses from (one each, kept for its life)")
	logf := addLogFlags(f)
	args, err := f.parse(args)
	if err != nil {
		return err
	}
	if err := f.noArgs(args, nil); err != nil {
		return err
	}
	if *xdsAddress == "" {
		return f.usageErrorf("-xds-address is required: the address the sidecars' Breeze reaches this controller's xDS server at")
	}
	if _, _, err := net.SplitHostPort(*xdsAddress); err != nil {
		return f.usageErrorf("-xds-address %q: want host:port", *xdsAddress)
	}
	if err := sec.check(f); err != nil {
		return err
	}
	if (*sec.cert != "") != (*sidecarCA != "") {
		return f.usageErrorf("-xds-tls-cert and -xds-sidecar-ca-file go together: the sidecars' Breeze must trust the certificate the controller serves")
	}
	if (*sec.auth == "token") != (*sidecarToken != "") {
		return f.usageErrorf("-xds-auth token and -xds-sidecar-token-file go together: the sidecars' Breeze must send the token the controller checks")
	}
	serverTLS, err := sec.tls()
	if err != nil {
		return err
	}
	var audiences []string
	if *sec.auth == "token" {
		audiences = []string{*audience}
	}
	vips, err := netip.ParsePrefix(*registryVIPs)
	if err != nil || vips.Bits() > vips.Addr().BitLen()-2 {
		return f.usageErrorf("-registry-vips %q: want a range of at least 4 addresses, as 240.241.0.0/16", *registryVIPs)
	}
	if *registryNS == "" {
		return f.usageErrorf("-registry-namespace is empty: want the namespace of the registry's ServiceEntries")
	}
	var nss []string
	for _, ns := range strings.Split(*namespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			nss = append(nss, ns)
		}
	}
	if regf.set() && len(nss) > 0 && !slices.Contains(nss, *registryNS) {
		return f.usageErrorf("-registry-namespace %s is not among -namespaces %s: the registry's ServiceEntries would be written but not served", *registryNS, *namespaces)
	}
	log := logf.logger()
	cfg := controller.Config{}
	if regf.set() {
		cfg.Registry, cfg.RegistryKind, cfg.RegistryNamespace, cfg.RegistryVIPs = regf.registry(log), regf.kind(), *registryNS, vips
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("breeze controller running", append([]any{"namespaces", nss}, buildinfo.Get().LogAttrs()...)...)
	cfg.Options = controller.Options{
		XDSAddress: *xdsAddress, XDSCAFile: *sidecarCA, XDSTokenFile: *sidecarToken, UpstreamTLS: deploy.UpstreamTLS(*upstreamTLS), Istio: *istio, Revision: *revision, Log: log,
	}
	cfg.Kubeconfig, cfg.Namespaces, cfg.XDSListen = *kubeconfig, nss, *xdsListen
	cfg.XDSTLS, cfg.XDSTokenAudiences = serverTLS, audiences
	cfg.HealthAddr, cfg.MetricsAddr = *health, *metrics
	cfg.LeaderElect, cfg.LeaderElectionNamespace = *leaderElect, *leaderNS
	cfg.OnServing = func(a net.Addr) { fmt.Printf("LISTENING xds %s\n", a) }
	err = controller.Run(ctx, cfg)
	if err != nil {
		return err
	}
	log.Info("shut down")
	return nil
}
