// Command provider serves the test service org.breeze.Greeter with dubbo-go
// (dubbo protocol, hessian2, no registry) and prints "READY <port>" once it
// accepts connections. It runs until killed or interrupted.
//
//	provider -port 20001 -name v1-a -version 1.0.0 [-control] [-otlp 127.0.0.1:4317]
//
// With -control a test counts, holds and fails the calls over HTTP
// (internal/dubbogo.Behaviour.ServeControl) at the address it prints.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/dubbogo"
)

func main() {
	port := flag.Int("port", 20880, "port to listen on (127.0.0.1)")
	name := flag.String("name", "", "provider identity returned in every reply (default provider-PORT)")
	version := flag.String("version", "", "comma-separated Dubbo service versions to export; empty: the unversioned service")
	heartbeat := flag.Duration("heartbeat", 0, "heartbeat period towards clients; 0 keeps dubbo-go's default (60s)")
	logLevel := flag.String("log-level", "warn", "dubbo-go log level")
	otlp := flag.String("otlp", "", "trace with dubbo-go's OpenTelemetry filter, exporting to this OTLP/gRPC collector host:port")
	control := flag.Bool("control", false, "serve the test's control of the calls (counts, gates, failures) over HTTP on a free loopback port, printed as \"CONTROL 127.0.0.1:PORT\" before READY")
	zookeeper := flag.String("zookeeper", "", "register in the ZooKeeper at this host:port with dubbo-go's own registry")
	registryType := flag.String("registry-type", "interface", "with -zookeeper or -nacos: interface, service (application-level) or all")
	registryTimeout := flag.Duration("registry-timeout", 10*time.Second, "with -zookeeper: the ZooKeeper session timeout")
	nacos := flag.String("nacos", "", "register in the Nacos server at this host:port (HTTP port) with dubbo-go's own registry")
	application := flag.String("application", "", "dubbo-go application name (default breeze-e2e-provider)")
	metadataPort := flag.Int("metadata-service-port", 0, "with -zookeeper: keep the metadata local (metadata-type local) and serve the MetadataService over dubbo on this port; 0: metadata-type remote")
	flag.Parse()
	if *name == "" {
		*name = fmt.Sprintf("provider-%d", *port)
	}
	var versions []string
	if *version != "" {
		versions = strings.Split(*version, ",")
	}
	behaviour := dubbogo.NewBehaviour()
	var err error
	if *control {
		// A port the kernel picks: one taken by the test beforehand could
		// be some other process's by now.
		var addr string
		if addr, err = behaviour.ServeControl("127.0.0.1:0"); err == nil {
			fmt.Printf("CONTROL %s\n", addr)
		}
	}
	if err == nil {
		err = dubbogo.Serve(dubbogo.ProviderOptions{
			Port:                *port,
			Name:                *name,
			Versions:            versions,
			HeartbeatPeriod:     *heartbeat,
			LogLevel:            *logLevel,
			Behaviour:           behaviour,
			ZooKeeper:           *zookeeper,
			RegistryType:        *registryType,
			Application:         *application,
			RegistryTimeout:     *registryTimeout,
			OTLP:                *otlp,
			MetadataServicePort: *metadataPort,
			Nacos:               *nacos,
		})
	}
	var taken *dubbogo.ListenError
	if errors.As(err, &taken) {
		fmt.Fprintf(os.Stderr, "provider: %v; stop what holds that port or pick another -port\n", err)
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "provider:", err)
		os.Exit(1)
	}
	fmt.Printf("READY %d\n", *port)

	// Exit at once on a signal: dubbo-go's graceful shutdown would wait for
	// its step timeouts, and tests kill providers on purpose.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	os.Exit(0)
}
