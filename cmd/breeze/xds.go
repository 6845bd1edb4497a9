package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/breeze-mesh/breeze/controlplane"
)

// xds runs the control plane: it watches a directory of MetaRouter,
// DestinationRule and ServiceEntry YAML and serves what they translate to
// over ADS.
func xds(args []string) error {
	fs := flag.NewFlagSet("xds", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory of MetaRouter, DestinationRule and ServiceEntry YAML to watch (required)")
	listen := fs.String("listen", "127.0.0.1:15010", "host:port to serve ADS (gRPC) on; port 0 picks a free one")
	debounce := fs.Duration("debounce", 50*time.Millisecond, "quiet time after a change before the directory is read again")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		fs.Usage()
		return errors.New("xds: -dir is required")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("-log-level %q: %w", *level, err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(log)
	if fi, err := os.Stat(*dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("-dir %q: not a directory", *dir)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv := controlplane.NewServer(log)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	serveErr := make(chan error, 1)
	// Serve answers once the directory was read (Server waits for its
	// first Set).
	go func() { serveErr <- srv.Serve(ln) }()
	defer srv.Stop()

	src := &controlplane.DirSource{Dir: *dir, Debounce: *debounce, Log: log}
	runErr := make(chan error, 1)
	var first sync.Once
	go func() {
		runErr <- controlplane.Run(ctx, src, srv, log, func(controlplane.Resources, []controlplane.Problem) {
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
