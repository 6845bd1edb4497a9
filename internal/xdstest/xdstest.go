// Package xdstest runs a TLS xDS server and clients against it, for the
// tests of the xDS stream's security (controlplane, controller).
package xdstest

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/internal/testpki"
	"github.com/breeze-mesh/breeze/internal/testwait"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

// StartSecureServer serves one route table "r" over TLS with auth (nil:
// no token required).
func StartSecureServer(t testing.TB, ca *testpki.CA, auth controlplane.Authenticator) (*controlplane.Server, string, *LogBuffer) {
	t.Helper()
	logs := &LogBuffer{}
	srv := controlplane.NewServer(slog.New(slog.NewTextHandler(logs, nil)))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server}, MinVersion: tls.VersionTLS12}
	srv.Auth = auth
	if err := srv.Set(controlplane.Resources{Routes: map[string]*breezev1.RouteConfiguration{"r": {Name: "r"}}}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return srv, ln.Addr().String(), logs
}

// LogBuffer collects log lines from goroutines.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// connect starts a client and returns a channel that receives the route
// table "r" when served, and the client's log.
func Connect(t testing.TB, addr string, opts client.Options) (<-chan struct{}, *LogBuffer) {
	t.Helper()
	logs := &LogBuffer{}
	opts.Address, opts.NodeID = addr, "node-1"
	opts.Log = slog.New(slog.NewTextHandler(logs, nil))
	opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	c, err := client.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	served := make(chan struct{}, 1)
	c.WatchRoutes("r", func(*breezev1.RouteConfiguration) error {
		select {
		case served <- struct{}{}:
		default:
		}
		return nil
	})
	return served, logs
}

func WaitServed(t testing.TB, served <-chan struct{}, clientLog *LogBuffer) {
	t.Helper()
	select {
	case <-served:
	case <-time.After(20 * time.Second):
		t.Fatalf("route table not served; client log:\n%s", clientLog)
	}
}

// waitFor polls cond until it holds (the client retries every 10-50ms).
func WaitFor(t testing.TB, what string, cond func() bool, observed func() string) {
	t.Helper()
	testwait.For(t, what, 20*time.Second, func() (bool, string) {
		if cond() {
			return true, ""
		}
		return false, "\n" + observed()
	})
}

func WriteFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// AssertRefused waits until the server counted a refusal for cause and the
// client logged it, and checks the client was not served.
func AssertRefused(t testing.TB, srv *controlplane.Server, served <-chan struct{}, clientLog, serverLog *LogBuffer, cause string) {
	t.Helper()
	WaitFor(t, "refusal "+cause, func() bool {
		return srv.Refused(cause) > 0 && strings.Contains(clientLog.String(), cause)
	}, func() string { return "server log:\n" + serverLog.String() + "client log:\n" + clientLog.String() })
	if !strings.Contains(serverLog.String(), "cause="+cause) {
		t.Errorf("server log does not name cause %s:\n%s", cause, serverLog)
	}
	select {
	case <-served:
		t.Fatalf("client refused (%s) was served anyway", cause)
	default:
	}
}
