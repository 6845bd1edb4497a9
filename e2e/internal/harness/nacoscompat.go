package harness

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"

	nacosgrpc "github.com/nacos-group/nacos-sdk-go/v2/api/grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
)

// NacosCompat sits between Nacos' Go SDK and rnacos on gRPC (HTTP is
// passed through as TCP) and adds to each reply the "success" field the
// Go SDK reads for a request's result: rnacos 0.8.8 sends resultCode 200
// only (Nacos' Java server writes both), so without it dubbo-go takes
// every registration for a failure. Each client connection gets its own
// upstream connection (rnacos ties ephemeral instances to it) and loses it
// when its stream ends, so a killed provider's instances still go.
type NacosCompat struct {
	Addr string // HTTP address; gRPC on its port + 1000
	mu   sync.Mutex
	up   map[string]*grpc.ClientConn
	to   string
}

// StartNacosCompat serves on free ports P (HTTP) and P+1000 (gRPC) in
// front of n.
func StartNacosCompat(t testing.TB, n *Nacos) *NacosCompat {
	t.Helper()
	port := nacosPorts(t)
	c := &NacosCompat{Addr: Addr(port), up: map[string]*grpc.ClientConn{}, to: Addr(n.Port + 1000)}
	httpLn, err := net.Listen("tcp", Addr(port))
	if err != nil {
		t.Fatal(err)
	}
	go forwardTCP(httpLn, n.Addr)
	grpcLn, err := net.Listen("tcp", Addr(port+1000))
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	nacosgrpc.RegisterRequestServer(s, compatRequest{c})
	nacosgrpc.RegisterBiRequestStreamServer(s, compatStream{c})
	go s.Serve(grpcLn)
	t.Cleanup(func() {
		s.Stop()
		httpLn.Close()
		c.mu.Lock()
		for _, u := range c.up {
			u.Close()
		}
		c.mu.Unlock()
	})
	return c
}

func forwardTCP(ln net.Listener, to string) {
	for {
		down, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer down.Close()
			up, err := net.Dial("tcp", to)
			if err != nil {
				return
			}
			defer up.Close()
			go io.Copy(up, down)
			io.Copy(down, up)
		}()
	}
}

// upstream is the connection to rnacos of the client at ctx's peer.
func (c *NacosCompat) upstream(ctx context.Context) (*grpc.ClientConn, string, error) {
	p, _ := peer.FromContext(ctx)
	key := p.Addr.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	if u, ok := c.up[key]; ok {
		return u, key, nil
	}
	u, err := grpc.Dial(c.to, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, key, err
	}
	c.up[key] = u
	return u, key, nil
}

func (c *NacosCompat) drop(key string) {
	c.mu.Lock()
	u := c.up[key]
	delete(c.up, key)
	c.mu.Unlock()
	if u != nil {
		u.Close()
	}
}

// addSuccess marks a reply with resultCode 200 successful.
func addSuccess(p *nacosgrpc.Payload) *nacosgrpc.Payload {
	if p == nil || p.Body == nil {
		return p
	}
	b := p.Body.Value
	if bytes.Contains(b, []byte(`"resultCode":200`)) && !bytes.Contains(b, []byte(`"success":`)) && len(b) > 1 && b[0] == '{' {
		p.Body.Value = append([]byte(`{"success":true,`), b[1:]...)
	}
	return p
}

type compatRequest struct{ c *NacosCompat }

func (r compatRequest) Request(ctx context.Context, in *nacosgrpc.Payload) (*nacosgrpc.Payload, error) {
	u, _, err := r.c.upstream(ctx)
	if err != nil {
		return nil, err
	}
	out, err := nacosgrpc.NewRequestClient(u).Request(ctx, in)
	return addSuccess(out), err
}

type compatStream struct{ c *NacosCompat }

func (s compatStream) RequestBiStream(down nacosgrpc.BiRequestStream_RequestBiStreamServer) error {
	u, key, err := s.c.upstream(down.Context())
	if err != nil {
		return err
	}
	// The client's stream gone (a provider killed): its upstream
	// connection goes too, and rnacos drops its instances.
	defer s.c.drop(key)
	ctx, cancel := context.WithCancel(down.Context())
	defer cancel()
	up, err := nacosgrpc.NewBiRequestStreamClient(u).RequestBiStream(ctx)
	if err != nil {
		return err
	}
	errs := make(chan error, 2)
	go func() {
		for {
			m, err := down.Recv()
			if err != nil {
				errs <- err
				return
			}
			if err := up.Send(addSuccess(m)); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		for {
			m, err := up.Recv()
			if err != nil {
				errs <- err
				return
			}
			if err := down.Send(m); err != nil {
				errs <- err
				return
			}
		}
	}()
	<-errs
	return nil
}
