// Command breeze-relay is a plain TCP relay: one upstream connection per
// client (round robin over -upstream), io.Copy both ways. It is the floor
// for any user-space proxy hop.
//
//	breeze-relay -listen 127.0.0.1:21010 -upstream 127.0.0.1:21001
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/breeze-mesh/breeze/bench/internal/relay"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:21010", "host:port to listen on")
	ups := flag.String("upstream", "127.0.0.1:21001", "comma-separated upstream host:port list (round robin per connection)")
	flag.Parse()
	r := &relay.Relay{}
	for _, u := range strings.Split(*ups, ",") {
		r.Upstreams = append(r.Upstreams, strings.TrimSpace(u))
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "breeze-relay:", err)
		os.Exit(1)
	}
	fmt.Printf("LISTENING %s\n", ln.Addr())
	go r.Serve(ln)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	r.Close()
}
