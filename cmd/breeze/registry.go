package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/nacos"
	"github.com/breeze-mesh/breeze/registry/zookeeper"
)

// registryFlags are the flags naming service registries, shared by
// `breeze xds` and `breeze registry export`.
type registryFlags struct {
	zookeeper, zookeeperRoot          string
	nacos, nacosNamespace, nacosGroup string
	nacosList                         time.Duration
}

func addRegistryFlags(f *cmdFlags) *registryFlags {
	r := &registryFlags{}
	f.StringVar(&r.zookeeper, "zookeeper", "", "follow the Dubbo providers of the ZooKeeper ensemble at `HOST:PORT[,HOST:PORT]`")
	f.StringVar(&r.zookeeperRoot, "zookeeper-root", "/dubbo", "Dubbo's root `PATH` in ZooKeeper (Dubbo's registry group)")
	f.StringVar(&r.nacos, "nacos", "", "follow the Dubbo providers of the Nacos server(s) at `HOST:PORT[,HOST:PORT]` (the HTTP port, 8848; gRPC on that port + 1000)")
	f.StringVar(&r.nacosNamespace, "nacos-namespace", "", "the Nacos namespace `ID` the providers registered in (default: public)")
	f.StringVar(&r.nacosGroup, "nacos-group", "DEFAULT_GROUP", "the Nacos `GROUP` the providers registered in")
	f.DurationVar(&r.nacosList, "nacos-list-interval", nacos.DefaultListInterval,
		"how often Nacos' list of services is read again: Nacos has no watch on it, so a new interface or application is found, and an unreachable server noticed, within this `DURATION` (instances themselves are pushed)")
	return r
}

func (r *registryFlags) set() bool { return r.zookeeper != "" || r.nacos != "" }

func (r *registryFlags) registries(log *slog.Logger) []registry.Registry {
	var out []registry.Registry
	if r.zookeeper != "" {
		out = append(out, &zookeeper.Registry{Servers: strings.Split(r.zookeeper, ","), Root: r.zookeeperRoot, Log: log})
	}
	if r.nacos != "" {
		out = append(out, &nacos.Registry{Servers: strings.Split(r.nacos, ","), Namespace: r.nacosNamespace, Group: r.nacosGroup, ListInterval: r.nacosList, Log: log})
	}
	return out
}

// kind names the registries for kubesync's breeze.io/registry label:
// zookeeper, nacos, or zookeeper-nacos.
func (r *registryFlags) kind() string {
	var kinds []string
	if r.zookeeper != "" {
		kinds = append(kinds, "zookeeper")
	}
	if r.nacos != "" {
		kinds = append(kinds, "nacos")
	}
	return strings.Join(kinds, "-")
}

// registry is every registry named, followed as one (registry.Merge): an
// interface in both ZooKeeper and Nacos is one ServiceEntry.
func (r *registryFlags) registry(log *slog.Logger) registry.Registry {
	return registry.Merge(r.registries(log)...)
}

const registryUsage = `Writes the Istio ServiceEntries a Dubbo service registry's providers translate
to (one per interface; see registry/README.md) as YAML: to standard output, or
one file per ServiceEntry into -o DIR (files of interfaces gone are removed).
Once, or with -watch after every change until SIGINT or SIGTERM.
`

const registrySynopsis = "breeze registry export [-watch] [-zookeeper HOST:PORT[,HOST:PORT]] [-zookeeper-root PATH] [-nacos HOST:PORT[,HOST:PORT]] [-nacos-namespace ID] [-nacos-group GROUP] [-nacos-list-interval DURATION] [-namespace NS] [-o DIR] [-log-level LEVEL] [-log-format FORMAT]"

// registryCmd: `breeze registry export`.
func registryCmd(args []string) error {
	f := newFlags("registry", registrySynopsis, registryUsage)
	regf := addRegistryFlags(f)
	watch := f.Bool("watch", false, "keep following the registry, writing the ServiceEntries again after every change")
	namespace := f.String("namespace", "default", "the `NS` of the ServiceEntries")
	out := f.String("o", "", "write one file per ServiceEntry into `DIR` (default: all to standard output)")
	logf := addLogFlags(f)
	args, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(args) != 1 || args[0] != "export" {
		return f.usageErrorf("want the subcommand export, as in breeze registry export -zookeeper 127.0.0.1:2181")
	}
	if !regf.set() {
		return f.usageErrorf("-zookeeper or -nacos is required: the registry to export")
	}
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return fmt.Errorf("-o: %w", err)
		}
	}
	log := logf.logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := regf.registry(log)
	var writeErr error
	err = r.Run(ctx, func(u registry.Update) {
		entries := registry.ServiceEntries(u.Instances, *namespace)
		if *out == "" {
			writeErr = writeEntries(os.Stdout, entries)
		} else {
			writeErr = writeDir(*out, entries)
		}
		if writeErr != nil || !*watch {
			cancel()
		}
	})
	return errors.Join(err, writeErr)
}

// writeEntries writes entries as a YAML stream.
func writeEntries(w io.Writer, entries []registry.Entry) error {
	for _, e := range entries {
		b, err := registry.YAML(e)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "---\n%s", b); err != nil {
			return err
		}
	}
	return nil
}

// writeDir writes one file per entry, <name>.yaml, each replaced whole
// (a temporary file renamed), and removes the *.yaml files of entries
// that are gone.
func writeDir(dir string, entries []registry.Entry) error {
	keep := map[string]bool{}
	for _, e := range entries {
		b, err := registry.YAML(e)
		if err != nil {
			return err
		}
		name := e.Name + ".yaml"
		keep[name] = true
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	old, err := filepath.Glob(filepath.Join(dir, "dubbo-*.yaml"))
	if err != nil {
		return err
	}
	for _, p := range old {
		if !keep[filepath.Base(p)] {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}
