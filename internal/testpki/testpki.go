// Package testpki makes a CA, a server certificate and workload (SPIFFE)
// certificates for tests of TLS connections (the xDS server's, a mesh's
// mTLS), with crypto/x509: no files to ship, no expiry to trip over.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ServerName is the name the server certificate is valid for.
const ServerName = "xds.breeze.test"

// CA is a certificate authority made for one test and the server
// certificate it signed.
type CA struct {
	// CAFile is the CA's certificate (PEM), what a client trusts.
	CAFile string
	// CertFile and KeyFile are the server's certificate and key (PEM),
	// as a server flag names them.
	CertFile, KeyFile string
	// Server is the server's certificate, loaded.
	Server tls.Certificate
	// Pool trusts the CA.
	Pool *x509.CertPool

	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Workload is a certificate for both ends of mutual TLS carrying one URI
// SAN, a SPIFFE id such as spiffe://cluster.local/ns/demo/sa/greeter, as
// Istio issues each workload's: what the peer's URI SAN is read from.
func (ca *CA) Workload(t testing.TB, spiffeID string) tls.Certificate {
	t.Helper()
	u, err := url.Parse(spiffeID)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	k := key(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), URIs: []*url.URL{u},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// New makes a CA named name and a certificate for ServerName signed by it,
// and writes their PEM files into dir.
func New(t testing.TB, dir, name string) *CA {
	t.Helper()
	now := time.Now()
	caKey := key(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvKey := key(t)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ServerName},
		DNSNames:  []string{ServerName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{
		CAFile:   filepath.Join(dir, name+"-ca.pem"),
		CertFile: filepath.Join(dir, name+"-server.pem"),
		KeyFile:  filepath.Join(dir, name+"-server-key.pem"),
		Server:   tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey},
		Pool:     x509.NewCertPool(),
		cert:     caCert,
		key:      caKey,
	}
	ca.Pool.AddCert(caCert)
	write(t, ca.CAFile, "CERTIFICATE", caDER)
	write(t, ca.CertFile, "CERTIFICATE", srvDER)
	write(t, ca.KeyFile, "EC PRIVATE KEY", keyDER)
	return ca
}

func key(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func write(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
