package controlplane_test

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/internal/testpki"
	"github.com/breeze-mesh/breeze/internal/xdstest"
	"github.com/breeze-mesh/breeze/xds/client"
)

func TestTLSClientServedWithTrustedCA(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t, dir, "ca")
	_, addr, _ := xdstest.StartSecureServer(t, ca, nil)
	served, log := xdstest.Connect(t, addr, client.Options{TLS: &client.TLS{CAFile: ca.CAFile, ServerName: testpki.ServerName}})
	xdstest.WaitServed(t, served, log)
}

func TestTLSClientRefusesUntrustedServer(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t, dir, "ca")
	other := testpki.New(t, dir, "other-ca")
	_, addr, _ := xdstest.StartSecureServer(t, ca, nil)
	served, log := xdstest.Connect(t, addr, client.Options{TLS: &client.TLS{CAFile: other.CAFile, ServerName: testpki.ServerName}})
	xdstest.WaitFor(t, "the client logging the untrusted certificate", func() bool {
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
	srv := controlplane.NewServer(nil)
	srv.Auth = controlplane.StaticToken{File: "/dev/null"}
	srv.Set(controlplane.Resources{})
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
	xdstest.WriteFile(t, serverToken, "token-b\n")
	srv, addr, serverLog := xdstest.StartSecureServer(t, ca, controlplane.StaticToken{File: serverToken})
	tlsOpts := &client.TLS{CAFile: ca.CAFile, ServerName: testpki.ServerName}

	t.Run("no token", func(t *testing.T) {
		served, log := xdstest.Connect(t, addr, client.Options{TLS: tlsOpts})
		xdstest.AssertRefused(t, srv, served, log, serverLog, controlplane.RefusedNoToken)
	})

	clientToken := filepath.Join(dir, "client-token")
	xdstest.WriteFile(t, clientToken, "token-a\n")
	served, log := xdstest.Connect(t, addr, client.Options{TLS: tlsOpts, TokenFile: clientToken})
	xdstest.AssertRefused(t, srv, served, log, serverLog, controlplane.RefusedInvalidToken)
	// The token is rotated in place, as the kubelet does: the next
	// reconnect reads it.
	xdstest.WriteFile(t, clientToken, "token-b\n")
	xdstest.WaitServed(t, served, log)
}
