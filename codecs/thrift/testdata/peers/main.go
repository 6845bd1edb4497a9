// Command peers writes the Thrift frames under codecs/thrift/testdata/:
// real Apache Thrift Go (v0.22) and Kitex (v0.13.1) clients call real
// servers of idl/echo.thrift through a loopback relay that records the
// bytes of each direction, one connection per call.
//
// interop_test.go checks the other way: Apache Thrift and Kitex reading
// what Breeze writes (local replies, mutated headers, rewritten seqids).
// bench_test.go has the full decode with generated code that the codec's
// routing decode is compared with.
//
// It lives in its own module so that Apache Thrift and Kitex never enter
// Breeze's go.mod:
//
//	cd codecs/thrift/testdata/peers && go run . -out .. && go test .
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/breeze-mesh/breeze/codecs/thrift/testdata/peers/peer"
)

// Captures are the flavors written, with the peer that writes them.
var Captures = []struct {
	Peer   string // apache or kitex
	Flavor peer.Flavor
}{
	{"apache", peer.Flavor{Transport: "framed", Protocol: "binary"}},
	{"apache", peer.Flavor{Transport: "framed", Protocol: "compact"}},
	{"apache", peer.Flavor{Transport: "framed", Protocol: "binary", NonStrict: true}},
	{"apache", peer.Flavor{Transport: "framed", Protocol: "binary", Mux: true}},
	{"apache", peer.Flavor{Transport: "unframed", Protocol: "binary"}},
	{"apache", peer.Flavor{Transport: "unframed", Protocol: "compact"}},
	{"apache", peer.Flavor{Transport: "unframed", Protocol: "binary", NonStrict: true}},
	{"apache", peer.Flavor{Transport: "header", Protocol: "binary"}},
	{"apache", peer.Flavor{Transport: "header", Protocol: "compact"}},
	{"apache", peer.Flavor{Transport: "header", Protocol: "binary", Zlib: true}},
	{"kitex", peer.Flavor{Transport: "ttheader", Protocol: "binary"}},
	{"kitex", peer.Flavor{Transport: "framed", Protocol: "binary"}},
}

func main() {
	out := flag.String("out", "..", "directory to write the .bin files to")
	flag.Parse()
	for _, c := range Captures {
		frames, err := Capture(c.Peer, c.Flavor)
		if err != nil {
			log.Fatalf("%s %v: %v", c.Peer, c.Flavor, err)
		}
		for kind, b := range frames {
			name := filepath.Join(*out, fmt.Sprintf("%s_%v_%s.bin", c.Peer, c.Flavor, kind))
			if err := os.WriteFile(name, b, 0o644); err != nil {
				log.Fatal(err)
			}
		}
		log.Printf("%s %v: %d frames", c.Peer, c.Flavor, len(frames))
	}
}

// Capture runs one server of the flavor and records, each on a connection
// of its own: request (Greet with a User and headers), response, oneway
// (Fire), void_request (Whoami, no arguments), exception (GetUser throwing
// the declared NotFound) and app_exception (Greet failing with an
// undeclared error: a TApplicationException).
func Capture(peerName string, f peer.Flavor) (map[string][]byte, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fired := make(chan struct{}, 16)
	h := &peer.Handler{Name: peerName, OnFire: func(string) { fired <- struct{}{} }}
	if peerName == "kitex" {
		go func() { _ = peer.ServeKitex(ctx, ln, h) }()
	} else {
		go peer.ServeApache(ctx, ln, f, h)
	}
	relay, err := NewRelay(ln.Addr().String())
	if err != nil {
		return nil, err
	}
	defer relay.Close()

	frames := map[string][]byte{}
	calls := []struct {
		name string
		call func(ctx context.Context, c caller) error
	}{
		{"request", func(ctx context.Context, c caller) error {
			_, err := c.greet(ctx, "alice")
			return err
		}},
		{"oneway", func(ctx context.Context, c caller) error {
			if err := c.fire(ctx, "ping"); err != nil {
				return err
			}
			select { // the server has read it: the relay has seen it all
			case <-fired:
				return nil
			case <-time.After(10 * time.Second):
				return fmt.Errorf("oneway call never reached the server")
			}
		}},
		{"void_request", func(ctx context.Context, c caller) error {
			_, err := c.whoami(ctx)
			return err
		}},
		{"exception", func(ctx context.Context, c caller) error {
			err := c.getMissing(ctx)
			if err == nil {
				return fmt.Errorf("GetUser(missing) succeeded")
			}
			return nil
		}},
		{"app_exception", func(ctx context.Context, c caller) error {
			_, err := c.greet(ctx, "boom")
			if _, ok := peer.IsAppException(err); !ok {
				return fmt.Errorf("Greet(boom): %v, want an application exception", err)
			}
			return nil
		}},
	}
	for _, call := range calls {
		c, err := dial(peerName, relay.Addr(), f)
		if err != nil {
			return nil, err
		}
		cctx := context.Background()
		if f.Transport == "header" {
			cctx = peer.WithHeaders(cctx, "tenant", "gold", "env", "staging",
				"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		}
		if peerName == "kitex" {
			cctx = peer.WithKitexHeaders(cctx, "tenant", "gold", "env", "staging")
		}
		if err := call.call(cctx, c); err != nil {
			c.close()
			return nil, fmt.Errorf("%s: %w", call.name, err)
		}
		c.close()
		up, down := relay.Last()
		switch call.name {
		case "request":
			frames["request"] = firstFrame(up, f)
			frames["response"] = firstFrame(down, f)
		case "oneway":
			frames["oneway"] = firstFrame(up, f)
		case "void_request":
			frames["void_request"] = firstFrame(up, f)
			frames["void_response"] = firstFrame(down, f)
		default:
			frames[call.name] = firstFrame(down, f)
		}
	}
	return frames, nil
}

// firstFrame is the first frame of a recorded stream: by its length on
// framed transports; unframed, the stream holds a single message.
func firstFrame(b []byte, f peer.Flavor) []byte {
	if f.Transport == "unframed" || len(b) < 4 {
		return b
	}
	n := int(binary.BigEndian.Uint32(b)) + 4
	if n > len(b) {
		return b
	}
	return b[:n]
}

// caller is one client connection of either framework.
type caller struct {
	greet      func(ctx context.Context, name string) (string, error)
	whoami     func(ctx context.Context) (string, error)
	fire       func(ctx context.Context, event string) error
	getMissing func(ctx context.Context) error
	close      func()
}

func dial(peerName, addr string, f peer.Flavor) (caller, error) {
	if peerName == "kitex" {
		c, err := peer.DialKitex(addr, f.Transport)
		if err != nil {
			return caller{}, err
		}
		return caller{
			greet: func(ctx context.Context, name string) (string, error) {
				return c.Greet(ctx, name, peer.KitexUser())
			},
			whoami: func(ctx context.Context) (string, error) { return c.Whoami(ctx) },
			fire:   func(ctx context.Context, event string) error { return c.Fire(ctx, event) },
			getMissing: func(ctx context.Context) error {
				_, err := c.GetUser(ctx, "missing")
				return err
			},
			close: func() {},
		}, nil
	}
	c, err := peer.DialApache(addr, f)
	if err != nil {
		return caller{}, err
	}
	return caller{
		greet: func(ctx context.Context, name string) (string, error) {
			return c.Greet(ctx, name, peer.SampleUser())
		},
		whoami: c.Whoami,
		fire:   c.Fire,
		getMissing: func(ctx context.Context) error {
			_, err := c.GetUser(ctx, "missing")
			return err
		},
		close: func() { _ = c.Close() },
	}, nil
}

// Relay forwards loopback connections to a target and records the bytes of
// the latest connection in each direction.
type Relay struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	up, down []byte
}

func NewRelay(target string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{ln: ln, target: target}
	go r.serve()
	return r, nil
}

func (r *Relay) Addr() string { return r.ln.Addr().String() }
func (r *Relay) Close()       { r.ln.Close() }

// Last returns what the latest connection carried so far.
func (r *Relay) Last() (up, down []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.up...), append([]byte(nil), r.down...)
}

func (r *Relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		r.up, r.down = nil, nil
		r.mu.Unlock()
		go r.copy(s, c, &r.up)
		go r.copy(c, s, &r.down)
	}
}

// copy records before it forwards, so that whatever the far side has
// received is already recorded.
func (r *Relay) copy(dst, src net.Conn, rec *[]byte) {
	defer dst.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			*rec = append(*rec, buf[:n]...)
			r.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				_ = err
			}
			return
		}
	}
}
