package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/filters/authz"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/host"
	"github.com/breeze-mesh/breeze/internal/testpki"
)

// mtlsListener is a sidecar's inbound port under Istio mTLS: it completes
// the TLS handshake (client certificate required, signed by the mesh's
// CA) before the host sees the connection, and records the caller's URI
// SAN by its address, for what set_filter_state stores at the handshake.
// A caller that does not complete the handshake never reaches Breeze.
type mtlsListener struct {
	net.Listener
	cfg     *tls.Config
	peers   *sync.Map // remote address -> URI SAN
	refused atomic.Int64
}

func (l *mtlsListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := tls.Server(c, l.cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.refused.Add(1)
			c.Close()
			continue
		}
		var uri string
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 && len(certs[0].URIs) == 1 {
			uri = certs[0].URIs[0].String()
		}
		l.peers.Store(tc.RemoteAddr().String(), uri)
		return tc, nil
	}
}

// TestPodsCallingAndServingOverMTLS: pods A and B each run an app, an
// inbound Breeze in front of it (GO_LOOPBACK to the app, authz allowing
// only the other pod's identity) on a mutual-TLS port, and an outbound
// Breeze to the other pod whose upstream connections go through the
// host's plainText dial with the pod's certificate, as Istio's mTLS
// plainText cluster does. A calls B and B calls A.
//
// One host serves both pods (Envoy's shim has one library ID per
// process), so its plainText dial picks the client certificate by the
// pod it dials: only A's outbound dials B's inbound port and only B's
// dials A's. Every address is on loopback, the inbound ports standing for
// the pods' IPs.
func TestPodsCallingAndServingOverMTLS(t *testing.T) {
	Register()
	ca := testpki.New(t, t.TempDir(), "mesh")
	const (
		idA = "spiffe://cluster.local/ns/demo/sa/a"
		idB = "spiffe://cluster.local/ns/demo/sa/b"
	)
	certA, certB := ca.Workload(t, idA), ca.Workload(t, idB)
	appA, appB := newBackend(t, "app-a"), newBackend(t, "app-b")

	peers := &sync.Map{}
	inbound := func(cert tls.Certificate) *mtlsListener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return &mtlsListener{Listener: ln, peers: peers, cfg: &tls.Config{
			Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool,
			MinVersion: tls.VersionTLS12, NextProtos: []string{"istio"},
		}}
	}
	inA, inB := inbound(certA), inbound(certB)

	var dialsMu sync.Mutex
	var dials []string
	clientCert := map[string]tls.Certificate{inB.Addr().String(): certA, inA.Addr().String(): certB}
	h := host.New(host.Options{
		LibraryID: "breeze-pods",
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		FilterState: func(remote string) map[string]string {
			if _, ok := peers.Load(remote); ok {
				return map[string]string{filter.IdentityHookKey: "tls_handshake"}
			}
			return nil
		},
		HandshakeFilterState: func(remote string) map[string]string {
			if uri, _ := peers.Load(remote); uri != nil && uri != "" {
				return map[string]string{"io.istio.peer_principal": uri.(string)}
			}
			return nil
		},
		// The plainText cluster with Istio's upstream TLS: the pod's
		// certificate, the mesh CA, ALPN istio.
		DialUpstream: func(ctx context.Context, addr string) (net.Conn, error) {
			dialsMu.Lock()
			dials = append(dials, addr)
			dialsMu.Unlock()
			cert, ok := clientCert[addr]
			if !ok {
				return nil, fmt.Errorf("the plainText cluster dialed %s, not a pod's inbound port", addr)
			}
			d := tls.Dialer{Config: &tls.Config{
				Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool, NextProtos: []string{"istio"},
				MinVersion: tls.VersionTLS12,
				// Istio checks the server's SPIFFE id, not a DNS name.
				InsecureSkipVerify: true, VerifyConnection: verifySPIFFE(ca, idA, idB),
			}}
			return d.DialContext(ctx, "tcp", addr)
		},
	})
	t.Cleanup(func() { h.Close() })

	in := func(prefix string, app *backend, caller string) string {
		return fmt.Sprintf(`stat_prefix: %s
codec: tframe
upstream_connect: GO_LOOPBACK
filters:
- name: authz
  typed_config:
    "@type": type.googleapis.com/breeze.filters.authz.v1.Authz
    policies:
    - name: callers
      rules: [{from: [{source: {principals: [%s]}}]}]
route_config: {routes: [{route: {cluster: local-app}}]}
clusters:
- name: local-app
  endpoints:
%s
`, prefix, caller, ep(app, ""))
	}
	out := func(prefix string, peer net.Listener) string {
		return fmt.Sprintf(`stat_prefix: %s
codec: tframe
route_config: {routes: [{route: {cluster: peer}}]}
clusters:
- name: peer
  endpoints:
  - {address: 127.0.0.1, port: %d}
`, prefix, peer.Addr().(*net.TCPAddr).Port)
	}
	listen := func(ln net.Listener, cfg string) string {
		if err := h.AddListener(ln, PluginName, typedConfig(t, cfg)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln.Addr().String()
	}
	plain := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	listen(inA, in("a_inbound", appA, "cluster.local/ns/demo/sa/b"))
	listen(inB, in("b_inbound", appB, "cluster.local/ns/demo/sa/a"))
	outA := listen(plain(), out("a_outbound", inB))
	outB := listen(plain(), out("b_outbound", inA))

	// A's app calls B's service through A's outbound Breeze, and B's app
	// calls A's.
	for _, c := range []struct{ from, via, want string }{{"a", outA, "app-b"}, {"b", outB, "app-a"}} {
		cl := dial(t, c.via)
		for i := range 10 {
			m, err := cl.call(0, "hello")
			if err != nil {
				t.Fatalf("%s's call %d: %v", c.from, i, err)
			}
			if m.status != codecs.StatusOK || md(m, "server") != c.want {
				t.Fatalf("%s's call %d: status %v, server %q, error %q; want %s's answer", c.from, i, m.status, md(m, "server"), md(m, "error"), c.want)
			}
		}
		t.Logf("pod %s called %s over mTLS: 10 answers", c.from, c.want)
	}

	// Each inbound side saw the other pod's identity: its authz allows
	// only that one. A caller with another identity, over valid mTLS, is
	// denied by B's Breeze.
	peerIDs := map[string]bool{}
	peers.Range(func(_, v any) bool { peerIDs[v.(string)] = true; return true })
	if !peerIDs[idA] || !peerIDs[idB] || len(peerIDs) != 2 {
		t.Errorf("identities the inbound ports saw: %v; want exactly %s and %s", peerIDs, idA, idB)
	}
	mallory := ca.Workload(t, "spiffe://cluster.local/ns/evil/sa/mallory")
	tc, err := tls.Dial("tcp", inB.Addr().String(), &tls.Config{Certificates: []tls.Certificate{mallory}, RootCAs: ca.Pool, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	evil := &client{c: tc, waiters: map[uint64]chan tmsg{}, closed: make(chan struct{}), extra: make(chan tmsg, 16)}
	go evil.read()
	t.Cleanup(func() { tc.Close() })
	m, err := evil.call(0, "hello")
	if err != nil {
		t.Fatal(err)
	}
	const noAllow = "RBAC: access denied: no ALLOW policy matched"
	if m.status != codecs.StatusError || m.body != noAllow || appB.received.Load() != 10 {
		t.Fatalf("mallory's call to B: status %v, body %q, B's app received %d; want the denial %q and still 10", m.status, m.body, appB.received.Load(), noAllow)
	}
	t.Logf("mallory (valid mTLS, another identity) denied by B's Breeze: %s %q", md(m, "error"), m.body)

	// A plain-text client to B's inbound port gets no answer: the
	// handshake fails and the connection closes before Breeze.
	refusedBefore := inB.refused.Load()
	pc, err := net.Dial("tcp", inB.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	if _, err := pc.Write(tencode(tmsg{typ: codecs.Request, id: 1, body: "hello"})); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(pc)
	if n := inB.refused.Load() - refusedBefore; n != 1 || appB.received.Load() != 10 {
		t.Fatalf("plain-text client to B's mTLS port: refused %d handshakes, B's app received %d; want 1 and 10 (got %d bytes back)", n, appB.received.Load(), len(got))
	}
	t.Logf("plain-text client to B's inbound port: handshake refused, %d bytes back (a TLS alert at most), no request reached B", len(got))

	// Every upstream connection through the plainText dial went to a
	// pod's inbound port; the inbound sides reached their apps with the
	// Go socket, never through plainText.
	dialsMu.Lock()
	defer dialsMu.Unlock()
	for _, a := range dials {
		if a != inA.Addr().String() && a != inB.Addr().String() {
			t.Errorf("the plainText cluster dialed %s; want only the pods' inbound ports %s, %s", a, inA.Addr(), inB.Addr())
		}
	}
	if !slices.Contains(dials, inA.Addr().String()) || !slices.Contains(dials, inB.Addr().String()) {
		t.Errorf("plainText dials %v; want one to each pod's inbound port", dials)
	}
	if s := h.Stats(); s.UpstreamConnects != uint64(len(dials)) {
		t.Errorf("the host made %d upstream connects, its plainText dial saw %d: some went around it", s.UpstreamConnects, len(dials))
	}
	t.Logf("plainText dials: %v (apps at %s, %s: never dialed through plainText)", dials, appA.ln.Addr(), appB.ln.Addr())
}

// verifySPIFFE accepts a server certificate signed by ca whose URI SAN is
// one of ids, as Istio's client side checks the server's identity.
func verifySPIFFE(ca *testpki.CA, ids ...string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("no server certificate")
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return err
		}
		for _, u := range leaf.URIs {
			if slices.Contains(ids, u.String()) {
				return nil
			}
		}
		return fmt.Errorf("server identity %v is not one of %v", leaf.URIs, ids)
	}
}
