// Command breeze-echo is a minimal fast server for benchmarks: it answers
// every request with a successful response carrying the request's argument
// (Dubbo: status 20, result "value", the byte[] argument; Thrift, framed
// binary: a REPLY with the binary argument as field 0), and heartbeats with
// heartbeat replies.
//
//	breeze-echo -addr 127.0.0.1:21001,127.0.0.1:21002,127.0.0.1:21003
//	breeze-echo -proto thrift -addr 127.0.0.1:21101,127.0.0.1:21102,127.0.0.1:21103
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/breeze-mesh/breeze/bench/internal/echo"
	"github.com/breeze-mesh/breeze/bench/internal/wire"
)

func main() {
	addrs := flag.String("addr", "127.0.0.1:21001", "comma-separated host:port list to listen on")
	protoName := flag.String("proto", "dubbo", fmt.Sprintf("protocol: %v", wire.Names()))
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	p, err := wire.Lookup(*protoName)
	if err != nil {
		log.Error("breeze-echo", "err", err)
		os.Exit(2)
	}
	s := &echo.Server{Proto: p, Log: log}
	for _, a := range strings.Split(*addrs, ",") {
		ln, err := net.Listen("tcp", strings.TrimSpace(a))
		if err != nil {
			log.Error("breeze-echo: listen", "err", err)
			os.Exit(1)
		}
		fmt.Printf("LISTENING %s\n", ln.Addr())
		go s.Serve(ln)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	s.Close()
	fmt.Printf("answered %d frames, %d bad connections\n", s.Requests.Load(), s.Errors.Load())
}
