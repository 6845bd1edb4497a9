package controlplane

import (
	"crypto/tls"
	"fmt"
	"sync"
)

// ServerTLS returns a TLS config that serves the certificate in certFile
// and keyFile (PEM). The files are read again at each handshake, so a
// certificate rotated in place (a cert-manager Secret) is served to the
// next proxy that connects without a restart; should a read fail (a
// half-written rotation), the last good certificate is served. Handshakes are rare (one per proxy connection), so the read
// is cheap enough.
func ServerTLS(certFile, keyFile string) (*tls.Config, error) {
	first, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("xds tls certificate: %w", err)
	}
	var mu sync.Mutex
	last := &first
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			mu.Lock()
			defer mu.Unlock()
			if c, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
				last = &c
			}
			return last, nil
		},
	}, nil
}
