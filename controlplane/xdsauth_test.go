package controlplane

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/internal/testpki"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

// startSecureServer serves one route table "r" over TLS with auth (nil:
// no token required).
func startSecureServer(t *testing.T, ca *testpki.CA, auth Authenticator) (*Server, string, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	srv := NewServer(slog.New(slog.NewTextHandler(logs, nil)))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server}, MinVersion: tls.VersionTLS12}
	srv.Auth = auth
	if err := srv.Set(Resources{Routes: map[string]*breezev1.RouteConfiguration{"r": {Name: "r"}}}); err != nil {
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

// logBuffer collects log lines from goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// connect starts a client and returns a channel that receives the route
// table "r" when served, and the client's log.
func connect(t *testing.T, addr string, opts client.Options) (<-chan struct{}, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
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

func waitServed(t *testing.T, served <-chan struct{}, clientLog *logBuffer) {
	t.Helper()
	select {
	case <-served:
	case <-time.After(20 * time.Second):
		t.Fatalf("route table not served; client log:\n%s", clientLog)
	}
}

// waitFor polls cond until it holds (the client retries every 10-50ms).
func waitFor(t *testing.T, what string, cond func() bool, observed func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never saw %s; observed:\n%s", what, observed())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// assertRefused waits until the server counted a refusal for cause and the
// client logged it, and checks the client was not served.
func assertRefused(t *testing.T, srv *Server, served <-chan struct{}, clientLog, serverLog *logBuffer, cause string) {
	t.Helper()
	waitFor(t, "refusal "+cause, func() bool {
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

func TestTLSClientServedWithTrustedCA(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t, dir, "ca")
	_, addr, _ := startSecureServer(t, ca, nil)
	served, log := connect(t, addr, client.Options{TLS: &client.TLS{CAFile: ca.CAFile, ServerName: testpki.ServerName}})
	waitServed(t, served, log)
}

func TestTLSClientRefusesUntrustedServer(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t, dir, "ca")
	other := testpki.New(t, dir, "other-ca")
	_, addr, _ := startSecureServer(t, ca, nil)
	served, log := connect(t, addr, client.Options{TLS: &client.TLS{CAFile: other.CAFile, ServerName: testpki.ServerName}})
	waitFor(t, "the client logging the untrusted certificate", func() bool {
		return strings.Contains(log.String(), "certificate signed by unknown authority")
	}, log.String)
	select {
	case <-served:
		t.Fatal("a client that does not trust the server's CA was served")
	default:
	}
}

func TestTokenNeedsTLS(t *testing.T) {
	_, err := client.New(client.Options{Address: "127.0.0.1:1", TokenFile: "/dev/null"})
	if err == nil || !strings.Contains(err.Error(), "token_file needs tls") {
		t.Fatalf("a token over plaintext: got err %v, want one saying token_file needs tls", err)
	}
	srv := NewServer(nil)
	srv.Auth = StaticToken{File: "/dev/null"}
	srv.Set(Resources{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln); err == nil || !strings.Contains(err.Error(), "needs TLS") {
		t.Fatalf("a server taking tokens over plaintext: Serve returned %v, want an error saying it needs TLS", err)
	}
}

func TestStaticTokenRefusedThenRotatedTokenReadOnReconnect(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t, dir, "ca")
	serverToken := filepath.Join(dir, "server-token")
	writeFile(t, serverToken, "token-b\n")
	srv, addr, serverLog := startSecureServer(t, ca, StaticToken{File: serverToken})
	tlsOpts := &client.TLS{CAFile: ca.CAFile, ServerName: testpki.ServerName}

	t.Run("no token", func(t *testing.T) {
		served, log := connect(t, addr, client.Options{TLS: tlsOpts})
		assertRefused(t, srv, served, log, serverLog, RefusedNoToken)
	})

	clientToken := filepath.Join(dir, "client-token")
	writeFile(t, clientToken, "token-a\n")
	served, log := connect(t, addr, client.Options{TLS: tlsOpts, TokenFile: clientToken})
	assertRefused(t, srv, served, log, serverLog, RefusedInvalidToken)
	// The token is rotated in place, as the kubelet does: the next
	// reconnect reads it.
	writeFile(t, clientToken, "token-b\n")
	waitServed(t, served, log)
}
